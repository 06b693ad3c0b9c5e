"""Answers the gateway gives itself — problems, preflights, local endpoints — and the
edge headers every response carries (request id, RateLimit, CORS, security, HSTS)."""

from __future__ import annotations

import json
from typing import Any

from gateway_svc.domain.ratelimit import state_header
from gateway_svc.proxy.edges import ALL_SECURITY_HEADERS, HSTS_HEADER, SECURITY_HEADERS
from gateway_svc.proxy.exchange_state import ExchangeState
from gateway_svc.proxy.headers import known_status_line
from switchyard.problems import PROBLEM_CONTENT_TYPE, Problem

DISCARD_LIMIT = 64 * 1024  # request bytes read and dropped after a local answer
WWW_AUTHENTICATE = b'WWW-Authenticate: Bearer error="invalid_token"\r\n'
_PROBLEM_CONTENT_TYPE = PROBLEM_CONTENT_TYPE.encode()


class Refusal:
    """A problem the gateway answers instead of forwarding the request."""

    __slots__ = ("status", "detail", "slug", "headers", "extra")

    def __init__(
        self,
        status: int,
        detail: str,
        slug: str | None = None,
        headers: bytes = b"",
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.detail = detail
        self.slug = slug
        self.headers = headers
        self.extra = extra


def unauthorized(detail: str) -> Refusal:
    """401 with its ``WWW-Authenticate`` challenge (RFC 6750 §3)."""
    return Refusal(401, detail, "invalid-token", WWW_AUTHENTICATE)


def security_headers(seen: int) -> bytes:
    """The security headers the upstream did not set itself (``seen``: one bit each)."""
    return b"".join(line for bit, (_, line) in enumerate(SECURITY_HEADERS) if not seen & (1 << bit))


def connection_line(close: bool, http11: bool) -> bytes:
    """How the head ends: ``Connection`` only when it differs from the version's default."""
    if close:
        return b"Connection: close\r\n\r\n"
    if not http11:
        return b"Connection: keep-alive\r\n\r\n"
    return b"\r\n"


class Responses(ExchangeState):
    def _edge_headers(self, parts: list[bytes], security_seen: int = 0) -> None:
        parts += (b"X-Request-ID: ", self.request_id, b"\r\n")
        decision = self.decision
        route = self.route
        if decision is not None and route is not None:
            parts.append(state_header(route.policy, decision))
        if self.origin is not None:
            parts.append(self.context.cors.response_headers(self.origin))
        parts.append(
            ALL_SECURITY_HEADERS if security_seen == 0 else security_headers(security_seen)
        )
        if self.forwarded_proto == b"https" and self.conn.peer_trusted:
            parts.append(HSTS_HEADER)

    def respond(
        self,
        status: int,
        headers: bytes,
        body: bytes,
        content_type: bytes | None = None,
        *,
        with_cors: bool = True,
    ) -> None:
        """Answer from the gateway itself (problems, preflights, local endpoints)."""
        if self.response_started or self.finished:
            return
        self._detach_upstream(reuse=False)
        if self.conn.held is self:
            # a handshake answered here: what the client sent after it is not HTTP
            self.close_after = True
        if not self.body_done:
            self.discard_body = True
            self.discard_until = self.context.loop.time() + self.context.header_timeout
            if self.chunked or (self.content_length or 0) - self.body_bytes > DISCARD_LIMIT:
                self.close_after = True
        self.status = status
        parts = [known_status_line(status) or b"HTTP/1.1 %d Error\r\n" % status, headers]
        origin = self.origin
        if not with_cors:
            self.origin = None
        self._edge_headers(parts)
        self.origin = origin
        if content_type is not None:
            parts += (b"Content-Type: ", content_type, b"\r\n")
        if status not in (204, 304):
            parts.append(b"Content-Length: %d\r\n" % len(body))
        parts.append(connection_line(self.close_after or not self.keep_alive, self.http11))
        if body and self.method != b"HEAD":
            parts.append(body)
        self.bytes_out = len(body)
        self.response_started = True
        self.response_done = True
        self.conn.write(b"".join(parts))
        if self.body_done or self.close_after:
            self.finish()

    def respond_json(self, status: int, data: Any, headers: bytes = b"") -> None:
        self.respond(status, headers, json.dumps(data).encode(), b"application/json")

    def problem(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        headers: bytes = b"",
        extra: dict[str, Any] | None = None,
    ) -> None:
        """An RFC 9457 problem+json answer."""
        body = Problem(status, detail, slug=slug, extra=extra).body(
            instance=self.path.decode("latin-1") or "/",
            request_id=self.request_id.decode("latin-1"),
        )
        self.respond(status, headers, json.dumps(body).encode(), _PROBLEM_CONTENT_TYPE)

    def answer(self, refusal: Refusal) -> None:
        self.problem(
            refusal.status,
            refusal.detail,
            slug=refusal.slug,
            headers=refusal.headers,
            extra=refusal.extra,
        )
