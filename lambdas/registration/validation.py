"""Turns pydantic's validation errors into the domain's ValidationError (one entry per field)."""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic
from aws_lambda_powertools.utilities.parser import parse

from registration.errors import ValidationError, invalid_input

M = TypeVar("M", bound=pydantic.BaseModel)


def field_errors(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(part) for part in err["loc"]) or "body",
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def validation_error(exc: pydantic.ValidationError) -> ValidationError:
    return invalid_input(field_errors(exc))


def malformed_json(detail: str) -> ValidationError:
    field = {"field": "body", "message": f"Malformed JSON: {detail}", "type": "json_invalid"}
    return ValidationError(f"Invalid input: body is not JSON ({detail})", fields=[field])


def parse_model(event: Any, model: type[M]) -> M:
    """Parse a task's input with Powertools' parser; bad input becomes ValidationError."""
    if not isinstance(event, dict):
        raise ValidationError("Invalid input: expected a JSON object", fields=[])
    try:
        return parse(event=event, model=model)
    except pydantic.ValidationError as exc:
        raise validation_error(exc) from None
