"""Webhook fan-out: each domain event from the webhook events queue, to one deliveries
queue message per subscription that wants it (`registration.webhook_fanout`)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import webhook_fanout
from registration.data import get_store
from registration.observability import logger, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("Records", [])
    answer = webhook_fanout.fan_out(
        records,
        get_store().all_webhooks,
        webhook_fanout.sqs_client(),
        webhook_fanout.delivery_queue_url(),
    )
    logger.info("fanned out", extra={"records": len(records), "failed": len(answer["batchItemFailures"])})
    return answer
