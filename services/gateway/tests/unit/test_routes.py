from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway_svc.domain.routes import RouteTable, load_route_file
from gateway_svc.settings import DEFAULT_ROUTES_FILE, GatewaySettings
from switchyard.ports import SERVICE_PORTS


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return RouteTable(load_route_file(DEFAULT_ROUTES_FILE))


@pytest.mark.parametrize(
    ("method", "path", "query", "route", "auth"),
    [
        (b"POST", b"/api/v1/auth/login", b"", "auth-password", "public"),
        (b"POST", b"/api/v1/auth/register", b"", "auth-credentials", "public"),
        (b"POST", b"/api/v1/auth/password/reset", b"", "auth-codes", "public"),
        (b"POST", b"/api/v1/auth/login/code", b"", "auth-credentials", "public"),
        (b"POST", b"/api/v1/auth/login/code/verify", b"", "auth-sign-in-code", "public"),
        (b"POST", b"/api/v1/auth/users/u1/logout-all", b"", "auth", "required"),
        (b"POST", b"/api/v1/auth/refresh", b"", "auth-refresh", "public"),
        (b"GET", b"/api/v1/auth/login", b"", "auth", "required"),  # only POST is public
        (b"GET", b"/api/v1/auth/me", b"", "auth", "required"),
        (
            b"POST",
            b"/api/v1/auth/logout",
            b"",
            "auth-refresh",
            "public",
        ),  # the refresh token proves it
        (b"POST", b"/api/v1/auth/logout-all", b"", "auth", "required"),
        (b"GET", b"/.well-known/jwks.json", b"", "auth-well-known", "public"),
        (b"GET", b"/socket.io/", b"EIO=4&transport=polling", "chat-socketio", "public"),
        (b"GET", b"/api/v1/chat/conversations", b"", "chat", "required"),
        (b"POST", b"/api/v1/payments/webhooks/stripe", b"", "payments-webhooks", "public"),
        (b"GET", b"/api/v1/payments/wallet", b"", "payments", "required"),
        (b"GET", b"/api/v1/notifications", b"unread=1", "notifications", "required"),
        # The unsubscribe link is signed itself: no access token (RFC 8058 one-click POST).
        (
            b"GET",
            b"/api/v1/notifications/unsubscribe",
            b"token=a.b",
            "notifications-unsubscribe",
            "public",
        ),
        (
            b"HEAD",
            b"/api/v1/notifications/unsubscribe",
            b"token=a.b",
            "notifications-unsubscribe",
            "public",
        ),
        (
            b"POST",
            b"/api/v1/notifications/unsubscribe",
            b"token=a.b",
            "notifications-unsubscribe",
            "public",
        ),
        (b"PUT", b"/api/v1/notifications/unsubscribe", b"", "notifications", "required"),
        (b"GET", b"/api/v1/notifications/unsubscribe/x", b"", "notifications", "required"),
        (b"GET", b"/api/v1/notifications/preferences", b"", "notifications", "required"),
        (b"GET", b"/api/v1/files/f1/content", b"expires=1&signature=x", "files-signed", "public"),
        (b"GET", b"/api/v1/files/f1/content", b"", "files", "required"),
        (b"POST", b"/api/v1/files", b"", "files", "required"),
    ],
)
def test_default_table(
    table: RouteTable, method: bytes, path: bytes, query: bytes, route: str, auth: str
) -> None:
    matched = table.match(method, path, query)
    assert matched is not None
    assert (matched.name, matched.auth) == (route, auth)


def test_prefixes_match_at_a_slash_boundary(table: RouteTable) -> None:
    assert table.match(b"GET", b"/api/v1/authority", b"") is None
    assert table.match(b"GET", b"/api/v1/chatter/x", b"") is None
    assert table.match(b"GET", b"/", b"") is None


def test_default_upstreams_and_env_overrides(tmp_path: Path) -> None:
    source = load_route_file(DEFAULT_ROUTES_FILE)
    assert [
        source.upstreams[name].urls[0]
        for name in ("auth", "chat", "payments", "notification", "file")
    ] == [
        f"http://127.0.0.1:{SERVICE_PORTS[name]}"
        for name in ("auth", "chat", "payments", "notification", "file")
    ]
    settings = GatewaySettings(GATEWAY_CHAT_UPSTREAMS="http://chat-a:8082, http://chat-b:8082")
    overridden = load_route_file(DEFAULT_ROUTES_FILE, settings.upstream_overrides)
    assert overridden.upstreams["chat"].urls == ["http://chat-a:8082", "http://chat-b:8082"]
    assert overridden.upstreams["auth"].urls == ["http://127.0.0.1:8081"]


def test_invalid_tables_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "upstreams: {a: {urls: ['http://x:1']}}\nrate_limits: {default: {limit: 1, window: 1}}\n"
        "routes: [{name: r, upstream: missing, prefix: /r}]\n"
    )
    with pytest.raises(ValidationError, match="unknown upstream"):
        load_route_file(path)
    path.write_text(
        "upstreams: {a: {urls: ['https://x:1/path']}}\n"
        "rate_limits: {default: {limit: 1, window: 1}}\n"
        "routes: [{name: r, upstream: a, prefix: /r}]\n"
    )
    with pytest.raises(ValidationError, match="http://host:port"):
        load_route_file(path)


def test_the_unsubscribe_link_has_its_own_small_limit_and_body_cap(table: RouteTable) -> None:
    """Per client IP (no token), below the anonymous `public` rate; a form body only."""
    matched = table.match(b"POST", b"/api/v1/notifications/unsubscribe", b"token=a.b")
    assert matched is not None
    assert matched.upstream == "notification"
    assert matched.policy.name == "unsubscribe"
    public = load_route_file(DEFAULT_ROUTES_FILE).rate_limits["public"]
    assert matched.policy.limit / matched.policy.window < public.limit / public.window
    assert matched.max_body_bytes <= 4096


def test_the_methods_a_served_path_takes(table: RouteTable) -> None:
    """For a 405's Allow: the path is served, by routes that take other methods only."""
    assert table.match(b"PUT", b"/.well-known/jwks.json", b"") is None
    assert table.allowed_methods(b"/.well-known/jwks.json", b"") == {b"GET", b"HEAD"}
    assert table.allowed_methods(b"/nowhere", b"") == frozenset()  # 404: nothing serves it
    # the auth prefix takes every method: never a method problem there
    assert table.allowed_methods(b"/api/v1/auth/register", b"") == frozenset()
