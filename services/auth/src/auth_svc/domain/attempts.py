"""Attempt budgets: at most ``limit`` attempts per key in a fixed window, reserved *before*
the attempt is made (the store side is ``adapters.budgets``).

Used for password attempts per address (the lockout), wrong code guesses per address and
purpose, and codes issued per address and purpose (with a minimum interval: the cooldown).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Reservation:
    granted: bool
    used: int  # attempts counted in the window, this one included when granted
    until: datetime  # the end of the window (when a refused caller may try again)
    last: bool = False  # this reservation took the last slot of the window

    def retry_after(self, now: datetime) -> float:
        return max(1.0, (self.until - now).total_seconds())
