"""What a chat command refuses, with the slug clients see (socket ack error or problem+json)."""

from __future__ import annotations


class ChatError(Exception):
    """A refusal: ``code`` is the slug of the ack error / problem, ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def not_found() -> ChatError:
    # The same answer for "no such conversation" and "not a member": no existence leak.
    return ChatError("not-found", "No such conversation.", 404)


def forbidden(message: str) -> ChatError:
    return ChatError("forbidden", message, 403)
