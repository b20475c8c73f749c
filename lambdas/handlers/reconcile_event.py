"""Reconciliation task: recount one event, repair its counters and waitlist, promote.

Emits one metric per repair kind and per outcome, plus `ReconciliationRepairs` (the sum,
which an alarm watches), and logs every repair with the event id, before and after, and
every cancel run it had to start for a cancelled event that still held registrations.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import cancellation, reconciliation
from registration.data import get_store
from registration.observability import logger, metrics, tracer
from registration.reconciliation_models import EventReconciliation, ReconcileEventInput
from registration.validation import parse_model


@logger.inject_lambda_context(correlation_id_path="runId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_model(event, ReconcileEventInput)
    run = reconciliation.Run(request.runId, reconciliation.normalize_timestamp(request.startedAt))
    result = reconciliation.reconcile_event(get_store(), request.eventId, run)
    _emit(result)
    return result.model_dump(mode="json")


def _emit(result: EventReconciliation) -> None:
    metrics.add_metric(name=reconciliation.REPAIRS_METRIC, unit=MetricUnit.Count, value=result.repairs)
    for field, metric in reconciliation.REPAIR_KIND_METRICS.items():
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=getattr(result, field))
    outcome_metric = reconciliation.OUTCOME_METRICS.get(result.outcome)
    if outcome_metric:
        metrics.add_metric(name=outcome_metric, unit=MetricUnit.Count, value=1)
    if result.overbooked:
        metrics.add_metric(name=reconciliation.OVERBOOKED_METRIC, unit=MetricUnit.Count, value=1)

    details = {
        "eventId": result.eventId,
        "outcome": result.outcome,
        "before": result.before.model_dump() if result.before else None,
        "after": result.after.model_dump() if result.after else None,
        "countRepairs": result.countRepairs,
        "waitlistRepairs": result.waitlistRepairs,
        "promotions": result.promotions,
        "actions": [a.model_dump(exclude_none=True) for a in result.actions],
    }
    if result.overbooked:
        # More seats than capacity: counted truthfully, but only people can fix it.
        logger.error("event is overbooked", extra=details)
    if result.cancelReleaseStarted:
        # The API starts this run right after marking the event cancelled; when it stopped in
        # between, this start is the only one (when the run exists, the start changed nothing).
        logger.warning(
            "cancelled event still held registrations; started its cancel run",
            extra={**details, "execution": cancellation.execution_name(result.eventId)},
        )
    if result.repairs:
        logger.warning("reconciliation repaired drift", extra=details)
    elif result.outcome == "busy":
        logger.info("event left for the next run: it kept changing", extra=details)
    else:
        logger.debug("event reconciled", extra=details)
