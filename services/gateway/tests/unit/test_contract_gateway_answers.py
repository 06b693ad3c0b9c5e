"""The services' contracts (``contracts/http/<service>.yaml``) describe them as clients reach
them, through the gateway: every operation the shipped route table routes documents the
answers the gateway gives itself (timeouts, sizes, limits, upstream trouble; 401 on the
routes that need a token), each as a ``$ref`` to one shared definition per status."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway_svc.domain.routes import RouteTable, load_route_file
from gateway_svc.settings import DEFAULT_ROUTES_FILE
from switchyard.testing.contracts import load_contract

SERVICES = ["auth", "chat", "file", "notification", "payments"]
METHODS = ("get", "put", "post", "patch", "delete")
# What the gateway answers by itself (services/gateway/README.md), and the one definition of
# each status in components/responses.
GATEWAY_ANSWERS = {
    "408": "RequestTimeout",
    "413": "ContentTooLarge",
    "429": "TooManyRequests",
    "431": "HeadersTooLarge",
    "502": "BadGateway",
    "503": "Unavailable",
    "504": "GatewayTimeout",
}
PROTECTED_ANSWERS = {"401": "Unauthorized"}


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return RouteTable(load_route_file(DEFAULT_ROUTES_FILE))


def _ref(response: dict[str, Any]) -> str | None:
    ref = response.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


@pytest.mark.parametrize("service", SERVICES)
def test_every_routed_operation_documents_the_gateways_answers(
    service: str, table: RouteTable
) -> None:
    spec = load_contract(service)
    components = spec["components"]["responses"]
    routed = 0
    for path, item in spec["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "x1", path).encode()
        for method in METHODS:
            if method not in item:
                continue
            route = table.match(method.upper().encode(), concrete, b"")
            if route is None:
                assert path.startswith("/internal/"), (service, method, path)
                continue
            routed += 1
            wanted = dict(GATEWAY_ANSWERS)
            if not route.public:
                wanted.update(PROTECTED_ANSWERS)
            responses = item[method]["responses"]
            for status, name in wanted.items():
                assert status in responses, (service, method, path, status)
                assert _ref(responses[status]) == name, (service, method, path, status)
    assert routed > 0
    for name in (*GATEWAY_ANSWERS.values(), *PROTECTED_ANSWERS.values()):
        content = components[name]["content"]["application/problem+json"]
        assert content["schema"] == {"$ref": "#/components/schemas/Problem"}, (service, name)
    headers = components["TooManyRequests"]["headers"]
    assert {"Retry-After", "RateLimit", "RateLimit-Policy"} <= set(headers), service


@pytest.mark.parametrize("service", SERVICES)
def test_one_definition_per_gateway_status(service: str) -> None:
    """A status the gateway answers is documented by its one definition everywhere in the file
    (the service's own answers of that status share it), never by the generic ``Problem``."""
    spec = load_contract(service)
    names = {**GATEWAY_ANSWERS, **PROTECTED_ANSWERS}
    for path, item in spec["paths"].items():
        for method in METHODS:
            for status, response in item.get(method, {}).get("responses", {}).items():
                if status in names and _ref(response) is not None:
                    assert _ref(response) == names[status], (service, method, path, status)
