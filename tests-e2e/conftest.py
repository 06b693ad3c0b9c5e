"""The e2e harness: the whole suite started the way `make run` starts it, driven as a client.

- The processes and their environment come from ``switchyard.devtools.run.plan`` —
  the launcher behind `make run` — so what runs here is what a newcomer runs:
  every service under ``services/`` (``python -m <name>_svc``), the embedded
  MongoDB-wire server, the machine's RabbitMQ at ``AMQP_URL``.
- Differences, all for isolation from other runs on the same machine: free ports
  instead of 8080–8085 (the gateway is told where its upstreams are), a scratch
  state directory (store, generated keys), a private exchange and queue prefix,
  and SMTP pointed at an aiosmtpd sink owned by the test instead of the launcher's
  mail sink.
- Ready means: each service answers ``/readyz`` with 200 on its own port, and the
  gateway does too. The journeys themselves use only HTTP to the gateway and what
  arrives by email.

A service the journeys need that does not exist yet is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from switchyard.devtools.run import SERVICE_PORTS, available_services, plan, repo_root
from switchyard.testing import SmtpSink
from switchyard.testing.servers import delete_exchange, free_port
from switchyard.testing.smtp import ReceivedMail

NEEDED = ("gateway", "auth", "chat", "notification", "file", "payments")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The hook sees every item of the session (`make test` collects all directories at once):
    # mark only this directory's.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed journey's report carries the end of every service's log."""
    outcome = yield
    report = outcome.get_result()
    funcargs = getattr(item, "funcargs", {})
    suite = funcargs.get("suite") or getattr(funcargs.get("staged_suite"), "suite", None)
    if report.when == "call" and report.failed and isinstance(suite, Suite):
        for name in suite.processes:
            report.sections.append((f"{name} log (last lines)", suite.log_tail(name, 30)))


@dataclass
class Suite:
    """The running suite as a client sees it: the gateway's URL and the inbox."""

    gateway: str
    inbox: SmtpSink
    state: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    async def mail(self, to: str, subject: str, *, timeout: float = 30.0) -> ReceivedMail:
        """The first message to ``to`` whose subject contains ``subject``."""
        return await self.inbox.wait_for(
            lambda m: to in m.recipients and subject in m.subject, timeout=timeout
        )

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.state / "logs" / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _start(
    name: str, command: str, env: dict[str, str], root: Path, logs: Path
) -> subprocess.Popen[bytes]:
    log = (logs / f"{name}.log").open("ab")
    try:
        return subprocess.Popen(
            shlex.split(command),
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )
    finally:
        log.close()


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    # Services first, the store last, like honcho does on Ctrl-C.
    order = [n for n in processes if n != "mongo"] + [n for n in processes if n == "mongo"]
    for name in order:
        process = processes[name]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for name in order:
        process = processes[name]
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


