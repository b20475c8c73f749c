"""Many clients at once, through the local HTTP server, on DynamoDB Local.

Every request goes over HTTP to the local server, which runs the synthesized workflows
on the local engine; 32 requests are in flight at a time. The verdict comes from the
table (read back strongly consistently), not only from the answers.

The figures (requests, durations, latencies, statuses) go to
`.local/reliability-concurrency.json`; `python -m tests.reliability` writes them into
docs/reliability.md.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from infrastructure.local.dynamodb_local import DynamoDBLocal
from infrastructure.local.engine import LocalEngine
from infrastructure.local.http_server import LocalServer
from registration import domain_events
from registration.data import RegistrationStore
from registration.models import NewUser
from tests.fixtures import engines
from tests.fixtures import figures as figure_files
from tests.fixtures.table_checks import (
    event_partition,
    invariant_violations,
    scan_table,
    table_violations,
)
from tests.http.client import Answer, Client, eventually, uid

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("concurrency")]

FIGURES = figure_files.path("concurrency")
IN_FLIGHT = 32
# API Gateway gives an integration 29 s, and the local server does the same by default;
# the local engine enforces AWS's timeouts of functions, tasks and workflows. It runs
# every execution in one Python process, an order of magnitude slower than AWS with 32
# in flight, and a burst of joins on one event's waitlist is its worst case: its tail can
# pass 29 s on a loaded machine, and one task's handler once ran past 10 s (its 1 s
# stretched ten times). These runs stretch every time limit (the API's included) by
# TIME_SCALE, and the figures count the requests that took more than 29 s.
TIME_SCALE = 20.0
API_GATEWAY_LIMIT_S = 29.0
WORKFLOW_TIMEOUT_S = API_GATEWAY_LIMIT_S * TIME_SCALE
SEATS = 50
CROWD = 500
READ_INTERVAL_S = 0.05


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_engine(dynamodb_local: DynamoDBLocal) -> Iterator[LocalEngine]:
    """The shared fixture's engine (tests/fixtures/engines.py), with its time limits stretched."""
    with engines.dynamodb_local_engine(dynamodb_local, TIME_SCALE) as running:
        yield running


@pytest.fixture(scope="module")
def server(local_engine: LocalEngine) -> Iterator[LocalServer]:
    with LocalServer(local_engine, port=0, integration_timeout=WORKFLOW_TIMEOUT_S) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: LocalServer) -> Client:
    # The client waits as long as the server may take to answer (the stretched 29 s).
    return Client(server.url, timeout=WORKFLOW_TIMEOUT_S + 30).as_admin()


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, Any]]:
    collected: dict[str, Any] = {}
    yield collected
    if collected:
        previous = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        scenarios = previous.get("scenarios", {}) if previous.get("run") == figure_files.RUN_ID else {}
        figure_files.merge(
            "concurrency",
            {
                "inFlight": IN_FLIGHT,
                "timeScale": TIME_SCALE,
                "recordedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "scenarios": {**scenarios, **collected},
            },
        )


def _users(store: RegistrationStore, count: int, prefix: str) -> list[str]:
    """Users straight into the table (setup, not under test)."""
    ids = [uid(prefix) for _ in range(count)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda u: store.create_user(NewUser(userId=u, name=f"Name of {u}")), ids))
    return ids


# --- running many requests -------------------------------------------------------------


@dataclass
class Timed:
    answer: Answer
    seconds: float
    label: str = ""


@dataclass
class Run:
    results: list[Timed]
    seconds: float
    reads: list[dict[str, Any]] = field(default_factory=list)

    def statuses(self) -> Counter[str]:
        counted: Counter[str] = Counter()
        for r in self.results:
            body = r.answer.body
            outcome = body.get("error") or body.get("status") or ""
            counted[f"{r.answer.status} {outcome}".strip()] += 1
        return counted

    def summary(self, **extra: Any) -> dict[str, Any]:
        latencies = sorted(r.seconds * 1000 for r in self.results)
        return {
            "requests": len(self.results),
            "seconds": round(self.seconds, 2),
            "requestsPerSecond": round(len(self.results) / self.seconds, 1),
            "latencyMs": {
                "p50": round(statistics.median(latencies)),
                "p95": round(latencies[int(len(latencies) * 0.95) - 1]),
                "max": round(latencies[-1]),
            },
            "statuses": dict(sorted(self.statuses().items())),
            "over29s": sum(1 for r in self.results if r.seconds > API_GATEWAY_LIMIT_S),
            "eventReads": len(self.reads),
            **extra,
        }


