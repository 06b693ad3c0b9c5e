"""Per-user notification preferences: one switch per category × channel.

Sign-up and security messages (codes, password changes, session alerts) are
always delivered: a user cannot turn them off, because an account whose owner
cannot receive them cannot be verified, recovered or protected. Marketing is
opt-in; every other category is on until the user turns it off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

Category = Literal["signup", "security", "chat", "payments", "files", "marketing"]
Channel = Literal["email", "push", "in_app", "webhook"]

CATEGORIES: tuple[Category, ...] = get_args(Category)
CHANNELS: tuple[Channel, ...] = get_args(Channel)
ALWAYS_SENT: frozenset[Category] = frozenset({"signup", "security"})
OPT_IN: frozenset[Category] = frozenset({"marketing"})

Matrix = dict[Category, dict[Channel, bool]]


class CannotOptOut(ValueError):
    """A change tried to turn off a category that is always sent."""

    def __init__(self, category: Category, channel: Channel) -> None:
        super().__init__(f"{category} messages cannot be turned off ({channel})")
        self.category = category
        self.channel = channel


def default_enabled(category: Category) -> bool:
    return category not in OPT_IN


@dataclass(frozen=True)
class Preferences:
    """A user's choices; cells the user never touched keep their default.

    ``version`` counts saved changes, so concurrent edits are detected by a
    guarded update instead of silently overwriting each other.
    """

    user_id: str
    choices: Mapping[Category, Mapping[Channel, bool]] = field(default_factory=dict)
    version: int = 0

    def allows(self, category: Category, channel: Channel) -> bool:
        if category in ALWAYS_SENT:
            return True
        return bool(self.choices.get(category, {}).get(channel, default_enabled(category)))

    def matrix(self) -> Matrix:
        """Every category × channel with its effective value."""
        return {
            category: {channel: self.allows(category, channel) for channel in CHANNELS}
            for category in CATEGORIES
        }

    def changed(self, changes: Mapping[Category, Mapping[Channel, bool]]) -> Preferences:
        """A copy with ``changes`` applied; :class:`CannotOptOut` for always-sent categories."""
        merged: dict[Category, dict[Channel, bool]] = {
            category: dict(channels) for category, channels in self.choices.items()
        }
        for category, channels in changes.items():
            if category not in CATEGORIES:
                raise ValueError(f"unknown category {category!r}")
            for channel, enabled in channels.items():
                if channel not in CHANNELS:
                    raise ValueError(f"unknown channel {channel!r}")
                if category in ALWAYS_SENT:
                    if not enabled:
                        raise CannotOptOut(category, channel)
                    continue  # always on: nothing to store
                merged.setdefault(category, {})[channel] = bool(enabled)
        return Preferences(self.user_id, merged, self.version + 1)
