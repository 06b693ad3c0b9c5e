"""A service's settings for a test, built in layers:

build = settings_builder(ChatSettings, settings_overrides, jwks_server.auth_settings, {...})
settings = build(presence_ttl=1.0)  # the last word: the test's own overrides
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

S = TypeVar("S")


def settings_builder(cls: Callable[..., S], *layers: Mapping[str, Any]) -> Callable[..., S]:
    """``build(**overrides)``: ``cls`` from ``layers`` merged in order, then ``overrides``."""

    def build(**overrides: Any) -> S:
        values: dict[str, Any] = {}
        for layer in layers:
            values.update(layer)
        values.update(overrides)
        return cls(**values)

    return build


__all__ = ["settings_builder"]
