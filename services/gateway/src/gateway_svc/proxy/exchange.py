"""One request through the gateway: parsed, checked at the edge, admitted, forwarded.

An :class:`Exchange` is created when a request line starts. When its head is
complete, :meth:`Exchange.start` runs the edge checks in order — path sanity, local
endpoints, CORS preflight, route, body limit — then asks
:class:`~gateway_svc.proxy.admission.Admission` for a verdict (token, audience,
rate limit), all synchronously on the hot path. Only a JWKS refetch, a Redis round
trip or a new upstream connection make it continue in a task.

Request bodies stream to the upstream with back-pressure: chunks go straight to the
upstream socket (a few are held while connecting, and reading from the client is
paused past a small buffer). The upstream round trip is
:class:`~gateway_svc.proxy.upstream_leg.UpstreamLeg`'s; the layers are listed in
:mod:`gateway_svc.proxy.exchange_state`.
"""

from __future__ import annotations

from gateway_svc.proxy.admission import ADMITTED, Pending, PreflightAllowed, Verdict
from gateway_svc.proxy.edges import accept_request_id, canonical_target, unsafe_path
from gateway_svc.proxy.headers import (
    ALLOW_HEADER,
    AUTHORIZATION,
    CONNECTION,
    CONTENT_LENGTH,
    EXPECT,
    FORWARDED_FOR,
    FORWARDED_PROTO,
    FORWARDED_UNCHANGED,
    HOST,
    LOCAL_PATHS,
    METHODS,
    ORIGIN,
    PREFLIGHT_HEADERS,
    PREFLIGHT_METHOD,
    REQUEST_HEADERS,
    REQUEST_ID,
    TRACEPARENT,
    TRANSFER_ENCODING,
    UPGRADE,
    request_header_kind,
    without_connection_listed,
)
from gateway_svc.proxy.responses import DISCARD_LIMIT, Refusal
from gateway_svc.proxy.upstream_leg import UpstreamLeg

PENDING_LIMIT = 256 * 1024  # request bytes held while connecting before reading pauses


