"""Helpers of the file service's tests: real images made with Pillow, multipart bodies
written byte by byte (so hostile shapes can be sent too), a client of the API, and a
moto S3 server in its own process."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from switchyard.testing.servers import free_port

MIB = 1024 * 1024

# -- files -------------------------------------------------------------------------------------


def png(
    width: int = 40, height: int = 30, *, color: str = "red", text: dict[str, str] | None = None
) -> bytes:
    image = Image.new("RGB", (width, height), color)
    out = io.BytesIO()
    if text:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        image.save(out, "PNG", pnginfo=info)
    else:
        image.save(out, "PNG")
    return out.getvalue()


GPS_IFD = 0x8825
ORIENTATION = 0x0112


def jpeg_with_gps(width: int = 64, height: int = 32, *, orientation: int = 6) -> bytes:
    """A JPEG whose EXIF carries a GPS position, a camera model and an orientation tag
    (6 = the pixels must be turned 90° clockwise to be upright); the left half is red,
    the right half blue, so where the red went says how it was turned."""
    image = Image.new("RGB", (width, height), "blue")
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x0110] = "Spy Camera 3000"  # Model
    exif[0x010E] = "secret description"
    exif.get_ifd(GPS_IFD).update(
        {
            1: "N",
            2: (52.0, 31.0, 12.5),  # 52°31'12.5" N: Berlin
            3: "E",
            4: (13.0, 24.0, 36.0),
        }
    )
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes(), comment=b"shot at home", quality=95)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width``×``height``: a decompression bomb's shape
    (the pixels it would decode to never fit in memory)."""
    data = png(8, 8)
    ihdr_at = data.index(b"IHDR")
    fields = bytearray(data[ihdr_at + 4 : ihdr_at + 17])
    fields[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(fields)) & 0xFFFFFFFF)
    return data[: ihdr_at + 4] + bytes(fields) + crc + data[ihdr_at + 21 :]


def windows_executable() -> bytes:
    """The start of a PE file: DOS header (MZ), stub, PE signature."""
    dos = bytearray(b"MZ" + b"\x90\x00" + b"\x00" * 56)
    dos[0x3C:0x40] = struct.pack("<I", 0x80)
    body = bytes(dos) + b"This program cannot be run in DOS mode.\r\r\n$".ljust(0x40, b"\x00")
    pe = b"PE\x00\x00" + struct.pack("<HH", 0x8664, 3) + b"\x00" * 200
    return body + pe


PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


# -- multipart ---------------------------------------------------------------------------------


@dataclass
class Part:
    name: str | None
    data: bytes | Callable[[], AsyncIterator[bytes]] = b""
    filename: str | None = None
    content_type: str | None = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    raw_disposition: bytes | None = None  # sent as is (e.g. non-UTF-8 bytes)

    def head(self) -> bytes:
        if self.raw_disposition is not None:
            lines = [b"Content-Disposition: " + self.raw_disposition]
        else:
            disposition = "form-data"
            if self.name is not None:
                disposition += f'; name="{self.name}"'
            if self.filename is not None:
                disposition += f'; filename="{self.filename}"'
            lines = [disposition_line(disposition)]
        if self.content_type is not None:
            lines.append(f"Content-Type: {self.content_type}".encode())
        lines += [f"{k}: {v}".encode() for k, v in self.headers.items()]
        return b"\r\n".join(lines) + b"\r\n\r\n"


def disposition_line(value: str) -> bytes:
    return ("Content-Disposition: " + value).encode("utf-8")


def file_part(
    data: bytes | Callable[[], AsyncIterator[bytes]], filename: str, content_type: str | None = None
) -> Part:
    return Part("file", data, filename=filename, content_type=content_type)


def purpose_part(value: str) -> Part:
    return Part("purpose", value.encode(), content_type=None)


