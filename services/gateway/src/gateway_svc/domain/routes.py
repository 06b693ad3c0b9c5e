"""The route table: which upstream serves a path, and under which rules.

The table is read from YAML (``routes.yaml`` beside this package by default) and
compiled once into byte prefixes, so matching a request is a dictionary lookup
plus a few ``startswith`` calls on the raw path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AuthMode = Literal["required", "public", "admin"]
Sticky = Literal["none", "client_ip"]

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BreakerConfig(_Strict):
    failures: int = Field(default=5, ge=1)
    # The first opening lasts open_seconds, each further one (without a successful
    # response in between) twice as long, up to max_open_seconds.
    open_seconds: float = Field(default=1.0, gt=0)
    max_open_seconds: float = Field(default=30.0, gt=0)
    # While open, GET probe_path every probe_interval s; a 200 closes the circuit
    # (null: no active probe, only the half-open request once the open time is over).
    probe_path: str | None = Field(default="/readyz", pattern=r"^/[!-~]*$")
    probe_interval: float = Field(default=0.5, gt=0)
    # Every host of the upstream open: route to them anyway rather than refuse
    # (Envoy's panic threshold); false → 503 with Retry-After.
    panic: bool = True

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> BreakerConfig:
        if self.max_open_seconds < self.open_seconds:
            raise ValueError("max_open_seconds must be at least open_seconds")
        return self


class UpstreamConfig(_Strict):
    urls: list[str] = Field(min_length=1)
    connect_timeout: float = Field(default=2.0, gt=0)
    breaker: BreakerConfig = BreakerConfig()

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
                raise ValueError(f"upstream {url!r} must be http://host:port (no path)")
        return urls


class RateLimitConfig(_Strict):
    limit: int = Field(ge=1)
    window: float = Field(gt=0)
    # Whose quota: "caller" = the user when a valid token came with the request, else the
    # client address; "address" = always the client address (credential endpoints: a token
    # of the attacker's own account must not buy a fresh quota for guesses).
    per: Literal["caller", "address"] = "caller"


class OutcomeConfig(_Strict):
    """Limits charged after the answer, from the upstream's ``X-Auth-Outcome`` (auth says
    whether a password or code was right, and whose account it was: a keyed hash)."""

    # What a request costs on the route's own (address) limit: spent at admission as if
    # the check failed, all but 1 given back when auth answers that it succeeded.
    failure_cost: int = Field(default=1, ge=1, le=100)
    # Failed checks per account: a policy name, keyed by (account, address) or the account alone.
    account_limit: str
    per_address: bool = True


class RouteConfig(_Strict):
    name: str
    upstream: str
    prefix: str | None = None
    paths: list[str] = Field(default_factory=list)
    methods: list[str] | None = None
    # The route only matches when every one of these query parameters is present
    # (signed download links carry their own proof instead of a token).
    when_query: list[str] = Field(default_factory=list)
    auth: AuthMode | None = None
    rate_limit: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    max_body_bytes: int | None = Field(default=None, ge=0)
    websocket: bool = False
    sticky: Sticky = "none"
    outcome: OutcomeConfig | None = None

    @model_validator(mode="after")
    def _one_matcher(self) -> RouteConfig:
        if (self.prefix is None) == (not self.paths):
            raise ValueError(f"route {self.name!r} needs either a prefix or paths (not both)")
        for path in [self.prefix or "", *self.paths]:
            if path and not path.startswith("/"):
                raise ValueError(f"route {self.name!r}: {path!r} must start with '/'")
        return self


class DefaultsConfig(_Strict):
    auth: AuthMode = "required"
    rate_limit: str = "default"
    timeout: float = Field(default=30.0, gt=0)
    max_body_bytes: int = Field(default=1024 * 1024, ge=0)


class RouteFile(_Strict):
    upstreams: dict[str, UpstreamConfig]
    rate_limits: dict[str, RateLimitConfig]
    defaults: DefaultsConfig = DefaultsConfig()
    routes: list[RouteConfig]

    @model_validator(mode="after")
    def _references_exist(self) -> RouteFile:
        names = set()
        for route in self.routes:
            if route.name in names:
                raise ValueError(f"route name {route.name!r} is used twice")
            names.add(route.name)
            if route.upstream not in self.upstreams:
                raise ValueError(f"route {route.name!r} names unknown upstream {route.upstream!r}")
            policy = route.rate_limit or self.defaults.rate_limit
            if policy not in self.rate_limits:
                raise ValueError(f"route {route.name!r} names unknown rate limit {policy!r}")
            if route.outcome and route.outcome.account_limit not in self.rate_limits:
                raise ValueError(
                    f"route {route.name!r} names unknown rate limit {route.outcome.account_limit!r}"
                )
        return self


def load_route_file(
    path: Path, upstream_overrides: Mapping[str, list[str]] | None = None
) -> RouteFile:
    """Read and validate a route file; ``upstream_overrides`` replace URL lists by group name."""
    raw: Any = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping")
    for name, urls in (upstream_overrides or {}).items():
        group = raw.setdefault("upstreams", {}).setdefault(name, {})
        group["urls"] = list(urls)
    return RouteFile.model_validate(raw)


class RateLimitPolicy:
    """A named limit; the bytes the hot path needs are rendered once."""

    __slots__ = (
        "name",
        "limit",
        "window",
        "per_address",
        "emission_interval",
        "key_prefix",
        "headers",
    )

    def __init__(self, name: str, limit: int, window: float, *, per_address: bool = False) -> None:
        self.name = name
        self.limit = limit
        self.window = window
        self.per_address = per_address  # keyed by the client address even with a token
        self.emission_interval = window / limit
        self.key_prefix = name.encode() + b":"
        # RateLimit-Policy, then the head of the RateLimit field (its r and t follow).
        self.headers = b'RateLimit-Policy: "%s";q=%d;w=%d\r\nRateLimit: "%s";' % (
            name.encode(),
            limit,
            max(1, round(window)),
            name.encode(),
        )

    def __repr__(self) -> str:
        return f"RateLimitPolicy({self.name!r}, {self.limit}, {self.window})"


@dataclass(frozen=True, slots=True, eq=False)
class OutcomeLimits:
    """A route's after-the-answer limits, compiled (see :class:`OutcomeConfig`)."""

    refund: int  # given back to the route's (address) limit after a success
    account: RateLimitPolicy
    per_address: bool


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """A compiled route: everything the proxy needs to know per request."""

    name: str
    upstream: str
    auth: AuthMode
    policy: RateLimitPolicy
    timeout: float
    max_body_bytes: int
    websocket: bool
    sticky: Sticky
    methods: frozenset[bytes] | None
    when_query: tuple[bytes, ...]
    outcome: OutcomeLimits | None = None
    cost: int = 1  # spent on the route's policy at admission

    @property
    def public(self) -> bool:
        return self.auth == "public"

    def accepts(self, method: bytes, query: bytes, *, any_method: bool = False) -> bool:
        if not any_method and self.methods is not None and method not in self.methods:
            return False
        if self.when_query:
            names = {part.split(b"=", 1)[0] for part in query.split(b"&")}
            return all(name in names for name in self.when_query)
        return True


