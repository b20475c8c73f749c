"""Erase workflow task: delete a user's idempotency records, then the user item."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import erasure
from registration.data import get_store
from registration.models import ErasureInput
from registration.observability import logger, tracer
from registration.validation import parse_model


@logger.inject_lambda_context(correlation_id_path="requestId")
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run = parse_model(event, ErasureInput)
    forgotten = erasure.forget(get_store(), run)
    logger.info("user erased", extra={"userId": run.userId, "recordsDeleted": forgotten})
    return {"recordsDeleted": forgotten}
