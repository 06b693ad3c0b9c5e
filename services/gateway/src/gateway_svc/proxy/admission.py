"""Admission: may this request go upstream? One verdict from the token, the route's
audience, the CORS allow-list and the rate limit.

:meth:`Admission.admit` decides synchronously when it can (token verifications come
from a cache, the local rate-limit table is in memory) and returns

- :data:`ADMITTED`: forward the request;
- a :class:`~gateway_svc.proxy.responses.Refusal`: answer it (401, 403, 429, or 503 while the worker has
  not read auth's revoked sessions yet: it takes no bearer token until then);
- a :class:`Pending`: the verdict needs a wait (a JWKS refetch for an unknown key
  id, or the Redis limiter): :meth:`Admission.admit_slowly` finishes it in a task.

A refused token counts against the caller's (IP) limit before its 401, so a flood of
missing or forged tokens is throttled like any other traffic, and the 401 carries
the RateLimit headers.

On credential routes (a route with ``outcome``) the answer is weighed too:
:meth:`Admission.answered` reads auth's ``X-Auth-Outcome: success|failure; account=<key>``
(the key is auth's keyed hash of the account, never the email). Admission spent a failure's
cost on the route's (address) limit; a success gives all of it but 1 back (so a flood of
concurrent guesses is priced before any answer). Failures are charged to the account's limit,
keyed by (account, address) or the account alone. An answer for an account whose limit is
spent is replaced by a 429, whatever it said, so guessing on past the limit learns nothing.
The body is never parsed: the account is only known from the answer. With the local table
the verdict is immediate; with Redis it costs a round trip after the answer, so the verdict
stops the account's next answers on this worker (remembered until its Retry-After) and
each worker relays at most the one answer that crossed the limit.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Final

from gateway_svc.domain.ratelimit import Decision, retry_after_seconds
from gateway_svc.proxy.edges import address_key, bearer_token
from gateway_svc.proxy.responses import Refusal, unauthorized
from switchyard.tokens import InvalidToken

if TYPE_CHECKING:
    from gateway_svc.adapters.limiter_store import AsyncLimiterStore, LocalStore
    from gateway_svc.adapters.token_cache import CachedVerifier
    from gateway_svc.domain.routes import RateLimitPolicy, Route
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
# A worker that has not read auth's revoked-session list yet cannot tell a revoked session's
# token from a live one: it takes no token until then (public routes serve without one).
REVOCATIONS_UNKNOWN: Final = Refusal(
    503,
    "This gateway worker has not read the revoked sessions yet; retry shortly.",
    slug="revocations-unknown",
    headers=b"Retry-After: 1\r\n",
)


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
        # With Redis: accounts whose limit is spent, until when (time.monotonic()).
        self.held: dict[bytes, float] = {}
        # Set once, after this worker's first complete read of auth's revoked sessions.
        self.revocations_known = False

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
            if not self.revocations_known:
                return REVOCATIONS_UNKNOWN
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
        decision = exchange.decision = self.limiter.check(
            _limit_key(exchange, route), route.policy, route.cost
        )
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
            decision = await self.limiter_async.check(key, route.policy, route.cost)
            if exchange.finished:
                return None
        else:
            decision = self.limiter.check(key, route.policy, route.cost)
            if refused is None and exchange.finished:
                return None
        exchange.decision = decision
        if not decision.allowed:
            return self._too_many(route, decision)
        return ADMITTED if refused is None else unauthorized(refused)

    def answered(self, exchange: ExchangeState, route: Route, outcome: bytes) -> Refusal | None:
        """Charge a credential check's outcome (the route has ``outcome``); a 429 to give
        instead of the upstream's answer when the account's limit is spent."""
        rule = route.outcome
        parsed = parse_outcome(outcome)
        if rule is None or parsed is None:
            return None
        failed, account = parsed
        refund = 0 if failed else rule.refund
        address_key = _limit_key(exchange, route)
        account_key = None
        if account is not None:
            account_key = rule.account.key_prefix + account
            if rule.per_address:
                account_key += b"@" + _address(exchange)
        cost = 1 if failed else 0  # a success only asks whether the account may go on
        limiter_async = self.limiter_async
        if limiter_async is None:
            if refund:
                self.limiter.check(address_key, route.policy, -refund, debit=True)
            if account_key is None:
                return None
            decision = self.limiter.check(account_key, rule.account, cost)
            return None if decision.allowed else self._too_many(route, decision, rule.account)
        exchange.context.spawn(
            self._charge_slowly(limiter_async, route, address_key, refund, account_key, cost)
        )
        if account_key is None:
            return None
        held = self.held.get(account_key)
        if held is None:
            return None
        wait = held - time.monotonic()
        if wait <= 0:
            del self.held[account_key]
            return None
        return self._too_many(route, Decision(False, 0, wait, wait), rule.account)

    async def _charge_slowly(
        self,
        limiter: AsyncLimiterStore,
        route: Route,
        address_key: bytes,
        refund: int,
        account_key: bytes | None,
        cost: int,
    ) -> None:
        """:meth:`answered` on Redis: its verdict holds the account's next answers here."""
        assert route.outcome is not None
        if refund:
            await limiter.check(address_key, route.policy, -refund, debit=True)
        if account_key is None:
            return
        decision = await limiter.check(account_key, route.outcome.account, cost)
        if not decision.allowed:
            held = self.held
            now = time.monotonic()
            if len(held) >= HELD_LIMIT:
                for key in [key for key, until in held.items() if until <= now]:
                    del held[key]
                if len(held) >= HELD_LIMIT:
                    held.clear()
            held[account_key] = now + decision.retry_after

    def _too_many(
        self, route: Route, decision: Decision, policy: RateLimitPolicy | None = None
    ) -> Refusal:
        """429 with Retry-After."""
        self.metrics.rate_limited(route.name, (policy or route.policy).name)
        wait = retry_after_seconds(decision)
        return Refusal(
            429, f"Too many requests; retry in {wait} s.", headers=b"Retry-After: %d\r\n" % wait
        )


HELD_LIMIT = 65536  # accounts held at once (per worker, with Redis)
_ACCOUNT = re.compile(rb"[A-Za-z0-9_-]{1,64}")


def parse_outcome(value: bytes) -> tuple[bool, bytes | None] | None:
    """``success|failure[; account=<key>]`` as (failed, account key); None when it is neither."""
    verdict, _, rest = value.partition(b";")
    verdict = verdict.strip()
    if verdict == b"failure":
        failed = True
    elif verdict == b"success":
        failed = False
    else:
        return None
    name, _, account = rest.partition(b"=")
    if name.strip() == b"account" and _ACCOUNT.fullmatch(account.strip()):
        return failed, account.strip()
    return failed, None


def _address(exchange: ExchangeState) -> bytes:
    """The client's address, as limit keys spell it."""
    conn = exchange.conn
    if conn.peer_trusted:
        return address_key(exchange.client_ip())
    return conn.ip_key


def _limit_key(exchange: ExchangeState, route: Route) -> bytes:
    """Whose quota a request spends: the caller's, else (or when the policy is per address)
    the client address's."""
    caller = exchange.caller
    if caller is not None and not route.policy.per_address:
        return route.policy.key_prefix + caller.limit_key
    return route.policy.key_prefix + _address(exchange)
