"""Webhook fan-out on AWS: each domain event, to one delivery message per subscription
that wants it.

The fan-out function reads the SQS FIFO queue the webhook pipe fills from the table's
stream (message group: the event's `eventId`, so one event's domain events come in commit
order; body: the domain event's detail JSON). For each message it sends one message per
matching subscription to the deliveries FIFO queue, whose message group is
`{webhookId}#{eventId}` (one lane per subscription and event: a receiver that is down
holds up only its own lane) and whose deduplication id is `{webhookId}#{id}` (a message
fanned out again within SQS's five-minute window is dropped, not delivered twice).

A batch holds messages of several groups, each group's in order. A message that fails
(a send refused) is reported with every later message of its group, so that none of them
overtakes it; the other groups go on.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import boto3
from pydantic import BaseModel, ConfigDict

from registration import settings, webhooks
from registration.models import StoredWebhook
from registration.observability import logger

DELIVERY_QUEUE_URL = settings.WEBHOOK_DELIVERY_QUEUE_URL
GROUP_SEPARATOR = "#"


class DeliveryMessage(BaseModel):
    """One domain event for one subscription: the body of a deliveries queue message."""

    model_config = ConfigDict(extra="forbid")

    webhookId: str
    event: dict[str, Any]


def group_id(webhook_id: str, event_id: str) -> str:
    return f"{webhook_id}{GROUP_SEPARATOR}{event_id}"


def deduplication_id(webhook_id: str, domain_event_id: str) -> str:
    return f"{webhook_id}{GROUP_SEPARATOR}{domain_event_id}"


def delivery_queue_url(environment: Mapping[str, str] | None = None) -> str:
    env = os.environ if environment is None else environment
    url = env.get(DELIVERY_QUEUE_URL, "")
    if not url:
        raise RuntimeError(f"{DELIVERY_QUEUE_URL} is not set")
    return url


@functools.cache
def sqs_client() -> Any:
    """The process's SQS client (region and endpoint from the environment)."""
    return boto3.session.Session().client("sqs")


def _message_group(record: Mapping[str, Any]) -> str:
    return str(record.get("attributes", {}).get("MessageGroupId", ""))


def fan_out(
    records: Sequence[Mapping[str, Any]],
    subscriptions: Callable[[], Sequence[StoredWebhook]],
    sqs: Any,
    queue_url: str,
) -> dict[str, list[dict[str, str]]]:
    """Sends each record's deliveries; answers the SQS partial batch response.

    `subscriptions` is read once, on the first record that needs it."""
    failed: list[dict[str, str]] = []
    blocked: set[str] = set()
    read: list[Sequence[StoredWebhook]] = []
    for record in records:
        group = _message_group(record)
        if group in blocked:
            failed.append({"itemIdentifier": str(record["messageId"])})
            continue
        try:
            detail = json.loads(record["body"])
            if not read:
                read.append(subscriptions())
            for webhook in webhooks.matching(read[0], detail):
                message = DeliveryMessage(webhookId=webhook.webhookId, event=detail)
                sqs.send_message(
                    QueueUrl=queue_url,
                    MessageBody=message.model_dump_json(),
                    MessageGroupId=group_id(webhook.webhookId, str(detail["eventId"])),
                    MessageDeduplicationId=deduplication_id(webhook.webhookId, str(detail["id"])),
                )
        except Exception:
            logger.exception("webhook fan-out failed", extra={"messageId": record.get("messageId")})
            # Reported, with the rest of its group; retried after the visibility timeout
            # (the deliveries already sent are deduplicated by SQS within five minutes).
            blocked.add(group)
            failed.append({"itemIdentifier": str(record["messageId"])})
    return {"batchItemFailures": failed}
