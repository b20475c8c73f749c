"""Webhook deliveries in the twin: AWS's path, run, and its dead letters for operators.

The twin runs what the template deploys (``constructs/webhooks.py``): the webhooks' pipe
sends each domain event from the table's stream to the events FIFO queue (one group per
event), the fan-out function's event source hands them to it, it sends one message per
matching subscription to the deliveries FIFO queue (one group per subscription and
event), and the delivery function's event source hands each to it to POST, signed. The
queues are :mod:`infrastructure.local.queues`, the event sources
:mod:`infrastructure.local.event_sources`, and every call is authorised against the
role that makes it, as on AWS.

What differs is time. On AWS a refused delivery waits 30 s doubling to an hour, 30 times
(about a day); locally the waits are ``LOCAL_RETRY_SCHEDULE_S`` (``make run
--webhook-retries``), which the delivery function reads from its environment, and the
deliveries queue's ``maxReceiveCount`` is one more than the schedule has waits: a
message is tried once and once after each wait, then, one last wait after its last
attempt, the queue moves it to its dead-letter queue.

The dead letters are what :class:`WebhookDeadLetters` lists (``regctl webhooks failed``)
and sends back (``regctl webhooks redrive``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infrastructure import names
from infrastructure.local import queues as local_queues
from infrastructure.local.event_sources import LocalEventSources
from infrastructure.local.lambda_seam import LocalLambdaClient
from infrastructure.local.queues import LocalQueue, LocalQueues, QueuedMessage
from infrastructure.local.template_specs import LocalTemplate

# The waits (whole seconds: a visibility timeout is) after each failed delivery.
LOCAL_RETRY_SCHEDULE_S = (1, 2, 4, 8, 16)
# The queues' files, under the events directory.
QUEUES_DIRECTORY = "queues"
DELIVERIES_QUEUE_NAME = names.webhook_queue_name(names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX)


def local_receive_limits(schedule: Sequence[int]) -> dict[str, int]:
    """The deliveries queue's maxReceiveCount locally: a first attempt and one per wait."""
    return {DELIVERIES_QUEUE_NAME: len(schedule) + 1}


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class WebhookDeadLetters:
    """The deliveries queue's dead letters: listed, and sent back to their queue."""

    def __init__(self, queues: LocalQueues, deliveries_queue: str = DELIVERIES_QUEUE_NAME) -> None:
        self.deliveries: LocalQueue = queues.named(deliveries_queue)
        if self.deliveries.dead_letter is None:
            raise ValueError(f"{deliveries_queue} has no dead-letter queue")
        self.dead_letter: LocalQueue = self.deliveries.dead_letter

    def failed(self) -> list[dict[str, Any]]:
        """Each dead letter: its subscription, event, message id, type, attempts, and when."""
        return [_summary(m) for m in self.dead_letter.peek()]

    def redrive(self, webhook_id: str | None = None) -> int:
        """The dead letters (one subscription's, or all) back at the end of the deliveries
        queue, in their order, with their attempts counted anew."""

        def wanted(message: QueuedMessage) -> bool:
            return webhook_id is None or _delivery(message).get("webhookId") == webhook_id

        again = self.dead_letter.take(wanted)
        for message in again:
            message.receiveCount, message.firstReceivedAt = 0, None
            message.deadLetterSourceArn, message.deadLetteredAt = None, None
        self.deliveries.put_back(again)
        return len(again)


def _delivery(message: QueuedMessage) -> dict[str, Any]:
    """A deliveries queue message's body (`registration.webhook_fanout.DeliveryMessage`),
    read as JSON: importing the functions' modules here would create their logger before
    the server has set its level."""
    body: dict[str, Any] = json.loads(message.body)
    return body


def _summary(message: QueuedMessage) -> dict[str, Any]:
    delivery = _delivery(message)
    event = delivery.get("event", {})
    return {
        "webhookId": str(delivery.get("webhookId")),
        "eventId": str(event.get("eventId")),
        "messageId": str(event.get("id")),
        "type": str(event.get("type")),
        "attempts": message.receiveCount,
        "deadLetteredAt": _iso(message.deadLetteredAt),
    }


@dataclass
class QueueRuntime:
    """The template's queues, answering the handlers' calls while installed, their event
    sources (polling once started), and the webhook deliveries' dead letters."""

    queues: LocalQueues
    event_sources: LocalEventSources | None
    dead_letters: WebhookDeadLetters | None

    def close(self) -> None:
        if self.event_sources is not None:
            self.event_sources.stop()
        local_queues.uninstall(self.queues)
        self.queues.close()


def queue_runtime(
    template: LocalTemplate,
    *,
    directory: Path | None,
    schedule: Sequence[int],
    lambdas: LocalLambdaClient | None,
    region: str,
) -> QueueRuntime | None:
    """The queue runtime of ``template`` (None: it has no queues), installed. Its queues'
    files are under ``directory`` (memory without one); ``lambdas`` runs the functions of
    the event sources (None: no event source runs)."""
    if not template.queues:
        return None
    queues = LocalQueues(
        template.queues, directory=directory, max_receive_counts=local_receive_limits(schedule)
    )
    event_sources = None
    if lambdas is not None and template.event_source_mappings:
        event_sources = LocalEventSources(
            template.event_source_mappings,
            queues,
            lambdas.invoke,
            principals={name: fn.principal for name, fn in lambdas.functions.items()},
            region=region,
        )
    try:
        dead_letters: WebhookDeadLetters | None = WebhookDeadLetters(queues)
    except (KeyError, ValueError):  # a template without the webhooks' queues
        dead_letters = None
    local_queues.install(queues)
    return QueueRuntime(queues, event_sources, dead_letters)
