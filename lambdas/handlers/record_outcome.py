"""Task: store how a keyed execution ended, so a replay of its request gets the same answer."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import idempotency
from registration.data import get_store
from registration.models import RecordOutcomeInput
from registration.observability import logger, metrics, tracer
from registration.validation import parse_model


@logger.inject_lambda_context(correlation_id_path="requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcome = parse_model(event, RecordOutcomeInput)
    response = idempotency.stored_workflow_response(outcome.operation, outcome.output, outcome.error)
    idempotency.finish(get_store(), outcome.idempotencyKey, outcome.requestId, response)
    logger.info("request outcome recorded", extra={"statusCode": response.statusCode})
    return {"statusCode": response.statusCode}
