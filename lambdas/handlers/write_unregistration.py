"""Task: the transactional write that frees a seat (nobody waiting) or leaves the waitlist."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import service
from registration.data import get_store
from registration.errors import DomainError
from registration.models import UnregisterState
from registration.observability import count, logger, metrics, outcome_metric, tracer
from registration.validation import parse_model


@logger.inject_lambda_context(correlation_id_path="requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = parse_model(event, UnregisterState)
    try:
        result = service.write_unregistration(get_store(), state)
    except DomainError as exc:
        count(outcome_metric(exc))
        raise
    metric = "Unregistrations" if result.status == "unregistered" else "WaitlistLeaves"
    count(metric)
    logger.info("unregistration written", extra=result.model_dump())
    return result.model_dump(mode="json")
