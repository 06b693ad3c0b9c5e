"""Fixtures of the file service's tests: one suite, two storage backends.

Every test that takes ``stack`` runs twice — against a local directory and against S3
(a moto server on loopback) — through a real gateway (the packaged route table, the
file upstream pointed at the test's service) in front of the real service, on the real
broker and the embedded store.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from file_svc import keys
from file_svc.adapters.local_storage import LocalBlobStore
from file_svc.adapters.s3_storage import S3BlobStore
from file_svc.app import create_app
from file_svc.deps import FileDeps
from file_svc.settings import FileSettings
from gateway_svc.app import Gateway
from gateway_svc.app import create_app as create_gateway
from gateway_svc.settings import GatewaySettings
from switchyard.testing import AppServer, JwksServer, settings_builder
from switchyard.testing.jwks import TEST_INTERNAL_TOKEN
from switchyard.testing.servers import free_port

from .support import S3_CREDENTIALS, FileApi, MotoServer

URL_SECRET = "test-file-url-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage_settings(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> dict[str, Any]:
    if backend == "local":
        return {"storage": str(tmp_path / "files")}
    moto: MotoServer = request.getfixturevalue("moto_server")
    bucket = "files-" + uuid.uuid4().hex[:12]
    return {
        "storage": f"s3://{bucket}/suite",
        "s3_endpoint_url": moto.url,
        "s3_create_bucket": True,
        "s3_part_bytes": 5 * 1024 * 1024,
        **S3_CREDENTIALS,
    }


@pytest.fixture
def file_settings(
    settings_overrides: dict[str, Any],
    jwks_server: JwksServer,
    storage_settings: dict[str, Any],
    tmp_path: Path,
) -> Callable[..., FileSettings]:
    return settings_builder(
        FileSettings,
        settings_overrides,
        storage_settings,
        jwks_server.auth_settings,
        {
            "url_secrets": URL_SECRET,
            "spool_dir": tmp_path / "spool",
            "sweep_interval": 3600,  # tests sweep when they choose to
        },
    )


@dataclass
class Stack:
    """The file service behind a gateway, and clients of both."""

    app: web.Application
    service: AppServer
    gateway: Gateway
    api: FileApi  # through the gateway, as apps call it
    direct: FileApi  # the service itself
    keys: JwksServer

    @property
    def deps(self) -> FileDeps:
        return self.app[keys.DEPS]

    def token(self, user_id: str, roles: tuple[str, ...] = ("customer",)) -> str:
        return self.keys.token(user_id, list(roles))

    async def sweep(self, grace: float | None = None) -> Any:
        return await self.app[keys.SWEEPER].sweep_once(grace=grace)


async def start_gateway(file_url: str, keys_server: JwksServer, **overrides: Any) -> Gateway:
    settings = GatewaySettings(
        environment="test",
        port=free_port(),
        admin_port=0,  # the admin listener on any free port
        internal_api_token=TEST_INTERNAL_TOKEN,  # the test JWKS server's revoked list
        file_upstreams=[file_url],
        jwks_url=keys_server.jwks_url,
        auth_issuer=keys_server.issuer,
        jwt_audience=keys_server.audience,
        access_log="off",
        shutdown_timeout=1.0,
        **overrides,
    )
    gateway = create_gateway(settings)
    await gateway.start()
    await gateway.revocations_read()  # it takes bearer tokens from then on
    return gateway


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as session:
        yield session


@pytest.fixture
async def start_stack(
    file_settings: Callable[..., FileSettings],
    start_app: Any,
    broker_cleanup: None,
    jwks_server: JwksServer,
    http: aiohttp.ClientSession,
) -> AsyncIterator[Callable[..., Any]]:
    """``stack = await start_stack(max_bytes=…)``: service (with overrides) + gateway."""
    gateways: list[Gateway] = []

    async def start(**overrides: Any) -> Stack:
        app = create_app(file_settings(**overrides))
        service = await start_app(app)
        gateway = await start_gateway(service.url, jwks_server)
        gateways.append(gateway)
        return Stack(
            app=app,
            service=service,
            gateway=gateway,
            api=FileApi(http, gateway.url),
            direct=FileApi(http, service.url),
            keys=jwks_server,
        )

    yield start
    for gateway in gateways:
        await gateway.stop(grace=0.5)


@pytest.fixture
async def stack(start_stack: Callable[..., Any]) -> Stack:
    result: Stack = await start_stack()
    return result


async def stored_objects(deps: FileDeps) -> set[str]:
    """Every committed object's key in the backend (blobs and thumbnails)."""
    inner = deps.storage.inner  # type: ignore[attr-defined]
    if isinstance(inner, LocalBlobStore):
        found = set()
        for top in ("blobs", "thumbs"):
            for path in (inner.root / top).rglob("*"):
                if path.is_file():
                    found.add(str(path.relative_to(inner.root)))
        return found
    assert isinstance(inner, S3BlobStore)
    found = set()
    paginator = inner.client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=inner.bucket, Prefix=inner.prefix):
        for item in page.get("Contents", []):
            found.add(item["Key"].removeprefix(inner.prefix))
    return found


async def leftovers(deps: FileDeps) -> dict[str, Any]:
    """What an unfinished upload could leave: temporaries, scratch files, upload records."""
    temporaries = await deps.storage.temporaries(older_than=4e9)
    scratch = (
        [p.name for p in deps.spool.directory.glob("*.spool")]
        if deps.spool.directory.exists()
        else []
    )
    uploading = await deps.records.collection.count_documents({"status": "uploading"})
    return {"temporaries": temporaries, "scratch": scratch, "uploading": uploading}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


__all__ = ["Stack", "URL_SECRET", "leftovers", "rss_bytes", "stored_objects"]


@pytest.fixture
async def file_events(settings_overrides: dict[str, Any]) -> AsyncIterator[Any]:
    """Every ``file.*`` event published on the test's exchange."""
    from switchyard.testing.events import tap_events

    tap = await tap_events(settings_overrides, "file.#")
    yield tap
    await tap.close()


@pytest.fixture
async def publish(settings_overrides: dict[str, Any]) -> AsyncIterator[Any]:
    """``await publish(envelope)``: an event as another service (auth, chat) sends it."""
    from switchyard.bus import Bus
    from switchyard.metrics import Metrics

    buses: dict[str, Bus] = {}

    async def send(envelope: Any) -> None:
        service = envelope.source.rsplit("/", 1)[-1]
        if service not in buses:
            buses[service] = Bus(
                url=settings_overrides["amqp_url"],
                exchange=settings_overrides["bus_exchange"],
                service=service,
                metrics=Metrics(service),
                queue_prefix=settings_overrides["bus_queue_prefix"],
                retry_delays=settings_overrides["bus_retry_delays"],
            )
            await buses[service].connect()
        await buses[service].publish(envelope)

    yield send
    for bus in buses.values():
        await bus.close()
