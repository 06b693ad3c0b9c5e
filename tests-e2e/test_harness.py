"""The harness itself: what it marks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# A second pytest collecting the suite: over the default 120 s on a loaded machine (three
# test workers on two cores); the subject is what gets marked, not how fast.
@pytest.mark.timeout(400)
def test_only_the_journeys_are_marked_e2e_in_a_mixed_run() -> None:
    """`pytest -m "not e2e" shared services tests-e2e` must still run the other tests."""
    unit = "services/notification/tests/unit/test_delivery_ids.py"
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        + ["-m", "not e2e", unit, "tests-e2e"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=360,
    )
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    assert ids and all(line.startswith(unit) for line in ids), collected.stdout[-2000:]
