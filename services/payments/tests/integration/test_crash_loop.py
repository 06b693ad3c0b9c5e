"""Crash injection: a ledger worker process is killed (SIGKILL) at random points — between
debit and credit, between credit and ``posted``, anywhere a parent's timer lands — at
least 20 times; after each kill the sweeper completes what was in flight. At the end every
transfer is final, Σ = 0, no never-negative account is below zero, and every account holds
exactly what a one-by-one replay of the plan gives: each transfer moved its money once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from payments_svc.adapters.ledger import ACCOUNTS, TRANSFERS, WALLET_ENTRIES, Ledger, ledger_indexes
from payments_svc.adapters.maintenance import LedgerCheck, PruneControl, Pruner, StaleTransfers
from payments_svc.domain import accounts as acct
from payments_svc.domain.accounts import AccountSpec, TransferSpec
from switchyard.mongo import ensure_indexes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

WORKER = Path(__file__).with_name("proc_ledger.py")
MIN_KILLS = 20
USD = "USD"


def plan(seed: int, size: int = 50) -> list[TransferSpec]:
    rng = random.Random(seed)
    wallets = [AccountSpec(acct.wallet(USD, f"u{n}"), owner=f"u{n}") for n in range(4)]
    holds = [AccountSpec(acct.hold(USD, f"of{n}"), owner="u0") for n in range(3)]
    world, revenue = (
        AccountSpec(acct.platform("world", USD)),
        AccountSpec(acct.platform("revenue", USD)),
    )
    specs = [TransferSpec(f"fund:{n}", world, w, 5_000, "deposit") for n, w in enumerate(wallets)]
    for n in range(size):
        pick = rng.random()
        if pick < 0.4:
            debit, credit = rng.sample(wallets, 2)
        elif pick < 0.7:
            debit, credit = rng.choice(wallets), rng.choice(holds)
        elif pick < 0.85:
            debit, credit = rng.choice(holds), revenue
        else:
            debit, credit = rng.choice(holds), rng.choice(wallets)
        specs.append(TransferSpec(f"t:{n}", debit, credit, rng.randint(1, 4_000), "adjustment"))
    return specs


def replay(specs: list[TransferSpec]) -> tuple[dict[str, int], dict[str, str]]:
    """What the ledger must hold: the plan applied one transfer after another."""
    balances: Counter[str] = Counter()
    states = {}
    for spec in specs:
        if spec.debit.never_negative and balances[spec.debit.id] < spec.amount:
            states[spec.id] = "failed"
            continue
        balances[spec.debit.id] -= spec.amount
        balances[spec.credit.id] += spec.amount
        states[spec.id] = "posted"
    return dict(balances), states


class Workers:
    """The forking worker script (see proc_ledger.py): one run per call, each a child process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> Workers:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def _line(self) -> str:
        assert self.process.stdout is not None
        return (await asyncio.wait_for(self.process.stdout.readline(), 120)).decode().strip()

    async def run(self, config: dict, *, timer: float | None = None) -> tuple[int, list[str]]:
        """One worker run: (exit status, the ledger steps it printed)."""
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(config) + "\n").encode())
        await self.process.stdin.drain()
        pid = int((await self._line()).split()[1])
        steps: list[str] = []
        killer = None
        if timer is not None:

            async def kill_later() -> None:
                await asyncio.sleep(timer)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # the child this test started, by its id

            killer = asyncio.create_task(kill_later())
        while True:
            line = await self._line()
            if not line:
                continue
            if line.startswith("exit "):
                if killer is not None:
                    killer.cancel()
                return int(line.split()[1]), [s for s in steps if s not in ("ready", "done")]
            steps.append(line)

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        await asyncio.wait_for(self.process.wait(), 30)


async def race(sweeper: StaleTransfers, pruner: Pruner) -> None:
    while True:
        await sweeper.sweep(after=0)
        await pruner.prune()
        await asyncio.sleep(0.01)  # the service's sweeper waits a whole second


async def test_sigkill_loop_then_sweeper_moves_every_transfer_exactly_once(
    mongo_url, mongo_db, tmp_path
):
    await ensure_indexes(mongo_db, ledger_indexes())
    control = PruneControl(mongo_db, lease_seconds=0.5)  # racing pruners get cancelled
    await control.ensure()
    ledger = Ledger(mongo_db)
    sweeper, pruner = StaleTransfers(mongo_db, ledger), Pruner(mongo_db, control)
    specs = plan(seed=20261129)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps([s.to_document() for s in specs]))
    config = {"mongo_url": mongo_url, "db": mongo_db.name, "plan": str(plan_file)}
    rng = random.Random(7)
    workers = await Workers.start()

    # The two crash points the issue names first, then random ones.
    schedule = ["name:debited", "name:credited", "name:inserted", "name:refused"]
    kills: Counter[str] = Counter()
    for attempt in range(80):
        if sum(kills.values()) >= MIN_KILLS + 2:
            break
        timer = None
        if attempt < len(schedule):
            kill = schedule[attempt]
        elif attempt % 3 == 0:
            kill, timer = "never", rng.uniform(0.0, 0.15)  # the parent's timer: any point at all
        else:
            kill = f"step:{rng.randint(1, 12)}"
        racing: list[asyncio.Task[None]] = []
        if attempt % 5 == 1:
            # Two sweepers (and a pruner) race the live worker over the same transfers.
            racing = [asyncio.create_task(race(sweeper, pruner)) for _ in range(2)]
        status, steps = await workers.run({**config, "kill": kill}, timer=timer)
        for task in racing:
            task.cancel()
        await asyncio.gather(*racing, return_exceptions=True)
        if status == -9:
            kills[steps[-1] if steps else "before-first-step"] += 1
            # "After restart": the sweeper finishes whatever the dead worker had in flight.
            await sweeper.sweep(after=0)
            if attempt % 4 == 0:
                await pruner.prune()
        else:
            assert status == 0, status
    print("kills by the last step passed:", dict(kills))
    assert sum(kills.values()) >= MIN_KILLS, kills
    assert kills["debited"] >= 1 and kills["credited"] >= 1, kills

    status, _ = await workers.run({**config, "kill": "never"})
    assert status == 0
    await workers.stop()
    await sweeper.sweep(after=0)
    await asyncio.sleep(0.6)  # a cancelled racing pruner's lease runs out
    await pruner.prune()

    expected, states = replay(specs)
    transfers = {t["_id"]: t for t in await mongo_db[TRANSFERS].find({}).to_list()}
    assert {tid: t["state"] for tid, t in transfers.items()} == states
    accounts = {a["_id"]: a for a in await mongo_db[ACCOUNTS].find({}).to_list()}
    assert {k: v["balance"] for k, v in accounts.items() if v["balance"] or k in expected} == {
        k: v for k, v in expected.items() if v or k in accounts
    }
    assert all(a["applied"] == {} and a["entries"] == 0 for a in accounts.values())
    report = await LedgerCheck(mongo_db, control).run()
    assert report.balanced and report.total == 0 and report.pending_transfers == 0, report.json()
    # Each wallet's history: one line per posted transfer, running balances that add up.
    for account_id, account in accounts.items():
        if not account_id.startswith("wallet:"):
            continue
        lines = (
            await mongo_db[WALLET_ENTRIES].find({"account": account_id}).sort("seq", 1).to_list()
        )
        assert [line["seq"] for line in lines] == list(range(1, account["seq"] + 1))
        running = 0
        for line in lines:
            running += line["amount"]
            assert line["after"] == running
        assert running == account["balance"]
