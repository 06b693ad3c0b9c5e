"""Property: random sequences of deposits, withdrawals, offers, accepts, completes, cancels
and refunds — run through the service's own commands on the embedded store — keep Σ = 0
and every never-negative account ≥ 0 after every step, and every wallet equals a plain
model of what those steps should have done."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments_svc.adapters.ledger import ledger_indexes
from payments_svc.adapters.maintenance import LedgerCheck, PruneControl, Pruner
from payments_svc.domain import accounts as acct
from payments_svc.domain.money import Money, fee
from payments_svc.handlers import offers as offer_commands
from payments_svc.handlers import wallets
from switchyard.directory import UserDirectory
from switchyard.envelope import utcnow
from switchyard.mongo import ensure_indexes
from switchyard.problems import Problem

from ..support import identity, offline_books

pytestmark = pytest.mark.integration

PEOPLE = 3  # users 0..2; user 2 is the contractor
amounts = st.integers(min_value=1, max_value=30_000)
step = st.one_of(
    st.tuples(st.just("deposit"), st.integers(0, PEOPLE - 1), amounts),
    st.tuples(st.just("withdraw"), st.integers(0, PEOPLE - 1), amounts),
    st.tuples(st.just("offer"), st.integers(0, 1), amounts),
    st.tuples(
        st.sampled_from(["accept", "complete", "cancel", "refund"]), st.integers(0, 7), st.just(0)
    ),
)


@pytest.fixture
async def ledger_db(mongo_db):
    await ensure_indexes(mongo_db, ledger_indexes())
    control = PruneControl(mongo_db)
    await control.ensure()
    return mongo_db, control


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(step, min_size=1, max_size=14))
async def test_random_sequences_keep_the_books_balanced(ledger_db, steps):
    db, control = ledger_db
    books = offline_books(db)
    check, pruner = LedgerCheck(db, control), Pruner(db, control)
    run = uuid.uuid4().hex[:8]
    users = [f"p{run}{n}" for n in range(PEOPLE)]
    contractor = users[2]
    directory = UserDirectory(db["payments_users"])
    for uid in users:
        roles = ["contractor"] if uid == contractor else ["customer"]
        await directory.record_profile(
            uid, email=f"{uid}@example.com", display_name=uid, roles=roles, as_of=utcnow()
        )
    admin = identity("admin" + run, "admin")
    # Admin actions that move money check the stored roles too, not only the token's.
    await directory.record_profile(
        admin.user_id,
        email=f"{admin.user_id}@example.com",
        display_name="admin",
        roles=["admin"],
        as_of=utcnow(),
    )
    model: Counter[str] = Counter()
    offers: list[dict] = []

    for kind, who, amount in steps:
        if kind == "deposit":
            await wallets.deposit(identity(users[who]), Money(amount, "USD"), books=books)
            model[users[who]] += amount
        elif kind == "withdraw":
            try:
                await wallets.withdraw(identity(users[who]), Money(amount, "USD"), books=books)
                ok = True
            except Problem as problem:
                assert problem.status == 422
                ok = False
            assert ok == (model[users[who]] >= amount)
            if ok:
                model[users[who]] -= amount
        elif kind == "offer":
            customer = users[who]
            held = amount + fee(amount, 500)
            try:
                made = await offer_commands.create_offer(
                    identity(customer),
                    contractor_id=contractor,
                    job_id="j",
                    budget=Money(amount, "USD"),
                    books=books,
                )
                offers.append(
                    {"id": made["_id"], "customer": customer, "b": amount, "status": "created"}
                )
                ok = True
            except Problem as problem:
                assert problem.status == 422
                ok = False
            assert ok == (model[customer] >= held)
            if ok:
                model[customer] -= held
        elif offers:
            offer = offers[who % len(offers)]
            b, f, s = offer["b"], fee(offer["b"], 500), fee(offer["b"], 2000)
            actor = {
                "accept": identity(contractor, "contractor"),
                "complete": identity(offer["customer"]),
                "cancel": identity(offer["customer"]),
                "refund": admin,
            }[kind]
            legal = {
                "accept": "created",
                "complete": "accepted",
                "cancel": "created",
                "refund": "accepted",
            }[kind]
            try:
                await offer_commands.change_offer(actor, offer["id"], kind, books=books)  # type: ignore[arg-type]
                ok = True
            except Problem as problem:
                assert problem.status == 409 and problem.extra["current_status"] == offer["status"]
                ok = False
            assert ok == (offer["status"] == legal)
            if ok:
                offer["status"] = {
                    "accept": "accepted",
                    "complete": "completed",
                    "cancel": "cancelled",
                    "refund": "refunded",
                }[kind]
                if kind == "complete":
                    model[contractor] += b - s
                elif kind == "cancel":
                    model[offer["customer"]] += b + f
                elif kind == "refund":
                    model[offer["customer"]] += b
        if len(steps) % 3 == 0:
            await pruner.prune()
        report = await check.run()
        assert report.balanced and report.total == 0 and not report.negative_wallets, report.json()
        actual = await books.ledger.balances(acct.wallet("USD", uid) for uid in users)
        assert actual == {acct.wallet("USD", uid): model[uid] for uid in users}
