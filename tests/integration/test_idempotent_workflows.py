"""Keyed executions of both workflows on DynamoDB Local: one run per key, replays answer
as the first run did and change nothing, refusals leave nothing behind."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from infrastructure.local.engine import LocalEngine
from registration.data import RegistrationStore
from tests.fixtures.drift import partition
from tests.fixtures.workflows import ADMIN_CALLER, Outcome, Workflows, new_event, new_users

pytestmark = pytest.mark.integration

TASK_STARTED = "TaskStateEntered"


def _states(engine: LocalEngine, outcome: Outcome) -> list[str]:
    return [
        e["stateEnteredEventDetails"]["name"]
        for e in engine.history(outcome.execution_arn)
        if e["type"].endswith("StateEntered")
    ]


def _same(first: Outcome, again: Outcome) -> bool:
    return (first.status, first.output, first.error, first.cause) == (
        again.status,
        again.output,
        again.error,
        again.cause,
    )


def test_a_replayed_registration_answers_the_same_and_changes_nothing(
    local_engine: LocalEngine, local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    event = new_event(local_store, capacity=1, waitlist=True)
    ada, bob = new_users(local_store, 2)
    key_ada, key_bob = str(uuid.uuid4()), str(uuid.uuid4())

    seated = local_workflows.register(event, ada, idempotency_key=key_ada)
    waitlisted = local_workflows.register(event, bob, idempotency_key=key_bob)
    assert seated.output == {"eventId": event, "userId": ada, "status": "registered", "position": None}
    assert waitlisted.output == {"eventId": event, "userId": bob, "status": "waitlisted", "position": 1}
    table = partition(local_store, event)

    for first, key, user in ((seated, key_ada, ada), (waitlisted, key_bob, bob)):
        again = local_workflows.register(event, user, idempotency_key=key)
        assert _same(first, again), again
        states = _states(local_engine, again)
        assert "ReplayedSuccess" in states and "Validate" not in states, states
    assert partition(local_store, event) == table


def test_a_business_failure_is_replayed_even_after_the_world_changed(
    local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    event = new_event(local_store, capacity=1, waitlist=False)
    ada, bob = new_users(local_store, 2)
    assert local_workflows.register(event, ada).ok
    key = str(uuid.uuid4())

    refused = local_workflows.register(event, bob, idempotency_key=key)
    assert refused.error == "EventFull"
    assert local_workflows.unregister(event, ada).ok  # a seat is free now

    again = local_workflows.register(event, bob, idempotency_key=key)
    assert _same(refused, again), again
    assert local_store.get_event(event).registeredCount == 0
    # A new key is a new request: it takes the free seat.
    assert local_workflows.register(event, bob, idempotency_key=str(uuid.uuid4())).output == {
        "eventId": event,
        "userId": bob,
        "status": "registered",
        "position": None,
    }


def test_a_lost_unregister_answer_is_recovered_by_its_replay(
    local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    """Without a key, a client that lost the answer would now get NotRegistered and never
    learn who was promoted; with one, the retry gets the original answer."""
    event = new_event(local_store, capacity=1, waitlist=True)
    ada, bob = new_users(local_store, 2)
    assert local_workflows.register(event, ada).ok
    assert local_workflows.register(event, bob).ok
    key = str(uuid.uuid4())

    first = local_workflows.unregister(event, ada, idempotency_key=key)
    assert first.output == {"eventId": event, "userId": ada, "status": "unregistered", "promoted": bob}
    table = partition(local_store, event)

    again = local_workflows.unregister(event, ada, idempotency_key=key)
    assert _same(first, again), again
    assert partition(local_store, event) == table
    assert local_workflows.unregister(event, ada).error == "NotRegistered"


def test_a_key_sent_with_another_request_is_refused_and_nothing_is_written(
    local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    event = new_event(local_store, capacity=5, waitlist=True)
    ada, bob = new_users(local_store, 2)
    key = str(uuid.uuid4())
    # A key is its caller's own: one caller, acting for both users, sends it each time.
    assert local_workflows.register(event, ada, idempotency_key=key, caller=ADMIN_CALLER).ok
    table = partition(local_store, event)

    for outcome in (
        local_workflows.register(event, bob, idempotency_key=key, caller=ADMIN_CALLER),
        local_workflows.unregister(event, ada, idempotency_key=key, caller=ADMIN_CALLER),
    ):
        assert outcome.error == "IdempotencyKeyReused", outcome
    assert partition(local_store, event) == table


def test_a_malformed_key_is_a_validation_error_before_anything_runs(
    local_engine: LocalEngine, local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    event = new_event(local_store, capacity=5, waitlist=True)
    (ada,) = new_users(local_store, 1)
    outcome = local_workflows.register(event, ada, idempotency_key="not a key")
    assert outcome.error == "ValidationError"
    assert "Validate" not in _states(local_engine, outcome)
    assert local_store.get_event(event).registeredCount == 0


def test_concurrent_requests_with_one_key_run_once(
    local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    event = new_event(local_store, capacity=1, waitlist=True)
    (ada,) = new_users(local_store, 1)
    key = str(uuid.uuid4())

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(
            pool.map(lambda _: local_workflows.register(event, ada, idempotency_key=key), range(8))
        )

    registered = {"eventId": event, "userId": ada, "status": "registered", "position": None}
    succeeded = [o for o in outcomes if o.ok]
    assert succeeded and all(o.output == registered for o in succeeded), outcomes
    assert all(o.ok or o.error == "RequestInProgress" for o in outcomes), outcomes
    state = local_store.get_event(event)
    assert (state.registeredCount, state.waitlistCount) == (1, 0)
    # Once the first has finished, every retry is a replay.
    assert local_workflows.register(event, ada, idempotency_key=key).output == registered


def test_without_a_key_nothing_is_recorded(
    local_engine: LocalEngine, local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    event = new_event(local_store, capacity=1, waitlist=True)
    (ada,) = new_users(local_store, 1)
    outcome = local_workflows.register(event, ada)
    assert outcome.ok
    states = _states(local_engine, outcome)
    assert not {"ClaimRequest", "RecordSuccess", "RecordFailure"} & set(states), states
