"""The differential corpus: tricky raw requests, one line of intent each.

Every case is sent as is by ``test_differential.py`` through the gateway (the test route
table of ``conftest.route_table``) to the recording upstream. ``{TOKEN}`` and ``{ADMIN}``
are replaced by a valid user and admin bearer token; ``<PAUSE>`` splits the bytes into
two writes a moment apart. Nothing here states an expected status: the oracle is that
the upstream sees exactly what the gateway accounted for (see ``recorder.check``).
"""

from __future__ import annotations

# A request with forged identity, the payload every smuggling attempt tries to deliver.
SMUGGLED = b"GET /admin/x HTTP/1.1\r\nHost: x\r\nX-User-Id: evil\r\nX-User-Roles: admin\r\n\r\n"
NEXT = b"GET /public/next HTTP/1.1\r\nHost: x\r\n\r\n"
# Sent only alongside a Connection header that lists it: it must never reach an upstream.
HOP_BY_HOP = frozenset({b"x-hop"})
LOGIN = "/api/v1/auth/login"
WS = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"


def head(method: str, target: str, *lines: str, version: str = "HTTP/1.1") -> bytes:
    """A request head: ``Host: x`` first unless a line starts with ``-host``."""
    fields = [line for line in lines if line != "-host"]
    if "-host" not in lines:
        fields.insert(0, "Host: x")
    text = f"{method} {target} {version}\r\n" + "".join(f"{line}\r\n" for line in fields)
    return text.encode() + b"\r\n"


def cl(method: str, target: str, body: bytes, *lines: str) -> bytes:
    return head(method, target, f"Content-Length: {len(body)}", *lines) + body


def chunked(method: str, target: str, body: bytes, *lines: str, te: str = "chunked") -> bytes:
    encoded = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    return head(method, target, f"Transfer-Encoding: {te}", *lines) + encoded


# One target per kind of route in the test table (and the gateway's own paths).
ROUTES = [
    ("public", "GET", "/public/a", ()),
    ("login", "POST", "/api/v1/auth/login", ()),
    ("protected-anon", "GET", "/api/v1/chat/c", ()),
    ("protected", "GET", "/api/v1/chat/c", ("Authorization: Bearer {TOKEN}",)),
    ("admin", "GET", "/admin/users", ("Authorization: Bearer {ADMIN}",)),
    ("upload", "POST", "/upload/f", ()),
    ("small", "POST", "/small/s", ()),
    ("slow", "GET", "/slow/s", ()),
    ("websocket", "GET", "/ws/chat", ()),
    ("signed", "GET", "/api/v1/files/f?signature=abc", ()),
    ("files", "GET", "/api/v1/files/f", ("Authorization: Bearer {TOKEN}",)),
    ("local", "GET", "/healthz", ()),
    # the admin listener's paths: 404 on the public one, never forwarded (issue 12 item 7)
    ("admin-local", "GET", "/gateway/routes", ("Authorization: Bearer {ADMIN}",)),
    ("unrouted", "GET", "/nowhere", ()),
]

UPGRADES = [
    ("h2c", lambda m, t, h: head(m, t, "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", *h)),
    (
        "h2c+body+smuggled",
        lambda m, t, h: cl(m, t, SMUGGLED, "Connection: Upgrade", "Upgrade: h2c", *h),
    ),
    ("ws", lambda m, t, h: head(m, t, "Connection: Upgrade", "Upgrade: websocket", *h) + NEXT),
    (
        "ws+trailing-request",
        lambda m, t, h: (
            head(m, t, "Connection: Upgrade", "Upgrade: websocket", WS.decode(), *h) + SMUGGLED
        ),
    ),
    (
        "ws+chunked",
        lambda m, t, h: chunked(m, t, SMUGGLED, "Connection: Upgrade", "Upgrade: websocket", *h),
    ),
    ("upgrade-without-connection", lambda m, t, h: cl(m, t, b"abc", "Upgrade: websocket", *h)),
]

