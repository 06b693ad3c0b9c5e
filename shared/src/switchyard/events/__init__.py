"""Event data contracts, one module per producing service.

Importing this package registers every event type in ``switchyard.envelope.CATALOG``.
Type names are written by hand (``<service>.<entity>.<past-tense-verb>``) and
versioned; a breaking change adds a new version beside the old one.
"""

from switchyard.events import auth as auth
from switchyard.events import chat as chat
from switchyard.events import file as file
from switchyard.events import notification as notification
from switchyard.events import payments as payments

__all__ = ["auth", "chat", "file", "notification", "payments"]
