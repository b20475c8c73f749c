"""Cost stays flat: each operation makes the same DynamoDB calls at 10 and at 1,000 registrants.

On DynamoDB Local: seeding a thousand registrants through the data layer's transactions
is quick there (moto copies the table on every transaction).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

from registration.data import RegistrationStore
from registration.data.dynamo import now_iso
from registration.models import NewEvent, NewUser
from tests.fixtures.workflows import Outcome, Workflows


@contextmanager
def counted_calls(store: RegistrationStore) -> Iterator[Counter[str]]:
    """Counts every DynamoDB API call the task handlers make (botocore event hook)."""
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    events = store.client.meta.events
    events.register("before-call.dynamodb", count)
    try:
        yield calls
    finally:
        events.unregister("before-call.dynamodb", count)


def _event_with(store: RegistrationStore, registered: int, waiting: int) -> tuple[str, list[str], list[str]]:
    """An event with `registered` seats taken and `waiting` people queued, built with the
    data layer's own transactions (the same writes the workflows make)."""
    event_id = f"cost-{uuid.uuid4().hex[:10]}"
    store.create_event(NewEvent(eventId=event_id, title="Cost", capacity=registered, hasWaitlist=True))
    seated = [f"s{n}-{event_id}" for n in range(registered)]
    queued = [f"w{n}-{event_id}" for n in range(waiting)]
    _seat_all(store, event_id, seated)
    event = store.get_event(event_id)
    for user in queued:
        store.join_waitlist(event, user, f"seed-{user}", now_iso())
        event = event.model_copy(
            update={"waitlistCount": event.waitlistCount + 1, "waitlistSeq": event.waitlistSeq + 1}
        )
    return event_id, seated, queued


def _seat_all(store: RegistrationStore, event_id: str, users: list[str]) -> None:
    def seat(user: str) -> None:
        store.take_seat(event_id, user, f"seed-{user}", now_iso())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(seat, users))


def _new_user(store: RegistrationStore) -> str:
    user_id = f"cost-user-{uuid.uuid4().hex[:10]}"
    store.create_user(NewUser(userId=user_id, name="Cost"))
    return user_id


def _measure(store: RegistrationStore, run: Callable[[], Outcome]) -> Counter[str]:
    with counted_calls(store) as calls:
        outcome = run()
    assert outcome.ok, outcome
    return calls


def _costs(store: RegistrationStore, workflows: Workflows, size: int) -> dict[str, Counter[str]]:
    costs: dict[str, Counter[str]] = {}

    # Register into a free seat: an event with `size` seats taken and one more free.
    event_id = f"cost-{uuid.uuid4().hex[:10]}"
    store.create_event(NewEvent(eventId=event_id, title="Cost", capacity=size + 1))
    _seat_all(store, event_id, [f"s{n}-{event_id}" for n in range(size)])
    newcomer = _new_user(store)
    costs["register"] = _measure(store, lambda: workflows.register(event_id, newcomer))

    # Join a waitlist that already holds `size` people; then leave it again.
    event_id, seated, _queued = _event_with(store, registered=size, waiting=size)
    newcomer = _new_user(store)
    costs["join_waitlist"] = _measure(store, lambda: workflows.register(event_id, newcomer))
    costs["leave_waitlist"] = _measure(store, lambda: workflows.unregister(event_id, newcomer))

    # Unregister a seated user while `size` people wait: the head is promoted.
    costs["unregister_with_promotion"] = _measure(store, lambda: workflows.unregister(event_id, seated[0]))
    return costs


@pytest.mark.integration
def test_operations_cost_the_same_at_10_and_1000_registrants(
    handler_store: RegistrationStore, local_workflows: Workflows
) -> None:
    small = _costs(handler_store, local_workflows, 10)
    large = _costs(handler_store, local_workflows, 1000)
    assert small == large
    # The register path: one batched strongly consistent read and one transaction.
    assert small["register"] == Counter({"BatchGetItem": 1, "TransactWriteItems": 1})
    assert small["unregister_with_promotion"]["TransactWriteItems"] == 1
