"""Task: the caller may make this request; claim its `Idempotency-Key`, or answer as the first request did."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import idempotency, service
from registration.data import get_store
from registration.models import ClaimInput
from registration.observability import logger, metrics, tracer
from registration.validation import parse_model


@logger.inject_lambda_context(correlation_id_path="requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_model(event, ClaimInput)
    store = get_store()
    # Before the claim: a refused request claims no key and writes nothing.
    service.authorize(store, request, request.operation)
    result = idempotency.claim_request(
        store,
        request.idempotencyKey,
        request.caller.userId,
        request.operation,
        request.eventId,
        request.userId,
        request.requestId,
    )
    logger.info("idempotency key claimed" if not result.replay else "replaying the first answer")
    return result.model_dump(mode="json", exclude_none=True)
