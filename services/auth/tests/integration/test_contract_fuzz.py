"""contracts/http/auth.yaml holds against the running service, reached the way clients
reach it: through a real gateway in front of the service (the shipped route table, rate limits
raised): schemathesis (every check but ``ignored_auth``, bounded, a fixed seed) finds no
server error and no answer the contract does not describe (issue 12).

The one operation the gateway does not route (``/internal/v1/auth/revoked-sessions``, for
the suite's services only) is fuzzed on the service's own port."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from switchyard.testing.contracts import fuzz_contract, gateway_in_front
from switchyard.testing.jwks import TEST_INTERNAL_TOKEN
from switchyard.tokens import TokenVerifier

from .conftest import AUDIENCE, ISSUER, STRONG_PASSWORD, AuthClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
ADMIN = "root-fuzz@example.com"
INTERNAL = "/internal/v1/auth/revoked-sessions"
# An admin ending a user's sessions or changing their roles ends every session of that user:
# fuzzed with the admin's own id (schemathesis finds it), the admin's token is revoked and the
# gateway (which follows revocations) answers 401 to every later case of the run. These two
# run in the second, direct run, after the others.
SESSION_ENDING = ["/api/v1/auth/users/{user_id}/logout-all", "/api/v1/auth/users/{user_id}/roles"]


@dataclass(frozen=True)
class AuthKeys:
    jwks_url: str
    issuer: str = ISSUER
    audience: str = AUDIENCE


@pytest.fixture
def auth_overrides() -> dict[str, Any]:
    return {"admin_email": ADMIN, "admin_password": STRONG_PASSWORD}


async def test_the_auth_contract_holds_under_fuzzing(
    auth: AuthClient, settings_overrides: dict[str, Any]
) -> None:
    admin = await auth.login(ADMIN)
    assert admin.status == 200
    # logout-all ends every session of its caller: fuzz it with a user of its own, so the
    # admin's token (every other operation's) stays valid through the run.
    other = await auth.signed_up("fuzzed@example.com")
    headers = {"Authorization": f"Bearer {admin.body['access_token']}"}
    keys = AuthKeys(f"{auth.server.url}/.well-known/jwks.json")
    verifier = TokenVerifier(  # on the service's manual clock, like its tokens
        jwks_url=keys.jwks_url,
        issuer=ISSUER,
        audience=AUDIENCE,
        clock=lambda: auth.clock.now().timestamp(),
    )
    async with gateway_in_front(
        "auth", auth.server.url, keys, settings_overrides, verifier=verifier
    ) as edge:
        result = await fuzz_contract(
            "auth",
            edge,
            headers=headers,
            operation_headers={
                "^/api/v1/auth/logout-all$": {"Authorization": f"Bearer {other['access_token']}"},
            },
            exclude_paths=[INTERNAL, *SESSION_ENDING],
        )
    assert result.passed, result.report
    # Not vacuous: every operation of the contract ran, with a token that worked.
    assert "20 selected / 23 total" in result.report, result.report
    assert "Authentication failed" not in result.report, result.report
    internal = await fuzz_contract(
        "auth",
        auth.server.url,
        headers=headers,
        operation_headers={
            f"^{INTERNAL}$": {"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}"},
        },
        include_paths=[INTERNAL, *SESSION_ENDING],
    )
    assert internal.passed, internal.report
    assert "3 selected / 23 total" in internal.report, internal.report
    assert "Authentication failed" not in internal.report, internal.report
