"""One JSON line per request, written without the logging module's per-record cost.

Lines are collected in memory and written in batches (at 64 KiB, or by the
gateway's quarter-second tick), each batch with one ``os.write`` of whole lines.
"""

from __future__ import annotations

import os
import re
import time
from json.encoder import encode_basestring_ascii as _json_string
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway_svc.proxy.exchange_state import ExchangeState

_FLUSH_BYTES = 64 * 1024
# Printable ASCII without '"' and '\\' needs no JSON escaping (most paths).
_PLAIN = re.compile(rb"[ !#-\[\]-~]*")


def _json_bytes(value: bytes) -> str:
    text = value.decode("latin-1")
    return '"' + text + '"' if _PLAIN.fullmatch(value) else _json_string(text)


class AccessLog:
    def __init__(self, target: str, service: str = "gateway") -> None:
        self.enabled = target != "off"
        self._own_fd = False
        if target in ("stderr", "off"):
            self._fd = 2
        elif target == "stdout":
            self._fd = 1
        else:
            self._fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._own_fd = True
        self._prefix = (
            f'{{"level":"info","logger":"gateway.access","service":{_json_string(service)}'.encode()
        )
        self._lines: list[bytes] = []
        self._size = 0
        self._second = -1
        self._stamp = ""
        self._names: dict[str, str] = {}  # route names, JSON-escaped once

    def _time(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def write(self, exchange: ExchangeState, status: int, seconds: float) -> None:
        if not self.enabled:
            return
        upstream = exchange.upstream
        caller = exchange.caller
        traceparent = exchange.traceparent
        route = self._names.get(exchange.route_name)
        if route is None:
            route = self._names[exchange.route_name] = _json_string(exchange.route_name)
        client_ip = exchange.conn.peer if not exchange.conn.peer_trusted else exchange.client_ip()
        # request ids, methods and IP addresses are validated tokens: no escaping needed.
        line = (
            f',"time":"{self._time()}","request_id":"{exchange.request_id.decode("latin-1")}"'
            f',"method":"{exchange.method.decode("latin-1")}","path":{_json_bytes(exchange.path)}'
            f',"route":{route},"status":{status},"duration_ms":{seconds * 1000:.3f}'
            f',"client_ip":"{client_ip}","bytes_out":{exchange.bytes_out}'
        )
        if upstream is not None:
            line += f',"upstream":{_json_string(upstream.url)}'
            if exchange.upstream_seconds is not None:
                line += f',"upstream_ms":{exchange.upstream_seconds * 1000:.3f}'
        if caller is not None:
            line += f',"user_id":{_json_string(caller.identity.user_id)}'
        if traceparent is not None:
            line += f',"trace_id":"{traceparent[3:35].decode("ascii")}"'
        data = self._prefix + line.encode() + b"}\n"
        self._lines.append(data)
        self._size += len(data)
        if self._size >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines = []
        self._size = 0
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                continue
            view = view[written:]

    def close(self) -> None:
        self.flush()
        if self._own_fd:
            os.close(self._fd)
            self._own_fd = False
