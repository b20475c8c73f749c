"""Task: the transactional write that takes a seat or joins the waitlist's tail."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import service
from registration.data import get_store
from registration.errors import DomainError
from registration.models import RegisterState
from registration.observability import count, logger, metrics, outcome_metric, tracer
from registration.validation import parse_model


@logger.inject_lambda_context(correlation_id_path="requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = parse_model(event, RegisterState)
    try:
        budget = service.in_task_budget(context.get_remaining_time_in_millis())
        result = service.write_registration(get_store(), state, budget)
    except DomainError as exc:
        count(outcome_metric(exc))
        raise
    metric = "Registrations" if result.status == "registered" else "WaitlistJoins"
    count(metric)
    logger.info("registration written", extra=result.model_dump())
    return result.model_dump(mode="json")
