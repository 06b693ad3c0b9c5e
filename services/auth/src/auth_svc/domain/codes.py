"""One-time codes, stored only as a salted hash.

- Email and password-reset codes: 6 digits from a CSPRNG. A million values is guessable
  at scale, so their wrong guesses are budgeted per account (see handlers.codes).
- Sign-in codes (the owner's way in while password sign-in is locked): 16 characters from a
  32-letter alphabet, 80 bits. Nobody guesses those, so wrong guesses neither spend a budget
  nor kill the code, and an attacker has no lever to block the owner with.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Purpose = Literal["verify_email", "reset_password", "sign_in"]
GuessedPurpose = Literal["verify_email", "reset_password"]
CODE_DIGITS = 6

# No 0/O, 1/I: read from an email and typed, they get confused.
SIGN_IN_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
SIGN_IN_LENGTH = 16
SIGN_IN_GROUP = 4


@dataclass(frozen=True)
class StoredCode:
    """The live code of one (user, purpose), as stored: its hash, never the code."""

    key: str
    user_id: str
    purpose: str
    code_hash: str
    salt: str
    attempts: int  # tries counted against it, the current one included
    sent_at: datetime
    expires_at: datetime

    def matches(self, code: str) -> bool:
        return code_matches(code, self.salt, self.code_hash)


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def new_sign_in_code() -> str:
    """``ABCD-EFGH-JKMN-PQRS``: 80 random bits in four groups."""
    raw = "".join(secrets.choice(SIGN_IN_ALPHABET) for _ in range(SIGN_IN_LENGTH))
    return _grouped(raw)


def _grouped(raw: str) -> str:
    return "-".join(raw[i : i + SIGN_IN_GROUP] for i in range(0, len(raw), SIGN_IN_GROUP))


def normalise_sign_in_code(text: str) -> str | None:
    """The canonical form of a typed sign-in code (case, spaces and dashes do not matter),
    or None when it cannot be one of ours."""
    raw = "".join(text.split()).replace("-", "").upper()
    if len(raw) != SIGN_IN_LENGTH or any(char not in SIGN_IN_ALPHABET for char in raw):
        return None
    return _grouped(raw)


def new_salt() -> str:
    return secrets.token_hex(16)


def hash_code(code: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


def code_matches(code: str, salt: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_code(code, salt), stored_hash)


def code_key(user_id: str, purpose: str) -> str:
    """One live code per (user, purpose): a new code replaces the old one."""
    return f"{user_id}:{purpose}"
