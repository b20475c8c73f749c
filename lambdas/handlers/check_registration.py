"""Task: decide what leaving means for this user: free a seat, hand it over, or leave the waitlist."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import service
from registration.data import get_store
from registration.models import UnregisterState
from registration.observability import logger, tracer
from registration.validation import parse_model


@logger.inject_lambda_context(correlation_id_path="requestId")
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    decision = service.check_registration(get_store(), parse_model(event, UnregisterState))
    logger.info("decided", extra={"action": decision.action, "attempt": decision.attempt})
    return decision.model_dump(mode="json")
