"""Lambda's SQS event sources in the twin: the template's event source mappings, run.

As Lambda's poller does for a queue mapped to a function: it receives up to the mapping's
batch size of messages (they are in flight for the queue's visibility timeout), invokes
the function with them as an SQS event, and deletes the ones it handled. A function that
fails (an error, a timeout) handles none: the batch comes back once it is visible again.
With ``ReportBatchItemFailures`` the function's answer names the messages that failed
(``batchItemFailures``), which stay; an answer naming a message not in the batch fails
the whole batch, as on AWS. Several batches are in flight at once (Lambda scales a FIFO
queue's consumers with its message groups), and the queue hands out no message of a
group with one in flight, so a group's messages are still handled one after another.

The poller uses the function's execution role, as Lambda does: receiving and deleting
are authorised against that role first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from infrastructure.local import iam
from infrastructure.local.queues import LocalQueue, LocalQueues, QueuedMessage, QueueError
from infrastructure.local.template_specs import EventSourceMappingSpec

LOGGER = logging.getLogger(__name__)

# How often a poller looks again when nothing woke it (a message whose visibility timeout
# ended; a new message wakes it at once, as Lambda's long polls return at once).
POLL_INTERVAL_S = 0.2
# Batches of one mapping in flight at once.
MAX_CONCURRENT_BATCHES = 8

Invoke = Callable[..., Mapping[str, Any]]


def sqs_event_record(message: QueuedMessage, queue: LocalQueue, region: str) -> dict[str, Any]:
    """One message as Lambda hands it to a function (an SQS event's record)."""
    attributes = {
        "ApproximateReceiveCount": str(message.receiveCount),
        "SentTimestamp": str(int(message.sentAt * 1000)),
        "SenderId": "local",
        "ApproximateFirstReceiveTimestamp": str(int((message.firstReceivedAt or message.sentAt) * 1000)),
    }
    if queue.spec.fifo:
        attributes.update(
            SequenceNumber=message.sequenceNumber,
            MessageGroupId=str(message.groupId),
            MessageDeduplicationId=str(message.deduplicationId),
        )
    return {
        "messageId": message.messageId,
        "receiptHandle": message.receipt,
        "body": message.body,
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(message.body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue.spec.arn,
        "awsRegion": region,
    }


def failed_ids(response: Mapping[str, Any], batch: list[QueuedMessage], report_failures: bool) -> set[str]:
    """The messages of ``batch`` an invocation did not handle (they stay in the queue)."""
    everything = {m.messageId for m in batch}
    if response.get("FunctionError"):
        return everything
    if not report_failures:
        return set()
    payload = response["Payload"].read()
    try:
        answer = json.loads(payload) if payload else None
    except ValueError:
        return everything
    if not isinstance(answer, dict) or not answer.get("batchItemFailures"):
        return set()  # no failures reported (None, {} and an empty list alike)
    failures = answer["batchItemFailures"]
    if not isinstance(failures, list):
        return everything
    named = {str(f.get("itemIdentifier") or "") if isinstance(f, dict) else "" for f in failures}
    if not named <= everything:
        return everything  # an identifier that is empty or not in the batch fails it all
    return named


class QueuePoller:
    """One event source mapping: its queue's batches, to its function."""

    def __init__(
        self,
        spec: EventSourceMappingSpec,
        queue: LocalQueue,
        invoke: Invoke,
        *,
        principal: iam.Principal | None,
        region: str,
        max_concurrent_batches: int = MAX_CONCURRENT_BATCHES,
    ) -> None:
        self.spec = spec
        self.queue = queue
        self._invoke = invoke
        self._principal = principal
        self.region = region
        self.max_concurrent_batches = max_concurrent_batches
        self.invocations = 0
        self._described = False
        self.last_error: str | None = None
        self._in_flight: set[Future[None]] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        queue.on_arrival(self._wake.set)

    def _authorize(self, operation: str) -> None:
        if self._principal is not None:
            iam.authorize(self._principal, "sqs", operation, {"QueueUrl": self.queue.spec.url})

    def receive(self) -> list[QueuedMessage]:
        if not self._described:
            # Lambda reads the queue's attributes (is it FIFO, its visibility timeout)
            # before it polls: the role must allow that too.
            self._authorize("GetQueueAttributes")
            self._described = True
        self._authorize("ReceiveMessage")
        return self.queue.receive(self.spec.batch_size)

    def handle(self, batch: list[QueuedMessage]) -> None:
        """Invokes the function with ``batch``; deletes what it handled."""
        event = {"Records": [sqs_event_record(m, self.queue, self.region) for m in batch]}
        self.invocations += 1
        response = self._invoke(FunctionName=self.spec.function_name, Payload=json.dumps(event).encode())
        failed = failed_ids(response, batch, self.spec.report_batch_item_failures)
        done = [m for m in batch if m.messageId not in failed]
        if done:
            self._authorize("DeleteMessage")
        for message in done:
            try:
                self.queue.delete(str(message.receipt))
            except QueueError as error:  # its visibility ran out meanwhile: it comes again
                LOGGER.warning("%s: %s not deleted: %s", self.spec.function_name, message.messageId, error)

    def poll(self) -> int:
        """Receives and handles batches until the queue has nothing to hand out now (in
        this thread); how many messages it handled."""
        handled = 0
        while True:
            batch = self.receive()
            if not batch:
                return handled
            self.handle(batch)
            handled += len(batch)

    # --- running in the background -----------------------------------------------------

    def _dispatch_once(self) -> int:
        """Starts batches while there is room and something to receive; how many started."""
        assert self._pool is not None
        started = 0
        while True:
            with self._lock:
                self._in_flight = {f for f in self._in_flight if not f.done()}
                if len(self._in_flight) >= self.max_concurrent_batches:
                    return started
            batch = self.receive()
            if not batch:
                return started
            future = self._pool.submit(self.handle, batch)
            future.add_done_callback(lambda _: self._wake.set())
            with self._lock:
                self._in_flight.add(future)
            started += 1

    def start(self, interval: float = POLL_INTERVAL_S) -> QueuePoller:
        if self._thread is not None or not self.spec.enabled:
            return self
        self._stop.clear()
        self._pool = ThreadPoolExecutor(
            self.max_concurrent_batches, thread_name_prefix=f"esm-{self.spec.function_name}"
        )

        def run() -> None:
            while not self._stop.is_set():
                try:
                    self._dispatch_once()
                    self.last_error = None
                except Exception as exc:  # the poller keeps polling, as Lambda's does
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    LOGGER.warning("event source %s: %s", self.spec.logical_id, self.last_error)
                self._wake.wait(interval)
                self._wake.clear()

        self._thread = threading.Thread(target=run, name=f"esm-{self.spec.function_name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class LocalEventSources:
    """The template's queue event sources, each polled for its function."""

    def __init__(
        self,
        mappings: Mapping[str, EventSourceMappingSpec],
        queues: LocalQueues,
        invoke: Invoke,
        *,
        principals: Mapping[str, iam.Principal | None],
        region: str,
    ) -> None:
        self.pollers = {
            lid: QueuePoller(
                spec,
                queues.by_arn[spec.source_arn],
                invoke,
                principal=principals.get(spec.function_name),
                region=region,
            )
            for lid, spec in mappings.items()
        }

    def drain(self, rounds: int = 3) -> int:
        """Polls every mapping in this thread until none handles anything (``rounds`` at most
        of them in a row finding work, so that messages one function sends another are
        handled too); how many messages were handled."""
        total = 0
        for _ in range(rounds):
            handled = sum(poller.poll() for poller in self.pollers.values())
            total += handled
            if not handled:
                break
        return total

    def start(self, interval: float = POLL_INTERVAL_S) -> LocalEventSources:
        for poller in self.pollers.values():
            poller.start(interval)
        return self

    def stop(self) -> None:
        for poller in self.pollers.values():
            poller.stop()
