"""What sending on each channel takes: push, in-app, webhooks (email lives in handlers.py)."""
