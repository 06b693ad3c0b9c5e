"""A per-socket flood limit: a token bucket, and a count of refusals in a row."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: int
    tokens: float = field(default=-1.0)
    updated: float = field(default_factory=time.monotonic)
    refused_in_a_row: int = 0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def allow(self, now: float | None = None) -> bool:
        moment = time.monotonic() if now is None else now
        self.tokens = min(float(self.burst), self.tokens + (moment - self.updated) * self.rate)
        self.updated = moment
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.refused_in_a_row = 0
            return True
        self.refused_in_a_row += 1
        return False
