"""File service benchmark: MB/s of a 50 MiB file up and down, and memory during a 1 GiB upload.

``uv run python -m benchmarks file``

- the file service (``python -m file_svc``, local storage in a temp directory, embedded
  store, the machine's RabbitMQ) and the gateway (``python -m gateway_svc``, one worker,
  the packaged route table with the files route's body limit raised to 2 GiB for the
  1 GiB upload) run as their own processes;
- curl is the client for every transfer (one connection, ``-o /dev/null``), so the
  client costs the same in each case; each transfer runs ``ROUNDS`` times, the median counts;
- downloads of the same stored 50 MiB blob: nginx serving the file from disk (one worker,
  sendfile: the ceiling), the file service directly, and through the gateway;
- uploads of the 50 MiB file (multipart, as apps send it) directly and through the
  gateway;
- memory: RSS of the file service and of the gateway worker sampled every 20 ms during
  a 1 GiB upload through the gateway, growth over the RSS after a warm-up upload.

Targets: download through the gateway >= 0.5x nginx; RSS growth < 64 MiB for each process.
Needs nginx and curl (Debian packages).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from benchmarks.gateway import NGINX, _children, _free_port, _nginx, _rss, _wait_port
from benchmarks.rows import row
from switchyard.mongo.embedded import EmbeddedMongo
from switchyard.testing import JwksServer
from switchyard.testing.jwks import TEST_INTERNAL_TOKEN
from switchyard.testing.servers import delete_exchange

MIB = 1024 * 1024
FILE_BYTES = 50 * MIB
BIG_BYTES = 1024 * MIB
ROUNDS = 3
TARGET_DOWNLOAD_RATIO = 0.5
TARGET_RSS_GROWTH_MIB = 64
CURL = shutil.which("curl")
REPO = Path(__file__).resolve().parent.parent
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PACKAGED_ROUTES = REPO / "services/gateway/src/gateway_svc/routes.yaml"


def _write_file(path: Path, size: int) -> None:
    """A PDF-looking file (the service stores PDFs as they are) of ``size`` bytes."""
    block = b"%PDF-1.7\n" + os.urandom(MIB - 9)
    with path.open("wb") as out:
        left = size
        while left > 0:
            out.write(block[: min(left, MIB)])
            left -= MIB


def _curl(args: list[str]) -> dict[str, float]:
    output = subprocess.run(
        [
            CURL or "curl",
            "-s",
            "-S",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{speed_download} %{speed_upload}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    ).stdout.split()
    status, down, up = int(output[0]), float(output[1]), float(output[2])
    if status >= 300:
        raise RuntimeError(f"curl {args[-1]} answered {status}")
    return {"status": status, "down_mbs": down / MIB, "up_mbs": up / MIB}


def _upload_args(url: str, path: Path, token: str) -> list[str]:
    return [
        "-H",
        f"Authorization: Bearer {token}",
        "-F",
        "purpose=attachment",
        "-F",
        f"file=@{path};filename=bench.pdf;type=application/pdf",
        url,
    ]


def _upload_for_id(url: str, path: Path, token: str) -> str:
    output = subprocess.run(
        [CURL or "curl", "-s", "-S", "--fail", *_upload_args(url, path, token)],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    ).stdout
    return str(json.loads(output)["id"])


def _median(runs: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(run[key] for run in runs), 1)


@contextlib.contextmanager
def _process(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _routes_file(workdir: Path) -> Path:
    table = yaml.safe_load(PACKAGED_ROUTES.read_text())
    for route in table["routes"]:
        if route["name"] == "files":
            route["max_body_bytes"] = 2 * BIG_BYTES
            route["timeout"] = 600
    path = workdir / "routes.yaml"
    path.write_text(yaml.safe_dump(table))
    return path


def _nginx_config(port: int, root: Path, workdir: Path) -> str:
    return f"""
