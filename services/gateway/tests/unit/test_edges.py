from __future__ import annotations

import ipaddress
import re

import pytest

from gateway_svc.proxy.edges import (
    Cors,
    RequestIds,
    TrustedProxies,
    accept_request_id,
    accept_traceparent,
    address_key,
    bearer_token,
    unsafe_path,
)


@pytest.mark.parametrize(
    ("path", "unsafe"),
    [
        (b"/api/v1/chat/x", False),
        (b"/api/v1/files/a.b.png", False),
        (b"/.well-known/jwks.json", False),
        (b"/api/v1/chat/../auth/users", True),
        (b"/api/v1/chat/./x", True),
        (b"/api/v1/chat/%2e%2E/auth", True),
        (b"/api/v1/chat%2Fx", True),
        (b"/api/v1/chat\\x", True),
    ],
)
def test_unsafe_paths(path: bytes, unsafe: bool) -> None:
    assert unsafe_path(path) is unsafe


def test_client_address_comes_from_trusted_proxies_only() -> None:
    proxies = TrustedProxies([ipaddress.ip_network("10.0.0.0/8")])
    assert proxies.client_address("203.0.113.9", b"1.2.3.4") == "203.0.113.9"
    assert proxies.client_address("10.0.0.2", b"1.2.3.4, 10.0.0.7") == "1.2.3.4"
    assert proxies.client_address("10.0.0.2", b"evil, 5.6.7.8") == "5.6.7.8"
    assert proxies.client_address("10.0.0.2", b"not-an-ip") == "10.0.0.2"


def test_request_ids_and_traceparent() -> None:
    ids = RequestIds()
    first, second = ids.new(), ids.new()
    assert first != second and len(first) == 32
    assert accept_request_id(b"abc-1", ids) == b"abc-1"
    assert accept_request_id(b"has space", ids) != b"has space"
    valid = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert accept_traceparent(valid) == valid
    zero = b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01"
    fresh = accept_traceparent(zero)
    assert fresh != zero and re.fullmatch(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-01", fresh)


def test_cors_allow_list() -> None:
    cors = Cors(["https://app.example/"])
    assert cors.allows(b"https://app.example")
    assert not cors.allows(b"https://evil.example")
    assert cors.response_headers(b"https://evil.example") == b""
    assert Cors(["*"]).allows(b"https://anything")


def test_bearer_token() -> None:
    assert bearer_token(b"Bearer abc") == b"abc"
    assert bearer_token(b"bearer  abc ") == b"abc"
    assert bearer_token(b"Basic abc") is None
    assert bearer_token(b"Bearer ") is None


def test_address_keys_hold_an_ipv6_client_by_its_64_and_a_mapped_ipv4_as_ipv4() -> None:
    assert address_key("203.0.113.7") == b"ip:203.0.113.7"
    assert address_key("::ffff:203.0.113.7") == b"ip:203.0.113.7"
    assert address_key("::ffff:cb00:7107") == b"ip:203.0.113.7"
    one = address_key("2001:db8:1:2::1")
    assert one == b"ip6:2001:db8:1:2::/64"
    for same in (
        "2001:db8:1:2:ffff:ffff:ffff:ffff",
        "2001:DB8:1:2:0:0:0:9",
        "2001:db8:1:2::1%eth0",
    ):
        assert address_key(same) == one
    assert address_key("2001:db8:1:3::1") != one
    assert address_key("not-an-address:") == b"ip:not-an-address:"