async def _ready(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=3)) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _wait_until_ready(suite: Suite, urls: dict[str, str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    pending = dict(urls)
    async with aiohttp.ClientSession() as http:
        while pending:
            for name, process in suite.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with status {process.returncode} during start-up:\n"
                        + suite.log_tail(name)
                    )
            for name, url in list(pending.items()):
                if await _ready(http, url):
                    del pending[name]
            if pending and time.monotonic() > deadline:
                tails = "\n\n".join(f"--- {n} ---\n{suite.log_tail(n)}" for n in pending)
                raise TimeoutError(
                    f"not ready within {START_TIMEOUT:.0f}s: {', '.join(pending)}\n{tails}"
                )
            await asyncio.sleep(0.5)


def _without_owned_keys(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment minus what the harness must own for isolation: ports,
    service URLs and upstreams, the store (a fresh embedded one per run) and shared
    rate-limit state. Anything else (AMQP_URL, LOG_LEVEL, …) still passes through."""
    owned_prefixes = tuple(f"{name.upper()}_" for name in SERVICE_PORTS)
    return {
        key: value
        for key, value in environ.items()
        if not (
            (key.startswith(owned_prefixes) and key.endswith(("_PORT", "_URL")))
            or (key.startswith("GATEWAY_") and key.endswith("_UPSTREAMS"))
            or key in ("MONGO_URL", "MONGO_DATABASE", "RATE_LIMIT_REDIS_URL", "JWKS_URL")
        )
    }


@pytest.fixture(scope="session")
def inbox() -> Iterator[SmtpSink]:
    """The mail server every service sends to during the e2e run."""
    with SmtpSink() as sink:
        yield sink


def _environ(inbox: SmtpSink, run_id: str, ports: dict[str, int], root: Path) -> dict[str, str]:
    """The environment of one isolated run: its exchange and queue prefix, mail to ``inbox``."""
    environ = {
        **_without_owned_keys(os.environ),
        "AMQP_URL": os.environ.get("AMQP_URL", DEFAULT_AMQP_URL),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(inbox.port),
        "SMTP_SECURITY": "none",
        "BUS_EXCHANGE": f"switchyard.events.{run_id}",
        "BUS_QUEUE_PREFIX": f"{run_id}.",
        "BUS_QUEUE_EXPIRES_MS": "120000",
        "BUS_QUEUE_TYPE": "classic",
        "SOCKETIO_EXCHANGE": f"switchyard.socketio.{run_id}",
        "LOG_FORMAT": "console",
        # The admin listener too: 9080 may be a `make run` on the same machine.
        "GATEWAY_ADMIN_PORT": str(free_port()),
    }
    # The gateway's route file names the default ports; point it at this run's.
    for name in available_services(root):
        if name != "gateway":
            environ[f"GATEWAY_{name.upper()}_UPSTREAMS"] = f"http://127.0.0.1:{ports[name]}"
    return environ


@pytest.fixture(scope="session")
async def suite(inbox: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Suite]:
    root = repo_root()
    missing = [name for name in NEEDED if name not in available_services(root)]
    if missing:
        pytest.fail(
            f"the journeys need these services, which do not exist yet: {', '.join(missing)}"
        )
    state = tmp_path_factory.mktemp("suite")
    (state / "logs").mkdir()
    ports = {name: free_port() for name in (*SERVICE_PORTS, "mongo")}
    environ = _environ(inbox, "e2e" + uuid.uuid4().hex[:10], ports, root)
    the_plan = plan(root, environ, state=state, ports=ports, with_mail_sink=False)
    suite = Suite(gateway=f"http://127.0.0.1:{ports['gateway']}", inbox=inbox, state=state)
    try:
        if "mongo" in the_plan.processes:  # the store first, as the services connect to it
            suite.processes["mongo"] = _start(
                "mongo", the_plan.processes["mongo"], the_plan.env, root, state / "logs"
            )
        for name, command in the_plan.processes.items():
            if name != "mongo":
                suite.processes[name] = _start(name, command, the_plan.env, root, state / "logs")
        urls = {
            name: f"http://127.0.0.1:{ports[name]}/readyz"
            for name in the_plan.processes
            if name in SERVICE_PORTS
        }
        await _wait_until_ready(suite, urls)
        yield suite
    finally:
        await asyncio.to_thread(_stop, suite.processes)
        await delete_exchange(environ["AMQP_URL"], environ["BUS_EXCHANGE"])
        await delete_exchange(environ["AMQP_URL"], environ["SOCKETIO_EXCHANGE"])


@dataclass
class StagedSuite:
    """A run of its own whose processes the test starts one by one (``start``), to stage
    what a fresh deploy does: services coming up in any order, minutes apart."""

    suite: Suite
    root: Path
    env: dict[str, str]
    commands: dict[str, str]
    ports: dict[str, int]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def start(self, *names: str) -> None:
        for name in names:
            self.suite.processes[name] = _start(
                name, self.commands[name], self.env, self.root, self.suite.state / "logs"
            )
        urls = {n: f"{self.url(n)}/readyz" for n in names if n in SERVICE_PORTS}
        await _wait_until_ready(self.suite, urls)


@pytest.fixture
async def staged_suite(tmp_path: Path) -> AsyncIterator[StagedSuite]:
    """Nothing running yet but the store; ``await staged.start("auth")`` and so on. Extra
    settings for the run go into ``staged.env`` before the first start."""
    root = repo_root()
    (tmp_path / "logs").mkdir()
    ports = {name: free_port() for name in (*SERVICE_PORTS, "mongo")}
    with SmtpSink() as inbox:
        environ = _environ(inbox, "e2s" + uuid.uuid4().hex[:10], ports, root)
        the_plan = plan(root, environ, state=tmp_path, ports=ports, with_mail_sink=False)
        suite = Suite(gateway=f"http://127.0.0.1:{ports['gateway']}", inbox=inbox, state=tmp_path)
        staged = StagedSuite(suite, root, the_plan.env, the_plan.processes, ports)
        try:
            if "mongo" in the_plan.processes:
                suite.processes["mongo"] = _start(
                    "mongo", the_plan.processes["mongo"], the_plan.env, root, tmp_path / "logs"
                )
            yield staged
        finally:
            await asyncio.to_thread(_stop, suite.processes)
            await delete_exchange(environ["AMQP_URL"], environ["BUS_EXCHANGE"])


@pytest.fixture
async def client(suite: Suite) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client of the gateway, as an app would hold one."""
    async with aiohttp.ClientSession(suite.gateway) as session:
        yield session
