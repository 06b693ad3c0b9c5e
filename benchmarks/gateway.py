"""Gateway benchmark: wrk against the upstream directly, nginx as a reverse proxy, and
the gateway (JWT verification and rate limiting on), same upstream, same machine.

``uv run python -c "import asyncio, benchmarks.gateway as b; print(asyncio.run(b.run()))"``

- upstream: nginx answering ``return 200`` with a 32-byte JSON body (1 worker), so
  the proxies, not the upstream, are what is measured;
- nginx proxy: ``proxy_pass`` with a keep-alive upstream pool, X-Forwarded-* set and a
  buffered access log, ``worker_processes`` = the gateway's worker count;
- gateway: ``python -m gateway_svc`` with GATEWAY_WORKERS workers, every request
  carrying a bearer token (verified once, then from the cache) on an authenticated
  route with a rate-limit policy whose quota is too large to refuse anything (so every
  request is checked and gets RateLimit headers, none is a cheap 429), access log on;
- core split: none. wrk (2 threads, 64 connections), the upstream and the proxy share
  the machine's two cores, identically for nginx and the gateway. Throughput is
  therefore "what the whole box does with this proxy in it"; CPU time per request of
  the proxy processes is reported as well, the proxy's own cost;
- memory: RSS of one gateway worker while 1,000 connections are open and busy.

With ``BENCH_GATEWAY_TRACING=1`` the gateway exports its server spans (one per request)
over OTLP/HTTP to a local receiver (``OTEL_EXPORTER_OTLP_ENDPOINT``) that only counts them:
the ratio with tracing on (issue 12 item 6).

Needs the Debian packages ``wrk`` and ``nginx`` (``apt-get install -y wrk nginx``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.rows import row
from switchyard.testing import JwksServer
from switchyard.testing.jwks import TEST_INTERNAL_TOKEN
from switchyard.testing.otlp import OtlpReceiver

WORKERS = 2
WRK_THREADS = 2
WRK_CONNECTIONS = 64
WRK_SECONDS = 10
WARMUP_SECONDS = 2
MEMORY_CONNECTIONS = 1000
TARGET_THROUGHPUT_RATIO = 0.5
TARGET_P99_RATIO = 2.0
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
WRK = shutil.which("wrk")
REPO = Path(__file__).resolve().parent.parent
TRACING = os.environ.get("BENCH_GATEWAY_TRACING") == "1"


_row = row


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _millis(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def _wrk(url: str, headers: dict[str, str], seconds: int, connections: int) -> dict[str, float]:
    command = [WRK or "wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(
        command + [url], capture_output=True, text=True, timeout=seconds + 30
    ).stdout
    result: dict[str, float] = {}
    for line in output.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(parts[1])
        elif parts[:1] == ["50%"]:
            result["p50"] = _millis(parts[1])
        elif parts[:1] == ["99%"]:
            result["p99"] = _millis(parts[1])
        elif "requests in" in line:
            result["requests"] = float(parts[0])
        elif line.strip().startswith("Non-2xx"):
            result["non2xx"] = float(parts[-1])
    if "rps" not in result:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    return result


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / ticks


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _measure(url: str, headers: dict[str, str], pids: list[int]) -> dict[str, float]:
    _wrk(url, headers, WARMUP_SECONDS, WRK_CONNECTIONS)
    cpu_before = _cpu_seconds(pids)
    result = _wrk(url, headers, WRK_SECONDS, WRK_CONNECTIONS)
    used = _cpu_seconds(pids) - cpu_before
    result["cpu_us_per_request"] = (
        used / result["requests"] * 1e6 if result.get("requests") else 0.0
    )
    return result


@contextlib.contextmanager
def _nginx(config: str, workdir: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    path = workdir / f"{name}.conf"
    path.write_text(config)
    process = subprocess.Popen(
        [
            NGINX or "nginx",
            "-c",
            str(path),
            "-p",
            str(workdir),
            "-e",
            str(workdir / f"{name}.error.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _upstream_config(port: int, workdir: Path) -> str:
    return f"""
