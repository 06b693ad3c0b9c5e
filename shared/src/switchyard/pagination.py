"""Cursor pagination (DESIGN §4): ``?limit=&cursor=`` → ``{"items": [...], "next_cursor": …}``.

A cursor is an opaque, URL-safe encoding of the position after the last item of a page
(``{"after": "<id>"}``, ``{"seq": 41}``, …). Clients pass it back unchanged; one that
does not decode into the fields the endpoint expects is a 400 ``invalid-cursor``
problem, never a 500 or a silently different page.

    class ConversationQuery(PageQuery): ...             # limit (1-100, 50) and cursor
    after = read_cursor(query.cursor, after=str)        # None on the first page
    return json_response(page(items, {"after": last_id} if more else None))
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from switchyard.problems import Problem
from switchyard.web import QueryModel

MAX_CURSOR_LENGTH = 512
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class PageQuery(QueryModel):
    """The query of a paged list; subclass it to add filters."""

    limit: int = Field(50, ge=1, le=100)
    cursor: str | None = Field(None, min_length=1, max_length=MAX_CURSOR_LENGTH)


def encode_cursor(position: Mapping[str, str | int]) -> str:
    raw = json.dumps(dict(position), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def invalid_cursor() -> Problem:
    """The problem for a cursor this endpoint did not issue (raise it after own checks too)."""
    return Problem(400, "The cursor is not one this endpoint returned.", slug="invalid-cursor")


def decode_cursor(cursor: str, **fields: type[str] | type[int]) -> dict[str, Any]:
    """The position in ``cursor``; each named field must be there with its type."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid_cursor() from None
    if not isinstance(data, dict) or set(data) != set(fields):
        raise invalid_cursor()
    for name, kind in fields.items():
        value = data[name]
        # bool is an int to Python; a cursor never carries one
        if not isinstance(value, kind) or isinstance(value, bool):
            raise invalid_cursor()
        # The store keeps 64-bit integers: a bigger one in a query is an error there (a 500).
        if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
            raise invalid_cursor()
    return data


def read_cursor(cursor: str | None, **fields: type[str] | type[int]) -> dict[str, Any] | None:
    """``decode_cursor`` for an optional query parameter: None on the first page."""
    return decode_cursor(cursor, **fields) if cursor else None


def page(items: Sequence[Any], next_position: Mapping[str, str | int] | None) -> dict[str, Any]:
    """The response body of one page."""
    return {
        "items": list(items),
        "next_cursor": encode_cursor(next_position) if next_position else None,
    }
