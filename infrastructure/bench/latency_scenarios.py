"""Part 2 of the benchmark: registrations under closed-loop load through the local HTTP API
(its own process) and through the data layer called directly, and the local stack's peak memory."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from infrastructure import names
from infrastructure.bench.bulk_load import load_users
from infrastructure.bench.load import (
    MemorySampler,
    children_named,
    direct_register,
    http_register,
    issue_token,
    run_load,
)
from infrastructure.bench.local_stack import ServerProcess, dynamodb_client
from infrastructure.bench.results import Results, Settings
from infrastructure.ops.local_backend import LocalBackend
from registration.data import RegistrationStore
from registration.models import MAX_CAPACITY, NewEvent


class _Receiver:
    """A webhook endpoint on 127.0.0.1 that notes when each user's message arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()
                with receiver.changed:
                    receiver.arrived.setdefault(str(body["data"].get("userId")), time.monotonic())
                    receiver.changed.notify_all()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, user: str, timeout: float) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: user in self.arrived, timeout):
                raise RuntimeError(f"no webhook for {user} within {timeout:g} s")
            return self.arrived[user]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _subscribe(url: str, token: str, event_id: str, receiver: str) -> None:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        body = json.dumps({"url": receiver, "eventId": event_id, "types": ["registration.registered"]})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        connection.request("POST", "/webhooks", body=body, headers=headers)
        answer = connection.getresponse()
        answer.read()
    finally:
        connection.close()
    if answer.status != 201:
        raise RuntimeError(f"the local server refused the webhook subscription: {answer.status}")


# How long the bus's consumer and the webhook receiver may take to reach the first event
# (the pipes read the stream's backlog first).
CATCH_UP_S = 1800.0


def _await_event(backend: LocalBackend, event_id: str, cursor: Any, user: str, timeout: float) -> Any:
    """The cursor just past `user`'s domain event, read within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events, cursor = backend.domain_events(cursor, event_id, wait=10)
        if any(e["detail"].get("userId") == user for e in events):
            return cursor
    raise RuntimeError(f"no domain event for {user} within {timeout:g} s")


def measure_event_delivery(
    url: str, token: str, event_id: str, users: list[str], count: int, results: Results
) -> None:
    """One registration at a time: from its answer (after its commit) to its domain event
    reaching a consumer that follows the bus (as `regctl events tail` does), and to its
    webhook reaching a subscribed receiver."""
    backend = LocalBackend(url)
    receiver = _Receiver()
    try:
        _subscribe(url, token, event_id, receiver.url)
        register = http_register(url, event_id, token)()
        _, cursor = backend.domain_events(None, event_id, wait=0)
        # The server's pipes (to the bus, to the webhooks' queues) start at the table
        # stream's oldest record: after the cost part (a cancelled event of 100,000 is as
        # many domain events) they have a backlog to read first. The first registration
        # waits that out on both paths and is not measured.
        first, *measured = users[: count + 1]
        if not register(first):
            raise RuntimeError(f"the registration of {first} for the event-delivery figure failed")
        cursor = _await_event(backend, event_id, cursor, first, CATCH_UP_S)
        receiver.wait_for(first, CATCH_UP_S)
        # A new connection: the server closes one left idle that long.
        register = http_register(url, event_id, token)()
        for user in measured:
            if not register(user):
                raise RuntimeError(f"the registration of {user} for the event-delivery figure failed")
            answered = time.monotonic()
            while True:
                events, cursor = backend.domain_events(cursor, event_id, wait=10)
                if not events:
                    raise RuntimeError(f"no domain event for {user} within 10 s")
                mine = [e for e in events if e["detail"].get("userId") == user]
                if mine:
                    results.event_delivery_ms.append((time.monotonic() - answered) * 1000)
                    results.event_detail_bytes = len(json.dumps(mine[0]["detail"], separators=(",", ":")))
                    results.event_logged_bytes = len(json.dumps(mine[0], separators=(",", ":")))
                    break
            results.webhook_delivery_ms.append((receiver.wait_for(user, 30) - answered) * 1000)
    finally:
        receiver.close()


def measure_latency(
    endpoint: str, template: Path, settings: Settings, results: Results, log: Callable[[str], None]
) -> None:
    store = RegistrationStore(names.LOCAL_TABLE_NAME, dynamodb_client(endpoint))
    users = [f"load-{n:06d}" for n in range(settings.user_pool)]
    load_users(store, users, label="load users")
    warmup = 2

    def event(mode: str, concurrency: int) -> str:
        event_id = f"bench-load-{mode}-{concurrency}-{uuid.uuid4().hex[:6]}"
        store.create_event(NewEvent(eventId=event_id, title="Load", capacity=MAX_CAPACITY))
        return event_id

    with ServerProcess(endpoint, template, names.LOCAL_TABLE_NAME) as server:
        database = children_named(os.getpid(), "java")
        token = issue_token(server.url)
        for concurrency in settings.concurrency:
            log(f"latency: through the HTTP API, {concurrency} in flight")
            sampler = MemorySampler(
                {"local API": server.pid, **({"DynamoDB Local": database[0]} if database else {})}
            )
            with sampler:
                result = run_load(
                    "orchestrated",
                    http_register(server.url, event("http", concurrency), token),
                    users,
                    concurrency=concurrency,
                    seconds=settings.seconds,
                    warmup=warmup,
                )
            results.loads.append(result)
            if concurrency == max(settings.concurrency):
                results.memory_peaks = dict(sampler.peaks)
                results.memory_peak_total = sampler.peak_total
        log(f"latency: {settings.events_measured} registrations' domain events to a consumer of the bus")
        measure_event_delivery(
            server.url, token, event("events", 1), users, settings.events_measured, results
        )
    for concurrency in settings.concurrency:
        log(f"latency: the data layer called directly, {concurrency} in flight")
        results.loads.append(
            run_load(
                "direct",
                direct_register(store, event("direct", concurrency)),
                users,
                concurrency=concurrency,
                seconds=settings.seconds,
                warmup=warmup,
            )
        )
