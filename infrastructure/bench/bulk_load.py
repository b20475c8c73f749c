"""Bulk loading: events with many seats and a long waitlist, in seconds.

Items are built by the data layer's own item builders (`registration.data.items`: `seat_item`,
`waitlist_items`, `user_item`), so they are shaped exactly like the ones the workflows
write, and go in with `BatchWriteItem` (25 items a call) from parallel threads. The
event's counters are then set to what the items add up to, as if every registrant had
come through the workflows one by one.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import islice
from typing import Any, TextIO

from boto3.dynamodb.types import TypeSerializer

from registration import keys
from registration.data import RegistrationStore
from registration.data.dynamo import now_iso
from registration.data.items import event_item, seat_item, user_item, waitlist_items
from registration.models import EventState, NewEvent, User

BATCH = 25  # BatchWriteItem's limit
WORKERS = 8
MAX_ATTEMPTS = 10
BULK_LOAD_REQUEST = "bulk-load"

_serializer = TypeSerializer()


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in item.items()}


class Progress:
    """A one-line progress bar on stderr: count, total, rate. Silent when disabled."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.started = time.monotonic()
        self._shown = 0.0
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            now = time.monotonic()
            if self.enabled and now - self._shown > 0.1:
                self._shown = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        width = 30
        filled = int(width * min(self.done, self.total) / self.total)
        rate = self.done / max(now - self.started, 1e-9)
        self.stream.write(
            f"\r  {self.label:<28} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done:>9,}/{self.total:,} items {rate:>8,.0f}/s"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _write_batch(client: Any, table: str, batch: list[dict[str, Any]]) -> int:
    requests: list[dict[str, Any]] = [{"PutRequest": {"Item": serialize(item)}} for item in batch]
    for attempt in range(MAX_ATTEMPTS):
        response = client.batch_write_item(RequestItems={table: requests})
        requests = response.get("UnprocessedItems", {}).get(table, [])
        if not requests:
            return len(batch)
        time.sleep(0.01 * (2**attempt) * random.random())
    raise RuntimeError(f"DynamoDB left {len(requests)} items unprocessed after {MAX_ATTEMPTS} attempts")


def bulk_write(
    client: Any,
    table: str,
    items: Iterable[dict[str, Any]],
    *,
    progress: Progress | None = None,
    workers: int = WORKERS,
) -> int:
    """Puts every item (plain values) with parallel BatchWriteItem calls; returns how many."""
    written = 0
    with ThreadPoolExecutor(workers, thread_name_prefix="bulk-load") as pool:
        pending: set[Future[int]] = set()
        for batch in _chunks(items, BATCH):
            if len(pending) >= workers * 4:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    count = future.result()
                    written += count
                    if progress:
                        progress.add(count)
            pending.add(pool.submit(_write_batch, client, table, batch))
        for future in pending:
            count = future.result()
            written += count
            if progress:
                progress.add(count)
    return written


@dataclass(frozen=True)
class LoadedEvent:
    event_id: str
    seated: Sequence[str]
    waitlisted: Sequence[str]


def seated_user(n: int) -> str:
    return f"s{n:07d}"


def waitlisted_user(n: int) -> str:
    return f"w{n:07d}"


def load_event(
    store: RegistrationStore,
    event_id: str,
    *,
    capacity: int,
    seated: int,
    waitlisted: int = 0,
    has_waitlist: bool = False,
    show_progress: bool = True,
) -> LoadedEvent:
    """An event with `seated` registrants and `waitlisted` people queued (in that order)."""
    if seated > capacity:
        raise ValueError("more seats taken than the event has")
    if waitlisted and not has_waitlist:
        raise ValueError("a waitlist needs hasWaitlist")
    store.create_event(
        NewEvent(eventId=event_id, title=f"Benchmark {event_id}", capacity=capacity, hasWaitlist=has_waitlist)
    )
    at = now_iso()
    seat_ids = [seated_user(n) for n in range(seated)]
    queue_ids = [waitlisted_user(n) for n in range(waitlisted)]

    def items() -> Iterator[dict[str, Any]]:
        for user in seat_ids:
            yield seat_item(event_id, user, f"{BULK_LOAD_REQUEST}-{user}", at)
        for seq, user in enumerate(queue_ids, start=1):
            yield from waitlist_items(event_id, user, seq, f"{BULK_LOAD_REQUEST}-{user}", at)

    total_items = seated + 2 * waitlisted
    progress = Progress(f"load {event_id}", total_items, enabled=show_progress and total_items >= 1000)
    bulk_write(store.client, store.table_name, items(), progress=progress)
    if progress.enabled:
        progress.close()
    set_counters(store, event_id, registered=seated, waitlisted=waitlisted, seq=waitlisted)
    return LoadedEvent(event_id, seat_ids, queue_ids)


def set_counters(
    store: RegistrationStore, event_id: str, *, registered: int, waitlisted: int, seq: int
) -> None:
    """The event's counters as the bulk-loaded items add up to (only from a fresh event)."""
    store.client.update_item(
        TableName=store.table_name,
        Key=serialize(keys.event_key(event_id)),
        UpdateExpression="SET registeredCount = :reg, waitlistCount = :wl, waitlistSeq = :seq",
        ConditionExpression="registeredCount = :zero AND waitlistCount = :zero AND waitlistSeq = :zero",
        ExpressionAttributeValues=serialize({":reg": registered, ":wl": waitlisted, ":seq": seq, ":zero": 0}),
    )


def load_events(
    store: RegistrationStore,
    event_ids: Sequence[str],
    *,
    capacity: int = 10,
    registered_count: Callable[[int], int] = lambda n: 0,
    show_progress: bool = True,
) -> None:
    """Event items for `event_ids` (what `create_event` would write), in bulk. The n-th
    event's `registeredCount` is `registered_count(n)`; no seat items exist, so any
    count but 0 is drift (what reconciliation repairs)."""
    at = now_iso()
    items = (
        event_item(
            EventState(
                eventId=event_id,
                title=f"Benchmark {event_id}",
                capacity=capacity,
                hasWaitlist=False,
                registeredCount=registered_count(n),
                waitlistCount=0,
                waitlistSeq=0,
                createdAt=at,
            )
        )
        for n, event_id in enumerate(event_ids)
    )
    progress = Progress("events", len(event_ids), enabled=show_progress and len(event_ids) >= 1000)
    bulk_write(store.client, store.table_name, items, progress=progress)
    if progress.enabled:
        progress.close()


def load_users(
    store: RegistrationStore, user_ids: Sequence[str], *, label: str = "users", show_progress: bool = True
) -> None:
    """User items for `user_ids` (what `create_user` would write), in bulk."""
    at = now_iso()
    items = (user_item(User(userId=u, name=f"Benchmark {u}", createdAt=at)) for u in user_ids)
    progress = Progress(label, len(user_ids), enabled=show_progress and len(user_ids) >= 1000)
    bulk_write(store.client, store.table_name, items, progress=progress)
    if progress.enabled:
        progress.close()
