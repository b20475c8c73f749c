"""Both workflows, synthesized by CDK and run by the local engine, on DynamoDB Local."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from handlers import write_registration
from infrastructure.local.engine import LocalEngine
from registration.data import RegistrationStore
from tests.fixtures.workflows import Workflows, fresh_id, new_event, new_users

pytestmark = pytest.mark.integration


def test_a_full_story(local_store: RegistrationStore, local_workflows: Workflows) -> None:
    event = new_event(local_store, capacity=1, waitlist=True)
    ada, bob, cy = new_users(local_store, 3)
    flows = local_workflows

    assert flows.register(event, ada).output == {
        "eventId": event,
        "userId": ada,
        "status": "registered",
        "position": None,
    }
    assert flows.register(event, bob).output == {
        "eventId": event,
        "userId": bob,
        "status": "waitlisted",
        "position": 1,
    }
    assert flows.register(event, cy).output == {
        "eventId": event,
        "userId": cy,
        "status": "waitlisted",
        "position": 2,
    }
    assert flows.register(event, ada).error == "AlreadyRegistered"
    assert flows.register(event, bob).error == "AlreadyWaitlisted"
    assert flows.register(event, "nobody").error == "UserNotFound"
    assert flows.register("no-such-event", ada).error == "EventNotFound"
    assert flows.register(event, "not valid!").error == "ValidationError"

    promoted = flows.unregister(event, ada)
    assert promoted.output == {"eventId": event, "userId": ada, "status": "unregistered", "promoted": bob}
    left = flows.unregister(event, cy)
    assert left.output == {"eventId": event, "userId": cy, "status": "left_waitlist", "promoted": None}
    assert flows.unregister(event, cy).error == "NotRegistered"
    assert flows.unregister("no-such-event", cy).error == "EventNotFound"

    state = local_store.get_event(event)
    assert (state.registeredCount, state.waitlistCount) == (1, 0)
    assert [r.userId for r in local_store.list_registrations(event).items] == [bob]


def test_event_full_without_waitlist_writes_nothing(
    local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    event = new_event(local_store, capacity=1, waitlist=False)
    first, second = new_users(local_store, 2)
    assert local_workflows.register(event, first).ok
    refused = local_workflows.register(event, second)
    assert (refused.status, refused.error) == ("FAILED", "EventFull")
    assert local_store.get_membership(event, second) is None
    assert local_store.get_event(event).registeredCount == 1


def test_history_shows_each_task(local_engine: LocalEngine, local_store: RegistrationStore) -> None:
    event = new_event(local_store, capacity=5, waitlist=False)
    (user,) = new_users(local_store, 1)
    outcome = Workflows(local_engine).register(event, user)
    history = local_engine.history(outcome.execution_arn)
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    # Without an Idempotency-Key the workflow runs in `Run`, after a Choice on the key.
    assert entered == [
        "IdempotencyKeyGiven",
        "Run",
        "Validate",
        "CheckCapacity",
        "SeatOrWaitlist",
        "TakeSeat",
        "Registered",
        "Done",
    ]
    kinds = Counter(e["type"] for e in history)
    assert kinds["LambdaFunctionSucceeded"] == 3
    assert kinds["ExecutionSucceeded"] == 1


@pytest.mark.parametrize("waitlist", [True, False])
def test_concurrent_registrations_never_overbook(
    local_store: RegistrationStore, local_workflows: Workflows, waitlist: bool
) -> None:
    capacity, arrivals = 5, 30
    event = new_event(local_store, capacity=capacity, waitlist=waitlist)
    users = new_users(local_store, arrivals)
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda u: local_workflows.register(event, u), users))

    registered = [o for o in outcomes if o.ok and o.output and o.output["status"] == "registered"]
    waitlisted = [o for o in outcomes if o.ok and o.output and o.output["status"] == "waitlisted"]
    refused = [o for o in outcomes if not o.ok]
    assert len(registered) == capacity
    if waitlist:
        assert sorted(o.output["position"] for o in waitlisted if o.output) == list(
            range(1, arrivals - capacity + 1)
        )
        assert not refused
    else:
        assert not waitlisted
        assert {o.error for o in refused} == {"EventFull"} and len(refused) == arrivals - capacity

    state = local_store.get_event(event)
    assert state.registeredCount == len(local_store.list_registrations(event, limit=100).items) == capacity
    assert state.waitlistCount == len(local_store.list_waitlist(event, limit=100).items)


def test_concurrent_unregistrations_promote_in_order(
    local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    capacity = 6
    event = new_event(local_store, capacity=capacity, waitlist=True)
    users = new_users(local_store, capacity * 2)
    for user in users:
        assert local_workflows.register(event, user).ok
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda u: local_workflows.unregister(event, u), users[:capacity]))

    promoted = [o.output["promoted"] for o in outcomes if o.output]
    assert sorted(promoted) == sorted(users[capacity:])
    assert {r.userId for r in local_store.list_registrations(event, limit=100).items} == set(users[capacity:])
    state = local_store.get_event(event)
    assert (state.registeredCount, state.waitlistCount) == (capacity, 0)


def test_a_write_retried_after_it_committed_changes_nothing(
    local_engine: LocalEngine, local_store: RegistrationStore
) -> None:
    """A Lambda that timed out after its transaction committed is retried by the workflow
    with the same input; the retry must answer the same and write nothing more."""
    event_id = new_event(local_store, capacity=1, waitlist=True)
    seated, waiting = new_users(local_store, 2)
    for user in (seated, waiting):
        snapshot = local_store.get_event(event_id)
        seat = snapshot.registeredCount < snapshot.capacity
        state: dict[str, Any] = {
            "eventId": event_id,
            "userId": user,
            "requestId": fresh_id("req"),
            "caller": {"userId": user, "groups": ""},
            "event": snapshot.model_dump(),
            "decision": {
                "action": "seat" if seat else "waitlist",
                "attempt": 1,
                "event": snapshot.model_dump(),
                "decidedAt": "2026-01-01T00:00:00.000Z",
            },
        }
        first = write_registration.handler(state, _Context())
        again = write_registration.handler(state, _Context())
        assert first == again
    after = local_store.get_event(event_id)
    assert (after.registeredCount, after.waitlistCount, after.waitlistSeq) == (1, 1, 1)


class _Context:
    function_name = "WriteRegistration"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:WriteRegistration"
    aws_request_id = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000
