"""The twin's SQS queues keep SQS's rules: FIFO groups in order and held while one of
theirs is in flight, deduplication for five minutes (deleted or not), visibility, the
redrive policy, and a state that survives a restart; the handlers reach them through
boto3, under their roles."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from infrastructure.local import queues as local_queues
from infrastructure.local.queues import LocalQueue, LocalQueues, QueueError
from infrastructure.local.template_specs import QueueSpec

URL = "https://sqs.eu-west-3.amazonaws.com/123456789012/"
ARN = "arn:aws:sqs:eu-west-3:123456789012:"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _spec(name: str, **kwargs: object) -> QueueSpec:
    return QueueSpec(logical_id=name, name=name, arn=ARN + name, url=URL + name, **kwargs)  # type: ignore[arg-type]


def _pair(clock: Clock, directory: Path | None = None, max_receive_count: int = 2) -> LocalQueues:
    return LocalQueues(
        {
            "q": _spec(
                "q.fifo",
                fifo=True,
                visibility_timeout_s=30,
                dead_letter_arn=ARN + "dlq.fifo",
                max_receive_count=max_receive_count,
            ),
            "dlq": _spec("dlq.fifo", fifo=True),
        },
        directory=directory,
        clock=clock,
    )


def test_a_group_is_handed_out_in_order_and_held_while_one_of_it_is_in_flight() -> None:
    clock = Clock()
    queue = _pair(clock).named("q.fifo")
    for n, group in enumerate(["a", "a", "b", "a"]):
        queue.send(f"{group}{n}", group, f"d{n}")
    first = queue.receive(1)
    assert [m.body for m in first] == ["a0"]
    # a is held behind a0; b goes on.
    assert [m.body for m in queue.receive(10)] == ["b2"]
    assert queue.receive(10) == []
    queue.delete(str(first[0].receipt))
    # One receive may hand out several of a group, in order.
    assert [m.body for m in queue.receive(10)] == ["a1", "a3"]


def test_a_duplicate_within_five_minutes_is_dropped_even_after_the_first_was_deleted() -> None:
    clock = Clock()
    queue = _pair(clock).named("q.fifo")
    sent = queue.send("one", "g", "same")
    (received,) = queue.receive(1)
    queue.delete(str(received.receipt))
    clock.now += 299
    assert queue.send("one again", "g", "same").messageId == sent.messageId
    assert len(queue) == 0
    clock.now += 1
    queue.send("one, later", "g", "same")
    assert [m.body for m in queue.peek()] == ["one, later"]


def test_a_message_comes_back_after_its_visibility_and_is_dead_lettered_after_max_receives() -> None:
    clock = Clock()
    pair = _pair(clock)
    queue, dead = pair.named("q.fifo"), pair.named("dlq.fifo")
    queue.send("m", "g", "d")
    (first,) = queue.receive(1)
    queue.change_visibility(str(first.receipt), 5)
    clock.now += 4
    assert queue.receive(1) == []
    clock.now += 1
    (second,) = queue.receive(1)
    assert second.receiveCount == 2 and second.receipt != first.receipt
    with pytest.raises(QueueError) as stale:
        queue.delete(str(first.receipt))
    assert stale.value.code == "ReceiptHandleIsInvalid"
    clock.now += 30
    # Received twice (maxReceiveCount 2): at the next receive it moves to the dead letters.
    assert queue.receive(1) == []
    (moved,) = dead.peek()
    assert (moved.body, moved.receiveCount, moved.deadLetterSourceArn) == ("m", 2, ARN + "q.fifo")
    with pytest.raises(QueueError) as too_long:
        queue.change_visibility("any", 43201)
    assert too_long.value.code == "InvalidParameterValue"


def test_the_queues_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    queue = _pair(clock, tmp_path).named("q.fifo")
    queue.send("kept", "g", "d1")
    queue.send("behind", "g", "d2")
    (in_flight,) = queue.receive(1)
    again = _pair(clock, tmp_path).named("q.fifo")
    assert [m.body for m in again.peek()] == ["kept", "behind"]
    assert again.receive(10) == []  # still in flight: its group waits
    again.send("kept", "g", "d1")  # still a duplicate
    clock.now += 30
    assert [m.body for m in again.receive(10)] == ["kept", "behind"]
    assert again.peek()[0].receiveCount == 2 and in_flight.receiveCount == 1


def test_a_fifo_send_needs_a_group_and_a_deduplication_id() -> None:
    queue = LocalQueue(_spec("plain.fifo", fifo=True))
    with pytest.raises(QueueError, match="MessageGroupId"):
        queue.send("x")
    with pytest.raises(QueueError, match="ContentBasedDeduplication"):
        queue.send("x", "g")


def test_boto3_calls_reach_the_installed_queues() -> None:
    clock = Clock()
    pair = _pair(clock)
    sqs = boto3.session.Session().client(
        "sqs", region_name="eu-west-3", aws_access_key_id="local", aws_secret_access_key="local"
    )
    with local_queues.serving(pair):
        answer = sqs.send_message(
            QueueUrl=URL + "q.fifo", MessageBody="hi", MessageGroupId="g", MessageDeduplicationId="1"
        )
        (message,) = pair.named("q.fifo").receive(1)
        assert answer["MessageId"] == message.messageId
        sqs.change_message_visibility(
            QueueUrl=URL + "q.fifo", ReceiptHandle=message.receipt, VisibilityTimeout=0
        )
        with pytest.raises(ClientError) as refused:
            sqs.send_message(QueueUrl=URL + "q.fifo", MessageBody="no group")
        assert refused.value.response["Error"]["Code"] == "MissingParameter"
        (again,) = pair.named("q.fifo").receive(1)
        sqs.delete_message(QueueUrl=URL + "q.fifo", ReceiptHandle=again.receipt)
        assert len(pair.named("q.fifo")) == 0


def test_the_journal_is_compacted_and_a_line_cut_short_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_queues, "COMPACT_AFTER_LINES", 10)
    journal = tmp_path / "plain.json"
    queue = LocalQueue(_spec("plain"), path=journal)
    for n in range(30):
        queue.send(f"m{n}")
        (received,) = queue.receive(1)
        if n < 29:
            queue.delete(str(received.receipt))
    # 90 changes, compacted along the way to what is left (one message).
    assert len(journal.read_text().splitlines()) <= 10
    with journal.open("a") as handle:
        handle.write('{"gone": "m1')  # a crash in the middle of a line
    (left,) = LocalQueue(_spec("plain"), path=journal).peek()
    assert (left.body, left.receiveCount) == ("m29", 1)
