"""Event data contracts, one module per producing service.

Importing this package registers every event type in ``switchyard.envelope.CATALOG``.
Type names are written by hand (``<service>.<entity>.<past-tense-verb>``) and
versioned; a breaking change adds a new version beside the old one.
"""

from switchyard.events import auth as auth

__all__ = ["auth"]
