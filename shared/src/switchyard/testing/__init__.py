"""Test support: fixtures for the real broker, the embedded store, an SMTP sink and a JWKS
server issuing access tokens, an in-memory bus for unit tests, an event tap on the broker,
and (``switchyard.testing.sockets``, imported on use: it needs python-socketio) a Socket.IO
test client.

Enable with ``pytest_plugins = ["switchyard.testing.plugin"]``.
"""

from switchyard.testing.events import EventTap, tap_events
from switchyard.testing.fcm import FakeFcm, ReceivedPush
from switchyard.testing.jwks import JwksServer
from switchyard.testing.memory import InMemoryBus, InMemoryOutbox
from switchyard.testing.servers import AppServer, TcpProxy, delete_exchange, docker_available
from switchyard.testing.settings import settings_builder
from switchyard.testing.smtp import SmtpSink
from switchyard.testing.timing import Stopwatch
from switchyard.testing.waiting import eventually, service_bus

__all__ = [
    "AppServer",
    "EventTap",
    "FakeFcm",
    "InMemoryBus",
    "InMemoryOutbox",
    "JwksServer",
    "ReceivedPush",
    "SmtpSink",
    "Stopwatch",
    "TcpProxy",
    "delete_exchange",
    "docker_available",
    "eventually",
    "service_bus",
    "settings_builder",
    "tap_events",
]
