"""Contract fuzzing: schemathesis against a service's OpenAPI (``contracts/http/<service>.yaml``),
through the real app on loopback.

    result = await fuzz_contract(
        "auth",
        server.url,
        headers={"Authorization": f"Bearer {token}"},
        operation_headers={"^/internal/": {"Authorization": f"Bearer {internal}"}},
    )
    assert result.passed, result.report

Every check schemathesis has (``--checks all``: no server error, statuses, content types,
headers and bodies as documented, invalid input refused, valid input accepted, …) except
``ignored_auth`` (whether an operation still answers with its security removed: the tests pass
one token for the whole run, so a public operation that reads it would look "ignored"). The
run is bounded (``max_examples`` per operation, a fixed seed: the same cases every run) and
goes through the CLI in a subprocess, so the app keeps serving on the test's event loop.
``contracts/http/<service>.fuzz.toml``, when present, is its configuration: the refusals of
schema-valid input that come from rules JSON Schema cannot state, each with its reason.

The runs go through a real gateway in front of the service (:func:`gateway_in_front`: the
shipped route table, its upstream pointed at the service, rate limits raised), the way
clients reach the contract — so the gateway's own answers and rewrites are held to it too:

    async with gateway_in_front("payments", service.url, keys_server) as edge:
        result = await fuzz_contract("payments", edge, headers=...)

Every service also checks that its app serves exactly the operations its contract documents:

    assert_routes_match_contract(create_app(settings), "auth")

(``documented_operations`` and ``served_operations`` are the two sides, as sets of
``("GET", "/api/v1/...")``.)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from aiohttp import web
from pydantic import BaseModel

CONTRACTS = Path(__file__).resolve().parents[4] / "contracts" / "http"
DEFAULT_MAX_EXAMPLES = 8
SEED = 12
# Every service's, from switchyard.web: not part of any contract.
SHARED_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
_METHODS = frozenset({"get", "put", "post", "patch", "delete"})
# The undeclared methods schemathesis sends to every path, expecting 405: its defaults but
# QUERY. The gateway answers a method it does not implement with 501 before routing (RFC
# 9110 §9.1 and §15.6.2: a method the server does not recognise or implement → 501, as
# nginx and Envoy answer), and QUERY (an IETF draft, not an RFC 9110 method) is one of them:
# 501 is the correct answer there, not a server error and not a wrong 405. Every other
# undeclared method must still get 405 with Allow, through the gateway as from the service.
UNEXPECTED_METHODS = ["get", "put", "post", "delete", "options", "patch", "trace"]


@dataclass(frozen=True)
class FuzzResult:
    returncode: int
    report: str

    @property
    def passed(self) -> bool:
        return self.returncode == 0


def contract_path(service: str) -> Path:
    return CONTRACTS / f"{service}.yaml"


async def fuzz_contract(
    service: str,
    base_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    operation_headers: Mapping[str, Mapping[str, str]] | None = None,
    known_values: Mapping[str, Sequence[str | int]] | None = None,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    exclude_checks: Sequence[str] = (),
    exclude_paths: Sequence[str] = (),
    include_paths: Sequence[str] = (),
    phases: str = "examples,coverage,fuzzing",
    timeout: float = 600.0,
) -> FuzzResult:
    """Run schemathesis against ``service``'s contract at ``base_url``; the exit status and
    the whole report.

    ``known_values`` maps a parameter (``"path.id"``, ``"body.user_id"``, schemathesis's
    binding keys) to values that exist (a conversation the caller belongs to): the generator
    draws one of them three times in four, so cases reach past the 404 of a random id."""
    arguments = [
        "run",
        str(contract_path(service)),
        "--url",
        base_url,
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(["ignored_auth", *exclude_checks]),
        "--max-examples",
        str(max_examples),
        "--seed",
        str(SEED),
        "--phases",
        phases,
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-shrink",
        "--continue-on-failure",
    ]
    for name, value in (headers or {}).items():
        arguments += ["--header", f"{name}: {value}"]
    for path in exclude_paths:
        arguments += ["--exclude-path", path]
    for path in include_paths:
        arguments += ["--include-path", path]
    config = CONTRACTS / f"{service}.fuzz.toml"
    text = config.read_text() if config.is_file() else ""
    text += f"\n[phases.coverage]\nunexpected-methods = {json.dumps(UNEXPECTED_METHODS)}\n"
    for pattern, extra in (operation_headers or {}).items():
        # Headers for some operations only (a token for them), as TOML (JSON strings are
        # TOML basic strings).
        pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in extra.items())
        text += f"\n[[operations]]\ninclude-path-regex = {json.dumps(pattern)}\n"
        text += f"headers = {{ {pairs} }}\n"
    bindings = ""
    for index, (key, values) in enumerate((known_values or {}).items()):
        text += f"\n[dictionaries.known{index}]\nvalues = {json.dumps(list(values))}\n"
        bindings += f'{json.dumps(key)} = {{ dictionary = "known{index}", probability = 0.75 }}\n'
    if bindings:
        text += f"\n[parameters]\n{bindings}"
    # Its own working directory: schemathesis keeps a cache (.schemathesis/) where it runs.
    workdir = tempfile.mkdtemp(prefix="schemathesis-")
    config_file = os.path.join(workdir, "schemathesis.toml")
    with open(config_file, "w") as written:  # noqa: ASYNC230 - a small file, before the run
        written.write(text)
    prefix = ["--config-file", config_file]
    command = Path(sys.executable).with_name("schemathesis")
    process = await asyncio.create_subprocess_exec(
        str(command),
        *prefix,
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=workdir,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return FuzzResult(process.returncode or 0, output.decode(errors="replace"))


class TokenKeys(Protocol):
    """Where the gateway gets the keys of the tokens the run sends (a ``JwksServer``)."""

    @property
    def jwks_url(self) -> str: ...

    issuer: str
    audience: str


@asynccontextmanager
async def gateway_in_front(
    service: str,
    service_url: str,
    keys: TokenKeys,
    overrides: Mapping[str, Any],
    *,
    verifier: Any = None,
) -> AsyncIterator[str]:
    """A real gateway on loopback (its shipped route table) whose ``service`` upstream is
    ``service_url``, on the test's broker namespace (``settings_overrides``: it follows
    session revocations there) and its admin listener on a free port; yields its base URL.
    Only the rate limits are raised: a fuzz run is hundreds of requests from one address,
    and the limits are the gateway's tests' subject. ``verifier`` replaces the gateway's
    token verifier (one on a test's clock)."""
    from gateway_svc.app import create_app
    from gateway_svc.settings import GatewaySettings
    from switchyard.testing.gateway import gateway_namespace, raised_limits_routes
    from switchyard.testing.servers import free_port

    workdir = tempfile.mkdtemp(prefix="gateway-routes-")
    routes = raised_limits_routes(Path(workdir))
    upstreams: dict[str, Any] = {f"{service}_upstreams": [service_url]}
    settings = GatewaySettings(
        **gateway_namespace(overrides),
        environment="test",
        port=free_port(),
        admin_port=0,
        routes_file=routes,
        jwks_url=keys.jwks_url,
        auth_issuer=keys.issuer,
        jwt_audience=keys.audience,
        access_log="off",
        shutdown_timeout=1.0,
        **upstreams,
    )
    gateway = create_app(settings, verifier=verifier)
    await gateway.start()
    await gateway.revocations_read()  # it takes bearer tokens from then on
    try:
        yield gateway.url
    finally:
        await gateway.stop(grace=0.5)
        shutil.rmtree(workdir, ignore_errors=True)


def load_contract(service: str) -> dict[str, Any]:
    """``contracts/http/<service>.yaml``, parsed."""
    return dict(yaml.safe_load(contract_path(service).read_text()))


def documented_operations(service: str) -> set[tuple[str, str]]:
    """Every ``(METHOD, path)`` the service's contract documents."""
    spec = load_contract(service)
    assert str(spec["openapi"]).startswith("3."), spec["openapi"]
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in _METHODS
    }


