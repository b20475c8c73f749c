"""Cancel workflow task (a child of the Distributed Map): release one group of entries."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import cancellation
from registration.data import get_store
from registration.models import ReleaseGroup
from registration.observability import logger, tracer
from registration.validation import parse_model


@logger.inject_lambda_context(correlation_id_path="requestId")
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    group = parse_model(event, ReleaseGroup)
    released, gone = cancellation.release_group(get_store(), group.eventId, group.entries, group.requestId)
    logger.info("released", extra={"eventId": group.eventId, "released": released, "alreadyGone": gone})
    return {"released": released, "alreadyGone": gone}
