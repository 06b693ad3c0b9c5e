"""Revoked sessions, refused everywhere within seconds: a deny-list the token verifier consults.

Auth announces every session (refresh-token family) that ends before its expiry with
``auth.session.revoked {user_id, session_id, expires_at}`` (DESIGN §3.1); its access tokens
carry the session id in the ``sid`` claim. A service that verifies tokens itself enables the
deny-list with one line after ``verifier_context()`` (and ``bus_context``)::

    app.cleanup_ctx.extend([..., bus_context, verifier_context(), revocation_context(), ...])

Then:

- every process keeps a :class:`DenyList` (``session_id → deny until``), bounded
  (``REVOCATION_DENY_LIST_CAPACITY``) and pruned as entries pass ``expires_at`` plus the
  verifier's leeway (after that the token's own ``exp`` refuses it);
- the verifier does one dictionary lookup of the token's ``sid`` per verification
  (``TokenVerifier(denied=...)``): a revoked session's token gets ``InvalidToken("revoked")``,
  a 401 from :func:`switchyard.authn.authn_middleware`;
- :class:`RevocationFeed` feeds it from the bus — one exclusive, auto-delete queue per process
  (``<service>.revocations.<random>``) bound to ``auth.session.revoked``, so every replica
  hears every revocation — and from auth's list of the sessions revoked and not yet expired
  (``GET /internal/v1/auth/revoked-sessions``, ``INTERNAL_API_TOKEN`` as a bearer token), read
  once the queue exists (no gap between the two), every ``POLL_WHILE_DISCONNECTED`` seconds
  while the broker connection is down (no queue hears announcements then, however long the
  outage lasts) and again after every reconnection (revocations published while the
  connection was down are not lost). Until the first read succeeds it is retried in the
  background, and :func:`revocation_context` adds a readiness check, ``revocations``, that
  fails until then: ``/readyz`` answers 503 (an orchestrator sends a not-ready replica
  no traffic) while the process would still accept the tokens of sessions revoked
  before it started. Later reads (after a reconnection) do not make it unready again: the
  entries already read stay, and only what was announced meanwhile is missing.

A message on the queue that is not a valid ``auth.session.revoked`` is poison: it is parked
in ``<service>.revocations.dlq`` (durable) with the reason headers, like any consumer's.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiohttp import web

from switchyard import keys
from switchyard.bus.connection import Bus
from switchyard.bus.consumer import decode_event, park
from switchyard.bus.errors import PoisonMessage
from switchyard.bus.topology import (
    declare_exchange,
    declare_queue,
    queue_arguments,
)
from switchyard.envelope import CATALOG, EventCatalog
from switchyard.events.auth import SessionRevoked
from switchyard.settings import ServiceSettings
from switchyard.tokens import DEFAULT_LEEWAY, TokenVerifier

log = logging.getLogger("switchyard.revocation")

REVOKED_EVENT = "auth.session.revoked"
# Auth's list of the sessions revoked and not yet expired (only services may read it).
REVOKED_SESSIONS_PATH = "/internal/v1/auth/revoked-sessions"
DEFAULT_CAPACITY = 200_000
PRUNE_INTERVAL = 30.0
FETCH_TIMEOUT = 10.0
FETCH_RETRY_MAX = 5.0
POLL_WHILE_DISCONNECTED = 2.0


class DenyList:
    """Session ids to refuse, each until its ``expires_at`` plus ``leeway`` seconds.

    :attr:`entries` is the plain dict the verifier looks ``sid`` up in (kept the same
    object for the list's life). Each of :attr:`listeners` is called with a session id when
    it is newly denied (a service holding long-lived connections closes that session's).

    Anyone can revoke sessions of their own (sign in, sign out) as fast as the limits let
    them, so the list bounds each user (``per_user``, default 1 % of ``capacity``): a user
    past it loses their own oldest entry, never someone else's (only their own revoked
    sessions' tokens come back). At ``capacity`` the user holding the most live entries
    loses their oldest (entries of no known user count as one more "user" and lose the one
    closest to its end): however many accounts flood the list, a user with fewer entries
    than each of them keeps theirs. Both count in :attr:`evicted`.
    """

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        per_user: int | None = None,
        leeway: float = DEFAULT_LEEWAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.per_user = per_user if per_user is not None else max(1, capacity // 100)
        if self.per_user < 1:
            raise ValueError("per_user must be positive")
        # Whose each entry is (when known), and each user's session ids, oldest first (ids
        # already gone are skipped, and compacted away once they outnumber the live ones).
        self._owner: dict[str, str] = {}
        self._by_user: dict[str, deque[str]] = {}
        self._live: dict[str, int] = {}  # live entries per user
        # Users (None: the entries of no known user) by their live entries, and the most
        # anyone holds: at capacity, the last of the top tier loses an entry (O(1) to keep;
        # ordered dicts, as a plain dict's first key is slow to find after many deletions).
        self._tiers: dict[int, OrderedDict[str | None, None]] = {}
        self._top = 0
        self._unowned: set[str] = set()
        self._unowned_ends: list[tuple[float, str]] = []  # a heap, like _ends
        self.capacity_evicted = 0
        self.leeway = leeway
        self.clock = clock
        self.entries: dict[str, float] = {}
        self._ends: list[tuple[float, str]] = []  # a heap of (deny until, session id)
        self.evicted = 0
        self.listeners: list[Callable[[str], None]] = []

    def __contains__(self, session_id: object) -> bool:
        return session_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, session_id: str, expires_at: float, user_id: str | None = None) -> bool:
        """Deny ``session_id`` (of ``user_id``, when known) until ``expires_at`` (epoch
        seconds) plus the leeway; False when it is already past that (nothing to deny) or
        already denied at least as long."""
        until = expires_at + self.leeway
        now = self.clock()
        if until <= now:
            return False
        known = self.entries.get(session_id)
        if known is not None and known >= until:
            return False
        if known is None and user_id is not None:
            self._trim(user_id)
        if known is None and len(self.entries) >= self.capacity:
            self.prune(now)
            while len(self.entries) >= self.capacity:
                self._drop_from_the_largest()
                self.evicted += 1
                self.capacity_evicted += 1
                if self.capacity_evicted % 1000 == 1:
                    log.warning(
                        "the deny-list is full; dropping entries of the users holding the most",
                        extra={"capacity": self.capacity, "evicted": self.capacity_evicted},
                    )
            ends = self._ends  # items of the entries just dropped, when on top: gone too
            while ends and self.entries.get(ends[0][1]) != ends[0][0]:
                heapq.heappop(ends)
        self.entries[session_id] = until
        self._push(self._ends, until, session_id, len(self.entries))
        if known is None:
            self._own(session_id, user_id)
        if session_id in self._unowned:
            self._push(self._unowned_ends, until, session_id, len(self._unowned))
        if known is None:
            for listener in self.listeners:
                try:
                    listener(session_id)
                except Exception:
                    log.exception("a revocation listener failed", extra={"session": session_id})
        return True

    def prune(self, now: float | None = None) -> int:
        """Forget the sessions whose tokens have all expired; returns how many."""
        now = self.clock() if now is None else now
        removed = 0
        while self._ends and self._ends[0][0] <= now:
            until, session_id = heapq.heappop(self._ends)
            if self.entries.get(session_id) == until:
                self._forget(session_id)
                removed += 1
        return removed

    def _push(
        self, heap: list[tuple[float, str]], until: float, session_id: str, live: int
    ) -> None:
        """Push onto ``heap``; once items of entries gone or extended (skipped when they come
        up) outnumber the live ones, rebuild it from the live entries."""
        heapq.heappush(heap, (until, session_id))
        if len(heap) > 2 * live + 16:
            ids = self._unowned if heap is self._unowned_ends else self.entries
            heap[:] = [(self.entries[sid], sid) for sid in ids]
            heapq.heapify(heap)

    def _drop_from_the_largest(self) -> None:
        """Forget an entry of the user holding the most live entries: their oldest (of no
        known user: the one closest to its end)."""
        # the last to reach that many: an older entry is never dropped for a newer tie
        user_id = next(reversed(self._tiers[self._top]))
        if user_id is not None:
            sessions = self._by_user[user_id]
            while sessions:
                oldest = sessions.popleft()
                if self._owner.get(oldest) == user_id:
                    self._forget(oldest)
                    return
        else:
            heap = self._unowned_ends
            while heap:
                until, session_id = heapq.heappop(heap)
                if session_id in self._unowned and self.entries.get(session_id) == until:
                    self._forget(session_id)
                    return
        raise AssertionError("the deny-list's bookkeeping lost an entry")  # pragma: no cover

    def _move(self, user_id: str | None, before: int, after: int) -> None:
        """Note that ``user_id`` now holds ``after`` live entries instead of ``before``."""
        tiers = self._tiers
        if before:
            tier = tiers[before]
            del tier[user_id]
            if not tier:
                del tiers[before]
                if self._top == before and after < before:
                    self._top = after
        if after:
            tiers.setdefault(after, OrderedDict())[user_id] = None
            self._top = max(self._top, after)

    def _trim(self, user_id: str) -> None:
        """Make room for one more entry of ``user_id``: past ``per_user`` live entries, that
        user's oldest goes (its heap item is skipped when it comes up)."""
        sessions = self._by_user.get(user_id)
        if sessions is None:
            return
        live = self._live.get(user_id, 0)
        if len(sessions) > 2 * live + 16:  # ids pruned meanwhile: drop them
            sessions = self._by_user[user_id] = deque(
                sid for sid in sessions if self._owner.get(sid) == user_id
            )
        while live >= self.per_user and sessions:
            oldest = sessions.popleft()
            if self._owner.get(oldest) == user_id:
                self._forget(oldest)
                self.evicted += 1
                live -= 1

    def _own(self, session_id: str, user_id: str | None) -> None:
        """Note the newly added ``session_id`` as ``user_id``'s (None: no known user's)."""
        if user_id is None:
            self._unowned.add(session_id)
            self._move(None, len(self._unowned) - 1, len(self._unowned))
            return
        self._by_user.setdefault(user_id, deque()).append(session_id)
        self._owner[session_id] = user_id
        live = self._live.get(user_id, 0)
        self._live[user_id] = live + 1
        self._move(user_id, live, live + 1)

    def _forget(self, session_id: str) -> None:
        del self.entries[session_id]
        user_id = self._owner.pop(session_id, None)
        if user_id is not None:
            before = self._live[user_id]
            live = before - 1
            if live:
                self._live[user_id] = live
            else:
                del self._live[user_id]
                self._by_user.pop(user_id, None)
            self._move(user_id, before, live)
        elif session_id in self._unowned:
            self._unowned.discard(session_id)
            self._move(None, len(self._unowned) + 1, len(self._unowned))


def revoked_sessions_url(jwks_url: str) -> str:
    """Auth's revoked-sessions list beside its JWKS (same origin)."""
    base = jwks_url.split("/.well-known/", 1)[0] if "/.well-known/" in jwks_url else jwks_url
    return base.rstrip("/") + REVOKED_SESSIONS_PATH


def _epoch(text: Any) -> float:
    if not isinstance(text, str):
        raise ValueError("expires_at is not a string")
    return _utc_epoch(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _utc_epoch(moment: datetime) -> float:
    """Epoch seconds of ``moment``; a time without an offset is UTC (never the host's zone),
    whether it came from auth's list or from the bus."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _revoked_item(item: Any) -> tuple[str, float, str | None]:
    """``(session id, expires at, user id or None)`` of an item of auth's list; ValueError
    when it is malformed."""
    if not isinstance(item, dict):
        raise ValueError("a revoked session that is not an object")
    session_id = item.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise ValueError("a revoked session without a session_id")
    user_id = item.get("user_id")
    return (
        session_id,
        _epoch(item.get("expires_at")),
        user_id if isinstance(user_id, str) and user_id else None,
    )


class RevocationsNotRead(Exception):
    """A process's feed has not yet read auth's list of revoked sessions (not ready)."""


class RevocationFeed:
    """Keeps a :class:`DenyList` up to date from the bus and auth's list (see the module)."""

    def __init__(
        self,
        bus: Bus,
        deny_list: DenyList,
        *,
        url: str,
        token: str | None,
        catalog: EventCatalog = CATALOG,
        prune_interval: float = PRUNE_INTERVAL,
        fetch_retry_max: float = FETCH_RETRY_MAX,
        poll_interval: float = POLL_WHILE_DISCONNECTED,
    ) -> None:
        self.bus = bus
        self.deny_list = deny_list
        self.url = url
        self.token = token
        self.catalog = catalog
        self.prune_interval = prune_interval
        self.fetch_retry_max = fetch_retry_max
        self.poll_interval = poll_interval
        self.queue_name = bus.queue_name(f"revocations.{uuid.uuid4().hex[:16]}")
        self.dlq_name = bus.queue_name("revocations.dlq")
        # Counted under the service's revocations name, not the process's random queue (one
        # series per service, not per restart).
        self._consumed = {
            outcome: bus.metrics.events_consumed.labels(
                bus.service, bus.queue_name("revocations"), outcome
            )
            for outcome in ("ok", "dead")
        }
        self.fetched = asyncio.Event()  # set after each complete read of auth's list
        self.fetches = 0
        self.read_once = False  # a complete read of auth's list has been done (any path)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._fetching: asyncio.Task[None] | None = None
        self._polling: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._connection = connection = await self.bus.consume_connection()
        self._channel = channel = await connection.channel()
        await channel.set_qos(prefetch_count=256)
        exchange = await declare_exchange(channel, self.bus.exchange_name)
        await declare_queue(
            channel, self.dlq_name, queue_arguments(self.bus.queue_expires_ms, self.bus.queue_type)
        )
        # Exclusive: deleted with this process's connection; a reconnection declares it anew
        # (aio-pika's robust channel restores queue, binding and consumer).
        self._queue = queue = await channel.declare_queue(
            self.queue_name, durable=False, exclusive=True, auto_delete=True
        )
        await queue.bind(exchange, routing_key=REVOKED_EVENT)
        self._consumer_tag = await queue.consume(self._on_message)
        connection.reconnect_callbacks.add(self._on_reconnect)
        connection.close_callbacks.add(self._on_connection_lost)
        self._open_session()
        self.refetch()
        self._spawn(self._prune_forever())
        log.info("following session revocations", extra={"queue": self.queue_name})

    def poll_until_started(self) -> None:
        """For a process that serves before :meth:`start` (the broker may be down): read
        auth's list now (retried until it succeeds, ``fetched`` set then) and every
        ``poll_interval`` seconds until :meth:`start` has a connected queue."""
        self._open_session()
        self.refetch()
        self._on_connection_lost()

    def _open_session(self) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
            self._session = aiohttp.ClientSession(timeout=timeout)

    async def stop(self) -> None:
        if self._connection is not None:
            self._connection.reconnect_callbacks.discard(self._on_reconnect)
            self._connection.close_callbacks.discard(self._on_connection_lost)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._channel is not None and not self._channel.is_closed:
            try:
                # Closing the channel ends the consumer; the queue goes with the connection.
                await asyncio.wait_for(self._channel.close(), 5.0)
            except TimeoutError:
                log.warning("the revocation channel did not close in time")
        self._channel = None

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """Forget a finished task; an unexpected failure is logged, never lost."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a revocation feed task failed", exc_info=task.exception())

    # -- the bus ---------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = decode_event(message.body, catalog=self.catalog)
            if not isinstance(event.data, SessionRevoked):
                raise PoisonMessage(f"not an {REVOKED_EVENT} event: {event.type!r}")
        except PoisonMessage as poison:
            await self._dead_letter(message, poison)
            return
        data = event.data
        self.deny_list.add(data.session_id, _utc_epoch(data.expires_at), data.user_id)
        await message.ack()
        self._consumed["ok"].inc()

    async def _dead_letter(self, message: AbstractIncomingMessage, error: PoisonMessage) -> None:
        await park(
            self.bus,
            message,
            error,
            queue=self.queue_name,
            dlq=self.dlq_name,
            attempts=0,
            reason="poison",
            # this process's queue goes with it: a replay goes to every replica's, by event
            exchange=self.bus.exchange_name,
        )
        await message.ack()
        self._consumed["dead"].inc()
        log.error(
            "revocation message parked in the DLQ",
            extra={"queue": self.dlq_name, "error": str(error)[:200]},
        )

    def _on_connection_lost(self, *_: Any) -> None:
        # No queue of ours exists until the connection is back: read auth's list meanwhile.
        if self._polling is None or self._polling.done():
            self._polling = self._spawn(self._poll_while_disconnected())

    async def _poll_while_disconnected(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            connection = self._connection  # None before start() (poll_until_started)
            if connection is not None and connection.connected.is_set():
                return  # the reconnection reads the list once more (_on_reconnect)
            try:
                added = await self.fetch()
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                log.warning(
                    "could not read the revoked sessions from auth while disconnected",
                    extra={"url": self.url, "error": repr(error)[:300]},
                )
            else:
                if added:
                    log.info("revoked sessions read while disconnected", extra={"added": added})

    def _on_reconnect(self, *_: Any) -> None:
        # Revocations published while the connection was down reached no queue of ours.
        log.info("broker connection restored; reading revoked sessions again")
        self.refetch()

    # -- auth's list -----------------------------------------------------------------------

    def refetch(self) -> None:
        """Read auth's list again (in the background, retried until it succeeds)."""
        if self._fetching is not None and not self._fetching.done():
            self._fetching.cancel()
        self.fetched.clear()
        self._fetching = self._spawn(self._fetch_until_done())

    async def _fetch_until_done(self) -> None:
        pause = 0.2
        while True:
            try:
                added = await self.fetch()
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                log.warning(
                    "could not read the revoked sessions from auth; retrying",
                    extra={"url": self.url, "error": repr(error)[:300], "retry_in": pause},
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.fetch_retry_max)
                continue
            self.fetches += 1
            self.fetched.set()
            log.info("revoked sessions read from auth", extra={"added": added})
            return

    async def fetch(self) -> int:
        """Read every page of auth's list into the deny-list; returns the entries added."""
        assert self._session is not None, "start() first"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        added = 0
        cursor: str | None = None
        while True:
            params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            async with self._session.get(self.url, params=params, headers=headers) as response:
                if response.status != 200:
                    raise aiohttp.ClientResponseError(
                        response.request_info,
                        response.history,
                        status=response.status,
                        message=f"auth answered {response.status}",
                    )
                body = await response.json()
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise ValueError("auth's revoked-session list has an unexpected shape")
            for item in body["items"]:
                try:
                    session_id, expires_at, user_id = _revoked_item(item)
                except ValueError as error:  # one bad item must not hide the others
                    log.warning(
                        "skipped a malformed item of auth's revoked-session list",
                        extra={"error": str(error), "item": repr(item)[:200]},
                    )
                    continue
                if self.deny_list.add(session_id, expires_at, user_id):
                    added += 1
            cursor = body.get("next_cursor")
            if not cursor:
                self.read_once = True
                return added
            if not isinstance(cursor, str):
                raise ValueError("auth's revoked-session list has a malformed next_cursor")

    async def check_ready(self) -> None:
        """The readiness check: raises :class:`RevocationsNotRead` until auth's list has
        been read completely once."""
        if not self.read_once:
            raise RevocationsNotRead("auth's revoked-session list not read yet")

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(self.prune_interval)
            self.deny_list.prune()


def deny_list_for(
    settings: ServiceSettings, verifier: TokenVerifier, *, capacity: int | None = None
) -> DenyList:
    """A :class:`DenyList` sized by ``settings`` that ``verifier`` consults from now on."""
    deny_list = DenyList(
        capacity=capacity or settings.revocation_deny_list_capacity,
        leeway=verifier.leeway,
        clock=verifier.clock,
    )
    verifier.denied = deny_list.entries
    return deny_list


def feed_for(settings: ServiceSettings, bus: Bus, deny_list: DenyList) -> RevocationFeed:
    """The :class:`RevocationFeed` of ``deny_list`` as ``settings`` configure it (not started);
    outside development and tests it needs ``INTERNAL_API_TOKEN`` to read auth's list."""
    token = settings.internal_api_token
    if token is None and settings.environment not in ("development", "test"):
        raise RuntimeError("INTERNAL_API_TOKEN must be set to read auth's revoked sessions")
    return RevocationFeed(
        bus,
        deny_list,
        url=settings.revoked_sessions_url or revoked_sessions_url(settings.jwks_url),
        token=token.get_secret_value() if token is not None else None,
    )


DENY_LIST = web.AppKey("switchyard.deny_list", DenyList)
REVOCATION_FEED = web.AppKey("switchyard.revocation_feed", RevocationFeed)


def revocation_context(
    *, capacity: int | None = None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` (after ``bus_context`` and ``verifier_context()``) that gives
    ``app[switchyard.authn.VERIFIER]`` a deny-list fed by a :class:`RevocationFeed`, and
    the readiness check ``revocations`` (failing until auth's list has been read once)."""
    from switchyard.authn import VERIFIER

    async def context(app: web.Application) -> AsyncIterator[None]:
        verifier = app[VERIFIER]
        deny_list = deny_list_for(app[keys.SETTINGS], verifier, capacity=capacity)
        feed = feed_for(app[keys.SETTINGS], app[keys.BUS], deny_list)
        await feed.start()
        app[DENY_LIST] = deny_list
        app[REVOCATION_FEED] = feed
        # Not ready until auth's list has been read once (the tokens of sessions revoked
        # before this process started would pass meanwhile).
        app[keys.READINESS_CHECKS]["revocations"] = feed.check_ready
        try:
            yield
        finally:
            await feed.stop()

    return context


__all__ = [
    "DENY_LIST",
    "REVOCATION_FEED",
    "REVOKED_EVENT",
    "REVOKED_SESSIONS_PATH",
    "DenyList",
    "RevocationFeed",
    "RevocationsNotRead",
    "deny_list_for",
    "feed_for",
    "revocation_context",
    "revoked_sessions_url",
]
