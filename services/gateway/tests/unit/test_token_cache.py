from __future__ import annotations

import time

import pytest

from gateway_svc.adapters.token_cache import CachedVerifier
from switchyard.tokens import (
    InvalidToken,
    StaticKeys,
    TokenSigner,
    TokenVerifier,
    generate_signing_key,
)


def make(lifetime: float = 900, max_entries: int = 2) -> tuple[CachedVerifier, TokenSigner]:
    kid, key = generate_signing_key()
    verifier = TokenVerifier(
        keys=StaticKeys({kid: key.public_key()}), issuer="iss", audience="aud", leeway=0
    )
    signer = TokenSigner(key, kid, issuer="iss", audience="aud", lifetime=lifetime)
    return CachedVerifier(verifier, max_entries), signer


def test_hits_after_the_first_verification_and_renders_identity_headers() -> None:
    cache, signer = make()
    token = signer.issue("u-1", ["customer", "admin"]).token.encode()
    first = cache.verify(token)
    assert cache.verify(token) is first
    assert (cache.misses, cache.hits) == (1, 1)
    assert first.headers == b"X-User-Id: u-1\r\nX-User-Roles: admin,customer\r\n"
    assert first.is_admin and first.limit_key == b"u:u-1"


def test_bounded_lru() -> None:
    cache, signer = make(max_entries=2)
    a, b, c = (signer.issue(name, []).token.encode() for name in "abc")
    cache.verify(a)
    cache.verify(b)
    cache.verify(a)  # a is now the most recent
    cache.verify(c)  # evicts b
    assert cache.cached(a) is not None
    assert cache.cached(b) is None


def test_entries_expire_with_the_token() -> None:
    cache, signer = make(lifetime=1)
    token = signer.issue("u", []).token.encode()
    cache.verify(token)
    time.sleep(1.1)
    assert cache.cached(token) is None
    with pytest.raises(InvalidToken):
        cache.verify(token)


def test_refusals_are_not_cached() -> None:
    cache, signer = make()
    with pytest.raises(InvalidToken):
        cache.verify(b"garbage")
    assert cache.cached(b"garbage") is None


def test_a_cached_token_is_refused_once_its_key_left_the_key_set() -> None:
    """After a key is retired from the JWKS, tokens it signed stop working at once, cached
    or not (a compromised key is retired exactly so that they do)."""
    old_kid, old_key = generate_signing_key()
    new_kid, new_key = generate_signing_key()
    keys = StaticKeys({old_kid: old_key.public_key(), new_kid: new_key.public_key()})
    verifier = TokenVerifier(keys=keys, issuer="iss", audience="aud", leeway=0)
    cache = CachedVerifier(verifier)
    old = TokenSigner(old_key, old_kid, issuer="iss", audience="aud").issue("u", []).token.encode()
    new = TokenSigner(new_key, new_kid, issuer="iss", audience="aud").issue("u", []).token.encode()
    cache.verify(old)
    cache.verify(new)
    assert cache.cached(old) is not None

    keys.replace({new_kid: new_key.public_key()})  # the JWKS refresh: old_kid is gone
    assert cache.cached(old) is None
    with pytest.raises(InvalidToken) as refused:
        cache.verify(old)
    assert refused.value.reason == "unknown-kid"
    assert cache.verify(new).identity.user_id == "u"  # the others stay cached


def test_a_cached_token_is_refused_when_its_kid_now_names_another_key() -> None:
    kid, key = generate_signing_key()
    keys = StaticKeys({kid: key.public_key()})
    cache = CachedVerifier(TokenVerifier(keys=keys, issuer="iss", audience="aud", leeway=0))
    token = TokenSigner(key, kid, issuer="iss", audience="aud").issue("u", []).token.encode()
    cache.verify(token)
    _, other = generate_signing_key()
    keys.replace({kid: other.public_key()})
    with pytest.raises(InvalidToken) as refused:
        cache.verify(token)
    assert refused.value.reason == "bad-signature"


def test_a_cached_token_of_a_revoked_session_is_refused_on_the_next_hit() -> None:
    """The deny-list (the verifier's ``denied``, fed by switchyard.revocation) is consulted on
    every hit, not only when a token is verified."""
    cache, signer = make()
    denied: dict[str, float] = {}
    cache.verifier.denied = denied
    ended = signer.issue("u", [], extra={"sid": "s-ended"}).token.encode()
    other = signer.issue("u", [], extra={"sid": "s-other"}).token.encode()
    assert cache.verify(ended).sid == "s-ended"
    cache.verify(other)
    assert cache.cached(ended) is not None

    denied["s-ended"] = time.time() + 900  # auth.session.revoked arrived
    assert cache.cached(ended) is None
    with pytest.raises(InvalidToken) as refused:
        cache.verify(ended)
    assert refused.value.reason == "revoked"
    assert cache.verify(other).sid == "s-other"  # another session of the user is untouched
