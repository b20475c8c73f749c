"""Task `RecordFailure`: store how a keyed execution failed, so a replay of its request fails alike.

A success needs no task: the write that succeeds stores its answer in the same transaction.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import idempotency
from registration.data import get_store
from registration.models import RecordFailureInput
from registration.observability import logger, metrics, tracer
from registration.validation import parse_model


@logger.inject_lambda_context(correlation_id_path="requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    failure = parse_model(event, RecordFailureInput)
    response = idempotency.record_failure(
        get_store(), failure.claim_key, failure.requestId, failure.operation, failure.error
    )
    logger.info("request outcome recorded", extra={"statusCode": response.statusCode})
    return {"statusCode": response.statusCode}