def _run(
    calls: list[tuple[str, Callable[[], Answer]]],
    *,
    sample: Callable[[], dict[str, Any]] | None = None,
) -> Run:
    """Runs `calls` IN_FLIGHT at a time; `sample` is read in a loop meanwhile."""
    reads: list[dict[str, Any]] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            reads.append(sample())  # type: ignore[misc]
            done.wait(READ_INTERVAL_S)

    def timed(call: tuple[str, Callable[[], Answer]]) -> Timed:
        label, fn = call
        started = time.perf_counter()
        answer = fn()
        return Timed(answer, time.perf_counter() - started, label)

    thread = threading.Thread(target=reader, daemon=True) if sample else None
    started = time.perf_counter()
    if thread:
        thread.start()
    try:
        with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            results = list(pool.map(timed, calls))
    finally:
        done.set()
        if thread:
            thread.join(timeout=30)
    return Run(results, time.perf_counter() - started, reads)


def _no_server_errors(run: Run) -> None:
    server_errors = [(r.label, r.answer.status, r.answer.raw) for r in run.results if r.answer.status >= 500]
    assert not server_errors, server_errors[:5]


def _event_reader(client: Client, event_id: str) -> Callable[[], dict[str, Any]]:
    def read() -> dict[str, Any]:
        answer = client.get(f"/events/{event_id}")
        assert answer.status == 200, answer.raw
        return dict(answer.body)

    return read


def _over_capacity(reads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in reads if r["registeredCount"] > r["capacity"]]


# --- 500 registrations for 50 seats ----------------------------------------------------


@dataclass(frozen=True)
class Crowd:
    event_id: str
    run: Run
    registered: list[str]
    waitlisted: dict[str, int]  # userId -> position it was told


@pytest.fixture(scope="module")
def crowd_with_waitlist(
    client: Client, local_store: RegistrationStore, local_engine: LocalEngine, figures: dict[str, Any]
) -> Crowd:
    """500 registrations for one 50-seat event with a waitlist, 32 in flight."""
    event_id = client.event(capacity=SEATS, has_waitlist=True, prefix="crowd")
    users = _users(local_store, CROWD, "crowd")
    run = _run(
        [(u, lambda u=u: client.register(event_id, u)) for u in users],  # type: ignore[misc]
        sample=_event_reader(client, event_id),
    )
    bodies = {r.label: r.answer.body for r in run.results if r.answer.status == 201}
    registered = [u for u, b in bodies.items() if b["status"] == "registered"]
    waitlisted = {u: b["position"] for u, b in bodies.items() if b["status"] == "waitlisted"}
    figures["registerWithWaitlist"] = run.summary(
        capacity=SEATS, registered=len(registered), waitlisted=len(waitlisted)
    )
    return Crowd(event_id, run, registered, waitlisted)


def test_500_registrations_fill_50_seats_then_a_waitlist_of_450(
    crowd_with_waitlist: Crowd, client: Client, local_engine: LocalEngine
) -> None:
    crowd = crowd_with_waitlist
    assert [r.answer.status for r in crowd.run.results] == [201] * CROWD, crowd.run.statuses()
    assert not _over_capacity(crowd.run.reads)
    assert len(crowd.registered) == SEATS
    assert len(crowd.waitlisted) == CROWD - SEATS
    assert sorted(crowd.waitlisted.values()) == list(range(1, CROWD - SEATS + 1))

    event = client.get(f"/events/{crowd.event_id}").body
    assert (event["registeredCount"], event["waitlistCount"]) == (SEATS, CROWD - SEATS)

    partition = event_partition(local_engine.dynamodb_client(), local_engine.table_name, crowd.event_id)
    assert invariant_violations(partition) == []
    assert sorted(partition.seats) == sorted(crowd.registered)
    # The queue in the table is the order each client was told.
    assert partition.waitlist == sorted(crowd.waitlisted, key=crowd.waitlisted.__getitem__)


