"""Webhook deliveries as the local stack makes them, on AWS's path: the webhooks' pipe, the
events FIFO queue, the fan-out function, the deliveries FIFO queue and the delivery
function, each call under its role. A receiver that verifies every message with the
`standardwebhooks` library gets each domain event of its subscription, in commit order
per event, however often it failed first, across a restart of the queues and their
consumers, and nothing more once the subscription is removed; a message that keeps
failing is a dead letter until redriven."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook as Verifier

from infrastructure import names
from infrastructure.local.engine import LocalEngine
from infrastructure.local.webhook_delivery import QueueRuntime, queue_runtime
from registration.data import RegistrationStore, get_store
from registration.models import CreatedWebhook, NewEvent, NewUser, NewWebhook
from tests.fixtures.engines import SUITE_TIME_SCALE, pipes_over, synthesized_template_path
from tests.fixtures.template_variants import without_grant
from tests.fixtures.workflows import Workflows, fresh_id

pytestmark = pytest.mark.xdist_group("webhooks")

# The retry schedule here: two waits of a second (a visibility timeout is whole seconds).
RETRIES = (1, 1)


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalEngine]:
    with LocalEngine(
        synthesized_template_path(), time_scale=SUITE_TIME_SCALE, webhook_retry_schedule=RETRIES
    ) as running:
        yield running


class Receiver:
    """A webhook endpoint on 127.0.0.1: answers 500 to the first `failures` requests."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with receiver.lock:
                    receiver.requests.append(
                        {"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                    )
                    failing = receiver.failures > 0
                    receiver.failures -= int(failing)
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Every message as `standardwebhooks` verifies it (raises on a bad signature)."""
        with self.lock:
            requests = list(self.requests)
        verifier = Verifier(secret)
        return [
            {**verifier.verify(r["body"], r["headers"]), "id": r["headers"]["webhook-id"]} for r in requests
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def _until(drain: Callable[[], Any], done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the deliveries did not arrive"
        drain()
        time.sleep(0.05)


def _drain(engine: LocalEngine) -> Callable[[], None]:
    """One round of the engine's pipes and event sources, in this thread."""
    assert engine.pipes is not None and engine.event_sources is not None
    pipes, sources = engine.pipes, engine.event_sources

    def run() -> None:
        pipes.drain()
        sources.drain()

    return run


class Restartable:
    """The engine's webhook path (pipes, queues, event sources) over files in a
    directory, as the local server keeps them: closed and built again from the same
    files, as after the server was killed and started again."""

    def __init__(self, engine: LocalEngine, directory: Path) -> None:
        assert engine.seam is not None
        self.runtime: QueueRuntime | None = queue_runtime(
            engine.template,
            directory=directory / "queues",
            schedule=engine.webhook_retry_schedule,
            lambdas=engine.seam.client,
            region=engine.region,
        )
        assert self.runtime is not None
        self.pipes = pipes_over(engine, directory, self.runtime.queues)
        self.pipes.drain()  # a first start reads the stream from now on

    def drain(self) -> None:
        assert self.runtime is not None and self.runtime.event_sources is not None
        self.pipes.drain()
        self.runtime.event_sources.drain()

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None


def _story(store: RegistrationStore, workflows: Workflows, capacity: int = 1) -> tuple[str, list[str]]:
    users = [fresh_id("u") for _ in range(3)]
    for user in users:
        store.create_user(NewUser(userId=user, name="Hooked"))
    event_id = fresh_id("e")
    store.create_event(NewEvent(eventId=event_id, title="Hooked", capacity=capacity, hasWaitlist=True))
    return event_id, users


def _subscribe(store: RegistrationStore, url: str, event_id: str | None = None) -> CreatedWebhook:
    return store.create_webhook(NewWebhook(url=url, eventId=event_id), "test-admin")


def test_a_receiver_that_fails_first_gets_every_message_once_verified_in_order(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows, receiver: Receiver
) -> None:
    assert engine.webhooks is not None
    receiver.failures = len(RETRIES)  # the first message fails but for its last attempt
    event_id, (a, b, c) = _story(store, workflows)
    hook = _subscribe(store, receiver.url, event_id)
    for user in (a, b, c):
        assert workflows.register(event_id, user).ok
    assert workflows.unregister(event_id, a).ok
    # registered a, waitlisted b and c, then a's seat handed to b: five events.
    _until(_drain(engine), lambda: len({m["id"] for m in receiver.verified(hook.secret)}) == 5)
    messages = receiver.verified(hook.secret)
    first_seen = list(dict.fromkeys(m["id"] for m in messages))
    by_id = {m["id"]: m for m in messages}
    types = [by_id[i]["type"] for i in first_seen]
    assert types[:3] == ["registration.registered", "registration.waitlisted", "registration.waitlisted"]
    assert sorted(types[3:]) == ["registration.promoted", "registration.unregistered"]
    for message in messages:
        assert message["data"]["eventId"] == event_id
        assert message["data"]["id"] == message["id"]  # the webhook-id is the event's, on every try
        assert message["timestamp"] == message["data"]["occurredAt"]
    # The first message failed, was sent again under the same id until it went through,
    # and nothing overtook it.
    assert [m["id"] for m in messages[:3]] == [first_seen[0]] * 3
    assert [m["id"] for m in messages[3:]] == first_seen[1:]
    assert engine.webhooks.failed() == []


def test_a_restarted_path_resumes_without_loss_or_reordering(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows, receiver: Receiver, tmp_path: Path
) -> None:
    first = Restartable(engine, tmp_path)
    try:
        event_id, users = _story(store, workflows, capacity=3)
        hook = _subscribe(store, receiver.url, event_id)
        assert workflows.register(event_id, users[0]).ok
        _until(first.drain, lambda: len(receiver.requests) == 1)
        # The second message fails once and waits for its retry; the third is queued
        # behind it, not yet fanned out, when the path is killed.
        receiver.failures = 1
        assert workflows.register(event_id, users[1]).ok
        _until(first.drain, lambda: len(receiver.requests) == 2)
        assert workflows.register(event_id, users[2]).ok
        first.pipes.drain()
    finally:
        first.close()
    second = Restartable(engine, tmp_path)
    try:
        _until(second.drain, lambda: len(receiver.requests) == 4)
        delivered = [m["data"]["userId"] for m in receiver.verified(hook.secret)]
        assert delivered == [users[0], users[1], users[1], users[2]]
        for _ in range(3):
            second.drain()
        assert len(receiver.requests) == 4  # nothing sent twice after the restart
    finally:
        second.close()


def test_a_removed_subscription_gets_nothing_more(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows, receiver: Receiver
) -> None:
    event_id, (a, b, _) = _story(store, workflows, capacity=3)
    hook = _subscribe(store, receiver.url, event_id)
    assert workflows.register(event_id, a).ok
    _until(_drain(engine), lambda: len(receiver.requests) == 1)
    receiver.failures = 100  # b's event will be failing and waiting for a retry
    assert workflows.register(event_id, b).ok
    _until(_drain(engine), lambda: len(receiver.requests) == 2)
    store.delete_webhook(hook.webhookId)
    receiver.failures = 0
    assert workflows.unregister(event_id, a).ok
    deliveries = engine.queues.named(names.webhook_queue_name(names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX))  # type: ignore[union-attr]
    # b's retry finds the subscription gone and is done; nothing else was fanned out.
    _until(_drain(engine), lambda: not [m for m in deliveries.peek() if hook.webhookId in m.body])
    assert len(receiver.requests) == 2


def test_a_message_that_keeps_failing_is_a_dead_letter_until_redriven(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows, receiver: Receiver
) -> None:
    assert engine.webhooks is not None
    attempts = len(engine.webhook_retry_schedule) + 1
    receiver.failures = attempts  # every attempt of the first message
    event_id, (a, b, _) = _story(store, workflows, capacity=3)
    hook = _subscribe(store, receiver.url, event_id)
    assert workflows.register(event_id, a).ok
    assert workflows.register(event_id, b).ok
    # a's message dies after its last attempt; b's, behind it in its group, then goes out.
    wait = sum(engine.webhook_retry_schedule) + engine.webhook_retry_schedule[-1] + 15

    def dead_letters() -> list[dict[str, Any]]:
        assert engine.webhooks is not None
        return [m for m in engine.webhooks.failed() if m["webhookId"] == hook.webhookId]

    _until(
        _drain(engine),
        lambda: len(dead_letters()) == 1 and len(receiver.requests) == attempts + 1,
        timeout=wait,
    )
    (dead,) = dead_letters()
    assert (dead["webhookId"], dead["eventId"], dead["type"], dead["attempts"]) == (
        hook.webhookId,
        event_id,
        "registration.registered",
        attempts,
    )
    assert dead["deadLetteredAt"] is not None
    assert engine.webhooks.redrive(hook.webhookId) == 1
    _until(_drain(engine), lambda: len(receiver.requests) == attempts + 2)
    assert dead_letters() == []
    assert [m["data"]["userId"] for m in receiver.verified(hook.secret)][-2:] == [b, a]


def test_a_subscription_gets_only_the_types_and_event_it_names(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows, receiver: Receiver
) -> None:
    event_id, (a, b, _) = _story(store, workflows)
    other, _ = _story(store, workflows)
    hook = store.create_webhook(
        NewWebhook(url=receiver.url, types=["registration.waitlisted"], eventId=event_id), "test-admin"
    )
    for user in (a, b):
        assert workflows.register(event_id, user).ok
        assert workflows.register(other, user).ok
    _until(_drain(engine), lambda: len(receiver.requests) == 1)
    for _ in range(5):
        _drain(engine)()
    (only,) = receiver.verified(hook.secret)
    assert (only["type"], only["data"]["eventId"], only["data"]["userId"]) == (
        "registration.waitlisted",
        event_id,
        b,
    )
    assert json.loads(receiver.requests[0]["body"])["data"]["position"] == 1


def test_a_fan_out_whose_role_cannot_send_delivers_nothing(tmp_path: Path, receiver: Receiver) -> None:
    template = json.loads(synthesized_template_path().read_text())
    role = next(
        lid
        for lid, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and lid.startswith("WebhooksWebhookFanOut")
    )
    path = tmp_path / "template.json"
    path.write_text(json.dumps(without_grant(template, role, "sqs:SendMessage")))
    with LocalEngine(path, region="sa-east-1", time_scale=SUITE_TIME_SCALE) as denied:
        assert denied.authorizer is not None and denied.event_sources is not None
        store = get_store()
        store.create_event(NewEvent(eventId="denied", title="Denied", capacity=1))
        store.create_webhook(NewWebhook(url=receiver.url, eventId="denied"), "test-admin")
        store.create_user(NewUser(userId="dana", name="Dana"))
        Workflows(denied).register("denied", "dana")
        events = denied.queues.named(names.webhook_queue_name(names.WEBHOOK_EVENTS_QUEUE_SUFFIX))  # type: ignore[union-attr]
        _until(_drain(denied), lambda: any("sqs:SendMessage" in d for d, *_ in _denials(denied)))
        assert receiver.requests == []
        assert len(events) == 1  # the fan-out failed on it: it stays, to be retried
        assert denied.authorizer.allowed[(_role_arn(denied, role), "dynamodb:Query")] >= 1


def _denials(engine: LocalEngine) -> list[tuple[str, str, str]]:
    assert engine.authorizer is not None
    return [(action, role, resource) for (role, action, resource) in engine.authorizer.denied]


def _role_arn(engine: LocalEngine, logical_id: str) -> str:
    return engine.template.roles[logical_id].arn
