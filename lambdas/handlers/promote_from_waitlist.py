"""Task: the leaving user's seat goes to the head of the waitlist, in one transaction."""

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
        budget = service.in_task_budget(context.get_remaining_time_in_millis())
        result = service.promote_from_waitlist(get_store(), state, budget)
    except DomainError as exc:
        count(outcome_metric(exc))
        raise
    count("Unregistrations")
    count("Promotions")
    logger.info("seat handed over", extra=result.model_dump())
    return result.model_dump(mode="json")
