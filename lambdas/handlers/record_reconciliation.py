"""Reconciliation task: the run's summary (the execution's output); written to the table
only when the run changed something, so a run over a consistent table writes nothing."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import reconciliation
from registration.data import get_store
from registration.observability import logger, tracer
from registration.reconciliation_models import RecordRunInput
from registration.validation import parse_model


@logger.inject_lambda_context(correlation_id_path="runId")
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_model(event, RecordRunInput)
    run = reconciliation.Run(request.runId, reconciliation.normalize_timestamp(request.startedAt))
    summary = reconciliation.record_run(get_store(), run, request.totals)
    logger.info("reconciliation run finished", extra=summary.model_dump(mode="json"))
    return summary.model_dump(mode="json")
