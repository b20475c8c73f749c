"""Reconciliation task: adds one page of per-event results to the run's totals (no I/O)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import reconciliation
from registration.observability import logger, tracer
from registration.reconciliation_models import TallyInput
from registration.validation import parse_model


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_model(event, TallyInput)
    totals = reconciliation.tally(request.totals, request.results)
    return totals.model_dump(mode="json")
