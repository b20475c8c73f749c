"""Part 2 of the benchmark: registrations under closed-loop load through the local HTTP API
(its own process) and through the data layer called directly, and the local stack's peak memory."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

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


def measure_event_delivery(
    url: str, token: str, event_id: str, users: list[str], count: int, results: Results
) -> None:
    """One registration at a time: from its answer (after its commit) to its domain event
    reaching a consumer that follows the bus (as `regctl events tail` does)."""
    backend = LocalBackend(url)
    register = http_register(url, event_id, token)()
    _, cursor = backend.domain_events(None, event_id, wait=0)
    for user in users[:count]:
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
