"""Password rules: length 10–128 and a zxcvbn score ≥ 3, with the user's own data as context.

The length is checked at once; the strength check is CPU work that grows with the input
(see ``STRENGTH_INPUT_LIMIT``), so callers run :func:`strength_problem` in a worker process
(``adapters.strength``) and only once the cheap checks have passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from zxcvbn import zxcvbn

MIN_LENGTH = 10
MAX_LENGTH = 128
# zxcvbn's cost grows with the input (its l33t matcher tries every substitution against every
# dictionary for every substring): a leet-speak password costs ~0.8 s at 72 characters,
# ~0.3 s at 32, ~0.17 s at 24 on the reference machine. Only this prefix is judged; a longer
# password is at least as strong as its prefix, so the cap can only refuse, never weaken.
STRENGTH_INPUT_LIMIT = 32


class PasswordRejected(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Argon2Parameters:
    """argon2id cost. The defaults are OWASP's minimum: m = 19 MiB, t = 2, p = 1."""

    time_cost: int = 2
    memory_kib: int = 19 * 1024
    parallelism: int = 1

    def describe(self) -> str:
        return f"argon2id m={self.memory_kib // 1024}MiB t={self.time_cost} p={self.parallelism}"


OWASP_MINIMUM = Argon2Parameters()


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = MIN_LENGTH
    max_length: int = MAX_LENGTH
    min_score: int = 3

    def check(self, password: str, *, context: tuple[str, ...] = ()) -> None:
        """Raise :class:`PasswordRejected` unless ``password`` is long and hard enough to guess
        (on the calling thread: for tests and tools; the service uses a worker process)."""
        self.check_length(password)
        problem = strength_problem(password, context, self.min_score)
        if problem is not None:
            raise PasswordRejected(*problem)

    def check_length(self, password: str) -> None:
        """The cheap part of the policy: raise :class:`PasswordRejected` when too short or long."""
        if len(password) < self.min_length:
            raise PasswordRejected(
                "password_too_short", f"Use at least {self.min_length} characters."
            )
        if len(password) > self.max_length:
            raise PasswordRejected(
                "password_too_long", f"Use at most {self.max_length} characters."
            )


def strength_problem(
    password: str, context: tuple[str, ...], min_score: int
) -> tuple[str, str] | None:
    """``(code, message)`` when zxcvbn scores ``password`` below ``min_score``, else None.

    A plain function of plain values, so a process pool can run it.
    """
    inputs = [part for item in context for part in _context_words(item)]
    result = zxcvbn(password[:STRENGTH_INPUT_LIMIT], user_inputs=inputs)
    if result["score"] >= min_score:
        return None
    feedback = result.get("feedback") or {}
    hints = [feedback.get("warning") or "", *(feedback.get("suggestions") or [])]
    advice = " ".join(hint for hint in hints if hint)
    return (
        "password_too_weak",
        "This password is too easy to guess." + (f" {advice}" if advice else ""),
    )


def _context_words(value: str) -> list[str]:
    """The user's email, its local part and name words: passwords built from them are weak."""
    value = value.strip().lower()
    if not value:
        return []
    words = [value]
    if "@" in value:
        local, _, domain = value.partition("@")
        words += [local, domain.split(".")[0]]
    parts = re.split(r"[^a-z0-9]+", value.partition("@")[0] if "@" in value else value)
    parts = [part for part in parts if part]
    words += parts
    words.append("".join(parts))  # "kettle.sprocket" and "Kettle Sprocket" → "kettlesprocket"
    return [word for word in dict.fromkeys(words) if len(word) >= 3]