worker_processes 1;
daemon off;
master_process on;
pid {workdir}/upstream.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    keepalive_requests 1000000;
    location / {{ default_type application/json; return 200 '{{"ok":true,"service":"upstream"}}'; }}
  }}
}}
"""


def _proxy_config(port: int, upstream_port: int, workdir: Path) -> str:
    return f"""
worker_processes {WORKERS};
daemon off;
master_process on;
pid {workdir}/proxy.pid;
events {{ worker_connections 8192; }}
http {{
  log_format json escape=json '{{"time":"$time_iso8601","request_id":"$request_id",'
                              '"method":"$request_method","path":"$uri","status":$status,'
                              '"duration_ms":$request_time,'
                              '"upstream_ms":"$upstream_response_time","client_ip":"$remote_addr"}}';
  access_log {workdir}/nginx-access.log json buffer=64k flush=1s;
  upstream bench {{ server 127.0.0.1:{upstream_port}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Request-ID $request_id;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      add_header X-Request-ID $request_id always;
      add_header X-Content-Type-Options nosniff always;
    }}
  }}
}}
"""


def _routes_file(upstream_port: int, workdir: Path) -> Path:
    path = workdir / "routes.yaml"
    path.write_text(
        f"""
upstreams:
  bench: {{urls: ["http://127.0.0.1:{upstream_port}"]}}
rate_limits:
  default: {{limit: 1000000000, window: 60}}
routes:
  - {{name: bench, upstream: bench, prefix: /api/v1/chat, auth: required, rate_limit: default}}
