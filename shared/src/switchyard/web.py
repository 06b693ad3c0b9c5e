"""Web defaults every service gets from one call: :func:`new_app`.

- ``/healthz`` (alive), ``/readyz`` (every readiness check passes, else 503; the answer
  names each check with ``ok`` or ``failing``, the reason is logged),
  ``/metrics`` (Prometheus text);
- request ids (accepted from ``X-Request-ID`` or generated, returned on every
  response, put in every log line);
- RFC 9457 problem+json for our own :class:`Problem`, aiohttp's 404/405/413 …,
  and unexpected exceptions (500 without internals, logged with traceback);
- a body size limit and HTTP metrics per route template;
- tracing through the official aiohttp server instrumentation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from switchyard import keys
from switchyard.logging import configure_logging, request_id_var
from switchyard.metrics import Metrics
from switchyard.problems import (
    Problem,
    problem_from_http_exception,
    problem_response,
    validation_errors,
    validation_problem,
)
from switchyard.settings import ServiceSettings, SettingsT, load_settings
from switchyard.tracing import configure_tracing

log = logging.getLogger("switchyard.web")

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
READINESS_TIMEOUT = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ModelT = TypeVar("ModelT", bound=BaseModel)


class RequestModel(BaseModel):
    """Base for request bodies: unknown fields and wrong JSON types are rejected (DESIGN §4).

    Strict mode: ``"yes"`` is not a boolean and ``"12"`` not an integer. Strings still
    parse into datetimes, UUIDs and enums, as JSON has no such types.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


def _integral_number(value: Any) -> Any:
    if type(value) is float and value.is_integer():
        return int(value)
    return value


# An integer field of a request body as JSON Schema has it: ``1601`` and ``1601.0`` are the one
# number (JSON has no separate integer type), ``1601.5``, ``"1601"`` and ``true`` are refused.
JsonInt = Annotated[int, BeforeValidator(_integral_number)]


class QueryModel(BaseModel):
    """Base for query strings: unknown parameters are rejected; values arrive as text, so
    numbers and booleans are parsed from it (lax, unlike :class:`RequestModel`)."""

    model_config = ConfigDict(extra="forbid")


QueryT = TypeVar("QueryT", bound=QueryModel)


def read_query(request: web.Request, model: type[QueryT]) -> QueryT:
    """Validate the query string: 422 problem+json with ``errors[]`` when it does not fit."""
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as error:
        raise validation_problem(
            validation_errors(error), "The query parameters failed validation."
        ) from None