worker_processes 1;
daemon off;
master_process on;
pid {workdir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  server {{
    listen 127.0.0.1:{port};
    location /blobs/ {{ root {root}; default_type application/pdf; }}
  }}
}}
"""


def _sample_rss(pids: dict[str, int], stop: threading.Event, peaks: dict[str, int]) -> None:
    while not stop.is_set():
        for name, pid in pids.items():
            peaks[name] = max(peaks.get(name, 0), _rss(pid))
        time.sleep(0.02)


async def run() -> list[dict[str, Any]]:
    if CURL is None or NGINX is None:
        return [
            row(
                "file",
                "download via gateway vs nginx",
                None,
                TARGET_DOWNLOAD_RATIO,
                "ratio",
                "not run: curl and nginx are needed (apt-get install -y curl nginx)",
            )
        ]
    # World-readable: nginx's worker (an unprivileged user) reads the stored blob.
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="file-bench-"))
    await asyncio.to_thread(os.chmod, workdir, 0o755)
    keys = await JwksServer(issuer="bench", audience="switchyard", lifetime=7200).start()
    exchange = f"switchyard.events.bench-file-{uuid.uuid4().hex[:8]}"
    try:
        with EmbeddedMongo(workdir / "mongo") as mongo:
            return await asyncio.to_thread(_measure_all, workdir, keys, mongo.url, exchange)
    finally:
        await keys.stop()
        await delete_exchange(AMQP_URL, exchange)
        shutil.rmtree(workdir, ignore_errors=True)


def _measure_all(
    workdir: Path, keys: JwksServer, mongo_url: str, exchange: str
) -> list[dict[str, Any]]:
    storage = workdir / "files"
    file_port, gateway_port, nginx_port = _free_port(), _free_port(), _free_port()
    token = keys.token("bench-user", ["customer"])
    base_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FILE_", "GATEWAY_"))},
        "SWITCHYARD_ENV": "test",
        "LOG_LEVEL": "WARNING",
        "JWKS_URL": keys.jwks_url,
        "AUTH_ISSUER": "bench",
        "JWT_AUDIENCE": "switchyard",
        "INTERNAL_API_TOKEN": TEST_INTERNAL_TOKEN,  # the revoked-session list of JwksServer
        "AMQP_URL": AMQP_URL,
        "BUS_EXCHANGE": exchange,
        "BUS_QUEUE_PREFIX": exchange + ".",
        "BUS_QUEUE_EXPIRES_MS": "60000",
    }
    file_env = {
        **base_env,
        "FILE_PORT": str(file_port),
        "FILE_STORAGE": str(storage),
        "FILE_SPOOL_DIR": str(workdir / "spool"),
        "FILE_MAX_BYTES": str(2 * BIG_BYTES),
        "FILE_QUOTA_BYTES": str(64 * BIG_BYTES),
        "MONGO_URL": mongo_url,
        "MONGO_DATABASE": "file_bench",
    }
    gateway_env = {
        **base_env,
        "GATEWAY_PORT": str(gateway_port),
        "GATEWAY_ADMIN_PORT": "0",  # the admin listener on any free port
        "GATEWAY_WORKERS": "1",
        "GATEWAY_ROUTES_FILE": str(_routes_file(workdir)),
        "GATEWAY_FILE_UPSTREAMS": f"http://127.0.0.1:{file_port}",
        "GATEWAY_ACCESS_LOG": "off",
    }
    gateway_env.pop("RATE_LIMIT_REDIS_URL", None)
    small, big = workdir / "50mib.pdf", workdir / "1gib.pdf"
    _write_file(small, FILE_BYTES)
    direct_url = f"http://127.0.0.1:{file_port}/api/v1/files"
    gateway_url = f"http://127.0.0.1:{gateway_port}/api/v1/files"
    auth = ["-H", f"Authorization: Bearer {token}"]
    with (
        _process([sys.executable, "-m", "file_svc"], file_env, workdir / "file.log") as service,
        _process(
            [sys.executable, "-m", "gateway_svc"], gateway_env, workdir / "gateway.log"
        ) as gateway,
    ):
        _wait_ready(file_port)
        _wait_port(gateway_port)
        _wait_ready(gateway_port)  # takes tokens once it has read the revoked sessions
        file_id = _upload_for_id(direct_url, small, token)
        blob = next(storage.glob(f"blobs/*/*/{file_id}"))
        assert (
            hashlib.sha256(blob.read_bytes()).digest()
            == hashlib.sha256(small.read_bytes()).digest()
        )

        uploads: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
        downloads: dict[str, list[dict[str, float]]] = {"nginx": [], "direct": [], "gateway": []}
        with _nginx(_nginx_config(nginx_port, storage, workdir), workdir, "files"):
            _wait_port(nginx_port)
            content = f"/api/v1/files/{file_id}/content"
            targets = {
                "nginx": [f"http://127.0.0.1:{nginx_port}/{blob.relative_to(storage)}"],
                "direct": [*auth, f"http://127.0.0.1:{file_port}{content}"],
                "gateway": [*auth, f"http://127.0.0.1:{gateway_port}{content}"],
            }
            for name in downloads:  # warm-up: page cache, connection pools
                _curl(targets[name])
            for _ in range(ROUNDS):  # interleaved, so machine load hits each alike
                for name, args in targets.items():
                    downloads[name].append(_curl(args))
                uploads["direct"].append(_curl(_upload_args(direct_url, small, token)))
                uploads["gateway"].append(_curl(_upload_args(gateway_url, small, token)))

        _write_file(big, BIG_BYTES)
        pids = {
            "file service": service.pid,
            "gateway": (_children(gateway.pid) or [gateway.pid])[0],
        }
        baseline = {name: _rss(pid) for name, pid in pids.items()}
        peaks: dict[str, int] = dict(baseline)
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_rss, args=(pids, stop, peaks))
        sampler.start()
        try:
            big_upload = _curl(_upload_args(gateway_url, big, token))
        finally:
            stop.set()
            sampler.join()
    return _rows(uploads, downloads, big_upload, baseline, peaks)


def _wait_ready(port: int, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise TimeoutError(f"127.0.0.1:{port} did not become ready")


def _rows(
    uploads: dict[str, list[dict[str, float]]],
    downloads: dict[str, list[dict[str, float]]],
    big_upload: dict[str, float],
    baseline: dict[str, int],
    peaks: dict[str, int],
) -> list[dict[str, Any]]:
    note = f"50 MiB, curl, median of {ROUNDS}"
    nginx = _median(downloads["nginx"], "down_mbs")
    via_gateway = _median(downloads["gateway"], "down_mbs")
    direct_up = _median(uploads["direct"], "up_mbs")
    rows = [
        row(
            "file",
            "download: nginx from disk",
            nginx,
            None,
            "MiB/s",
            f"{note}; sendfile, the ceiling",
        ),
        row(
            "file",
            "download: file service direct",
            _median(downloads["direct"], "down_mbs"),
            nginx,
            "MiB/s",
            f"{note}; baseline = nginx",
        ),
        row(
            "file",
            "download: through the gateway",
            via_gateway,
            nginx,
            "MiB/s",
            f"{note}; baseline = nginx",
        ),
        row(
            "file",
            "download gateway/nginx",
            round(via_gateway / nginx, 3),
            TARGET_DOWNLOAD_RATIO,
            "ratio",
            "target >= 0.5 "
            + ("(met)" if via_gateway / nginx >= TARGET_DOWNLOAD_RATIO else "(NOT met)"),
        ),
        row(
            "file",
            "upload: file service direct",
            direct_up,
            None,
            "MiB/s",
            f"{note}; multipart, sha256 + fsync",
        ),
        row(
            "file",
            "upload: through the gateway",
            _median(uploads["gateway"], "up_mbs"),
            direct_up,
            "MiB/s",
            f"{note}; baseline = direct",
        ),
        row(
            "file",
            "upload 1 GiB through the gateway",
            round(big_upload["up_mbs"], 1),
            None,
            "MiB/s",
            "one run",
        ),
    ]
    for name in ("file service", "gateway"):
        growth = (peaks[name] - baseline[name]) / MIB
        rows.append(
            row(
                "file",
                f"RSS growth of the {name}, 1 GiB upload",
                round(growth, 1),
                TARGET_RSS_GROWTH_MIB,
                "MiB",
                f"from {baseline[name] / MIB:.0f} MiB; target < 64 "
                + ("(met)" if growth < TARGET_RSS_GROWTH_MIB else "(NOT met)"),
            )
        )
    return rows
