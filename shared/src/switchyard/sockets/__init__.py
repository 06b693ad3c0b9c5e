"""Socket.IO APIs as contracts: the events a client emits (with the ack it gets) and the
events the server emits, as pydantic models. ``make contracts`` puts them in the AsyncAPI
document beside the bus events; the service validates every client payload with them."""

from switchyard.sockets.api import SocketApi, SocketEvent

__all__ = ["SocketApi", "SocketEvent"]
