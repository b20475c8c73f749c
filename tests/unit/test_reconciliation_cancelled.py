"""Reconciliation as the safety net of cancelling, on moto: a cancelled event that still
holds seats or waitlist places gets its cancel run started (the API marks the event, then
starts the run; a crash in between leaves the mark alone), and nobody is promoted into it.

The cancel workflow here is a state machine in moto's Step Functions that records its
executions without running them, so what reconciliation started is read back from there.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from registration import cancellation, reconciliation, settings
from registration.data import RegistrationStore
from registration.models import NewEvent
from registration.reconciliation import Run
from registration.reconciliation_models import Counters, EventReconciliation
from tests.fixtures.drift import counters, queue, seats, set_fields
from tests.fixtures.registrations import register_new_users
from tests.fixtures.tables import moto_store

RUN = Run("run-1", "2026-01-01T00:00:00.000Z")
REGION = "us-east-1"


@pytest.fixture
def store() -> Iterator[RegistrationStore]:
    with moto_store() as s:
        yield s


@pytest.fixture
def cancel_machine(store: RegistrationStore, monkeypatch: pytest.MonkeyPatch) -> str:
    return _cancel_machine(monkeypatch)


def _cancel_machine(monkeypatch: pytest.MonkeyPatch) -> str:
    """The cancel workflow's ARN, where the functions' settings read it (every test has one,
    so that "nothing was started" is read from Step Functions, not from a missing setting)."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    definition = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    arn = str(
        sfn.create_state_machine(
            name=f"cancel-{uuid.uuid4().hex[:8]}",
            definition=definition,
            roleArn="arn:aws:iam::123456789012:role/unit",
        )["stateMachineArn"]
    )
    monkeypatch.setenv(settings.WORKFLOW_ARNS[cancellation.WORKFLOW], arn)
    return arn


def _executions(arn: str) -> list[dict[str, Any]]:
    """Every execution of the cancel workflow: (name, input)."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    listed = sfn.list_executions(stateMachineArn=arn)["executions"]
    return [
        {
            "name": execution["name"],
            "input": json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"]),
        }
        for execution in listed
    ]


def _event(store: RegistrationStore, capacity: int, event_id: str = "e") -> str:
    return store.create_event(
        NewEvent(eventId=event_id, title="Cancelled", capacity=capacity, hasWaitlist=True)
    ).eventId


def _cancel_without_its_run(store: RegistrationStore, event_id: str = "e") -> None:
    """What `POST /events/{id}/cancel` does before it starts the cancel run: the API
    stopped right after this."""
    assert cancellation.cancel(store, event_id).cancelledAt


def _reconcile(store: RegistrationStore, event_id: str = "e") -> EventReconciliation:
    return reconciliation.reconcile_event(store, event_id, RUN)


def test_a_cancelled_event_still_holding_registrations_gets_its_cancel_run_once(
    store: RegistrationStore, cancel_machine: str
) -> None:
    _event(store, capacity=1)
    register_new_users(store, "e", "a", "b", "c")  # a seated, b and c waiting
    # A seat appears while people wait (raised by hand): an open event would promote b.
    set_fields(store, "e", capacity=3)
    _cancel_without_its_run(store)

    first = _reconcile(store)
    second = _reconcile(store)  # the next scheduled run, the cancel run not done yet

    assert first.cancelReleaseStarted and second.cancelReleaseStarted
    # Nothing to repair, and nobody promoted into a cancelled event: settled at once, not
    # recounted until it looked busy.
    assert (first.outcome, first.promotions, first.repairs) == ("clean", 0, 0)
    assert seats(store, "e") == ["a"] and queue(store, "e") == ["b", "c"]
    assert counters(store, "e") == (1, 2, 2)
    assert {u: store.get_membership("e", u).status for u in "abc"} == {  # type: ignore[union-attr]
        "a": "registered",
        "b": "waitlisted",
        "c": "waitlisted",
    }
    # One run, named for the event, with the run's request id: the second start found it.
    assert _executions(cancel_machine) == [
        {"name": cancellation.execution_name("e"), "input": {"eventId": "e", "requestId": RUN.request_id}}
    ]


def test_what_a_cancelled_event_holds_is_decided_after_the_recount(
    store: RegistrationStore, cancel_machine: str
) -> None:
    # Counters that say nothing is held while a seat is: repaired, then the run is started.
    _event(store, capacity=2, event_id="held")
    register_new_users(store, "held", "a")
    _cancel_without_its_run(store, "held")
    set_fields(store, "held", registeredCount=0)
    # Counters that say something is held while nothing is: repaired, and nothing started.
    _event(store, capacity=2, event_id="empty")
    _cancel_without_its_run(store, "empty")
    set_fields(store, "empty", registeredCount=2)

    held = _reconcile(store, "held")
    empty = _reconcile(store, "empty")

    assert (held.outcome, held.after, held.cancelReleaseStarted) == (
        "repaired",
        Counters(registeredCount=1, waitlistCount=0, waitlistSeq=0),
        True,
    )
    assert (empty.outcome, empty.after, empty.cancelReleaseStarted) == (
        "repaired",
        Counters(registeredCount=0, waitlistCount=0, waitlistSeq=0),
        False,
    )
    assert [e["name"] for e in _executions(cancel_machine)] == [cancellation.execution_name("held")]


def test_a_cancelled_event_with_nothing_left_and_an_open_event_start_nothing(
    store: RegistrationStore, cancel_machine: str
) -> None:
    # Cancelled, and everything released (as the cancel run's groups release it).
    _event(store, capacity=1, event_id="released")
    register_new_users(store, "released", "a", "b")
    _cancel_without_its_run(store, "released")
    entries = store.remaining_registrations("released", 10)
    assert cancellation.release_group(store, "released", entries, "cancel-r") == (2, 0)
    # Open, holding a seat and a waitlist place.
    _event(store, capacity=1, event_id="open")
    register_new_users(store, "open", "c", "d")

    results = [_reconcile(store, "released"), _reconcile(store, "open")]

    assert [(r.outcome, r.cancelReleaseStarted) for r in results] == [("clean", False), ("clean", False)]
    assert counters(store, "released") == (0, 0, 1)
    assert counters(store, "open") == (1, 1, 1)
    assert _executions(cancel_machine) == []


def test_the_reconcile_task_logs_the_cancel_run_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    from handlers import reconcile_event
    from infrastructure.local.lambda_seam import LambdaContext, LocalFunction

    warnings: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        reconcile_event.logger, "warning", lambda message, extra=None, **_: warnings.append((message, extra))
    )
    # A table of its own: the handler's store is cached per table name.
    table = f"handler-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(settings.TABLE_NAME, table)
    with moto_store(table) as store:
        cancel_machine = _cancel_machine(monkeypatch)
        _event(store, capacity=1)
        register_new_users(store, "e", "a", "b")
        _cancel_without_its_run(store)
        context = LambdaContext(LocalFunction("ReconcileEvent", "handlers.reconcile_event.handler"), "req-1")

        output = reconcile_event.handler(
            {"eventId": "e", "runId": "run-9", "startedAt": RUN.started_at}, context
        )
        (started,) = _executions(cancel_machine)

    assert (output["outcome"], output["cancelReleaseStarted"]) == ("clean", True)
    ((message, details),) = warnings
    assert message == "cancelled event still held registrations; started its cancel run"
    assert (details["eventId"], details["execution"]) == ("e", cancellation.execution_name("e"))
    assert started["input"]["requestId"] == Run("run-9", RUN.started_at).request_id
