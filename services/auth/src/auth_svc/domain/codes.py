"""One-time codes: 6 digits from a CSPRNG, stored only as a salted hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Literal

Purpose = Literal["verify_email", "reset_password"]
CODE_DIGITS = 6


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def new_salt() -> str:
    return secrets.token_hex(16)


def hash_code(code: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


def code_matches(code: str, salt: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_code(code, salt), stored_hash)


def code_key(user_id: str, purpose: str) -> str:
    """One live code per (user, purpose): a new code replaces the old one."""
    return f"{user_id}:{purpose}"
