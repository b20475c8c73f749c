"""Webhook delivery: one deliveries queue message, POSTed signed to its subscription
(`registration.webhook_delivery`)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import webhook_delivery, webhook_fanout
from registration.data import get_store
from registration.observability import logger, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return webhook_delivery.handle(
        event.get("Records", []),
        get_store().find_webhook,
        webhook_fanout.sqs_client(),
        webhook_fanout.delivery_queue_url(),
    )
