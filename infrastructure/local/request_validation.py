"""API Gateway's request validation of the workflow routes, which start an execution with
no Lambda in front: the register route's body against its request model."""

from __future__ import annotations

import pydantic

from registration import bounded_json
from registration.errors import ValidationError
from registration.models import RegisterRequest
from registration.validation import malformed_json, validation_error


def register_request(body: bytes | str | None) -> RegisterRequest:
    """The register route's body, validated as API Gateway's request model does."""
    if not body:
        field = {"field": "body", "message": "Field required", "type": "missing"}
        raise ValidationError("Invalid input: body: Field required", fields=[field])
    try:
        document = bounded_json.loads(body)
    except UnicodeDecodeError:
        raise malformed_json("the body is not UTF-8 text") from None
    except ValueError as exc:
        raise malformed_json(exc.args[0] if exc.args else str(exc)) from None
    try:
        return RegisterRequest.model_validate(document)
    except pydantic.ValidationError as exc:
        raise validation_error(exc) from None