def test_500_registrations_without_a_waitlist_seat_50_and_refuse_450(
    client: Client, local_store: RegistrationStore, local_engine: LocalEngine, figures: dict[str, Any]
) -> None:
    event_id = client.event(capacity=SEATS, has_waitlist=False, prefix="nowl")
    users = _users(local_store, CROWD, "nowl")
    before = scan_table(local_engine.dynamodb_client(), local_engine.table_name)

    run = _run(
        [(u, lambda u=u: client.register(event_id, u)) for u in users],  # type: ignore[misc]
        sample=_event_reader(client, event_id),
    )

    _no_server_errors(run)
    seated = [r.label for r in run.results if r.answer.status == 201]
    refused = [r for r in run.results if r.answer.status != 201]
    assert len(seated) == SEATS
    assert all(r.answer.body["status"] == "registered" for r in run.results if r.answer.status == 201)
    assert len(refused) == CROWD - SEATS
    for r in refused:
        r.answer.error(409, "EventFull")
    assert not _over_capacity(run.reads)

    after = scan_table(local_engine.dynamodb_client(), local_engine.table_name)
    # Nothing else written: the only new items are the 50 seats; the event's counter moved.
    keys_before = {(i["PK"], i["SK"]) for i in before}
    added = [i for i in after if (i["PK"], i["SK"]) not in keys_before]
    assert sorted(i["userId"] for i in added) == sorted(seated)
    assert all(str(i["SK"]).startswith("REG#") for i in added)
    changed = [i for i in after if (i["PK"], i["SK"]) in keys_before and i not in before]
    assert [(i["PK"], i["SK"]) for i in changed] == [(f"EVENT#{event_id}", "METADATA")]
    partition = event_partition(local_engine.dynamodb_client(), local_engine.table_name, event_id)
    assert invariant_violations(partition) == []
    assert (partition.event["registeredCount"], partition.event["waitlistCount"]) == (SEATS, 0)

    figures["registerWithoutWaitlist"] = run.summary(
        capacity=SEATS, registered=len(seated), refusedEventFull=len(refused), itemsAdded=len(added)
    )


# --- everyone with a seat leaves at once ----------------------------------------------


def test_50_concurrent_unregistrations_promote_the_first_50_in_order(
    crowd_with_waitlist: Crowd, client: Client, local_engine: LocalEngine, figures: dict[str, Any]
) -> None:
    crowd = crowd_with_waitlist
    assert (len(crowd.registered), len(crowd.waitlisted)) == (SEATS, CROWD - SEATS)
    queue = sorted(crowd.waitlisted, key=crowd.waitlisted.__getitem__)

    run = _run(
        [(u, lambda u=u: client.unregister(crowd.event_id, u)) for u in crowd.registered],  # type: ignore[misc]
        sample=_event_reader(client, crowd.event_id),
    )

    assert [r.answer.status for r in run.results] == [200] * SEATS, run.statuses()
    promoted = [r.answer.body["promoted"] for r in run.results]
    assert all(r.answer.body["status"] == "unregistered" for r in run.results)
    assert None not in promoted
    assert len(set(promoted)) == SEATS, "somebody was promoted twice"
    # The first 50 of the queue, nobody else (each promotion took the head of its time).
    assert set(promoted) == set(queue[:SEATS])
    over = _over_capacity(run.reads)
    assert not over, over[:3]
    assert run.reads and all(r["registeredCount"] == SEATS for r in run.reads)

    partition = event_partition(local_engine.dynamodb_client(), local_engine.table_name, crowd.event_id)
    assert invariant_violations(partition) == []
    assert sorted(partition.seats) == sorted(queue[:SEATS])
    assert partition.waitlist == queue[SEATS:]  # the rest kept their order
    positions = client.all_items(f"/events/{crowd.event_id}/waitlist", limit=100)
    assert [(w["userId"], w["position"]) for w in positions] == [
        (u, n) for n, u in enumerate(queue[SEATS:], start=1)
    ]

    figures["unregisterWithPromotion"] = run.summary(
        capacity=SEATS,
        promotions=len(promoted),
        distinctPromoted=len(set(promoted)),
        maxRegisteredCountRead=max(r["registeredCount"] for r in run.reads),
    )