class Exchange(UpstreamLeg):
    # -- request parsing (called by ClientConnection) ----------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        kind = request_header_kind(name)
        if kind is None:
            lowered = name.lower()
            kind = REQUEST_HEADERS.get(lowered)
            if kind is None:
                if lowered[:7].replace(b"_", b"-") == b"x-user-":
                    # identity headers only ever come from the gateway (X_User_Id too:
                    # CGI-style servers read it as X-User-Id)
                    return
                kind = FORWARDED_UNCHANGED
        if kind == FORWARDED_UNCHANGED:
            self.forward_headers += (name, b": ", value, b"\r\n")
        elif kind == AUTHORIZATION:
            if self.authorization is not None:
                # the gateway would verify one, the service (multidict .get) the other
                self.refuse(400, "The request has more than one Authorization header.")
            self.authorization = value
            self.forward_headers += (name, b": ", value, b"\r\n")
        elif kind == HOST:
            if self.host_header is not None:
                self.host_count = 2
            self.host_header = value
        elif kind == REQUEST_ID:
            self.request_id_in = value
        elif kind == TRACEPARENT:
            self.traceparent_in = value
        elif kind == FORWARDED_FOR:
            self.forwarded_for = (
                value if self.forwarded_for is None else self.forwarded_for + b", " + value
            )
        elif kind == FORWARDED_PROTO:
            self.forwarded_proto = value
        elif kind == ORIGIN:
            self.origin = value
            self.forward_headers += (name, b": ", value, b"\r\n")
        elif kind == CONTENT_LENGTH:
            try:
                self.content_length = int(value)
            except ValueError:
                self.content_length = -1
        elif kind == TRANSFER_ENCODING:
            self.chunked = True
            # two Transfer-Encoding headers are one list: never plain "chunked"
            self.transfer_coding = value if self.transfer_coding is None else b"several"
        elif kind == CONNECTION:
            # a list field: every Connection line names hop-by-hop headers
            tokens = value.lower()
            self.connection_tokens = (
                tokens if self.connection_tokens is None else self.connection_tokens + b"," + tokens
            )
        elif kind == UPGRADE:
            self.upgrade = value.lower()
        elif kind == EXPECT:
            self.expect_continue = value.lower() == b"100-continue"
        elif kind == PREFLIGHT_METHOD:
            self.preflight_method = value
        elif kind == PREFLIGHT_HEADERS:
            self.preflight_headers = value
        # NOT_FORWARDED: hop-by-hop or spoofable

    def check_head(self, version: str, upgrading: bool) -> bool:
        """What is wrong in the head alone, before anything is forwarded (called as
        it completes, only when something in it is unusual): True when refused."""
        self.upgrading = upgrading
        method = self.method
        if version != "1.1" and version != "1.0":
            self.refuse(505, "Only HTTP/1.1 and HTTP/1.0 requests are served.")
        elif method not in METHODS:
            if method == b"CONNECT" or method == b"TRACE":
                self.refuse(405, "This method is not allowed.", headers=ALLOW_HEADER)
            else:
                self.refuse(501, "This method is not implemented.")
        elif self.transfer_coding is not None and (
            not self.http11 or self.transfer_coding.strip().lower() != b"chunked"
        ):
            if self.http11:
                self.refuse(501, "Only the chunked transfer coding is accepted.")
            else:
                self.refuse(400, "Transfer-Encoding is not allowed in HTTP/1.0.")
        elif upgrading and (self.chunked or self.content_length):
            # llhttp ends an upgrade request at its head: a body would be read as the
            # next request.
            self.refuse(400, "A request that asks for a protocol upgrade cannot have a body.")
        return self.refused is not None

    def refuse(
        self, status: int, detail: str, slug: str | None = None, headers: bytes = b""
    ) -> None:
        self.refused = (status, detail, slug, headers)
        self.close_after = True
        self.keep_alive = False

    def answer_refusal(self) -> None:
        assert self.refused is not None
        status, detail, slug, headers = self.refused
        if not self.request_id:
            self.request_id = accept_request_id(self.request_id_in, self.context.request_ids)
        self.problem(status, detail, slug=slug, headers=headers)
        if not self.finished:
            self.finish()

    # -- the edge checks ------------------------------------------------------------------------

    def start(self) -> None:
        """Run the edge checks and forward; continues in a task only when it must wait."""
        context = self.context
        if self.refused is not None:
            self.answer_refusal()
            return
        self.request_id = accept_request_id(self.request_id_in, context.request_ids)
        url = self.url
        if b"%" in url or b"#" in url:
            # One canonical target: routed on, and forwarded exactly so.
            canonical = canonical_target(url)
            if canonical is None:
                self.close_after = True
                self.problem(400, "The request path is not acceptable.", slug="bad-path")
                return
            self.url = url = canonical
        mark = url.find(b"?")
        if mark >= 0:
            self.path = path = url[:mark]
            self.query = url[mark + 1 :]
        else:
            self.path = path = url
        if self.oversized:
            self.close_after = True
            self.problem(431, "The request headers are too large.")
            return
        if self.host_count > 1 or (self.host_header is None and self.http11):
            # RFC 9112 §3.2: exactly one Host in HTTP/1.1; never guess which one counts.
            self.close_after = True
            self.problem(400, "The request needs exactly one Host header.", slug="bad-host")
            return
        if not path.startswith(b"/") or unsafe_path(path):
            # only origin-form targets; no dot segments, encoded separators or NULs
            self.close_after = True
            self.problem(400, "The request path is not acceptable.", slug="bad-path")
            return
        if self.connection_tokens is not None:
            self.forward_headers = without_connection_listed(
                self.forward_headers, self.connection_tokens
            )
        if path in LOCAL_PATHS:
            if path in context.local_paths:
                context.admin.handle(self)
            else:  # /metrics, /gateway/routes: on the admin listener only
                self.problem(404, "No route serves this path.")
            return
        if not context.proxies:
            self.problem(404, "No route serves this path.")
            return
        method = self.method
        origin = self.origin
        if method == b"OPTIONS" and origin is not None and self.preflight_method is not None:
            preflight = context.admission.preflight(origin, self.preflight_headers)
            if isinstance(preflight, PreflightAllowed):
                self.respond(204, preflight.headers, b"", with_cors=False)
            else:
                self.answer(preflight)
            return
        route = context.routes.match(method, path, self.query)
        if route is None:
            allowed = context.routes.allowed_methods(path, self.query)
            if allowed:
                # RFC 9110 §15.5.6: the path is served, not with this method.
                self.problem(
                    405,
                    "This path does not take this method.",
                    slug="method-not-allowed",
                    headers=b"Allow: " + b", ".join(sorted(allowed)) + b"\r\n",
                )
                return
            self.problem(404, "No route serves this path.")
            return
        self.route = route
        self.route_name = route.name
        if self.upgrade is not None:
            if self.upgrade != b"websocket" or not self.upgrading:
                # e.g. h2c, or no "Connection: upgrade": served as plain HTTP/1.1 (the
                # Upgrade header is not forwarded; a body was refused with the head)
                self.upgrade = None
            elif not route.websocket:
                self.close_after = True
                self.problem(
                    400,
                    "WebSocket upgrades are not allowed on this route.",
                    slug="websocket-not-allowed",
                )
                return
            else:
                self.websocket = True
                self.close_after = True
        length = self.content_length
        if self.body_bytes > route.max_body_bytes:
            length = self.body_bytes  # chunks that came with the head
        if length is not None and (length < 0 or (length > route.max_body_bytes)):
            self.close_after = True
            if length < 0:
                self.problem(400, "Content-Length is not a number.")
            else:
                self.problem(413, f"The request body is larger than {route.max_body_bytes} bytes.")
            return
        verdict = context.admission.admit(self, route)
        if verdict is ADMITTED:
            self.forward()
        else:
            self._follow(verdict)

    def _follow(self, verdict: Verdict) -> None:
        if type(verdict) is Refusal:
            self.answer(verdict)
        elif type(verdict) is Pending:
            self.context.spawn(self._admit_slowly(verdict))

    async def _admit_slowly(self, pending: Pending) -> None:
        """The edge checks that had to wait: a JWKS refetch, or the Redis limiter."""
        route = self.route
        assert route is not None
        verdict = await self.context.admission.admit_slowly(self, route, pending)
        if verdict is ADMITTED:
            self.forward()
        elif verdict is not None:
            self._follow(verdict)

    # -- request body (called by ClientConnection) ---------------------------------------------

    def on_body(self, chunk: bytes) -> None:
        size = len(chunk)
        self.body_bytes += size
        if self.discard_body:
            if self.body_bytes > DISCARD_LIMIT:
                self.close_after = True
                self.conn.close()
            return
        route = self.route
        if route is not None and self.body_bytes > route.max_body_bytes:
            self._detach_upstream(reuse=False)
            self.close_after = True
            if not self.response_started:
                self.problem(413, f"The request body is larger than {route.max_body_bytes} bytes.")
            else:
                self.conn.abort()
            return
        connection = self.upstream_connection
        if connection is not None and self.head_sent:
            transport = connection.transport
            assert transport is not None
            if self.chunked:
                transport.writelines((b"%x\r\n" % size, chunk, b"\r\n"))
            else:
                transport.write(chunk)
            self.progress = self.context.loop.time()
        else:
            self.pending.append(chunk)
            self.pending_size += size
            if self.pending_size > PENDING_LIMIT:
                self.conn.pause_reading()

    def on_message_complete(self) -> None:
        self.body_done = True
        connection = self.upstream_connection
        if connection is not None and self.head_sent and self.chunked and not self.response_done:
            transport = connection.transport
            assert transport is not None
            transport.write(b"0\r\n\r\n")
        if self.response_done:
            self.finish()
