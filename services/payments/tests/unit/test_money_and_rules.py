"""Fees, offer rules, transfers and settings: pure code, no I/O."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from payments_svc.adapters.maintenance import _report
from payments_svc.domain import accounts as acct
from payments_svc.domain.accounts import AccountSpec, TransferSpec
from payments_svc.domain.money import Money, fee, offer_amounts
from payments_svc.domain.offers import (
    Caller,
    IllegalTransition,
    NotAllowed,
    Parties,
    authorize,
    check_move,
)
from payments_svc.settings import PaymentsSettings


def test_fees_round_half_up_to_the_minor_unit():
    amounts = offer_amounts(Money(10_001, "USD"), platform_fee_bps=500, service_fee_bps=2000)
    assert (amounts.platform_fee.amount, amounts.service_fee.amount, amounts.payout.amount) == (
        500,
        2_000,
        8_001,
    )
    assert amounts.held == Money(10_501, "USD")
    assert fee(10, 500) == 1  # 0.5 → 1 (half-up)
    assert fee(9, 500) == 0  # 0.45 → 0
    assert fee(30, 500) == 2  # 1.5 → 2
    assert fee(1, 2000) == 0 and fee(3, 2000) == 1  # 0.2 → 0, 0.6 → 1
    assert fee(0, 500) == 0
    with pytest.raises(ValueError):
        fee(-1, 500)


def test_money_never_mixes_currencies():
    with pytest.raises(ValueError):
        Money(1, "USD") + Money(1, "EUR")
    with pytest.raises(TypeError):
        Money(1.5, "USD")  # type: ignore[arg-type]


def test_transfers_are_positive_single_currency_and_named_by_their_key():
    wallet, world = AccountSpec(acct.wallet("USD", "u")), AccountSpec(acct.platform("world", "USD"))
    spec = TransferSpec("deposit:1:credit", world, wallet, 5, "deposit")
    assert spec.id == TransferSpec("deposit:1:credit", world, wallet, 5, "deposit").id
    assert spec.id != TransferSpec("deposit:2:credit", world, wallet, 5, "deposit").id
    assert TransferSpec.from_document(spec.to_document()) == spec
    for bad in (0, -5, True):
        with pytest.raises(ValueError):
            TransferSpec("k", world, wallet, bad, "deposit")
    with pytest.raises(ValueError):
        TransferSpec("k", AccountSpec(acct.platform("world", "EUR")), wallet, 5, "deposit")
    assert wallet.never_negative and wallet.sequenced and not world.never_negative


PARTIES = Parties("customer", "contractor")


def test_who_may_do_what_to_an_offer():
    customer = Caller("customer")
    contractor = Caller("contractor", is_contractor=True)
    contractor_without_role = Caller("contractor", is_contractor=False)
    admin = Caller("admin", is_admin=True)
    assert authorize("accept", contractor, PARTIES, "created") == "accept"
    for caller in (customer, contractor_without_role, admin):
        with pytest.raises(NotAllowed):
            authorize("accept", caller, PARTIES, "created")
    with pytest.raises(NotAllowed):
        authorize("complete", contractor, PARTIES, "accepted")
    assert authorize("cancel", contractor, PARTIES, "created") == "cancel"
    assert authorize("cancel", admin, PARTIES, "accepted") == "refund"  # DESIGN §5
    with pytest.raises(NotAllowed):
        authorize("cancel", Caller("stranger"), PARTIES, "created")
    with pytest.raises(NotAllowed):
        authorize("refund", customer, PARTIES, "accepted")


def test_moves_leave_exactly_one_state():
    assert check_move("accept", "created") == ("created", "accepted")
    with pytest.raises(IllegalTransition) as error:
        check_move("complete", "created")
    assert error.value.current == "created" and "created" in str(error.value)
    with pytest.raises(IllegalTransition):
        check_move("accept", "created", moving="cancel")  # another change in flight


def test_settings_refuse_the_test_provider_in_production_and_stripe_without_keys():
    with pytest.raises(ValidationError, match="refused when SWITCHYARD_ENV=production"):
        PaymentsSettings(
            environment="production",
            payments_provider="test",
            idempotency_secret="i" * 16 + "-payments-fingerprints",
        )
    with pytest.raises(ValidationError, match="needs STRIPE_SECRET_KEY"):
        PaymentsSettings(environment="test", payments_provider="stripe")
    ok = PaymentsSettings(environment="test", payments_currencies="usd, EUR,USD")
    assert ok.payments_currencies == ["USD", "EUR"] and ok.port == 8083
    assert (ok.platform_fee_bps, ok.service_fee_bps) == (500, 2000)
    with pytest.raises(ValidationError):
        PaymentsSettings(environment="test", payments_currencies="dollars")


def test_settings_need_the_idempotency_secret_outside_development():
    """Every replica (and a restarted process) must fingerprint an Idempotency-Key's
    request alike, or a client's retry is refused as a different request."""
    stripe = {
        "payments_provider": "stripe",
        "stripe_secret_key": "sk_live_" + "k" * 24,
        "stripe_webhook_secret": "whsec_" + "w" * 24,
    }
    with pytest.raises(ValidationError, match="IDEMPOTENCY_SECRET"):
        PaymentsSettings(environment="production", **stripe)
    ok = PaymentsSettings(
        environment="production", idempotency_secret="i" * 16 + "-payments-fingerprints", **stripe
    )
    assert ok.idempotency_secret is not None


def test_the_check_counts_single_sided_entries_as_money_in_flight():
    # A transfer of 30 from w to h: debit applied, credit not yet (seen from either side).
    accounts = [
        {
            "_id": "wallet:USD:a",
            "currency": "USD",
            "balance": 70,
            "never_negative": True,
            "applied": {"t1": {"amount": -30}},
        },
        {
            "_id": "hold:USD:x",
            "currency": "USD",
            "balance": 0,
            "never_negative": True,
            "applied": {},
        },
        {"_id": "world:USD", "currency": "USD", "balance": -100, "applied": {}},
    ]
    report = _report(accounts, pending=1, oldest=0.5, consistent=True)
    totals = report.currencies["USD"]
    assert (report.total, totals.in_flight, totals.with_pending, report.balanced) == (
        -30,
        30,
        0,
        True,
    )
    # A credit seen without its debit (the debit's account was read first): corrected too.
    accounts[1] = {**accounts[1], "balance": 30, "applied": {"t1": {"amount": 30}}}
    accounts[0] = {**accounts[0], "balance": 100, "applied": {}}
    report = _report(accounts, pending=1, oldest=0.5, consistent=True)
    assert report.currencies["USD"].with_pending == 0 and report.balanced
    # Money that appeared from nowhere is not balanced; a negative wallet is reported.
    accounts[2] = {**accounts[2], "balance": -99}
    report = _report(accounts, pending=0, oldest=0.0, consistent=True)
    assert not report.balanced and report.currencies["USD"].with_pending == 1
    accounts[2] = {**accounts[2], "balance": -100}
    accounts.append(
        {
            "_id": "wallet:USD:b",
            "currency": "USD",
            "balance": -1,
            "never_negative": True,
            "applied": {},
        }
    )
    accounts.append({"_id": "revenue:USD", "currency": "USD", "balance": 1, "applied": {}})
    report = _report(accounts, pending=0, oldest=0.0, consistent=True)
    assert report.currencies["USD"].with_pending == 0
    assert not report.balanced and report.negative_wallets == ["wallet:USD:b"]