# --- a random mixed workload -----------------------------------------------------------

MIXED_SEED = 20260101
MIXED_REQUESTS = 600
MIXED_USERS = 30
MIXED_EVENTS = ((3, True), (5, False), (2, True), (8, True))  # (capacity, hasWaitlist)


def test_a_random_mixed_workload_keeps_every_invariant(
    client: Client, local_store: RegistrationStore, local_engine: LocalEngine, figures: dict[str, Any]
) -> None:
    rng = random.Random(MIXED_SEED)
    events = [client.event(capacity=c, has_waitlist=w, prefix="mixed") for c, w in MIXED_EVENTS]
    users = _users(local_store, MIXED_USERS, "mixed")

    calls: list[tuple[str, Callable[[], Answer]]] = []
    for _ in range(MIXED_REQUESTS):
        event_id, user_id = rng.choice(events), rng.choice(users)
        if rng.random() < 0.55:
            calls.append((f"register {event_id}", lambda e=event_id, u=user_id: client.register(e, u)))  # type: ignore[misc]
        else:
            calls.append((f"unregister {event_id}", lambda e=event_id, u=user_id: client.unregister(e, u)))  # type: ignore[misc]

    run = _run(calls, sample=_event_reader(client, events[0]))
    _no_server_errors(run)
    assert not _over_capacity(run.reads)

    allowed = {
        "register": {"201 registered", "201 waitlisted", "409 AlreadyRegistered", "409 AlreadyWaitlisted"}
        | {"409 EventFull"},
        "unregister": {"200 unregistered", "200 left_waitlist", "404 NotRegistered"},
    }
    for r in run.results:
        body = r.answer.body
        outcome = f"{r.answer.status} {body.get('error') or body.get('status')}"
        assert outcome in allowed[r.label.split()[0]], (r.label, r.answer.raw)

    items = scan_table(local_engine.dynamodb_client(), local_engine.table_name)
    assert table_violations(items) == []

    # The answers account for the table: seats and places gained and lost per event.
    for event_id in events:
        mine = [r for r in run.results if r.label.endswith(event_id)]
        bodies = [r.answer.body for r in mine if r.answer.status < 300]
        promotions = sum(1 for b in bodies if b.get("promoted"))
        seated = sum(1 for b in bodies if b["status"] == "registered") + promotions
        seated -= sum(1 for b in bodies if b["status"] == "unregistered")
        waiting = sum(1 for b in bodies if b["status"] == "waitlisted") - promotions
        waiting -= sum(1 for b in bodies if b["status"] == "left_waitlist")
        partition = event_partition(local_engine.dynamodb_client(), local_engine.table_name, event_id)
        assert (len(partition.seats), len(partition.slots)) == (seated, waiting), event_id

    figures["mixedWorkload"] = run.summary(
        events=len(events),
        users=len(users),
        seed=MIXED_SEED,
        promotions=sum(1 for r in run.results if r.answer.status == 200 and r.answer.body.get("promoted")),
        invariantsChecked=len(events),
    )


# --- an organizer adds seats during a stampede -----------------------------------------

RACE_SEATS, RACE_RAISED, RACE_CROWD = 10, 40, 120


