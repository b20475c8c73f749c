"""Webhook deliveries as the local stack makes them: a receiver that verifies every message
with the `standardwebhooks` library gets each domain event of its subscription, in commit
order per event, however often it failed first, across a killed worker, and nothing more
once the subscription is removed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook as Verifier

from infrastructure.local.engine import LocalEngine
from infrastructure.local.webhook_delivery import WebhookDelivery
from registration.data import RegistrationStore
from registration.models import CreatedWebhook, NewEvent, NewUser, NewWebhook
from tests.fixtures.workflows import Workflows, fresh_id

pytestmark = pytest.mark.xdist_group("webhooks")

FAST = (0.05, 0.1, 0.2)  # the retry schedule here: the default's shape, in tenths of seconds


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


def _deliveries(engine: LocalEngine, store: RegistrationStore, path: Path | None = None) -> WebhookDelivery:
    assert engine.pipes is not None
    return WebhookDelivery(engine.pipes.bus, store.all_webhooks, store.find_webhook, path=path, schedule=FAST)


def _until(delivery: WebhookDelivery, engine: LocalEngine, done: Any, timeout: float = 20.0) -> None:
    assert engine.pipes is not None
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the deliveries did not arrive"
        engine.pipes.drain()
        delivery.step()
        time.sleep(0.02)


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
    delivery = _deliveries(engine, store)
    receiver.failures = len(FAST)  # every retry but the last fails
    event_id, (a, b, c) = _story(store, workflows)
    hook = _subscribe(store, receiver.url, event_id)
    for user in (a, b, c):
        assert workflows.register(event_id, user).ok
    assert workflows.unregister(event_id, a).ok
    # registered a, waitlisted b and c, then a's seat handed to b: five events.
    _until(delivery, engine, lambda: len({m["id"] for m in receiver.verified(hook.secret)}) == 5)
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
    attempts = len(FAST) + 1
    assert [m["id"] for m in messages[:attempts]] == [first_seen[0]] * attempts
    assert [m["id"] for m in messages[attempts:]] == first_seen[1:]
    assert delivery.failed() == []


def test_a_killed_worker_resumes_without_loss_or_reordering(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows, receiver: Receiver, tmp_path: Path
) -> None:
    state = tmp_path / "webhooks.json"
    first = _deliveries(engine, store, state)
    event_id, users = _story(store, workflows, capacity=3)
    hook = _subscribe(store, receiver.url, event_id)
    assert workflows.register(event_id, users[0]).ok
    _until(first, engine, lambda: len(receiver.requests) == 1)
    # Queued, not yet sent, when the worker dies.
    assert workflows.register(event_id, users[1]).ok
    assert workflows.register(event_id, users[2]).ok
    assert engine.pipes is not None
    engine.pipes.drain()
    first.fan_out()
    del first
    second = _deliveries(engine, store, state)
    _until(second, engine, lambda: len(receiver.requests) == 3)
    delivered = [m["data"]["userId"] for m in receiver.verified(hook.secret)]
    assert delivered == users


def test_a_removed_subscription_gets_nothing_more(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows, receiver: Receiver
) -> None:
    delivery = _deliveries(engine, store)
    event_id, (a, b, _) = _story(store, workflows, capacity=3)
    hook = _subscribe(store, receiver.url, event_id)
    assert workflows.register(event_id, a).ok
    _until(delivery, engine, lambda: len(receiver.requests) == 1)
    receiver.failures = 100  # b's event will be failing and waiting for a retry
    assert workflows.register(event_id, b).ok
    _until(delivery, engine, lambda: len(receiver.requests) == 2)
    store.delete_webhook(hook.webhookId)
    receiver.failures = 0
    assert workflows.unregister(event_id, a).ok
    engine.pipes.drain()  # type: ignore[union-attr]
    for _ in range(20):
        delivery.step()
        time.sleep(0.03)
    assert len(receiver.requests) == 2
    assert delivery.state.lanes == {}


def test_a_message_that_keeps_failing_is_a_dead_letter_until_redriven(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows, receiver: Receiver
) -> None:
    delivery = _deliveries(engine, store)
    receiver.failures = len(FAST) + 1  # every attempt of the first message
    event_id, (a, b, _) = _story(store, workflows, capacity=3)
    hook = _subscribe(store, receiver.url, event_id)
    assert workflows.register(event_id, a).ok
    assert workflows.register(event_id, b).ok
    # a's message dies after its last retry; b's, behind it in the lane, then goes out.
    _until(delivery, engine, lambda: len(delivery.failed()) == 1 and len(receiver.requests) == len(FAST) + 2)
    (dead,) = delivery.failed()
    assert (dead["webhookId"], dead["eventId"], dead["type"]) == (
        hook.webhookId,
        event_id,
        "registration.registered",
    )
    assert dead["attempts"] == len(FAST) + 1 and dead["lastError"] == "HTTP 500"
    assert delivery.redrive() == 1
    _until(delivery, engine, lambda: len(receiver.requests) == len(FAST) + 3)
    assert delivery.failed() == []
    assert [m["data"]["userId"] for m in receiver.verified(hook.secret)][-2:] == [b, a]


def test_a_subscription_gets_only_the_types_and_event_it_names(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows, receiver: Receiver
) -> None:
    delivery = _deliveries(engine, store)
    event_id, (a, b, _) = _story(store, workflows)
    other, _ = _story(store, workflows)
    hook = store.create_webhook(
        NewWebhook(url=receiver.url, types=["registration.waitlisted"], eventId=event_id), "test-admin"
    )
    for user in (a, b):
        assert workflows.register(event_id, user).ok
        assert workflows.register(other, user).ok
    _until(delivery, engine, lambda: len(receiver.requests) == 1)
    for _ in range(10):
        delivery.step()
    (only,) = receiver.verified(hook.secret)
    assert (only["type"], only["data"]["eventId"], only["data"]["userId"]) == (
        "registration.waitlisted",
        event_id,
        b,
    )
    assert json.loads(receiver.requests[0]["body"])["data"]["position"] == 1
