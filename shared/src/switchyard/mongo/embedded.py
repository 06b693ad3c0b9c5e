"""The embedded MongoDB-wire server (PyPI ``nx-27017``, SQLite-backed) as a child process.

Local runs and tests use it when ``MONGO_URL`` names no real MongoDB. Its
multi-document transactions are not isolated, so nothing here relies on them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from pymongo import MongoClient
from pymongo.errors import PyMongoError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _executable() -> list[str]:
    # Through our wrapper, which quiets the server's per-command INFO logging.
    return [sys.executable, "-m", "switchyard.mongo.embedded", "--serve"]


def serve(nx_arguments: list[str]) -> None:
    """Run nx-27017 in this process with warnings-only logging.

    nx-27017 logs every command at INFO; configuring the root logger first turns its
    own ``basicConfig`` into a no-op, which keeps `make run` readable and saves the
    server the cost of writing a line per command.
    """
    import logging

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s nx-27017 %(levelname)s %(message)s"
    )
    from nx_27017.nx_27017 import main as nx_main

    sys.argv = ["nx-27017", *nx_arguments]
    nx_main()


class EmbeddedMongo:
    """Start ``nx-27017`` on 127.0.0.1 with a data directory; stop it on exit."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        return [
            *_executable(),
            "--data-dir",
            str(self.data_dir),
            "--host",
            "127.0.0.1",
            "-p",
            str(self.port),
            "--log-file",
            str(self.data_dir / "nx-27017.log"),
            "--pid-file",
            str(self.data_dir / "nx-27017.pid"),
        ]

    def start(self, timeout: float = 30.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_mongo(self.url, timeout, self.process)
        return self.url

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> EmbeddedMongo:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_for_mongo(
    url: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"the embedded MongoDB server exited with status {process.returncode}"
            )
        client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=500)
        try:
            client.admin.command("ping")
            return
        except PyMongoError as error:
            last = error
            time.sleep(0.2)
        finally:
            client.close()
    raise TimeoutError(f"no MongoDB answered at {url} within {timeout:.0f}s: {last}")


def main() -> None:
    """``python -m switchyard.mongo.embedded DATA_DIR [PORT]`` — run in the foreground."""
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2:])
        return
    data_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".var/mongo")
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 27017
    data_dir.mkdir(parents=True, exist_ok=True)
    command = EmbeddedMongo(data_dir, port).command()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
