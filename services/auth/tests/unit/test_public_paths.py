"""Which auth endpoints need no access token is declared once, in ``entrypoints.http.ROUTES``:
the service's own middleware reads it (``PUBLIC_PATHS``), and the gateway's route table and
the OpenAPI contract must give the same answer for every route."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from auth_svc.entrypoints.http import PUBLIC_PATHS, ROUTES, Route
from gateway_svc.domain.routes import RouteTable, load_route_file
from gateway_svc.settings import DEFAULT_ROUTES_FILE

SPEC = Path(__file__).resolve().parents[4] / "contracts" / "http" / "auth.yaml"


def concrete(path: str) -> str:
    """A request path for a route path (its ``{user_id}`` filled in)."""
    return path.replace("{user_id}", "0190a1b2c3d4e5f60718293a4b5c6d7e")


@pytest.fixture(scope="module")
def gateway_table() -> RouteTable:
    return RouteTable(load_route_file(DEFAULT_ROUTES_FILE))


def test_public_paths_are_the_public_route_declarations() -> None:
    assert {route.path for route in ROUTES if route.public} == PUBLIC_PATHS
    # No path is public for one method and protected for another: the middleware decides
    # by path alone.
    protected = {route.path for route in ROUTES if not route.public}
    assert not PUBLIC_PATHS & protected
    assert len({(route.method, route.path) for route in ROUTES}) == len(ROUTES)


EXTERNAL = [route for route in ROUTES if not route.internal]


@pytest.mark.parametrize(
    "route",
    EXTERNAL,
    ids=lambda route: f"{route.method} {route.path}" if isinstance(route, Route) else None,
)
def test_the_gateway_routes_each_endpoint_to_auth_with_the_same_answer(
    gateway_table: RouteTable, route: Route
) -> None:
    matched = gateway_table.match(route.method.encode(), concrete(route.path).encode(), b"")
    assert matched is not None, "the gateway does not route it"
    assert matched.upstream == "auth"
    assert matched.public == route.public, (
        f"the gateway's route {matched.name!r} says auth={matched.auth!r}"
    )


@pytest.mark.parametrize(
    "route",
    [route for route in ROUTES if route.internal],
    ids=lambda route: f"{route.method} {route.path}",
)
def test_the_gateway_does_not_route_internal_endpoints(
    gateway_table: RouteTable, route: Route
) -> None:
    """Only services read them (with INTERNAL_API_TOKEN, checked by auth as well)."""
    assert route.path.startswith("/internal/")
    assert gateway_table.match(route.method.encode(), route.path.encode(), b"") is None


def test_every_public_auth_path_of_the_gateway_is_a_public_endpoint() -> None:
    """The other direction: a path the gateway lets through without a token must be one the
    service declares public (else the service answers 401 to what the gateway let in)."""
    table = yaml.safe_load(DEFAULT_ROUTES_FILE.read_text())
    declared = {(route.method, route.path) for route in ROUTES if route.public}
    listed = set()
    for entry in table["routes"]:
        if entry["upstream"] != "auth" or entry.get("auth") != "public":
            continue
        for path in entry.get("paths", []):
            for method in entry.get("methods") or ["GET", "POST", "PUT", "PATCH", "DELETE"]:
                listed.add((method, path))
        if entry.get("prefix"):
            under = {(m, p) for m, p in declared if p.startswith(entry["prefix"])}
            assert under, f"nothing of auth's is public under {entry['prefix']}"
    assert listed <= declared, listed - declared


def test_the_contract_asks_a_token_exactly_of_the_protected_routes() -> None:
    spec: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    for route in ROUTES:
        operation = spec["paths"][route.path][route.method.lower()]
        if route.internal:
            assert operation["security"] == [{"internal": []}], route.path
            continue
        assert ("security" in operation) is not route.public, f"{route.method} {route.path}"
