import json
import logging

from opentelemetry import trace

from switchyard.logging import REDACTED, JsonFormatter, redact, request_id_var


def record(msg, *args, **extra):
    rec = logging.LogRecord("svc.test", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_line_carries_service_request_id_and_trace():
    formatter = JsonFormatter("auth")
    token = request_id_var.set("req-1")
    try:
        with trace.get_tracer("t").start_as_current_span("s") as span:
            line = json.loads(formatter.format(record("hello %s", "world", user_id="u1")))
            ctx = span.get_span_context()
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hello world"
    assert line["service"] == "auth"
    assert line["request_id"] == "req-1"
    assert line["trace_id"] == format(ctx.trace_id, "032x")
    assert line["span_id"] == format(ctx.span_id, "016x")
    assert line["user_id"] == "u1"
    assert line["level"] == "info"


def test_secret_fields_and_values_are_redacted():
    formatter = JsonFormatter("auth")
    jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl"
    line = json.loads(
        formatter.format(
            record(
                "got Bearer abc.def and %s",
                jwt,
                password="hunter2",
                code="123456",
                refresh_token="r1",
                headers={"Authorization": "Bearer x", "Accept": "json"},
                status_code=200,
            )
        )
    )
    text = json.dumps(line)
    assert "hunter2" not in text and "123456" not in text and "r1" not in text.replace("req", "")
    assert jwt not in text and "abc.def" not in text
    assert line["password"] == REDACTED and line["code"] == REDACTED
    assert line["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert line["status_code"] == 200


def test_redact_leaves_ordinary_values():
    assert redact({"email": "a@b.c", "count": 3}) == {"email": "a@b.c", "count": 3}