"""
    )
    return path


def _missing_tools_rows() -> list[dict[str, Any]]:
    missing = [name for name, path in (("wrk", WRK), ("nginx", NGINX)) if path is None]
    note = (
        f"not run: {', '.join(missing)} missing; install the Debian packages with "
        "`apt-get install -y wrk nginx` and run again"
    )
    return [_row("gateway", "throughput vs nginx", None, TARGET_THROUGHPUT_RATIO, "ratio", note)]


async def run() -> list[dict[str, Any]]:
    if WRK is None or NGINX is None:
        return _missing_tools_rows()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    # Auth's JWKS endpoint for the gateway; the token lives an hour, longer than the run.
    keys = await JwksServer(issuer="bench", audience="switchyard", lifetime=3600).start()
    receiver = await OtlpReceiver(decode=False).start() if TRACING else None
    otlp = receiver.url if receiver is not None else None
    headers = {"Authorization": f"Bearer {keys.token('bench-user', ['customer'])}"}
    upstream_port, nginx_port, gateway_port = _free_port(), _free_port(), _free_port()
    path = "/api/v1/chat/conversations"
    try:
        with _nginx(_upstream_config(upstream_port, workdir), workdir, "upstream") as upstream:
            _wait_port(upstream_port)
            upstream_pids = [upstream.pid, *_children(upstream.pid)]
            direct = await asyncio.to_thread(
                _measure, f"http://127.0.0.1:{upstream_port}{path}", headers, upstream_pids
            )
            with _nginx(
                _proxy_config(nginx_port, upstream_port, workdir), workdir, "proxy"
            ) as proxy:
                _wait_port(nginx_port)
                nginx_pids = _children(proxy.pid)
                nginx = await asyncio.to_thread(
                    _measure, f"http://127.0.0.1:{nginx_port}{path}", headers, nginx_pids
                )
            gateway, memory = await asyncio.to_thread(
                _run_gateway, gateway_port, upstream_port, keys.jwks_url, headers, workdir, otlp
            )
    finally:
        await keys.stop()
        if receiver is not None:
            await receiver.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    rows = _rows(direct, nginx, gateway, memory)
    if receiver is not None:
        rows.append(
            _row(
                "gateway",
                "spans exported",
                receiver.span_count,
                None,
                "spans",
                f"OTLP/HTTP to a local receiver, {receiver.requests} batches "
                f"({receiver.bytes / 2**20:.1f} MiB); tracing on for every gateway row above",
            )
        )
    return rows


def _run_gateway(
    port: int,
    upstream_port: int,
    jwks_url: str,
    headers: dict[str, str],
    workdir: Path,
    otlp: str | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    env = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "GATEWAY_ADMIN_PORT": str(_free_port()),
        "INTERNAL_API_TOKEN": TEST_INTERNAL_TOKEN,  # the revoked-session list of JwksServer
        "GATEWAY_WORKERS": str(WORKERS),
        "GATEWAY_ROUTES_FILE": str(_routes_file(upstream_port, workdir)),
        "GATEWAY_ACCESS_LOG": str(workdir / "gateway-access.log"),
        "JWKS_URL": jwks_url,
        "AUTH_ISSUER": "bench",
        "JWT_AUDIENCE": "switchyard",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("RATE_LIMIT_REDIS_URL", None)
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    if otlp is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
    else:
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    with (workdir / "gateway.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway_svc"], env=env, cwd=REPO, stdout=log, stderr=log
        )
    try:
        _wait_port(port)
        time.sleep(0.5)
        workers = _children(process.pid)
        url = f"http://127.0.0.1:{port}/api/v1/chat/conversations"
        result = _measure(url, headers, workers)
        idle = max(_rss(pid) for pid in workers)
        peak = idle
        done = False

        def sample() -> None:
            nonlocal peak
            while not done:
                peak = max([peak, *(_rss(pid) for pid in workers)])
                time.sleep(0.1)

        import threading

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            loaded = _wrk(url, headers, 5, MEMORY_CONNECTIONS)
        finally:
            done = True
            sampler.join()
        memory = {
            "idle": idle,
            "peak": peak,
            "rps": loaded["rps"],
            "non2xx": loaded.get("non2xx", 0.0),
        }
        return result, memory
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _rows(
    direct: dict[str, float],
    nginx: dict[str, float],
    gateway: dict[str, float],
    memory: dict[str, float],
) -> list[dict[str, Any]]:
    load = f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s, no core pinning"
    rows = []
    for name, result, baseline, note in (
        ("upstream direct", direct, None, f"nginx `return 200`, 1 worker; {load}"),
        ("nginx proxy", nginx, None, f"proxy_pass, {WORKERS} workers, keep-alive pool; {load}"),
        (
            "gateway",
            gateway,
            nginx,
            f"{WORKERS} workers, JWT + rate limit + access log on; baseline = nginx",
        ),
    ):
        rows.append(
            _row(
                "gateway",
                f"{name} req/s",
                round(result["rps"]),
                baseline and round(baseline["rps"]),
                "req/s",
                note,
            )
        )
        rows.append(
            _row("gateway", f"{name} p50", result["p50"], baseline and baseline["p50"], "ms", note)
        )
        rows.append(
            _row("gateway", f"{name} p99", result["p99"], baseline and baseline["p99"], "ms", note)
        )
    throughput_ratio = gateway["rps"] / nginx["rps"]
    p99_ratio = gateway["p99"] / nginx["p99"]
    rows.append(
        _row(
            "gateway",
            "throughput gateway/nginx",
            round(throughput_ratio, 3),
            TARGET_THROUGHPUT_RATIO,
            "ratio",
            "target >= 0.5 "
            + ("(met)" if throughput_ratio >= TARGET_THROUGHPUT_RATIO else "(NOT met)"),
        )
    )
    rows.append(
        _row(
            "gateway",
            "p99 gateway/nginx",
            round(p99_ratio, 3),
            TARGET_P99_RATIO,
            "ratio",
            "same wrk load (connections, threads); target <= 2 "
            + ("(met)" if p99_ratio <= TARGET_P99_RATIO else "(NOT met)"),
        )
    )
    rows.append(
        _row(
            "gateway",
            "proxy CPU per request",
            round(gateway["cpu_us_per_request"], 1),
            round(nginx["cpu_us_per_request"], 1),
            "us",
            "user+sys time of the proxy's worker processes / requests; baseline = nginx",
        )
    )
    rows.append(
        _row(
            "gateway",
            f"RSS of one worker, {MEMORY_CONNECTIONS} connections",
            round(memory["peak"] / 2**20, 1),
            round(memory["idle"] / 2**20, 1),
            "MiB",
            f"peak over a 5 s wrk -c{MEMORY_CONNECTIONS} run ({memory['rps']:.0f} req/s);"
            " baseline = idle",
        )
    )
    return rows


if __name__ == "__main__":
    for row in asyncio.run(run()):
        print(row)
