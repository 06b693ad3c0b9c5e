"""``switchyard.web.JsonInt``: an integer as JSON Schema has it (``7`` and ``7.0`` are one number)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from switchyard.web import JsonInt, RequestModel


class Body(RequestModel):
    seconds: JsonInt


@pytest.mark.parametrize("raw", ["7", "7.0", "7e0"])
def test_integral_numbers_are_integers(raw: str) -> None:
    value = Body.model_validate_json(f'{{"seconds": {raw}}}').seconds
    assert value == 7 and type(value) is int


@pytest.mark.parametrize("raw", ["7.5", '"7"', "true", "null"])
def test_anything_else_is_refused(raw: str) -> None:
    with pytest.raises(ValidationError):
        Body.model_validate_json(f'{{"seconds": {raw}}}')