def _without_patterns(path: str) -> str:
    """``/x/{id:[a-z]{1,80}}`` -> ``/x/{id}``: aiohttp's variable patterns are not the contract's
    business (a pattern may hold braces of its own, so they are counted)."""
    out: list[str] = []
    depth = 0
    in_pattern = False
    for char in path:
        if char == "{":
            depth += 1
            if depth == 1:
                out.append(char)
            continue
        if char == "}":
            depth -= 1
            if depth == 0:
                out.append(char)
                in_pattern = False
            continue
        if depth == 1 and char == ":":
            in_pattern = True
        if depth == 0 or not in_pattern:
            out.append(char)
    return "".join(out)


def assert_schema_matches_model(documented: Mapping[str, Any], model: type[BaseModel]) -> None:
    """A request body's documented schema closes its properties and names the same ones, and
    the same required ones, as the pydantic model the service validates it with."""
    generated = model.model_json_schema()
    name = model.__name__
    assert documented["additionalProperties"] is False, name
    assert set(documented["properties"]) == set(generated["properties"]), name
    assert set(documented["required"]) == set(generated.get("required", [])), name


def served_operations(app: web.Application, *, ignore: Iterable[str] = ()) -> set[tuple[str, str]]:
    """Every ``(METHOD, path)`` the app routes, but HEAD, catch-all (``*``) methods, the shared
    health and metrics routes and the ``ignore`` paths; variable patterns dropped."""
    skipped = SHARED_ROUTES | set(ignore)
    return {
        (route.method, _without_patterns(route.resource.canonical))
        for route in app.router.routes()
        if route.resource is not None
        and route.method not in ("HEAD", "*")
        and route.resource.canonical not in skipped
    }


def assert_routes_match_contract(
    app: web.Application, service: str, *, ignore: Iterable[str] = ()
) -> None:
    """The app serves every operation of ``contracts/http/<service>.yaml`` and no other."""
    served = served_operations(app, ignore=ignore)
    documented = documented_operations(service)
    assert served == documented, (
        f"served, not documented: {sorted(served - documented)}; "
        f"documented, not served: {sorted(documented - served)}"
    )


__all__ = [
    "SHARED_ROUTES",
    "FuzzResult",
    "assert_routes_match_contract",
    "assert_schema_matches_model",
    "contract_path",
    "documented_operations",
    "fuzz_contract",
    "gateway_in_front",
    "load_contract",
    "served_operations",
]
