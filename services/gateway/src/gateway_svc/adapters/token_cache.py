"""Verified tokens remembered per token string, so the hot path verifies a signature
once per token instead of once per request; a revoked session's token is refused on a hit
as on a miss (the verifier's deny-list, one lookup)."""

from __future__ import annotations

import time
from collections import OrderedDict

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from switchyard.tokens import Identity, InvalidToken, TokenVerifier


class Caller:
    """A verified identity with what the proxy needs from it, rendered once per token."""

    __slots__ = ("identity", "limit_key", "headers", "is_admin", "user_id", "kid", "key", "sid")

    def __init__(
        self, identity: Identity, kid: str = "", key: Ed25519PublicKey | None = None
    ) -> None:
        user_id = identity.user_id.encode()
        roles = ",".join(sorted(identity.roles)).encode()
        if any(ch in value for value in (user_id, roles) for ch in (b"\r", b"\n", b"\x00")):
            raise InvalidToken("malformed", "the token carries control characters")
        self.identity = identity
        self.user_id = user_id
        self.limit_key = b"u:" + user_id
        self.headers = b"X-User-Id: " + user_id + b"\r\nX-User-Roles: " + roles + b"\r\n"
        self.is_admin = identity.is_admin
        # The key that verified the token: the entry is good only while the key set still
        # maps this kid to this very key (a JWKS refresh that retires it ends the entry).
        self.kid = kid
        self.key = key
        # The session (auth's refresh-token family) the token belongs to; a string or None
        # (the verifier refused any other sid).
        self.sid: str | None = identity.claims.get("sid")


class CachedVerifier:
    """A bounded LRU of verified callers; an entry lives until the token's ``exp``.

    Only successes are cached: a refused token is verified again next time (and a key
    rotation or a JWKS refresh never meets a stale refusal). An entry also ends when the
    key that verified it left the key set, or its kid now names another key: a hit checks
    that the key source still holds that very key object (one dict lookup). And it ends as
    soon as its session is in the verifier's deny-list (``verifier.denied``, fed by
    :mod:`switchyard.revocation`): one more lookup per hit; the verification that follows
    refuses the token (``InvalidToken("revoked")``).
    """

    def __init__(self, verifier: TokenVerifier, max_entries: int = 10_000) -> None:
        self.verifier = verifier
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, Caller] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def cached(self, token: bytes) -> Caller | None:
        caller = self._entries.get(token)
        if caller is None:
            return None
        verifier = self.verifier
        if (
            caller.sid in verifier.denied
            or caller.identity.expires_at <= time.time()
            or verifier.keys.get(caller.kid) is not caller.key
        ):
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        self.hits += 1
        return caller

    def _remember(self, token: bytes, identity: Identity) -> Caller:
        kid = self.verifier.key_id(_text(token))
        caller = Caller(identity, kid, self.verifier.keys.get(kid))
        if self.max_entries:
            self._entries[token] = caller
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return caller

    def verify(self, token: bytes) -> Caller:
        """Sync verification with the keys known now; raises InvalidToken."""
        caller = self.cached(token)
        if caller is not None:
            return caller
        self.misses += 1
        return self._remember(token, self.verifier.verify(_text(token)))

    async def verify_async(self, token: bytes) -> Caller:
        """As :meth:`verify`, but an unknown ``kid`` waits for one JWKS refetch."""
        caller = self.cached(token)
        if caller is not None:
            return caller
        self.misses += 1
        return self._remember(token, await self.verifier.verify_async(_text(token)))


def _text(token: bytes) -> str:
    try:
        return token.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidToken("malformed", "the token is not ASCII") from None
