"""Offers: a customer pays a contractor through escrow (DESIGN §5).

    created ──accept (contractor)──▶ accepted ──complete (customer)──▶ completed
       │                               │
       └─cancel (either party)─▶ cancelled   └─refund (admin)─▶ refunded

``opening`` (the hold is being taken) and ``rejected`` (the wallet was short) are the
service's own: an offer is shown from ``created`` on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OfferStatus = Literal[
    "opening", "created", "accepted", "completed", "cancelled", "refunded", "rejected"
]
Action = Literal["accept", "complete", "cancel", "refund"]
PUBLIC_STATUSES: frozenset[str] = frozenset(
    {"created", "accepted", "completed", "cancelled", "refunded"}
)

# Which status each action leaves, and the status it reaches.
MOVES: dict[Action, tuple[OfferStatus, OfferStatus]] = {
    "accept": ("created", "accepted"),
    "complete": ("accepted", "completed"),
    "cancel": ("created", "cancelled"),
    "refund": ("accepted", "refunded"),
}


class IllegalTransition(Exception):
    """The offer is not in the state the action starts from."""

    def __init__(self, action: str, current: str, moving: str = "") -> None:
        self.action = action
        self.current = current
        self.moving = moving
        detail = f"The offer is {current}; it cannot be {_past(action)}."
        if moving:
            detail = f"The offer is {current} and being changed ({moving}); try again shortly."
        super().__init__(detail)


class NotAllowed(Exception):
    """The caller may not take this action on this offer."""


def _past(action: str) -> str:
    return {
        "accept": "accepted",
        "complete": "completed",
        "cancel": "cancelled",
        "refund": "refunded",
    }.get(action, action)


@dataclass(frozen=True)
class Caller:
    user_id: str
    is_admin: bool = False
    is_contractor: bool = False  # the role as stored (auth.user.* events), not the token's


@dataclass(frozen=True)
class Parties:
    customer_id: str
    contractor_id: str


def authorize(action: Action, caller: Caller, parties: Parties, status: str) -> Action:
    """The action to run for ``caller`` (an admin's cancel of an accepted offer is the
    refund, DESIGN §5); raises NotAllowed or IllegalTransition."""
    if action == "accept":
        if caller.user_id != parties.contractor_id or not caller.is_contractor:
            raise NotAllowed("Only the offer's contractor (with the contractor role) accepts it.")
    elif action == "complete":
        if caller.user_id != parties.customer_id:
            raise NotAllowed("Only the offer's customer completes it.")
    elif action == "cancel":
        if status == "accepted" and caller.is_admin:
            return "refund"
        if (
            caller.user_id not in (parties.customer_id, parties.contractor_id)
            and not caller.is_admin
        ):
            raise NotAllowed("Only the offer's parties cancel it.")
    elif action == "refund" and not caller.is_admin:
        raise NotAllowed("Only an admin refunds an accepted offer.")
    return action


def check_move(action: Action, status: str, moving: str = "") -> tuple[OfferStatus, OfferStatus]:
    start, end = MOVES[action]
    if status != start or moving:
        raise IllegalTransition(action, status, moving)
    return start, end