def _boundary_ok(path: bytes, prefix: bytes) -> bool:
    """``/api/v1/auth`` matches ``/api/v1/auth`` and ``/api/v1/auth/x``, not ``/api/v1/authx``."""
    return len(path) == len(prefix) or prefix.endswith(b"/") or path[len(prefix)] == 0x2F


class RouteTable:
    """Exact paths first, then the longest matching prefix; ties keep file order."""

    def __init__(self, source: RouteFile) -> None:
        self.source = source
        self.policies = {
            name: RateLimitPolicy(name, cfg.limit, cfg.window, per_address=cfg.per == "address")
            for name, cfg in source.rate_limits.items()
        }
        defaults = source.defaults
        self.routes: list[Route] = []
        self._exact: dict[bytes, list[Route]] = {}
        prefixed: list[tuple[bytes, int, Route]] = []
        for order, cfg in enumerate(source.routes):
            route = Route(
                name=cfg.name,
                upstream=cfg.upstream,
                auth=cfg.auth or defaults.auth,
                policy=self.policies[cfg.rate_limit or defaults.rate_limit],
                timeout=cfg.timeout or defaults.timeout,
                max_body_bytes=(
                    cfg.max_body_bytes
                    if cfg.max_body_bytes is not None
                    else defaults.max_body_bytes
                ),
                websocket=cfg.websocket,
                sticky=cfg.sticky,
                methods=frozenset(m.upper().encode() for m in cfg.methods) if cfg.methods else None,
                when_query=tuple(name.encode() for name in cfg.when_query),
                outcome=(
                    OutcomeLimits(
                        cfg.outcome.failure_cost - 1,
                        self.policies[cfg.outcome.account_limit],
                        cfg.outcome.per_address,
                    )
                    if cfg.outcome
                    else None
                ),
                cost=cfg.outcome.failure_cost if cfg.outcome else 1,
            )
            self.routes.append(route)
            for path in cfg.paths:
                self._exact.setdefault(path.encode(), []).append(route)
            if cfg.prefix is not None:
                prefixed.append((cfg.prefix.encode(), order, route))
        prefixed.sort(key=lambda item: (-len(item[0]), item[1]))
        self._prefixes = [(prefix, route) for prefix, _, route in prefixed]

    def match(self, method: bytes, path: bytes, query: bytes) -> Route | None:
        candidates = self._exact.get(path)
        if candidates is not None:
            for route in candidates:
                if route.accepts(method, query):
                    return route
        for prefix, route in self._prefixes:
            if (
                path.startswith(prefix)
                and _boundary_ok(path, prefix)
                and route.accepts(method, query)
            ):
                return route
        return None

    def allowed_methods(self, path: bytes, query: bytes) -> frozenset[bytes]:
        """The methods the routes serving ``path`` take (for a 405's ``Allow``, after
        :meth:`match` found none for the request's method); empty when no route serves
        the path at all (a 404)."""
        serving = [
            route
            for route in self._exact.get(path, ())
            if route.accepts(b"", query, any_method=True)
        ]
        serving += [
            route
            for prefix, route in self._prefixes
            if path.startswith(prefix)
            and _boundary_ok(path, prefix)
            and route.accepts(b"", query, any_method=True)
        ]
        if any(route.methods is None for route in serving):
            return frozenset()  # a route takes every method: not a method problem
        return frozenset().union(*(route.methods or () for route in serving))

    def describe(self) -> list[dict[str, Any]]:
        """The table as plain data, for the admin endpoint."""
        out = []
        for cfg, route in zip(self.source.routes, self.routes, strict=True):
            out.append(
                {
                    "name": route.name,
                    "prefix": cfg.prefix,
                    "paths": cfg.paths,
                    "methods": cfg.methods,
                    "when_query": cfg.when_query,
                    "upstream": route.upstream,
                    "auth": route.auth,
                    "rate_limit": {
                        "policy": route.policy.name,
                        "limit": route.policy.limit,
                        "window": route.policy.window,
                    },
                    "timeout": route.timeout,
                    "max_body_bytes": route.max_body_bytes,
                    "websocket": route.websocket,
                    "sticky": route.sticky,
                    "outcome": cfg.outcome.model_dump() if cfg.outcome else None,
                }
            )
        return out