def request_id(request: web.Request) -> str | None:
    return request_id_var.get()


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    rid = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    token = request_id_var.set(rid)
    try:
        try:
            response = await handler(request)
        except web.HTTPException as error:
            error.headers[REQUEST_ID_HEADER] = rid
            raise
        response.headers[REQUEST_ID_HEADER] = rid
        return response
    finally:
        request_id_var.reset(token)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(problem, instance=request.path, request_id=request_id_var.get())
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return problem_response(
            problem_from_http_exception(error),
            instance=request.path,
            request_id=request_id_var.get(),
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        return problem_response(
            Problem(500, "The server could not complete the request.", slug="internal-error"),
            instance=request.path,
            request_id=request_id_var.get(),
        )


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical


def metrics_middleware(metrics: Metrics) -> Any:
    service = metrics.service

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = _route_label(request)
            metrics.http_requests.labels(service, route, request.method, str(status)).inc()
            metrics.http_duration.labels(service, route, request.method).observe(elapsed)
            if request.path not in _QUIET_PATHS:
                log.info(
                    "%s %s %s",
                    request.method,
                    route,
                    status,
                    extra={"status": status, "duration_ms": round(elapsed * 1000, 2)},
                )

    return middleware


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = request.app[keys.READINESS_CHECKS]
    results: dict[str, str] = {}

    async def run(name: str, check: keys.ReadinessCheck) -> None:
        try:
            await asyncio.wait_for(check(), READINESS_TIMEOUT)
            results[name] = "ok"
        except asyncio.CancelledError:
            raise
        # Readiness reports any failure as "not ready"; why goes to the log, not the answer
        # (DESIGN §4: no internal names in responses).
        except Exception as error:  # noqa: BLE001
            results[name] = "failing"
            log.warning("readiness check failing", extra={"check": name, "error": repr(error)})

    await asyncio.gather(*(run(name, check) for name, check in checks.items()))
    if all(value == "ok" for value in results.values()):
        return web.json_response({"status": "ready", "checks": results})
    raise Problem(
        503,
        "A dependency of this service is unreachable.",
        slug="not-ready",
        extra={"checks": results},
        headers={"Retry-After": "5"},
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    body, content_type = request.app[keys.METRICS].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


_IDENTITY_CODINGS = frozenset({"", "identity"})


@web.middleware
async def identity_body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """415 for a request body with a ``Content-Encoding`` (RFC 9110 §8.4.1, §15.5.16)."""
    codings = request.headers.getall("Content-Encoding", [])
    if any(coding.strip().lower() not in _IDENTITY_CODINGS for coding in codings):
        raise Problem(
            415,
            "Send the request body without a Content-Encoding (compressed bodies are not accepted).",
            slug="unsupported-content-encoding",
            headers={"Accept-Encoding": "identity"},
        )
    return await handler(request)


def new_app(
    settings: ServiceSettings,
    *,
    metrics: Metrics | None = None,
) -> web.Application:
    """An application with every Switchyard default installed.

    Services add their routes, readiness checks and cleanup contexts to it.

    Request bodies with a ``Content-Encoding`` (gzip, deflate, br, zstd …) are refused
    with 415 and never inflated: aiohttp would otherwise inflate them in its HTTP parser, on
    the event loop, so a body limit counted compressed bytes while handlers read up to a
    thousand times more (a 200 KB gzip bomb stalled auth's loop for half a second).
    """
    configure_tracing(settings.service_name)
    metrics = metrics or Metrics(settings.service_name)
    middlewares: list[Any] = [
        request_id_middleware,
        metrics_middleware(metrics),
        problem_middleware,
        identity_body_middleware,
    ]
    handler_args: dict[str, Any] = {"max_field_size": 16 * 1024, "auto_decompress": False}
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=middlewares,
        handler_args=handler_args,
    )
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = metrics
    app[keys.READINESS_CHECKS] = {}
    app.router.add_get("/healthz", healthz, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


async def read_json(request: web.Request, model: type[ModelT]) -> ModelT:
    """Parse and validate a JSON body: 415 for non-JSON, 400 for malformed, 422 for invalid."""
    if not _is_json(request.content_type):
        raise Problem(415, "Send the body as application/json.", slug="unsupported-media-type")
    body = await request.read()  # bounded by client_max_size → 413
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        if any(item["type"] == "json_invalid" for item in error.errors()):
            raise Problem(400, "The body is not valid JSON.", slug="malformed-json") from None
        raise validation_problem(validation_errors(error)) from None


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Serialize pydantic models (or plain data) as JSON."""
    if isinstance(data, BaseModel):
        payload = data.model_dump_json().encode()
    else:
        payload = json.dumps(data, default=_default).encode()
    return web.Response(
        body=payload, status=status, content_type="application/json", headers=headers
    )


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if hasattr(value, "isoformat"):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot serialize {type(value).__name__}")


def serve(
    settings_cls: type[SettingsT], create_app: Callable[[SettingsT], web.Application]
) -> None:
    """A service's ``__main__``: settings from the environment (exit 2 with a readable
    message when invalid), logging, then :func:`run` until SIGTERM/SIGINT."""
    settings = load_settings(settings_cls)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    run(lambda: create_app(settings), settings)


def run(
    app_factory: Callable[[], Awaitable[web.Application] | web.Application],
    settings: ServiceSettings,
) -> None:
    """Run a service until SIGTERM/SIGINT, draining in-flight work on the way out."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvloop is optional on platforms without it
        log.debug("uvloop unavailable; using the default event loop")
    web.run_app(
        app_factory(),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_timeout,
        access_log=None,
        print=None,
    )
