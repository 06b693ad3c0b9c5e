"""RFC 9457 problem details: the one error shape every service answers with."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web
from pydantic import ValidationError

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://switchyard.dev/problems/"

_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    408: "request-timeout",
    409: "conflict",
    410: "gone",
    411: "length-required",
    412: "precondition-failed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    416: "range-not-satisfiable",
    422: "validation-error",
    429: "too-many-requests",
    500: "internal-error",
    501: "not-implemented",
    502: "bad-gateway",
    503: "service-unavailable",
    504: "gateway-timeout",
}


def problem_type(slug: str) -> str:
    return PROBLEM_BASE + slug


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Problem(Exception):
    """Raise from a handler to answer with problem+json.

    ``slug`` names the problem type (``https://switchyard.dev/problems/<slug>``);
    ``extra`` members are added to the body; ``headers`` to the response.
    """

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        slug: str | None = None,
        title: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title or _title(status))
        self.status = status
        self.slug = slug or _SLUGS.get(status, "error")
        self.title = title or _title(status)
        self.detail = detail
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def body(self, *, instance: str, request_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": problem_type(self.slug),
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
            "instance": instance,
        }
        if request_id:
            body["request_id"] = request_id
        body.update(self.extra)
        return body


def validation_errors(error: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as ``errors[]`` members: where, what, and a machine code."""
    out = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        out.append(
            {
                "location": "/" + "/".join(str(part) for part in item["loc"]),
                "message": item["msg"],
                "code": item["type"],
            }
        )
    return out


def validation_problem(errors: Iterable[Mapping[str, Any]], detail: str | None = None) -> Problem:
    return Problem(
        422,
        detail or "The request body failed validation.",
        slug="validation-error",
        title="Validation failed",
        extra={"errors": list(errors)},
    )


def problem_response(problem: Problem, *, instance: str, request_id: str | None) -> web.Response:
    response = web.Response(
        status=problem.status,
        body=json.dumps(problem.body(instance=instance, request_id=request_id)).encode(),
        content_type=PROBLEM_CONTENT_TYPE,
    )
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response


def problem_from_http_exception(error: web.HTTPException) -> Problem:
    """Translate aiohttp's own 4xx/5xx exceptions (404, 405, 413 …) to problems."""
    headers = {}
    if isinstance(error, web.HTTPMethodNotAllowed):
        headers["Allow"] = ", ".join(sorted(error.allowed_methods))
    detail = None
    if isinstance(error, web.HTTPRequestEntityTooLarge):
        detail = "The request body is larger than this endpoint accepts."
    elif isinstance(error, web.HTTPNotFound):
        detail = "No resource exists at this path."
    elif isinstance(error, web.HTTPMethodNotAllowed):
        detail = f"{error.method} is not allowed here."
    return Problem(error.status, detail, headers=headers)