CASES: list[tuple[str, bytes]] = [
    (f"upgrade {kind} on {name}", build(method, target, extra) + NEXT)
    for name, method, target, extra in ROUTES
    for kind, build in UPGRADES
]

CASES += [
    # -- the issue's own reproductions
    (
        "issue 8 item 1: h2c + Content-Length desync",
        head("GET", "/public/jwks", "Connection: Upgrade", "Upgrade: h2c", "Content-Length: 180")
        + cl("GET", "/public/jwks", SMUGGLED, "X-Request-ID: second"),
    ),
    (
        "issue 8 item 2: bytes after a websocket head",
        head("GET", "/ws/chat", "Connection: Upgrade", "Upgrade: websocket", WS.decode())
        + SMUGGLED,
    ),
    ("issue 8 item 3: encoded login", cl("POST", "/api/v1/auth/logi%6e", b"{}")),
    ("issue 8 item 3: fragment", cl("POST", "/api/v1/auth/login#x", b"{}")),
    ("issue 8 item 4: early 404 with unread body", head("POST", "/nope", "Content-Length: 500")),
    (
        "issue 8 item 4: early 401 with unread body",
        head("POST", "/api/v1/chat/x", "Content-Length: 500"),
    ),
    ("CONNECT", head("CONNECT", "/public/a") + SMUGGLED),
    ("CONNECT authority", head("CONNECT", "127.0.0.1:80") + SMUGGLED),
    ("TRACE", head("TRACE", "/public/a")),
    # -- the upstream's side of the conversation
    (
        "upstream answers 101 to a plain request",
        head("GET", "/public/answer-101") + b"<PAUSE>" + SMUGGLED,
    ),
    (
        "upstream answers twice, then late",
        head("GET", "/public/answer-twice") + head("GET", "/public/second"),
    ),
    ("PROPFIND", head("PROPFIND", "/public/a")),
    ("upstream Server header, shouted", head("GET", "/public/shout") + NEXT),
    ("metrics on the public listener", head("GET", "/metrics") + NEXT),
    (
        "routes on the public listener, as admin",
        head("GET", "/gateway/routes", "Authorization: Bearer {ADMIN}") + NEXT,
    ),
    ("gzip, chunked", chunked("POST", "/public/a", SMUGGLED, te="gzip, chunked")),
    (
        "bad chunk size",
        head("POST", "/public/a", "Transfer-Encoding: chunked") + b"zz\r\n" + SMUGGLED,
    ),
    ("101 headers", head("GET", "/public/a", *(f"X-F{i}: {i}" for i in range(100)))),
    # -- CL.TE, TE.CL, duplicates, malformed framing
    (
        "CL.TE",
        head("POST", "/public/a", "Content-Length: 6", "Transfer-Encoding: chunked")
        + b"0\r\n\r\n"
        + SMUGGLED,
    ),
    (
        "TE.CL",
        head("POST", "/public/a", "Transfer-Encoding: chunked", "Content-Length: 4")
        + b"5c\r\n"
        + SMUGGLED
        + b"\r\n0\r\n\r\n",
    ),
    (
        "TE with space before colon",
        head("POST", "/public/a", "Transfer-Encoding : chunked", "Content-Length: 4")
        + b"0\r\n\r\n",
    ),
    (
        "TE chunked twice",
        head("POST", "/public/a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked")
        + b"0\r\n\r\n"
        + NEXT,
    ),
    (
        "TE identity then chunked",
        head("POST", "/public/a", "Transfer-Encoding: identity", "Transfer-Encoding: chunked")
        + b"0\r\n\r\n"
        + SMUGGLED,
    ),
    (
        "TE chunked, identity",
        head("POST", "/public/a", "Transfer-Encoding: chunked, identity") + b"0\r\n\r\n",
    ),
    ("TE xchunked", head("POST", "/public/a", "Transfer-Encoding: xchunked") + SMUGGLED),
    ("TE Chunked capitalised", chunked("POST", "/public/a", b"hello", te="Chunked") + NEXT),
    ("TE with tab", head("POST", "/public/a", "Transfer-Encoding:\tchunked") + b"0\r\n\r\n" + NEXT),
    ("TE vertical tab", head("POST", "/public/a", "Transfer-Encoding: \x0bchunked") + b"0\r\n\r\n"),
    (
        "TE in HTTP/1.0",
        head("POST", "/public/a", "Transfer-Encoding: chunked", version="HTTP/1.0")
        + b"0\r\n\r\n"
        + SMUGGLED,
    ),
    (
        "CL twice same",
        head("POST", "/public/a", "Content-Length: 3", "Content-Length: 3") + b"abc" + NEXT,
    ),
    (
        "CL twice different",
        head("POST", "/public/a", "Content-Length: 3", "Content-Length: 80") + b"abc" + SMUGGLED,
    ),
    ("CL list", head("POST", "/public/a", "Content-Length: 3, 3") + b"abc" + NEXT),
    ("CL negative", head("POST", "/public/a", "Content-Length: -1") + SMUGGLED),
    ("CL plus sign", head("POST", "/public/a", "Content-Length: +3") + b"abc" + NEXT),
    ("CL hex", head("POST", "/public/a", "Content-Length: 0x3") + b"abc" + NEXT),
    ("CL huge", head("POST", "/public/a", "Content-Length: 99999999999999999999999") + SMUGGLED),
    ("CL leading zeros", head("POST", "/public/a", "Content-Length: 0003") + b"abc" + NEXT),
    ("CL over route limit", head("POST", "/small/a", "Content-Length: 2000") + b"x" * 2000 + NEXT),
    ("chunked over route limit", chunked("POST", "/small/a", b"x" * 2000) + NEXT),
    (
        "chunk extension",
        head("POST", "/public/a", "Transfer-Encoding: chunked")
        + b"5;ext=1\r\nhello\r\n0\r\n\r\n"
        + NEXT,
    ),
    (
        "chunk trailer",
        head("POST", "/public/a", "Transfer-Encoding: chunked")
        + b"5\r\nhello\r\n0\r\nX-User-Id: evil\r\n\r\n"
        + NEXT,
    ),
    (
        "chunk size overflow",
        head("POST", "/public/a", "Transfer-Encoding: chunked")
        + b"ffffffffffffffffff\r\n"
        + SMUGGLED,
    ),
    (
        "chunk bare LF",
        head("POST", "/public/a", "Transfer-Encoding: chunked") + b"5\nhello\n0\n\n" + NEXT,
    ),
    (
        "chunk missing CRLF after data",
        head("POST", "/public/a", "Transfer-Encoding: chunked") + b"5\r\nhelloX0\r\n\r\n" + NEXT,
    ),
    ("body sent later", head("POST", "/public/a", "Content-Length: 5") + b"<PAUSE>hello" + NEXT),
    (
        "chunked sent later",
        head("POST", "/upload/a", "Transfer-Encoding: chunked")
        + b"<PAUSE>5\r\nhello\r\n0\r\n\r\n"
        + NEXT,
    ),
    ("body shorter than CL", head("POST", "/public/a", "Content-Length: 50") + b"short"),
    (
        "expect 100-continue",
        head("POST", "/public/a", "Content-Length: 5", "Expect: 100-continue")
        + b"<PAUSE>hello"
        + NEXT,
    ),
    # -- obs-fold and odd whitespace
    ("obs-fold", head("GET", "/public/a", "X-A: 1", " X-User-Id: evil")),
    ("obs-fold on CL", head("POST", "/public/a", "Content-Length:", " 3") + b"abc"),
    ("obs-fold on TE", head("POST", "/public/a", "Transfer-Encoding:", " chunked") + b"0\r\n\r\n"),
    ("space before colon", head("GET", "/public/a", "X-User-Id : evil")),
    ("tab in name", head("GET", "/public/a", "X-User\t-Id: evil")),
    ("underscore identity", head("GET", "/public/a", "X_User_Id: evil", "x-user_roles: admin")),
    ("bare LF line ends", b"GET /public/a HTTP/1.1\nHost: x\nX-User-Id: evil\n\n" + NEXT),
    ("bare CR", b"GET /public/a HTTP/1.1\rHost: x\r\n\r\n"),
    ("leading empty lines", b"\r\n\r\n" + head("GET", "/public/a") + NEXT),
    ("two spaces in request line", b"GET  /public/a HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("tab in request line", b"GET\t/public/a HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("space in target", b"GET /public/a b HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("NUL in header value", head("GET", "/public/a", "X-A: a\x00b")),
    ("header without colon", head("GET", "/public/a", "X-User-Id evil")),
    ("empty header name", head("GET", "/public/a", ": evil")),
    ("lower-case method", head("get", "/public/a")),
    ("no Host", head("GET", "/public/a", "-host")),
    ("two Hosts", head("GET", "/public/a", "Host: y")),
    # -- pipelining
    (
        "pipelined three",
        head("GET", "/public/1") + cl("POST", "/public/2", b"abc") + head("HEAD", "/public/3"),
    ),
    ("pipelined after local answer", head("GET", "/healthz") + head("GET", "/public/b")),
    ("pipelined after 404", cl("POST", "/nope", b"abc") + head("GET", "/public/b")),
    (
        "pipelined after 405 (a served path, another method)",
        cl("PUT", "/api/v1/auth/login", b"abc") + head("GET", "/public/b"),
    ),
    ("pipelined after 401", cl("POST", "/api/v1/chat/x", b"abc") + head("GET", "/public/b")),
    ("pipelined garbage", head("GET", "/public/a") + b"GARBAGE\r\n\r\n" + SMUGGLED),
    (
        "pipelined chunked then request",
        chunked("POST", "/public/a", b"hello") + head("DELETE", "/public/b"),
    ),
    ("pipelined rate-limited", head("GET", "/tight/1") * 5),
    ("pipelining burst past the queue limit", head("GET", "/slow/a") + NEXT * 40 + SMUGGLED),
    ("pipelined slow upstream route", head("GET", "/slow/a") + head("GET", "/public/b")),
    # -- encoded paths
    ("encoded unreserved", head("GET", "/public/%41%62%7e")),
    ("encoded lower-case hex", head("GET", "/public/%c3%a9")),
    ("encoded slash", head("GET", "/public/a%2fb")),
    ("encoded slash upper", head("GET", "/public/a%2Fb")),
    ("encoded dot-dot", head("GET", "/public/%2e%2e/admin/x")),
    ("encoded dot segment", head("GET", "/public/%2E/x")),
    ("encoded dot in name", head("GET", "/public/file%2Etxt")),
    ("encoded backslash", head("GET", "/public/a%5cb")),
    ("encoded NUL", head("GET", "/public/a%00b")),
    ("double encoding", head("GET", "/public/%252e%252e/x")),
    ("broken escape", head("GET", "/public/a%zz")),
    ("truncated escape", head("GET", "/public/a%4")),
    ("dot-dot", head("GET", "/public/../admin/x")),
    ("backslash", head("GET", "/public\\..\\admin")),
    ("encoded prefix", head("GET", "/%70ublic/a")),
    ("encoded admin", head("GET", "/%61dmin/users")),
    (
        "encoded exact path with token",
        cl("POST", "/api/v1/auth/%6cogin", b"{}", "Authorization: Bearer {TOKEN}"),
    ),
    ("fragment with query", head("GET", "/public/a?x=1#frag")),
    ("encoded query kept", head("GET", "/public/a?q=%2f%41")),
    ("double slash", head("GET", "//public/a")),
    ("semicolon", head("GET", "/public/a;x=1")),
    ("signed route encoded", head("GET", "/api/v1/files/f?sig%6eature=abc")),
    # -- oversized heads
    ("long header", head("GET", "/public/a", "X-Big: " + "a" * 17000)),
    ("long target", head("GET", "/public/" + "a" * 17000)),
    ("many small headers", head("GET", "/public/a", *(f"X-{i}: v" for i in range(150)))),
    ("exactly 100 headers", head("GET", "/public/a", *(f"X-{i}: v" for i in range(99)))),
    # -- request forms, versions, methods
    ("absolute-form", head("GET", "http://x/public/a")),
    ("absolute-form https", head("GET", "https://x/admin/users")),
    ("asterisk-form", head("OPTIONS", "*")),
    ("authority-form GET", head("GET", "x:80")),
    ("HTTP/0.9", b"GET /public/a\r\n\r\n"),
    ("HTTP/2.0", head("GET", "/public/a", version="HTTP/2.0")),
    ("HTTP/1.2", head("GET", "/public/a", version="HTTP/1.2")),
    (
        "HTTP/1.0 keep-alive",
        head("GET", "/public/a", "Connection: keep-alive", version="HTTP/1.0")
        + head("GET", "/public/b", version="HTTP/1.0"),
    ),
    ("HTTP/1.0 no Host", head("GET", "/public/a", "-host", version="HTTP/1.0")),
    (
        "HTTP/1.0 POST CL keep-alive",
        cl("POST", "/public/a", b"abc", "Connection: keep-alive").replace(b"HTTP/1.1", b"HTTP/1.0")
        + NEXT,
    ),
    ("HTTP/1.0 body until close", head("POST", "/public/a", version="HTTP/1.0") + b"abc"),
    ("Connection close then more", head("GET", "/public/a", "Connection: close") + SMUGGLED),
    (
        "Connection lists a header",
        head(
            "GET",
            "/public/a",
            "Connection: X-Request-ID, Authorization",
            "Authorization: Bearer {TOKEN}",
        ),
    ),
    (
        "Connection lists a header, in the first of two",
        head("GET", "/public/a", "Connection: X-Hop", "Connection: keep-alive", "X-Hop: 1") + NEXT,
    ),
    (
        "Connection lists a header, mixed case and spaces",
        head("GET", "/public/a", "connection: close ,  x-HOP ", "X-Hop: 1"),
    ),
    (
        "two Authorization headers",
        head(
            "GET", "/admin/users", "Authorization: Bearer {TOKEN}", "Authorization: Bearer {ADMIN}"
        )
        + NEXT,
    ),
    (
        "forged identity with token",
        head("GET", "/api/v1/chat/a", "Authorization: Bearer {TOKEN}", "X-User-Roles: admin"),
    ),
    (
        "OPTIONS preflight with body",
        cl(
            "OPTIONS",
            "/public/a",
            b"abc",
            "Origin: https://app.example",
            "Access-Control-Request-Method: POST",
        )
        + NEXT,
    ),
    ("HEAD with body", cl("HEAD", "/public/a", b"abc") + NEXT),
    # -- X-Auth-Outcome (issue 12): read from auth's answers, never relayed, never forwarded
    ("client-sent X-Auth-Outcome", cl("POST", LOGIN, b"{}", "X-Auth-Outcome: success") + NEXT),
    (
        "client-sent X-Auth-Outcome with an account, twice",
        cl(
            "POST",
            LOGIN,
            b"{}",
            "X-Auth-Outcome: success; account=corpus",
            "x-auth-outcome: failure",
        ),
    ),
    ("upstream X-Auth-Outcome on a public route", head("GET", "/public/answer-outcome") + NEXT),
    (
        # pipelined past the account's limit: later answers are the gateway's 429s
        "upstream X-Auth-Outcome on the login route, pipelined",
        cl("POST", LOGIN + "?answer-outcome", b"{}") * 4 + NEXT,
    ),
    (
        "upstream X-Auth-Outcome, body sent later",
        head("POST", LOGIN + "?answer-outcome", "Content-Length: 5") + b"<PAUSE>hello" + NEXT,
    ),
    ("DELETE with chunked body", chunked("DELETE", "/public/a", b"abc") + NEXT),
]
