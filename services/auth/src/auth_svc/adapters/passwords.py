"""argon2id hashing off the event loop, with a bounded number of hashes in flight.

argon2-cffi releases the GIL while hashing, so a small thread pool spreads the
work over the cores; the pool size also bounds memory (m MiB per hash).
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from auth_svc.domain.passwords import Argon2Parameters


class Passwords:
    def __init__(self, parameters: Argon2Parameters, *, workers: int | None = None) -> None:
        self.parameters = parameters
        self._hasher = PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=workers or min(4, os.cpu_count() or 1), thread_name_prefix="argon2"
        )
        # Verifying against this makes an unknown email cost what a wrong password costs.
        self._dummy_hash = self._hasher.hash(os.urandom(16).hex())

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify_sync(self, stored_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash or self._dummy_hash, password) and bool(
                stored_hash
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self.hash_sync, password
        )

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Constant work whether or not there is a hash (None checks the dummy hash)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self.verify_sync, stored_hash, password
        )
