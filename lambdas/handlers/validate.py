"""Task: the user (when registering) and the event exist; returns the event snapshot."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import service
from registration.data import get_store
from registration.models import ValidateInput
from registration.observability import logger, tracer
from registration.validation import parse_model


@logger.inject_lambda_context(correlation_id_path="requestId")
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_model(event, ValidateInput)
    snapshot = service.validate(get_store(), request)
    logger.info("validated", extra={"operation": request.operation, "eventId": request.eventId})
    return snapshot.model_dump(mode="json")
