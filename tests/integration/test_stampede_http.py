"""A stampede: far more registrations at once than the local server can serve.

400 registrations, 128 in flight, against a real local server on DynamoDB Local with its
default admission limits (infrastructure.local.admission). Nothing may fail because of
the engine (no 500), nothing may be answered after the integration's time (no 504):
what the server cannot serve in time it sheds at once, 503 `ServiceUnavailable` with
`Retry-After`. The table's invariants hold afterwards.

The suite's engines stretch the twin's time limits `SUITE_TIME_SCALE` times (a loaded
two-core machine runs the handlers several times slower than Lambda), the API's 29 s
included: every answer must come within that stretched limit, and the figures count
those slower than AWS's 29 s. They go to `.local/reliability-stampede.json`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from infrastructure.local.admission import WORKFLOW_LIMITS
from infrastructure.local.dynamodb_local import DynamoDBLocal
from infrastructure.local.engine import LocalEngine
from infrastructure.local.http_server import LocalServer
from registration.data import RegistrationStore
from registration.models import NewUser
from tests.fixtures import engines
from tests.fixtures import figures as figure_files
from tests.fixtures.table_checks import event_partition, invariant_violations, scan_table, table_violations
from tests.http.client import Answer, Client, uid

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("stampede")]

REQUESTS = 400
IN_FLIGHT = 128
SEATS = 60  # per event: one with a waitlist, one without
API_GATEWAY_LIMIT_S = 29.0
TIME_SCALE = engines.SUITE_TIME_SCALE
ANSWER_LIMIT_S = API_GATEWAY_LIMIT_S * TIME_SCALE
# A shed request waits at most the workflow line's wait (stretched as the 29 s are, by
# the server's default); the rest is connecting and the
# server's thread start, with the clients' 128 threads in the same process as the
# server (one interpreter lock): seconds on a loaded machine, stretched like the rest.
SHED_MARGIN_S = 2.0 * TIME_SCALE


@pytest.fixture(scope="module")
def local_engine(dynamodb_local: DynamoDBLocal) -> Iterator[LocalEngine]:
    with engines.dynamodb_local_engine(dynamodb_local, TIME_SCALE) as running:
        yield running


@pytest.fixture(scope="module")
def server(local_engine: LocalEngine) -> Iterator[LocalServer]:
    # The default limits and integration timeout (29 s stretched as the engine is).
    with LocalServer(local_engine, port=0) as running:
        yield running


@dataclass(frozen=True)
class Timed:
    answer: Answer
    seconds: float
    event_id: str
    user_id: str


@dataclass(frozen=True)
class Stampede:
    results: list[Timed]
    seconds: float
    events: dict[str, bool]  # eventId -> has a waitlist

    def statuses(self) -> Counter[str]:
        return Counter(str(r.answer.status) for r in self.results)


def _users(store: RegistrationStore, count: int) -> list[str]:
    ids = [uid("stampede") for _ in range(count)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda u: store.create_user(NewUser(userId=u, name=f"Name of {u}")), ids))
    return ids


@pytest.fixture(scope="module")
def stampede(server: LocalServer, local_engine: LocalEngine) -> Stampede:
    client = Client(server.url, timeout=ANSWER_LIMIT_S + 30).as_admin()
    store = RegistrationStore(local_engine.table_name, local_engine.dynamodb_client())
    waitlisted = client.event(capacity=SEATS, has_waitlist=True, prefix="stampede-w")
    closed = client.event(capacity=SEATS, has_waitlist=False, prefix="stampede-c")
    users = _users(store, REQUESTS)
    calls = [(i, waitlisted if i % 2 else closed, user) for i, user in enumerate(users)]
    start = threading.Barrier(IN_FLIGHT)

    def timed(call: tuple[int, str, str]) -> Timed:
        i, event_id, user_id = call
        if i < IN_FLIGHT:
            start.wait()  # the first 128 arrive together; each next one as one is answered
        started = time.perf_counter()
        answer = client.register(event_id, user_id)
        return Timed(answer, time.perf_counter() - started, event_id, user_id)

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
        results = list(pool.map(timed, calls))
    seconds = time.perf_counter() - began
    run = Stampede(results, seconds, {waitlisted: True, closed: False})
    slowest = max(r.seconds for r in results)
    figure_files.merge(
        "stampede",
        {
            "requests": REQUESTS,
            "in_flight": IN_FLIGHT,
            "statuses": dict(sorted(run.statuses().items())),
            "slowest_s": round(slowest, 2),
            "slowest_503_s": round(max((r.seconds for r in results if r.answer.status == 503), default=0), 2),
            "over_29s": sum(1 for r in results if r.seconds > API_GATEWAY_LIMIT_S),
            "seconds": round(seconds, 1),
            "timeScale": TIME_SCALE,
            "workflowLimits": {
                "inFlight": WORKFLOW_LIMITS.in_flight,
                "waiting": WORKFLOW_LIMITS.waiting,
                "maxWaitS": WORKFLOW_LIMITS.max_wait_s * TIME_SCALE,
            },
            "recordedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return run


def test_no_request_fails_because_of_the_engine_or_waits_past_the_integration_timeout(
    stampede: Stampede,
) -> None:
    failed = [
        (r.answer.status, r.answer.raw[:200]) for r in stampede.results if r.answer.status in (500, 502, 504)
    ]
    assert not failed, (stampede.statuses(), failed[:5])
    assert set(stampede.statuses()) <= {"201", "409", "503"}, stampede.statuses()
    slowest = max(r.seconds for r in stampede.results)
    assert slowest <= ANSWER_LIMIT_S, slowest


def test_what_the_server_cannot_serve_is_shed_early_with_retry_after(stampede: Stampede) -> None:
    shed = [r for r in stampede.results if r.answer.status == 503]
    # 128 in flight against 16 running and 32 waiting: some must be told to retry. How many
    # depends on how fast the admitted ones finish (a slot freed is taken by the next), so
    # the count is not fixed.
    assert shed, stampede.statuses()
    for r in shed:
        r.answer.error(503, "ServiceUnavailable")
        assert r.answer.header("retry-after") == "1", r.answer.headers
        assert r.seconds <= WORKFLOW_LIMITS.max_wait_s * TIME_SCALE + SHED_MARGIN_S, r.seconds
    # Some got in and were served.
    assert sum(1 for r in stampede.results if r.answer.status == 201) >= WORKFLOW_LIMITS.in_flight


def test_the_table_holds_its_invariants_after_the_stampede(
    stampede: Stampede, local_engine: LocalEngine
) -> None:
    client = local_engine.dynamodb_client()
    for event_id, has_waitlist in stampede.events.items():
        partition = event_partition(client, local_engine.table_name, event_id)
        assert invariant_violations(partition) == [], event_id
        answered = [r for r in stampede.results if r.event_id == event_id and r.answer.status == 201]
        registered = {r.user_id for r in answered if r.answer.body["status"] == "registered"}
        waitlisted = {r.user_id for r in answered if r.answer.body["status"] == "waitlisted"}
        # What the table holds is what the clients were told, and nothing shed left a trace.
        assert set(partition.seats) == registered
        assert set(partition.waitlist) == waitlisted
        assert len(partition.seats) <= SEATS
        if not has_waitlist:
            refused = [r for r in stampede.results if r.event_id == event_id and r.answer.status == 409]
            assert all(r.answer.body["error"] == "EventFull" for r in refused)
    assert table_violations(scan_table(client, local_engine.table_name)) == []
