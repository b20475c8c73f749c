"""Webhook delivery on AWS: one message of the deliveries FIFO queue, POSTed to its
subscription's URL, signed (`registration.webhooks`).

A message whose subscription is gone is done: nothing is sent. A delivery that fails (an
answer other than 2xx, no answer within `webhooks.DELIVERY_TIMEOUT_S`, a connection
refused or reset) is reported as a failure after its visibility timeout is changed to
the backoff for its attempt: the message comes back then, and until it does every later
message of its group (the same subscription and event) waits behind it, as SQS FIFO
holds a group while one of its messages is in flight. After the queue's
`maxReceiveCount` attempts the queue sends it to its dead-letter queue.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from registration import settings, webhooks
from registration.models import StoredWebhook
from registration.observability import logger
from registration.webhook_fanout import DeliveryMessage

# The wait after a failed attempt: 30 s after the first, doubling, at most an hour.
BACKOFF_BASE_S = 30
BACKOFF_CAP_S = 3600


def backoff_seconds(receive_count: int, schedule: Sequence[int] = ()) -> int:
    """The visibility timeout after attempt `receive_count` (1 = the first) failed: from
    `schedule` when there is one (its last wait once it is used up; the local stack's),
    else 30 s doubling to an hour."""
    attempt = max(receive_count, 1)
    if schedule:
        return int(schedule[min(attempt, len(schedule)) - 1])
    exponent = attempt - 1
    if exponent >= 32:  # far past the cap; keeps the power small
        return BACKOFF_CAP_S
    return int(min(BACKOFF_BASE_S * 2**exponent, BACKOFF_CAP_S))


class DeliveryFailed(Exception):
    """The receiver did not take the message (its answer, or why there was none)."""


@dataclass(frozen=True)
class Sent:
    url: str
    status: int


def _opener() -> urllib.request.OpenerDirector:
    """HTTP and HTTPS without a redirect handler: a 3xx is an answer like any other
    non-2xx (the message is not sent elsewhere), raised as HTTPError."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


_OPENER = _opener()


def post(url: str, body: str, headers: Mapping[str, str], timeout: float) -> int:
    """POSTs `body`; the answer's status (2xx), else DeliveryFailed."""
    request = urllib.request.Request(url, data=body.encode(), headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"{url} answered {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DeliveryFailed(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if not 200 <= status < 300:
        raise DeliveryFailed(f"{url} answered {status}")
    return status


def deliver(
    message: DeliveryMessage,
    find_webhook: Callable[[str], StoredWebhook | None],
    *,
    now: Callable[[], float] = time.time,
    send: Callable[[str, str, Mapping[str, str], float], int] = post,
) -> Sent | None:
    """Sends one message (None: its subscription is gone, nothing sent)."""
    webhook = find_webhook(message.webhookId)
    if webhook is None:
        return None
    body = webhooks.message_body(message.event)
    headers = webhooks.headers(webhook.secret, str(message.event["id"]), int(now()), body)
    status = send(webhook.url, body, headers, webhooks.DELIVERY_TIMEOUT_S)
    return Sent(webhook.url, status)


def handle(
    records: Sequence[Mapping[str, Any]],
    find_webhook: Callable[[str], StoredWebhook | None],
    sqs: Any,
    queue_url: str,
    *,
    now: Callable[[], float] = time.time,
    send: Callable[[str, str, Mapping[str, str], float], int] = post,
) -> dict[str, list[dict[str, str]]]:
    """Delivers each record; answers the SQS partial batch response. A failed record's
    visibility is set to its backoff first, and the later records of its group are
    reported too (none overtakes it)."""
    failed: list[dict[str, str]] = []
    blocked: set[str] = set()
    for record in records:
        group = str(record.get("attributes", {}).get("MessageGroupId", ""))
        if group not in blocked:
            try:
                _deliver_record(record, find_webhook, now=now, send=send)
                continue
            except Exception as exc:
                # A refused delivery, or a read or a message that failed: all retried.
                _retry_later(record, sqs, queue_url, exc)
                blocked.add(group)
        failed.append({"itemIdentifier": str(record["messageId"])})
    return {"batchItemFailures": failed}


def _deliver_record(
    record: Mapping[str, Any],
    find_webhook: Callable[[str], StoredWebhook | None],
    *,
    now: Callable[[], float],
    send: Callable[[str, str, Mapping[str, str], float], int],
) -> None:
    message = DeliveryMessage.model_validate_json(record["body"])
    sent = deliver(message, find_webhook, now=now, send=send)
    if sent is None:
        logger.info("webhook gone: message dropped", extra={"webhookId": message.webhookId})
    else:
        logger.info("webhook delivered", extra={"webhookId": message.webhookId, "status": sent.status})


def _retry_later(record: Mapping[str, Any], sqs: Any, queue_url: str, error: Exception) -> None:
    """The record comes back after the backoff of its attempt (after the queue's own
    visibility timeout when even that call fails)."""
    attempt = int(record.get("attributes", {}).get("ApproximateReceiveCount", 1))
    wait = backoff_seconds(attempt, settings.Settings.read().webhook_retry_schedule)
    logger.warning(
        "webhook delivery failed",
        extra={
            "messageId": record.get("messageId"),
            "attempt": attempt,
            "retryIn": wait,
            "error": str(error),
        },
    )
    try:
        sqs.change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=wait
        )
    except Exception:
        logger.exception("could not set the retry's visibility timeout")
