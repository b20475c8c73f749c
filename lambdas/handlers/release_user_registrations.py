"""Erase workflow task: release the next seats and waitlist places of a user being erased."""

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
    release = erasure.release_late if run.late else erasure.release_next
    progress = release(get_store(), run)
    logger.info(
        "user's registrations released",
        extra={
            "userId": run.userId,
            "late": run.late,
            "found": progress.found,
            "released": progress.released,
        },
    )
    return progress.model_dump(mode="json")
