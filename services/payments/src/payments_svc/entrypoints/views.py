"""What the API shows of stored records (money as ``{amount, currency}``, RFC 3339 times)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from switchyard.envelope import format_time
from switchyard.mongo.dates import loaded_time


def _money(amount: int | None, currency: str) -> dict[str, Any] | None:
    return None if amount is None else {"amount": int(amount), "currency": currency}


def _time(record: Mapping[str, Any], field: str) -> str | None:
    value = record.get(field)
    return format_time(loaded_time(value)) if isinstance(value, Mapping) else None


def _history_time(record: Mapping[str, Any], label: str) -> str | None:
    step = (record.get("history") or {}).get(label)
    return _time(step, "at") if step else None


def offer_view(offer: Mapping[str, Any]) -> dict[str, Any]:
    currency = offer["currency"]
    return {
        "id": offer["_id"],
        "customer_id": offer["customer_id"],
        "contractor_id": offer["contractor_id"],
        "job_id": offer["job_id"],
        "budget": _money(offer["budget"], currency),
        "platform_fee": _money(offer["platform_fee"], currency),
        "service_fee": _money(offer["service_fee"], currency),
        "payout": _money(offer["payout"], currency),
        "status": offer["status"],
        "created_at": _time(offer, "created"),
        "accepted_at": _history_time(offer, "accept"),
        "completed_at": _history_time(offer, "complete"),
        "cancelled_at": _history_time(offer, "cancel"),
        "refunded_at": _history_time(offer, "refund"),
    }


def deposit_view(deposit: Mapping[str, Any], *, with_secret: bool = False) -> dict[str, Any]:
    view = {
        "id": deposit["_id"],
        "user_id": deposit["user_id"],
        "amount": _money(deposit["amount"], deposit["currency"]),
        "provider": deposit["provider"],
        "status": deposit["status"],
        "reason": deposit.get("reason"),
        "refunded": _money(int(deposit.get("reversed") or 0), deposit["currency"]),
        "refund_shortfall": _money(int(deposit.get("shortfall") or 0), deposit["currency"]),
        "flagged": bool(deposit.get("flagged")),
        "created_at": _time(deposit, "created"),
        "succeeded_at": _time(deposit, "succeeded"),
    }
    if with_secret:
        view["client_secret"] = deposit.get("client_secret")
    return view


def withdrawal_view(withdrawal: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": withdrawal["_id"],
        "user_id": withdrawal["user_id"],
        "amount": _money(withdrawal["amount"], withdrawal["currency"]),
        "provider": withdrawal["provider"],
        "status": withdrawal["status"],
        "reason": withdrawal.get("reason"),
        "payout_id": withdrawal.get("payout_id"),
        "created_at": _time(withdrawal, "created"),
        "completed_at": _time(withdrawal, "completed"),
        "failed_at": _time(withdrawal, "failed"),
    }


def adjustment_view(adjustment: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": adjustment["_id"],
        "user_id": adjustment["user_id"],
        "amount": _money(adjustment["amount"], adjustment["currency"]),
        "direction": adjustment["direction"],
        "reason": adjustment["reason"],
        "by": adjustment["by"],
        "status": adjustment["status"],
        "created_at": _time(adjustment, "created"),
    }


def entry_view(entry: Mapping[str, Any], currency: str, status: str) -> dict[str, Any]:
    return {
        "id": entry["_id"].rsplit(":", 1)[-1],
        "transfer_id": entry["transfer"],
        "kind": entry["kind"],
        "amount": _money(entry["amount"], currency),
        "balance_after": _money(entry["after"], currency),
        "status": status,
        "references": dict(entry.get("refs") or {}),
        "at": _time(entry, "at"),
    }