def test_seats_added_during_a_stampede_go_to_the_heads_and_keep_every_invariant(
    client: Client, local_store: RegistrationStore, local_engine: LocalEngine, figures: dict[str, Any]
) -> None:
    """The capacity rises from 10 to 40 while 120 registrations arrive, 32 in flight: the
    change is re-decided on every registration that got there first, its promotions are
    the heads of their time, and the table ends as one queue would have it."""
    event_id = client.event(capacity=RACE_SEATS, has_waitlist=True, prefix="raise")
    users = _users(local_store, RACE_CROWD, "raise")
    early = users[: RACE_SEATS + 5]  # so that some wait whenever the change lands
    for user_id in early:
        assert client.register(event_id, user_id).status == 201
    calls: list[tuple[str, Callable[[], Answer]]] = [
        (u, lambda u=u: client.register(event_id, u))  # type: ignore[misc]
        for u in users[len(early) :]
    ]
    calls.insert(
        RACE_CROWD // 3,
        ("patch", lambda: client.request("PATCH", f"/events/{event_id}", {"capacity": RACE_RAISED})),
    )

    run = _run(calls, sample=_event_reader(client, event_id))

    _no_server_errors(run)
    (change,) = [r.answer for r in run.results if r.label == "patch"]
    assert change.status == 200, change.raw
    registrations = [r.answer for r in run.results if r.label != "patch"]
    assert [a.status for a in registrations] == [201] * (RACE_CROWD - len(early))
    assert not [r for r in run.reads if r["registeredCount"] > r["capacity"]]
    seated_at_once = sum(1 for a in registrations if a.body["status"] == "registered")
    assert len(change.body["promoted"]) >= 5
    assert RACE_SEATS + seated_at_once + len(change.body["promoted"]) == RACE_RAISED

    partition = event_partition(local_engine.dynamodb_client(), local_engine.table_name, event_id)
    assert invariant_violations(partition) == []
    assert (len(partition.seats), len(partition.slots)) == (RACE_RAISED, RACE_CROWD - RACE_RAISED)
    # FIFO: everyone the change seated had joined before everyone still waiting.
    promoted_from = [int(s["promotedFromSeq"]) for s in partition.seats.values() if "promotedFromSeq" in s]
    assert len(promoted_from) == len(change.body["promoted"])
    assert max(promoted_from, default=0) < min(int(s["seq"]) for s in partition.slots)

    figures["capacityRaisedDuringStampede"] = run.summary(
        capacity=RACE_SEATS,
        raisedTo=RACE_RAISED,
        promotedByTheChange=len(change.body["promoted"]),
    )


# --- an organizer cancels while people leave -------------------------------------------

CANCEL_SEATS, CANCEL_WAITING = 30, 30