class MultipartBody:
    """A multipart/form-data body streamed from its parts (files may be generators)."""

    def __init__(
        self, parts: Iterable[Part], *, boundary: str | None = None, close: bool = True
    ) -> None:
        self.parts = list(parts)
        self.boundary = boundary or "----switchyard" + uuid.uuid4().hex
        self.close = close

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    async def stream(self) -> AsyncIterator[bytes]:
        dash = f"--{self.boundary}".encode()
        for part in self.parts:
            yield dash + b"\r\n" + part.head()
            if isinstance(part.data, bytes):
                yield part.data
            else:
                async for chunk in part.data():
                    yield chunk
            yield b"\r\n"
        if self.close:
            yield dash + b"--\r\n"

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.stream()])


PDF_HEAD = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"


def generated(
    size: int, block: int = 256 * 1024, seed: int = 7
) -> Callable[[], AsyncIterator[bytes]]:
    """A PDF-looking file of ``size`` bytes (a PDF header, then pseudo-random bytes),
    produced block by block, never all in memory; :func:`generated_bytes` is the same
    content in one piece."""
    pattern = PDF_HEAD + random_bytes_seeded(block - len(PDF_HEAD), seed)

    async def produce() -> AsyncIterator[bytes]:
        left = size
        while left > 0:
            take = min(block, left)
            yield pattern[:take]
            left -= take

    return produce


def generated_bytes(size: int, block: int = 256 * 1024, seed: int = 7) -> bytes:
    pattern = PDF_HEAD + random_bytes_seeded(block - len(PDF_HEAD), seed)
    return (pattern * (size // block + 1))[:size]


def random_bytes_seeded(size: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


# -- the API as a client uses it ---------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class FileApi:
    """Calls to ``/api/v1/files`` on ``base`` (the gateway or the service itself)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base.rstrip("/")

    async def request(
        self, method: str, path: str, *, token: str | None = None, **kwargs: Any
    ) -> Reply:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as response:
            body = await response.read()
            return Reply(response.status, response.headers, body)

    async def send(
        self, body: MultipartBody, *, token: str | None, headers: dict[str, str] | None = None
    ) -> Reply:
        return await self.request(
            "POST",
            "/api/v1/files",
            token=token,
            data=body.stream(),
            headers={"Content-Type": body.content_type, **(headers or {})},
        )

    async def upload(
        self,
        data: bytes | Callable[[], AsyncIterator[bytes]],
        filename: str,
        *,
        token: str,
        purpose: str = "attachment",
        content_type: str | None = None,
    ) -> Reply:
        body = MultipartBody([purpose_part(purpose), file_part(data, filename, content_type)])
        return await self.send(body, token=token)

    async def content(
        self,
        file_id: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        query: str = "",
    ) -> Reply:
        return await self.request(
            "GET", f"/api/v1/files/{file_id}/content{query}", token=token, headers=headers
        )


# -- S3 in a moto server -----------------------------------------------------------------------


class MotoServer:
    """``python -m moto.server`` on a free loopback port, in its own process (its own GIL,
    and the test process never holds S3 state)."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 90  # a loaded machine took more than 30 s to start it
        import socket

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("moto server exited: " + self.log_path.read_text()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("the moto server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


S3_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing-secret",
    "aws_region": "us-east-1",
}


# -- the service as a child process (memory, crashes) ------------------------------------------


def environment_of(settings: Any) -> dict[str, str]:
    """The environment variables that reproduce ``settings`` in a child process."""
    from pydantic import SecretStr

    env: dict[str, str] = {}
    for name, spec in type(settings).model_fields.items():
        alias = spec.validation_alias
        if not isinstance(alias, str):
            continue
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = ",".join(
                v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value
            )
        env[alias] = str(value)
    return env


class ServiceProcess:
    """``python -m file_svc`` as a child process with the given settings."""

    def __init__(self, settings: Any, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FILE_", "S3_", "AWS_"))},
            **environment_of(settings),
            "FILE_PORT": str(self.port),
            "LOG_LEVEL": "WARNING",
        }
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "file_svc"], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError("file service exited: " + self.log_path.read_text()[-3000:])
                try:
                    async with session.get(self.url + "/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(
            "the file service did not become ready: " + self.log_path.read_text()[-3000:]
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
