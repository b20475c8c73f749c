"""The reconcile workflow, synthesized by CDK and run by the local engine, on DynamoDB Local.

Data is built through the register workflow, as users would; drift is then injected
with raw writes. Every test leaves the table consistent, so a whole-table run in a later
test of this module only sees its own drift.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from infrastructure import names
from infrastructure.local.engine import LocalEngine
from registration import cancellation, keys
from registration.data import RegistrationStore
from registration.models import NewEvent, NewUser
from tests.fixtures.drift import (
    assert_consistent,
    counters,
    delete,
    dump,
    membership,
    put,
    queue,
    run_summaries,
    seats,
    set_fields,
    slot,
)
from tests.fixtures.workflows import ReconcileRun, Workflows, follow_reconcile

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 60.0


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _event(store: RegistrationStore, capacity: int, waitlist: bool = True) -> str:
    return store.create_event(
        NewEvent(eventId=_fresh("e"), title="Reconciled", capacity=capacity, hasWaitlist=waitlist)
    ).eventId


def _users(store: RegistrationStore, count: int) -> list[str]:
    users = [_fresh("u") for _ in range(count)]
    for user in users:
        store.create_user(NewUser(userId=user, name="Reconciled"))
    return users


def _register_all(flows: Workflows, event_id: str, users: list[str]) -> None:
    for user in users:
        outcome = flows.register(event_id, user)
        assert outcome.ok, (outcome.error, outcome.cause)


def _start(engine: LocalEngine, **options: Any) -> str:
    return engine.start_execution(names.RECONCILE_WORKFLOW, options, name=_fresh("reconcile"))


def _reconcile(engine: LocalEngine, **options: Any) -> ReconcileRun:
    run = follow_reconcile(engine, _start(engine, **options), timeout=RUN_TIMEOUT_S)
    assert all(part.succeeded for part in run.parts), [(p.name, p.error, p.cause) for p in run.parts]
    return run


def _record(store: RegistrationStore, event_id: str) -> dict[str, Any]:
    (record,) = store.reconciliation_records(event_id)
    return record


def _counts(record: dict[str, Any]) -> dict[str, int]:
    return {k: record[k] for k in ("countRepairs", "waitlistRepairs", "promotions")}


# --- each drift, repaired exactly ----------------------------------------------------------


def test_a_wrong_count_is_repaired(
    local_engine: LocalEngine, local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    event = _event(local_store, capacity=3)
    _register_all(local_workflows, event, _users(local_store, 2))
    set_fields(local_store, event, registeredCount=3)  # looks full, one seat is free

    result = _reconcile(local_engine, eventIds=[event])

    summary = result.output
    assert (summary["events"], summary["repaired"], summary["countRepairs"]) == (1, 1, 1)
    assert summary["repairedEventIds"] == [event]
    assert summary["recorded"] is True
    assert counters(local_store, event) == (2, 0, 0)
    record = _record(local_store, event)
    assert record["before"] == {"registeredCount": 3, "waitlistCount": 0, "waitlistSeq": 0}
    assert record["after"] == {"registeredCount": 2, "waitlistCount": 0, "waitlistSeq": 0}
    assert _counts(record) == {"countRepairs": 1, "waitlistRepairs": 0, "promotions": 0}
    assert record["runId"] == result.name
    assert_consistent(local_store, event)


def test_a_free_seat_with_people_waiting_goes_to_the_head(
    local_engine: LocalEngine, local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    event = _event(local_store, capacity=1)
    first, second, third = _users(local_store, 3)
    _register_all(local_workflows, event, [first, second, third])
    set_fields(local_store, event, capacity=2)  # a seat appears; nobody is promoted

    result = _reconcile(local_engine, eventIds=[event])

    assert result.output["promotions"] == 1
    assert seats(local_store, event) == sorted([first, second])
    assert queue(local_store, event) == [third]
    assert counters(local_store, event) == (2, 1, 2)
    record = _record(local_store, event)
    assert record["promoted"] == [second]
    assert record["before"] == {"registeredCount": 1, "waitlistCount": 2, "waitlistSeq": 2}
    assert record["after"] == {"registeredCount": 2, "waitlistCount": 1, "waitlistSeq": 2}
    assert _counts(record) == {"countRepairs": 0, "waitlistRepairs": 0, "promotions": 1}
    assert_consistent(local_store, event)


def test_an_orphaned_waitlist_counter_is_repaired(
    local_engine: LocalEngine, local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    event = _event(local_store, capacity=1)
    _register_all(local_workflows, event, _users(local_store, 1))
    set_fields(local_store, event, waitlistCount=2)  # nobody waits, the counter says two

    result = _reconcile(local_engine, eventIds=[event])

    assert result.output["countRepairs"] == 1
    assert counters(local_store, event) == (1, 0, 0)
    record = _record(local_store, event)
    assert record["before"] == {"registeredCount": 1, "waitlistCount": 2, "waitlistSeq": 0}
    assert record["after"] == {"registeredCount": 1, "waitlistCount": 0, "waitlistSeq": 0}
    assert_consistent(local_store, event)


def test_orphaned_waitlist_items_are_repaired(
    local_engine: LocalEngine, local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    event = _event(local_store, capacity=1)
    seated, lost_membership, lost_slot, last = _users(local_store, 4)
    _register_all(local_workflows, event, [seated, lost_membership, lost_slot, last])
    delete(local_store, keys.waitlisted_key(event, lost_membership))  # slot 1 without membership
    delete(local_store, keys.queue_key(event, 2))  # membership at 2 without its slot
    put(local_store, slot(event, 9, seated))  # a seat holder also "waiting"
    put(local_store, membership(event, "ghost", 3))  # claims last's place
    set_fields(local_store, event, waitlistCount=1)

    result = _reconcile(local_engine, eventIds=[event])

    assert result.output["waitlistRepairs"] == 4
    assert queue(local_store, event) == [lost_membership, lost_slot, last]  # places kept, in order
    assert seats(local_store, event) == [seated]
    assert local_store.get_membership(event, "ghost") is None
    assert counters(local_store, event) == (1, 3, 9)
    record = _record(local_store, event)
    assert {(a["kind"], a["userId"], a["seq"]) for a in record["actions"]} == {
        ("restore_membership", lost_membership, 1),
        ("restore_slot", lost_slot, 2),
        ("remove_slot", seated, 9),
        ("remove_membership", "ghost", 3),
    }
    assert record["after"] == {"registeredCount": 1, "waitlistCount": 3, "waitlistSeq": 9}
    assert_consistent(local_store, event)
    # The repaired waitlist works: the seat holder leaves, the head gets the seat.
    outcome = local_workflows.unregister(event, seated)
    assert outcome.ok and outcome.output is not None
    assert outcome.output["promoted"] == lost_membership
    assert_consistent(local_store, event)


# --- a cancelled event whose cancel run never started ------------------------------------


def _cancel_runs(engine: LocalEngine, event_id: str) -> list[dict[str, Any]]:
    name = cancellation.execution_name(event_id)
    return [e for e in engine.list_executions(names.CANCEL_WORKFLOW) if e["name"] == name]


def test_a_cancelled_event_whose_cancel_run_never_started_is_released(
    local_engine: LocalEngine, local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    event = _event(local_store, capacity=2)
    _register_all(local_workflows, event, _users(local_store, 4))  # two seated, two waiting
    # What `POST /events/{id}/cancel` does before it starts the cancel run: the API stopped here.
    cancellation.cancel(local_store, event)
    assert _cancel_runs(local_engine, event) == []

    # The reconcile function starts the run itself (its role may, or the twin refuses it).
    result = _reconcile(local_engine, eventIds=[event])

    assert (result.output["events"], result.output["clean"]) == (1, 1)
    (run,) = _cancel_runs(local_engine, event)
    released = local_engine.wait(run["executionArn"], timeout=RUN_TIMEOUT_S)
    assert released.succeeded, (released.error, released.cause)
    assert released.input == {"eventId": event, "requestId": f"reconcile:{result.name}"}
    assert counters(local_store, event)[:2] == (0, 0)
    assert seats(local_store, event) == [] and queue(local_store, event) == []
    assert local_store.get_event(event).status == "cancelled"
    # Nothing is held any more: the next run starts nothing.
    again = _reconcile(local_engine, eventIds=[event])
    assert again.output["clean"] == 1
    assert [r["executionArn"] for r in _cancel_runs(local_engine, event)] == [run["executionArn"]]


# --- a consistent table --------------------------------------------------------------------


def test_a_consistent_table_is_untouched(
    local_engine: LocalEngine, local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    for capacity in (0, 1, 2):
        event = _event(local_store, capacity=capacity)
        _register_all(local_workflows, event, _users(local_store, 3))
    _reconcile(local_engine)  # settles anything a test left behind (none should)
    before = dump(local_store)

    started = time.monotonic()
    result = _reconcile(local_engine, pageSize=2)
    elapsed = time.monotonic() - started

    assert dump(local_store) == before
    summary = result.output
    assert summary["recorded"] is False
    assert (summary["countRepairs"], summary["waitlistRepairs"], summary["promotions"]) == (0, 0, 0)
    assert summary["events"] == summary["clean"] >= 3
    assert summary["pages"] >= 2
    assert elapsed < 20


# --- concurrency ---------------------------------------------------------------------------


def _drifted_events(store: RegistrationStore, flows: Workflows, count: int) -> dict[str, int]:
    """Events with free seats nobody was promoted into and wrong counts; returns how many
    people each must promote."""
    expected: dict[str, int] = {}
    for n in range(count):
        event = _event(store, capacity=1)
        _register_all(flows, event, _users(store, 4))
        set_fields(store, event, capacity=3, registeredCount=n % 2)  # two free seats, maybe a wrong count
        expected[event] = 2
    return expected


def test_two_concurrent_runs_repair_once(
    local_engine: LocalEngine, local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    expected = _drifted_events(local_store, local_workflows, 4)
    ids = list(expected)

    first, second = _start(local_engine, eventIds=ids), _start(local_engine, eventIds=ids)
    results = [follow_reconcile(local_engine, arn, timeout=RUN_TIMEOUT_S) for arn in (first, second)]

    assert all(r.succeeded for r in results), [(r.error, r.cause) for r in results]
    for event in ids:
        assert_consistent(local_store, event)
        assert counters(local_store, event)[:2] == (3, 1)
    # Each free seat was filled once, by one run or the other.
    assert sum(r.output["promotions"] for r in results) == sum(expected.values())
    records = [r for event in ids for r in local_store.reconciliation_records(event)]
    assert sum(r["promotions"] for r in records) == sum(expected.values())
    again = _reconcile(local_engine, eventIds=ids)
    assert again.output["clean"] == len(ids)


def test_a_run_during_live_registrations_keeps_requirement_6(
    local_engine: LocalEngine, local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    busy, quiet = _event(local_store, capacity=8), _event(local_store, capacity=2)
    _register_all(local_workflows, busy, _users(local_store, 3))
    _register_all(local_workflows, quiet, _users(local_store, 4))
    set_fields(local_store, busy, registeredCount=6)  # three seats look taken that are free
    set_fields(local_store, quiet, capacity=3)  # a free seat with two people waiting
    newcomers = _users(local_store, 16)
    stop = threading.Event()
    runs: list[ReconcileRun] = []

    def live(chunk: list[str]) -> None:
        for n, user in enumerate(chunk):
            outcome = local_workflows.register(busy, user)
            assert outcome.ok, (outcome.error, outcome.cause)
            if n % 3 == 2:  # some leave again: seats are taken and freed under the runs
                assert local_workflows.unregister(busy, user).ok

    def reconcile_until_stopped() -> None:
        # Runs back to back while registrations go on; a run that left an event "busy"
        # (it kept changing) is followed by another one.
        while not stop.is_set() or not runs or runs[-1].output["busy"]:
            runs.append(_reconcile(local_engine, eventIds=[busy, quiet]))

    with ThreadPoolExecutor(max_workers=5) as pool:
        reconciler = pool.submit(reconcile_until_stopped)
        workers = [pool.submit(live, newcomers[i::4]) for i in range(4)]
        for worker in workers:
            worker.result()
        stop.set()
        reconciler.result()

    for event in (busy, quiet):
        assert_consistent(local_store, event)
    assert sum(r.output["repaired"] for r in runs) >= 1
    # Nothing the runs did under load left drift behind: one more run changes nothing.
    before = dump(local_store)
    final = _reconcile(local_engine, eventIds=[busy, quiet])
    assert final.output["clean"] == 2, final.output
    assert dump(local_store) == before


def test_an_event_that_cannot_be_reconciled_fails_the_run_but_not_the_others(
    local_engine: LocalEngine, local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    broken, drifted = _event(local_store, capacity=1), _event(local_store, capacity=2)
    _register_all(local_workflows, drifted, _users(local_store, 1))
    set_fields(local_store, drifted, registeredCount=2)
    local_store.client.update_item(  # an event item no task can read
        TableName=local_store.table_name,
        Key={"PK": {"S": keys.event_pk(broken)}, "SK": {"S": keys.METADATA}},
        UpdateExpression="SET #capacity = :text",
        ExpressionAttributeNames={"#capacity": "capacity"},
        ExpressionAttributeValues={":text": {"S": "lots"}},
    )
    try:
        result = follow_reconcile(
            local_engine, _start(local_engine, eventIds=[broken, drifted]), timeout=RUN_TIMEOUT_S
        )
        assert (result.status, result.error) == ("FAILED", "ReconciliationIncomplete")
        assert counters(local_store, drifted) == (1, 0, 0)  # the other event was still repaired
        assert_consistent(local_store, drifted)
        (run,) = [r for r in run_summaries(local_store) if r["runId"] == result.name]
        assert (run["failed"], run["failedEventIds"], run["repairedEventIds"]) == (1, [broken], [drifted])
    finally:
        delete(local_store, keys.event_key(broken))
