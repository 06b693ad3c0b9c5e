"""The row every benchmark module returns: one line of the `make bench` table."""

from __future__ import annotations

from typing import Any


def row(
    benchmark: str,
    metric: str,
    value: float | None,
    baseline: float | None,
    unit: str,
    note: str = "",
) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "metric": metric,
        "value": value,
        "baseline": baseline,
        "unit": unit,
        "note": note,
    }
