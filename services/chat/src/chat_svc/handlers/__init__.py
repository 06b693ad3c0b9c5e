"""Commands and event handlers: plain async functions with keyword-only dependencies."""
