"""Every web.AppKey of the payments service."""

from __future__ import annotations

from aiohttp import web

from payments_svc.adapters.maintenance import LedgerCheck
from payments_svc.handlers.common import Books
from payments_svc.metrics import PaymentsMetrics
from payments_svc.sweeper import Sweeper

BOOKS = web.AppKey("payments.books", Books)
LEDGER_CHECK = web.AppKey("payments.ledger_check", LedgerCheck)
SWEEPER = web.AppKey("payments.sweeper", Sweeper)
PAYMENTS_METRICS = web.AppKey("payments.metrics", PaymentsMetrics)
