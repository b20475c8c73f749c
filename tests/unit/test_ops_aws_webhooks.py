"""`regctl webhooks failed --aws` and `redrive --aws` against SQS (moto's): the deliveries'
dead letters are listed without being consumed, and sent back to the deliveries queue
(one subscription's, or all) in their order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infrastructure import names
from infrastructure.ops.aws_backend import AwsBackend
from infrastructure.ops.backend import OpsError

REGION = "eu-north-1"
MAX_RECEIVES = 2


class _Stack:
    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        return {
            "Stacks": [{"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]}]
        }


class _Session:
    region_name = REGION

    def __init__(self, outputs: dict[str, str]) -> None:
        self._clients = {"cloudformation": _Stack(outputs), "sqs": boto3.client("sqs", region_name=REGION)}

    def client(self, service: str) -> Any:
        return self._clients[service]


@pytest.fixture
def queues() -> Iterator[tuple[Any, str, str]]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        fifo = {"FifoQueue": "true"}
        dead = sqs.create_queue(QueueName="EventRegistration-webhook-deliveries-dlq.fifo", Attributes=fifo)[
            "QueueUrl"
        ]
        dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        policy = json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": MAX_RECEIVES})
        source = sqs.create_queue(
            QueueName="EventRegistration-webhook-deliveries.fifo",
            Attributes={**fifo, "RedrivePolicy": policy},
        )["QueueUrl"]
        yield sqs, source, dead


def _dead_letter(sqs: Any, source: str, webhook: str, event_id: str, n: int) -> None:
    """A delivery message that failed MAX_RECEIVES times: the next receive moves it."""
    body = {
        "webhookId": webhook,
        "event": {"id": f"ev{n}", "type": "registration.registered", "eventId": event_id},
    }
    sqs.send_message(
        QueueUrl=source,
        MessageBody=json.dumps(body),
        MessageGroupId=f"{webhook}#{event_id}",
        MessageDeduplicationId=f"{webhook}#ev{n}",
    )
    for _ in range(MAX_RECEIVES):
        assert len(sqs.receive_message(QueueUrl=source, VisibilityTimeout=0)["Messages"]) == 1
    assert sqs.receive_message(QueueUrl=source, VisibilityTimeout=0).get("Messages", []) == []


def test_the_dead_letters_are_listed_and_left_in_place(queues: tuple[Any, str, str]) -> None:
    sqs, source, dead = queues
    _dead_letter(sqs, source, "w1", "conf", 1)
    _dead_letter(sqs, source, "w2", "gala", 2)
    backend = AwsBackend(_Session({names.WEBHOOK_DELIVERIES_DLQ_OUTPUT: dead}))
    listed = backend.failed_webhooks()
    assert sorted(
        (m["webhookId"], m["eventId"], m["messageId"], m["type"], m["attempts"]) for m in listed
    ) == [
        ("w1", "conf", "ev1", "registration.registered", MAX_RECEIVES),
        ("w2", "gala", "ev2", "registration.registered", MAX_RECEIVES),
    ]
    assert backend.failed_webhooks() == listed  # nothing was consumed, nothing hidden


def test_a_redrive_sends_one_subscriptions_dead_letters_back_in_order(queues: tuple[Any, str, str]) -> None:
    sqs, source, dead = queues
    for n in (1, 2):
        _dead_letter(sqs, source, "w1", "conf", n)
    _dead_letter(sqs, source, "w2", "gala", 3)
    backend = AwsBackend(_Session({names.WEBHOOK_DELIVERIES_DLQ_OUTPUT: dead}))
    assert backend.redrive_webhooks("w1") == 2
    back = sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"])
    assert [json.loads(m["Body"])["event"]["id"] for m in back["Messages"]] == ["ev1", "ev2"]
    assert {m["Attributes"]["MessageGroupId"] for m in back["Messages"]} == {"w1#conf"}
    assert [m["webhookId"] for m in backend.failed_webhooks()] == ["w2"]
    assert backend.redrive_webhooks(None) == 1
    assert backend.failed_webhooks() == []


def test_a_stack_without_the_queue_is_a_clear_error() -> None:
    with pytest.raises(OpsError, match="dead-letter queue"):
        AwsBackend(_Session({})).failed_webhooks()
