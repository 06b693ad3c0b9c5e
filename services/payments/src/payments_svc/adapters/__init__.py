"""Persistence and providers behind small interfaces: the ledger, the business records, Stripe."""
