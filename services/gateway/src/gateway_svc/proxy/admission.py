"""Admission: may this request go upstream? One verdict from the token, the route's
audience, the CORS allow-list and the rate limit.

:meth:`Admission.admit` decides synchronously when it can (token verifications come
from a cache, the local rate-limit table is in memory) and returns

- :data:`ADMITTED`: forward the request;
- a :class:`~gateway_svc.proxy.responses.Refusal`: answer it (401, 403, 429);
- a :class:`Pending`: the verdict needs a wait (a JWKS refetch for an unknown key
  id, or the Redis limiter): :meth:`Admission.admit_slowly` finishes it in a task.

A refused token counts against the caller's (IP) limit before its 401, so a flood of
missing or forged tokens is throttled like any other traffic, and the 401 carries
the RateLimit headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from gateway_svc.domain.ratelimit import Decision, retry_after_seconds
from gateway_svc.proxy.edges import bearer_token
from gateway_svc.proxy.responses import Refusal, unauthorized
from switchyard.tokens import InvalidToken

if TYPE_CHECKING:
    from gateway_svc.adapters.limiter_store import AsyncLimiterStore, LocalStore
    from gateway_svc.adapters.token_cache import CachedVerifier
    from gateway_svc.domain.routes import Route
    from gateway_svc.metrics import GatewayMetrics
    from gateway_svc.proxy.edges import Cors
    from gateway_svc.proxy.exchange_state import ExchangeState


class Admitted:
    """Forward the request."""

    __slots__ = ()


ADMITTED: Final = Admitted()


class Pending:
    """The verdict needs a wait: first a JWKS refetch (``verify``), then the Redis
    limiter; ``unauthorized`` is the 401 to give when the limit lets it through."""

    __slots__ = ("verify", "unauthorized")

    def __init__(self, *, verify: bool, unauthorized: str | None = None) -> None:
        self.verify = verify
        self.unauthorized = unauthorized


class PreflightAllowed:
    """A CORS preflight from an allowed origin: 204 with these headers."""

    __slots__ = ("headers",)

    def __init__(self, headers: bytes) -> None:
        self.headers = headers


Verdict = Admitted | Refusal | Pending

VERIFY_FIRST: Final = Pending(verify=True)
LIMIT_FIRST: Final = Pending(verify=False)
FOR_ADMINS: Final = Refusal(403, "This route is for administrators.")
ORIGIN_NOT_ALLOWED: Final = Refusal(
    403, "This origin is not allowed.", slug="cors-origin-not-allowed"
)
NO_TOKEN = "This route needs a bearer access token."


class Admission:
    def __init__(
        self,
        tokens: CachedVerifier,
        limiter: LocalStore,
        limiter_async: AsyncLimiterStore | None,
        cors: Cors,
        metrics: GatewayMetrics,
    ) -> None:
        self.tokens = tokens
        self.limiter = limiter
        self.limiter_async = limiter_async
        self.cors = cors
        self.metrics = metrics

    def preflight(
        self, origin: bytes, requested_headers: bytes | None
    ) -> Refusal | PreflightAllowed:
        cors = self.cors
        if not cors.allows(origin):
            return ORIGIN_NOT_ALLOWED
        return PreflightAllowed(cors.preflight_headers(origin, requested_headers))

    def admit(self, exchange: ExchangeState, route: Route) -> Verdict:
        """Authenticate, authorize, then the rate limit (sets ``caller`` and ``decision``)."""
        refused = None  # the 401 to give once the refusal has counted against the limit
        authorization = exchange.authorization
        token = bearer_token(authorization) if authorization is not None else None
        if token is not None:
            try:
                caller = exchange.caller = self.tokens.verify(token)
            except InvalidToken as error:
                if error.reason == "unknown-kid":
                    return VERIFY_FIRST
                if not route.public:
                    refused = error.detail
                # else: a public route does not need the token; it goes on as anonymous
            else:
                if route.auth == "admin" and not caller.is_admin:
                    return FOR_ADMINS
        elif not route.public:
            refused = NO_TOKEN
        if self.limiter_async is not None:
            return LIMIT_FIRST if refused is None else Pending(verify=False, unauthorized=refused)
        decision = exchange.decision = self.limiter.check(_limit_key(exchange, route), route.policy)
        if not decision.allowed:
            return self._too_many(route, decision)
        return ADMITTED if refused is None else unauthorized(refused)

    async def admit_slowly(
        self, exchange: ExchangeState, route: Route, pending: Pending
    ) -> Verdict | None:
        """The verdict after the wait; None when the exchange ended meanwhile."""
        refused = pending.unauthorized
        if pending.verify:
            try:
                exchange.caller = await self.tokens.verify_async(
                    bearer_token(exchange.authorization or b"") or b""
                )
            except InvalidToken as error:
                if not route.public:
                    refused = error.detail
            if refused is None:
                if exchange.finished:
                    return None
                caller = exchange.caller
                if route.auth == "admin" and not (caller and caller.is_admin):
                    return FOR_ADMINS
        key = _limit_key(exchange, route)
        if self.limiter_async is not None:
            decision = await self.limiter_async.check(key, route.policy)
            if exchange.finished:
                return None
        else:
            decision = self.limiter.check(key, route.policy)
            if refused is None and exchange.finished:
                return None
        exchange.decision = decision
        if not decision.allowed:
            return self._too_many(route, decision)
        return ADMITTED if refused is None else unauthorized(refused)

    def _too_many(self, route: Route, decision: Decision) -> Refusal:
        """429 with Retry-After."""
        self.metrics.rate_limited(route.name, route.policy.name)
        wait = retry_after_seconds(decision)
        return Refusal(
            429, f"Too many requests; retry in {wait} s.", headers=b"Retry-After: %d\r\n" % wait
        )


def _limit_key(exchange: ExchangeState, route: Route) -> bytes:
    """Whose quota a request spends: the caller's, else the client address's."""
    caller = exchange.caller
    if caller is not None:
        return route.policy.key_prefix + caller.limit_key
    conn = exchange.conn
    if conn.peer_trusted:
        return route.policy.key_prefix + b"ip:" + exchange.client_ip().encode()
    return route.policy.key_prefix + conn.ip_key
