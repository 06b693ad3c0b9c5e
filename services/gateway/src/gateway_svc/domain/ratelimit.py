"""GCRA (generic cell rate algorithm) and the IETF RateLimit header fields.

A policy allows ``limit`` requests per ``window`` seconds with a burst of the whole
quota. The state per key is one number, the theoretical arrival time (TAT): the
moment the key's bucket would be full again. Each allowed request pushes TAT by
the emission interval ``T = window / limit``; a request is refused while it would
push TAT more than ``window`` into the future.

Headers follow draft-ietf-httpapi-ratelimit-headers-10:
``RateLimit-Policy: "default";q=600;w=60`` and ``RateLimit: "default";r=599;t=1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway_svc.domain.routes import RateLimitPolicy


@dataclass(slots=True)
class Decision:
    allowed: bool
    remaining: int
    reset: float  # seconds until the quota is whole again
    retry_after: float  # seconds until one request would pass (0 when allowed)


def gcra(
    policy: RateLimitPolicy, tat: float, now: float, cost: int = 1, *, debit: bool = False
) -> tuple[Decision, float]:
    """Decide one request; returns the decision and the TAT to store (unchanged on refusal).

    ``cost`` is how many requests' worth the request spends: 0 only asks whether one more
    would pass (nothing is spent). ``debit=True`` settles an account after the fact, never
    refused: a positive cost is spent even past the limit (a debt of at most one more
    window delays the key's next requests), a negative one is given back.
    """
    interval = policy.emission_interval
    if tat < now:
        tat = now
    if debit:
        new_tat = min(max(tat + cost * interval, now), now + 2 * policy.window)
        allowed = new_tat - policy.window <= now
        return Decision(allowed, 0, new_tat - now, 0.0), new_tat
    allow_at = tat + max(cost, 1) * interval - policy.window
    if now < allow_at:
        remaining = 0
        return Decision(False, remaining, tat - now, allow_at - now), tat
    new_tat = tat + cost * interval
    remaining = int((policy.window - (new_tat - now)) / interval + 1e-6)
    return Decision(True, remaining, new_tat - now, 0.0), new_tat


def state_header(policy: RateLimitPolicy, decision: Decision) -> bytes:
    """``RateLimit-Policy`` and ``RateLimit`` header lines for one decision."""
    return policy.headers + b"r=%d;t=%d\r\n" % (decision.remaining, math.ceil(decision.reset))


def retry_after_seconds(decision: Decision) -> int:
    return max(1, math.ceil(decision.retry_after))
