"""Cancel workflow task: the next seats and waitlist places to release, in groups."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import cancellation
from registration.data import get_store
from registration.models import CancellationInput
from registration.observability import logger, tracer
from registration.validation import parse_model


@logger.inject_lambda_context(correlation_id_path="requestId")
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_model(event, CancellationInput)
    batch = cancellation.next_batch(get_store(), request.eventId)
    logger.info("cancellation batch", extra={"eventId": request.eventId, "entries": batch.entries})
    return batch.model_dump(mode="json")
