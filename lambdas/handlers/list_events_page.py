"""Reconciliation task: one page of event ids to reconcile, and the token of the next."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import reconciliation
from registration.data import get_store
from registration.observability import logger, tracer
from registration.reconciliation_models import EventsPage, ListEventsPageInput
from registration.validation import parse_model


@logger.inject_lambda_context(correlation_id_path="runId")
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_model(event, ListEventsPageInput)
    ids, token = reconciliation.list_events_page(
        get_store(), request.options.pageSize, request.page.nextToken, request.options.eventIds
    )
    logger.info("events page", extra={"events": len(ids), "more": token is not None})
    return EventsPage(eventIds=ids, nextToken=token).model_dump(mode="json")
