"""`make bench`: run every benchmark module and print one table, baselines beside results.

    python -m benchmarks                 all of them
    python -m benchmarks bus auth        just these

Each module exposes ``async def run() -> list[dict]`` with rows of
``benchmark, metric, value, baseline, unit, note``. Benchmarks use the machine's
RabbitMQ (``AMQP_URL``) and start their own embedded store, servers and load
generators on loopback; each run is bounded in time.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
import time
import traceback
from typing import Any

MODULES = ["bus", "auth", "notification", "gateway", "file", "payments", "chat"]


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:,.2f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ratio(row: dict[str, Any]) -> str:
    value, baseline = row.get("value"), row.get("baseline")
    if isinstance(value, int | float) and isinstance(baseline, int | float) and baseline:
        return f"{value / baseline:.2f}×"
    return ""


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = ["benchmark", "metric", "value", "baseline", "ratio", "unit", "note"]
    cells = [headers] + [
        [
            str(r.get("benchmark", "")),
            str(r.get("metric", "")),
            _fmt(r.get("value")),
            _fmt(r.get("baseline")),
            _ratio(r),
            str(r.get("unit", "")),
            str(r.get("note", "")),
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    right = {2, 3, 4}
    for n, row in enumerate(cells):
        print(
            " | ".join(
                c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)
            )
        )
        if n == 0:
            print("-+-".join("-" * w for w in widths))


async def main(names: list[str]) -> int:
    rows: list[dict[str, Any]] = []
    failed = []
    for name in names:
        started = time.perf_counter()
        print(f"running benchmarks.{name} …", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            rows.extend(await module.run())
        except Exception:  # noqa: BLE001 — one broken benchmark must not hide the others' results
            traceback.print_exc()
            failed.append(name)
            rows.append({"benchmark": name, "metric": "FAILED", "note": "see the traceback above"})
        print(f"  done in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    print()
    print_table(rows)
    return 1 if failed else 0


if __name__ == "__main__":
    selected = sys.argv[1:] or [m for m in MODULES if importlib.util.find_spec(f"benchmarks.{m}")]
    raise SystemExit(asyncio.run(main(selected)))
