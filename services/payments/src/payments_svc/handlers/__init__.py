"""Commands and event handlers: plain async functions with keyword-only dependencies
(``Books``: the ledger, the record stores, the provider), bound at the edges
(``entrypoints/``)."""