def test_a_cancellation_racing_unregistrations_releases_everyone_once(
    client: Client, local_store: RegistrationStore, local_engine: LocalEngine, figures: dict[str, Any]
) -> None:
    """60 registrants (30 seated, 30 waiting); the cancel lands while all 60 leave at once,
    32 in flight: each of them leaves or is released, once, nobody is promoted into the
    cancelled event, and it ends with nothing."""
    event_id = client.event(capacity=CANCEL_SEATS, has_waitlist=True, prefix="cancel")
    users = _users(local_store, CANCEL_SEATS + CANCEL_WAITING, "cancel")
    for user_id in users:
        assert client.register(event_id, user_id).status == 201
    calls: list[tuple[str, Callable[[], Answer]]] = [
        (u, lambda u=u: client.unregister(event_id, u))  # type: ignore[misc]
        for u in users
    ]
    calls.insert(len(calls) // 4, ("cancel", lambda: client.post(f"/events/{event_id}/cancel")))

    run = _run(calls)

    _no_server_errors(run)
    (cancel,) = [r.answer for r in run.results if r.label == "cancel"]
    assert cancel.status == 202, cancel.raw
    leaving = {r.label: r.answer for r in run.results if r.label != "cancel"}
    outcomes = Counter(f"{a.status} {a.body.get('status') or a.body.get('error')}" for a in leaving.values())
    assert set(outcomes) <= {"200 unregistered", "200 left_waitlist", "404 NotRegistered"}, outcomes

    def settled() -> dict[str, Any]:
        event = client.get(f"/events/{event_id}").body
        assert (event["registeredCount"], event["waitlistCount"]) == (0, 0), event
        return dict(event)

    assert eventually(settled, timeout=120)["status"] == "cancelled"
    partition = event_partition(local_engine.dynamodb_client(), local_engine.table_name, event_id)
    assert invariant_violations(partition) == []
    assert (partition.seats, partition.slots, partition.memberships) == ({}, [], {})
    # Each registrant ended once: by leaving (their own change item) or by the release.
    ended = Counter(
        str(domain_events.parse(str(c[domain_events.DETAIL_ATTRIBUTE])).userId) for c in partition.changes
    )
    assert ended == Counter(users), ended
    # After the cancel was answered, nobody was promoted into the event.
    promoted = [a.body["promoted"] for a in leaving.values() if a.status == 200 and a.body.get("promoted")]
    assert len(promoted) <= CANCEL_WAITING

    figures["cancelDuringUnregistrations"] = run.summary(
        registrants=len(users),
        leftThemselves=sum(1 for a in leaving.values() if a.status == 200),
        releasedByTheCancel=sum(1 for a in leaving.values() if a.status == 404),
    )


# --- a user erases themselves while the others come and go ------------------------------

ERASE_EVENTS, ERASE_SEATS, ERASE_WAITING = 5, 3, 3


def test_an_erasure_racing_unregistrations_and_registrations_keeps_every_event_fair(
    client: Client, local_store: RegistrationStore, local_engine: LocalEngine, figures: dict[str, Any]
) -> None:
    """A user seated at 5 events (3 seats, 3 waiting at each) erases themselves while the
    other seated people leave and newcomers register, 32 in flight: every event keeps its
    invariants and its waitlist order, the erased user holds nothing and is gone, and each
    seat they held went to the head of its waitlist of the moment."""
    erased = _users(local_store, 1, "erased")[0]
    events = [
        client.event(capacity=ERASE_SEATS, has_waitlist=True, prefix="erase") for _ in range(ERASE_EVENTS)
    ]
    others: dict[str, list[str]] = {}
    for event_id in events:
        assert client.register(event_id, erased).status == 201
        others[event_id] = _users(local_store, ERASE_SEATS - 1 + ERASE_WAITING, "stay")
        for user_id in others[event_id]:
            assert client.register(event_id, user_id).status == 201
    newcomers = {event_id: _users(local_store, 2, "new") for event_id in events}
    calls: list[tuple[str, Callable[[], Answer]]] = []
    for event_id in events:
        calls += [
            (f"leave {u}", lambda e=event_id, u=u: client.unregister(e, u))  # type: ignore[misc]
            for u in others[event_id][: ERASE_SEATS - 1]
        ]
        calls += [
            (f"join {u}", lambda e=event_id, u=u: client.register(e, u))  # type: ignore[misc]
            for u in newcomers[event_id]
        ]
    random.Random(7).shuffle(calls)
    me = client.as_caller(erased)
    calls.insert(len(calls) // 3, ("erase", lambda: me.delete(f"/users/{erased}")))

    run = _run(calls)

    _no_server_errors(run)
    (erasing,) = [r.answer for r in run.results if r.label == "erase"]
    assert erasing.status == 202, erasing.raw

    def forgotten() -> None:
        assert local_store._get({"PK": f"USER#{erased}", "SK": "METADATA"}) is None

    eventually(forgotten, timeout=120)
    for event_id in events:
        partition = event_partition(local_engine.dynamodb_client(), local_engine.table_name, event_id)
        assert invariant_violations(partition) == [], event_id
        assert erased not in partition.seats and erased not in partition.memberships
    assert local_store.list_user_registrations(erased).items == []
    # Every freed seat (the erasure's hand-overs among them) went to the head of its
    # waitlist: those waiting from the start are seated in their order, before any
    # newcomer gets a seat, and those still waiting are ahead of every newcomer.
    for event_id in events:
        first_waiting = others[event_id][ERASE_SEATS - 1 :]
        seated = {r.userId for r in local_store.list_registrations(event_id, limit=100).items}
        waiting = [w.userId for w in local_store.list_waitlist(event_id, limit=100).items]
        promoted = [u for u in first_waiting if u in seated]
        assert promoted == first_waiting[: len(promoted)], (event_id, promoted)
        if seated & set(newcomers[event_id]):
            assert promoted == first_waiting, (event_id, seated)
        still = [u for u in first_waiting if u not in seated]
        assert waiting[: len(still)] == still, (event_id, waiting)

    figures["erasureDuringUnregistrations"] = run.summary(events=len(events))
