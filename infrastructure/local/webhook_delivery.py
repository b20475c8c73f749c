"""Webhook deliveries in the twin: every domain event on the bus, to every subscription
that wants it, signed, at least once, in commit order per subscription and event.

It follows the design it stands in for on AWS (an SQS FIFO queue whose message group is
the subscription and the event, a small delivery function, a dead-letter queue): each
(subscription, event) pair is a lane whose messages go out one at a time, in the order
the bus has them; a failed delivery (a non-2xx answer, no answer within 10 s, a refused
connection) is retried after the next interval of its schedule while the lane's later
messages wait behind it, and after the last one it goes to the dead letters, which
`regctl webhooks failed` lists and `regctl webhooks redrive` sends again.

Its state (how far it has read the bus, the lanes, the dead letters) is written whole
to a file after each change (a new file renamed over the old one), so a killed worker
resumes where it was: a message it delivered but had not yet recorded is delivered again
(the same `webhook-id`), none is lost, and none overtakes another in its lane.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infrastructure.local.event_bus import LocalEventBus
from registration import webhooks
from registration.models import StoredWebhook

LOGGER = logging.getLogger(__name__)

# The waits before each retry of a failed delivery: the first ones come within seconds,
# so that a receiver restarted during development gets its messages at once.
LOCAL_RETRY_SCHEDULE_S = (1.0, 2.0, 4.0, 8.0, 16.0)
POLL_INTERVAL_S = 0.2
# The deliveries' state, beside the bus's log.
WEBHOOK_STATE_FILE = "webhook-deliveries.json"
MAX_PARALLEL_LANES = 8


@dataclass
class Message:
    """One domain event for one subscription."""

    webhookId: str
    eventId: str
    messageId: str  # the domain event's id: the `webhook-id` of every attempt
    event: dict[str, Any]  # as the bus delivered it
    attempts: int = 0
    nextAt: float = 0.0
    lastError: str | None = None

    @property
    def lane(self) -> str:
        return f"{self.webhookId}#{self.eventId}"


@dataclass
class DeliveryState:
    read_to: int = 0  # the bus offset of the last event fanned out
    lanes: dict[str, list[Message]] = field(default_factory=dict)
    dead: list[Message] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "readTo": self.read_to,
            "lanes": {k: [asdict(m) for m in v] for k, v in self.lanes.items()},
            "dead": [asdict(m) for m in self.dead],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeliveryState:
        return cls(
            read_to=int(data.get("readTo", 0)),
            lanes={k: [Message(**m) for m in v] for k, v in data.get("lanes", {}).items()},
            dead=[Message(**m) for m in data.get("dead", [])],
        )


@dataclass(frozen=True)
class Attempt:
    ok: bool
    error: str | None = None


def post(
    url: str, body: str, headers: dict[str, str], timeout: float = webhooks.DELIVERY_TIMEOUT_S
) -> Attempt:
    """One delivery attempt: a 2xx answer within `timeout` is a success."""
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
            return Attempt(
                200 <= answer.status < 300, None if answer.status < 300 else f"HTTP {answer.status}"
            )
    except urllib.error.HTTPError as exc:
        return Attempt(False, f"HTTP {exc.code}")
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Attempt(False, f"{type(reason).__name__}: {reason}")


class WebhookDelivery:
    """Delivers the bus's events to the subscriptions the store holds."""

    def __init__(
        self,
        bus: LocalEventBus,
        subscriptions: Callable[[], Sequence[StoredWebhook]],
        find: Callable[[str], StoredWebhook | None],
        *,
        path: Path | None = None,
        schedule: Sequence[float] = LOCAL_RETRY_SCHEDULE_S,
        send: Callable[[str, str, dict[str, str]], Attempt] = post,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self._subscriptions = subscriptions
        self._find = find
        self.path = path
        self.schedule = tuple(schedule)
        self._send = send
        self._clock = clock
        self._lock = threading.RLock()
        self.state = self._load()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.delivered = 0

    # --- state --------------------------------------------------------------------------

    def _load(self) -> DeliveryState:
        if self.path is None or not self.path.exists():
            # A first start follows the bus from now on (what was committed before any
            # subscription existed is no one's to deliver).
            return DeliveryState(read_to=self.bus.last_offset)
        return DeliveryState.from_dict(json.loads(self.path.read_text(encoding="utf-8")))

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(self.state.as_dict(), handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    # --- the steps ----------------------------------------------------------------------

    def fan_out(self) -> int:
        """Each new event on the bus, queued in the lane of every subscription that wants it."""
        with self._lock:
            entries = self.bus.read(self.state.read_to, limit=500)
            if not entries:
                return 0
            subscriptions = list(self._subscriptions())
            queued = 0
            for entry in entries:
                detail = entry.body["detail"]
                for webhook in webhooks.matching(subscriptions, detail):
                    message = Message(
                        webhook.webhookId, str(detail["eventId"]), str(detail["id"]), entry.body
                    )
                    self.state.lanes.setdefault(message.lane, []).append(message)
                    queued += 1
                self.state.read_to = entry.offset
            self._save()
            return queued

    def due(self) -> list[Message]:
        """The head of every lane whose time has come."""
        now = self._clock()
        with self._lock:
            return [lane[0] for lane in self.state.lanes.values() if lane and lane[0].nextAt <= now]

    def attempt(self, message: Message) -> bool:
        """Delivers the head of its lane once; True when it left the lane."""
        webhook = self._find(message.webhookId)
        if webhook is None:
            self._drop_lanes_of(message.webhookId)  # removed: nothing more goes to it
            return True
        body = webhooks.message_body(message.event["detail"])
        timestamp = int(self._clock())
        result = self._send(
            webhook.url, body, webhooks.headers(webhook.secret, message.messageId, timestamp, body)
        )
        with self._lock:
            lane = self.state.lanes.get(message.lane, [])
            if not lane or lane[0] is not message:
                return True  # dropped or redriven meanwhile
            if result.ok:
                lane.pop(0)
                self.delivered += 1
            else:
                message.attempts += 1
                message.lastError = result.error
                if message.attempts > len(self.schedule):
                    lane.pop(0)
                    self.state.dead.append(message)
                    LOGGER.warning(
                        "webhook %s: %s is a dead letter (%s)",
                        message.webhookId,
                        message.messageId,
                        result.error,
                    )
                else:
                    message.nextAt = self._clock() + self.schedule[message.attempts - 1]
            if not lane:
                self.state.lanes.pop(message.lane, None)
            self._save()
            return result.ok or message not in lane

    def _drop_lanes_of(self, webhook_id: str) -> None:
        with self._lock:
            for key in [k for k in self.state.lanes if k.startswith(f"{webhook_id}#")]:
                del self.state.lanes[key]
            self._save()

    def step(self, pool: ThreadPoolExecutor | None = None) -> int:
        """Fans out what is new and attempts every due head once; how many went out."""
        self.fan_out()
        heads = self.due()
        if pool is None:
            return sum(1 for m in heads if self.attempt(m))
        return sum(1 for left in pool.map(self.attempt, heads) if left)

    # --- dead letters -------------------------------------------------------------------

    def failed(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "webhookId": m.webhookId,
                    "eventId": m.eventId,
                    "messageId": m.messageId,
                    "type": m.event["detail"]["type"],
                    "attempts": m.attempts,
                    "lastError": m.lastError,
                }
                for m in self.state.dead
            ]

    def redrive(self, webhook_id: str | None = None) -> int:
        """The dead letters (one subscription's, or all) back at the end of their lanes."""
        with self._lock:
            again = [m for m in self.state.dead if webhook_id in (None, m.webhookId)]
            self.state.dead = [m for m in self.state.dead if m not in again]
            for message in again:
                message.attempts, message.nextAt, message.lastError = 0, 0.0, None
                self.state.lanes.setdefault(message.lane, []).append(message)
            self._save()
            return len(again)

    # --- running --------------------------------------------------------------------------

    def start(self, interval: float = POLL_INTERVAL_S) -> WebhookDelivery:
        if self._thread is not None:
            return self
        self._stop.clear()

        def run() -> None:
            with ThreadPoolExecutor(MAX_PARALLEL_LANES, thread_name_prefix="webhook") as pool:
                while not self._stop.is_set():
                    try:
                        sent = self.step(pool)
                    except Exception:  # keeps delivering, as the queue would
                        LOGGER.exception("webhook delivery")
                        sent = 0
                    if not sent:
                        self._stop.wait(interval)

        self._thread = threading.Thread(target=run, name="webhook-delivery", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
