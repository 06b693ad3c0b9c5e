"""Local scratch files for image work (``FILE_SPOOL_DIR``): the upload of an image is kept
here while Pillow reads it, whatever the storage backend. Names start with the file id;
files a crash left behind are removed by the sweeper after the grace period."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from pathlib import Path


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def start(self) -> None:
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)

    def path(self, file_id: str, role: str) -> Path:
        return self.directory / f"{file_id}.{role}.{secrets.token_hex(4)}.spool"

    async def remove(self, *paths: Path | None) -> None:
        def unlink() -> None:
            for path in paths:
                if path is not None:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()

        await asyncio.to_thread(unlink)

    async def sweep(self, older_than: float) -> int:
        """Remove scratch files not written since ``older_than`` (unix seconds)."""

        def scan() -> int:
            removed = 0
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if not entry.name.endswith(".spool"):
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_mtime < older_than:
                            os.unlink(entry.path)
                            removed += 1
            return removed

        return await asyncio.to_thread(scan)

    @staticmethod
    def now() -> float:
        return time.time()
