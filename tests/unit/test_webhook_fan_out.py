"""The webhook fan-out on moto: each domain event from the events FIFO queue, to one
message per matching subscription on a real (moto) deliveries FIFO queue, with the
group and deduplication ids; a failure stops its group only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from registration import domain_events, webhook_fanout
from registration.data import RegistrationStore
from registration.models import NewWebhook
from registration.webhook_fanout import DeliveryMessage
from tests.fixtures.sqs_records import fifo_queue, received, send
from tests.fixtures.tables import moto_store


@pytest.fixture
def world() -> Iterator[tuple[RegistrationStore, Any, str, str]]:
    """(the store, an SQS client, the events queue, the deliveries queue), all in moto."""
    with moto_store() as store:
        sqs, events = fifo_queue("unit-webhook-events")
        _, deliveries = fifo_queue("unit-webhook-deliveries")
        yield store, sqs, events, deliveries


# After every subscription the tests make (a subscription gets what is committed after it).
COMMITTED_AT = "2099-01-01T00:00:00.000Z"


def _event(event_type: domain_events.EventType, event_id: str, user: str, request: str) -> dict[str, Any]:
    detail: dict[str, Any] = json.loads(
        domain_events.domain_event(event_type, event_id, request, COMMITTED_AT, user_id=user).text()
    )
    return detail


def _piped(sqs: Any, url: str, *details: dict[str, Any]) -> list[dict[str, Any]]:
    """The details as the pipe sends them (group: the event; deduplication: a record id)."""
    for n, detail in enumerate(details):
        send(sqs, url, json.dumps(detail), detail["eventId"], f"record-{n}-{detail['id']}")
    return received(sqs, url)


def _deliveries(sqs: Any, url: str) -> list[dict[str, Any]]:
    found = []
    while batch := received(sqs, url):
        found += batch
        for record in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=record["receiptHandle"])
    return found


def test_each_event_goes_to_the_matching_subscriptions_only(world: Any) -> None:
    store, sqs, events, deliveries = world
    every = store.create_webhook(NewWebhook(url="https://a.example/hook"), "admin")
    keynote = store.create_webhook(NewWebhook(url="https://b.example/hook", eventId="keynote"), "org")
    waitlist = store.create_webhook(
        NewWebhook(url="https://c.example/hook", types=["registration.waitlisted"]), "admin"
    )
    store.create_webhook(NewWebhook(url="https://d.example/hook", eventId="other"), "org")

    registered = _event(domain_events.REGISTERED, "keynote", "grace", "r1")
    waitlisted = _event(domain_events.WAITLISTED, "keynote", "alan", "r2")
    records = _piped(sqs, events, registered, waitlisted)
    assert webhook_fanout.fan_out(records, store.all_webhooks, sqs, deliveries) == {"batchItemFailures": []}

    sent = _deliveries(sqs, deliveries)
    by_pair = {
        (DeliveryMessage.model_validate_json(r["body"]).webhookId, json.loads(r["body"])["event"]["id"]): r
        for r in sent
    }
    assert set(by_pair) == {
        (every.webhookId, registered["id"]),
        (keynote.webhookId, registered["id"]),
        (every.webhookId, waitlisted["id"]),
        (keynote.webhookId, waitlisted["id"]),
        (waitlist.webhookId, waitlisted["id"]),
    }
    for (webhook_id, event_id), record in by_pair.items():
        message = DeliveryMessage.model_validate_json(record["body"])
        assert message.event["id"] == event_id
        assert record["attributes"]["MessageGroupId"] == f"{webhook_id}#keynote"
        assert record["attributes"]["MessageDeduplicationId"] == f"{webhook_id}#{event_id}"
    # One lane per subscription and event, in commit order.
    lane = [
        json.loads(r["body"])["event"]["type"]
        for r in sent
        if r["attributes"]["MessageGroupId"] == f"{every.webhookId}#keynote"
    ]
    assert lane == [domain_events.REGISTERED, domain_events.WAITLISTED]


def test_a_record_fanned_out_again_is_not_sent_twice(world: Any) -> None:
    store, sqs, events, deliveries = world
    store.create_webhook(NewWebhook(url="https://a.example/hook"), "admin")
    detail = _event(domain_events.REGISTERED, "keynote", "grace", "r1")
    records = _piped(sqs, events, detail)
    webhook_fanout.fan_out(records, store.all_webhooks, sqs, deliveries)
    webhook_fanout.fan_out(records, store.all_webhooks, sqs, deliveries)  # a retried batch
    assert len(_deliveries(sqs, deliveries)) == 1


class _FailingOnce:
    """An SQS client whose send fails for one domain event (by its id)."""

    def __init__(self, sqs: Any, failing_id: str) -> None:
        self.sqs = sqs
        self.failing_id = failing_id
        self.sent: list[str] = []

    def send_message(self, **kwargs: Any) -> Any:
        event = json.loads(kwargs["MessageBody"])["event"]
        if event["id"] == self.failing_id:
            raise RuntimeError("SQS refused the send")
        self.sent.append(event["id"])
        return self.sqs.send_message(**kwargs)


def test_a_failure_fails_its_message_and_the_later_ones_of_its_group_only(world: Any) -> None:
    store, sqs, events, deliveries = world
    store.create_webhook(NewWebhook(url="https://a.example/hook"), "admin")
    first = _event(domain_events.REGISTERED, "keynote", "grace", "r1")
    second = _event(domain_events.WAITLISTED, "keynote", "alan", "r2")
    other = _event(domain_events.REGISTERED, "pycon", "ada", "r3")
    third = _event(domain_events.UNREGISTERED, "keynote", "grace", "r4")
    # One batch: keynote's three in order, pycon's one between them.
    for n, detail in enumerate((first, second, other, third)):
        send(sqs, events, json.dumps(detail), detail["eventId"], f"record-{n}")
    records: list[dict[str, Any]] = []
    while batch := received(sqs, events):
        records += batch
    by_id = {json.loads(r["body"])["id"]: r["messageId"] for r in records}
    assert len(by_id) == 4, "moto handed out the batch in parts"
    # Lambda's batch for a FIFO source keeps each group's order; the fan-out sees them so.
    ordered = sorted(
        records,
        key=lambda r: [first["id"], second["id"], other["id"], third["id"]].index(
            json.loads(r["body"])["id"]
        ),
    )

    client = _FailingOnce(sqs, second["id"])
    answer = webhook_fanout.fan_out(ordered, store.all_webhooks, client, deliveries)
    assert answer == {
        "batchItemFailures": [{"itemIdentifier": by_id[second["id"]]}, {"itemIdentifier": by_id[third["id"]]}]
    }
    assert client.sent == [first["id"], other["id"]]


def test_an_event_no_subscription_wants_sends_nothing(world: Any) -> None:
    store, sqs, events, deliveries = world
    store.create_webhook(NewWebhook(url="https://a.example/hook", eventId="other"), "org")
    records = _piped(sqs, events, _event(domain_events.REGISTERED, "keynote", "grace", "r1"))
    assert webhook_fanout.fan_out(records, store.all_webhooks, sqs, deliveries) == {"batchItemFailures": []}
    assert _deliveries(sqs, deliveries) == []
