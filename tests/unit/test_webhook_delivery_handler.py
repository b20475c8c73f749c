"""The webhook delivery function's logic on moto (a real deliveries FIFO queue, a table of
the project's shape) against a local HTTP receiver: a delivery signed as Standard
Webhooks verifies it; a failure sets the message's visibility to its attempt's backoff
and is reported; a removed subscription's message is done without a request."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from registration import domain_events, webhook_delivery, webhook_fanout
from registration.data import RegistrationStore
from registration.models import NewWebhook, StoredWebhook
from registration.webhook_fanout import DeliveryMessage
from tests.fixtures.sqs_records import fifo_queue, received, send
from tests.fixtures.tables import moto_store


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers `status`."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 204
        self.delay = 0.0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def world() -> Iterator[tuple[RegistrationStore, Any, str]]:
    with moto_store() as store:
        sqs, deliveries = fifo_queue("unit-webhook-deliveries")
        yield store, sqs, deliveries


class Recording:
    """The SQS client, with its ChangeMessageVisibility calls recorded."""

    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs
        self.visibility: list[int] = []

    def change_message_visibility(self, **kwargs: Any) -> Any:
        self.visibility.append(kwargs["VisibilityTimeout"])
        return self.sqs.change_message_visibility(**kwargs)


DETAIL: dict[str, Any] = json.loads(
    domain_events.domain_event(
        # Committed after every subscription the tests make (the fan-out keeps only those).
        domain_events.REGISTERED,
        "keynote",
        "req-1",
        "2099-01-01T00:00:00.000Z",
        user_id="grace",
    ).text()
)


def _enqueue(sqs: Any, url: str, webhook: StoredWebhook, detail: dict[str, Any] = DETAIL) -> None:
    message = DeliveryMessage(webhookId=webhook.webhookId, event=detail)
    send(
        sqs,
        url,
        message.model_dump_json(),
        webhook_fanout.group_id(webhook.webhookId, detail["eventId"]),
        webhook_fanout.deduplication_id(webhook.webhookId, detail["id"]),
    )


def _visible(sqs: Any, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def _subscribe(store: RegistrationStore, url: str) -> StoredWebhook:
    created = store.create_webhook(NewWebhook(url=url), "admin")
    found = store.find_webhook(created.webhookId)
    assert found is not None
    return found


def test_a_delivery_is_posted_signed_and_done(world: Any, receiver: Receiver) -> None:
    store, sqs, url = world
    webhook = _subscribe(store, receiver.url)
    _enqueue(sqs, url, webhook)
    records = received(sqs, url)
    answer = webhook_delivery.handle(records, store.find_webhook, Recording(sqs), url)
    assert answer == {"batchItemFailures": []}

    ((headers, body),) = receiver.requests
    assert headers["webhook-id"] == DETAIL["id"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["content-type"] == "application/json"
    verified = StandardWebhook(webhook.secret).verify(body, headers)
    assert verified == {"type": DETAIL["type"], "timestamp": DETAIL["occurredAt"], "data": DETAIL}


@pytest.mark.parametrize("status", [500, 404, 301])
def test_a_refused_delivery_backs_off_by_its_attempt_and_is_reported(
    world: Any, receiver: Receiver, status: int
) -> None:
    store, sqs, url = world
    receiver.status = status
    webhook = _subscribe(store, receiver.url)
    _enqueue(sqs, url, webhook)
    client = Recording(sqs)
    for attempt in (1, 2, 3):
        (record,) = received(sqs, url)
        assert record["attributes"]["ApproximateReceiveCount"] == str(attempt)
        answer = webhook_delivery.handle([record], store.find_webhook, client, url)
        assert answer == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
        # Out of sight for the backoff (the same group's later messages wait behind it).
        assert _visible(sqs, url) == (0, 1)
        assert received(sqs, url) == []
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
        )
    assert client.visibility == [30, 60, 120]
    assert len(receiver.requests) == 3
    # Every attempt has the same webhook-id, each its own timestamp and signature.
    assert {h["webhook-id"] for h, _ in receiver.requests} == {DETAIL["id"]}


def test_no_answer_in_time_and_no_listener_are_failures(world: Any, receiver: Receiver) -> None:
    store, sqs, url = world
    receiver.delay = 0.5
    slow = _subscribe(store, receiver.url)

    def impatient(target: str, body: str, headers: Any, timeout: float) -> int:
        assert timeout == webhook_delivery.webhooks.DELIVERY_TIMEOUT_S
        return webhook_delivery.post(target, body, headers, 0.1)

    _enqueue(sqs, url, slow)
    (record,) = received(sqs, url)
    client = Recording(sqs)
    answer = webhook_delivery.handle([record], store.find_webhook, client, url, send=impatient)
    assert answer == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert client.visibility == [30]

    closed = Receiver()
    closed.close()  # nothing listens on its port any more
    gone = _subscribe(store, closed.url)
    _enqueue(sqs, url, gone)
    (record,) = received(sqs, url)
    answer = webhook_delivery.handle([record], store.find_webhook, client, url)
    assert answer == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert client.visibility == [30, 30]


def test_a_removed_subscription_is_done_without_sending(world: Any, receiver: Receiver) -> None:
    store, sqs, url = world
    webhook = _subscribe(store, receiver.url)
    _enqueue(sqs, url, webhook)
    store.delete_webhook(webhook.webhookId)
    records = received(sqs, url)
    client = Recording(sqs)
    assert webhook_delivery.handle(records, store.find_webhook, client, url) == {"batchItemFailures": []}
    assert receiver.requests == []
    assert client.visibility == []


def test_the_backoff_doubles_from_30_s_to_an_hour() -> None:
    waits = [webhook_delivery.backoff_seconds(n) for n in range(1, 12)]
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600]
    assert webhook_delivery.backoff_seconds(10_000) == 3600


class _Context:
    function_name = "WebhookDelivery"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:WebhookDelivery"
    aws_request_id = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def test_the_handlers_fan_out_and_deliver_from_their_environment(
    world: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thin handlers, as the functions run them: the table and the deliveries queue
    from the environment the stack sets."""
    from handlers import webhook_delivery as delivery_handler
    from handlers import webhook_fan_out as fan_out_handler
    from registration import settings

    store, sqs, url = world
    monkeypatch.setenv(settings.TABLE_NAME, store.table_name)
    monkeypatch.setenv(settings.WEBHOOK_DELIVERY_QUEUE_URL, url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    webhook_fanout.sqs_client.cache_clear()
    monkeypatch.setattr(webhook_fanout, "sqs_client", lambda: sqs)
    webhook = _subscribe(store, receiver.url)

    piped = {
        "messageId": "m1",
        "receiptHandle": "r1",
        "body": json.dumps(DETAIL),
        "attributes": {"MessageGroupId": "keynote"},
    }
    assert fan_out_handler.handler({"Records": [piped]}, _Context()) == {"batchItemFailures": []}  # type: ignore[arg-type]
    records = received(sqs, url)
    assert [DeliveryMessage.model_validate_json(r["body"]).webhookId for r in records] == [webhook.webhookId]
    assert delivery_handler.handler({"Records": records}, _Context()) == {"batchItemFailures": []}  # type: ignore[arg-type]
    ((headers, body),) = receiver.requests
    StandardWebhook(webhook.secret).verify(body, headers)
