"""Idempotent requests, property-based, through the real workflows: whatever mix of keyed
registrations and unregistrations arrives, a key runs its first request once; sending it
again answers as the first did and changes nothing; sending it with another request is
refused and changes nothing; and the event stays consistent throughout."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from registration.data import RegistrationStore
from registration.models import NewEvent, NewUser
from tests.fixtures.drift import assert_consistent, partition
from tests.fixtures.workflows import ADMIN_CALLER, Outcome, Workflows

requests = st.lists(
    st.tuples(st.sampled_from(["register", "unregister"]), st.integers(0, 3), st.integers(0, 4)),
    min_size=1,
    max_size=12,
)


def _answer(outcome: Outcome) -> tuple[object, ...]:
    return (outcome.status, outcome.output, outcome.error)


# Every example adds to the engine's one table, and moto copies the whole table on each
# transaction: past a few dozen examples each one is slower than the last.
@settings(max_examples=min(settings.default.max_examples, 60))
@given(capacity=st.integers(0, 2), waitlist=st.booleans(), sent=requests)
def test_a_key_runs_its_first_request_once(
    store: RegistrationStore,
    workflows: Workflows,
    capacity: int,
    waitlist: bool,
    sent: list[tuple[str, int, int]],
) -> None:
    tag = uuid.uuid4().hex[:10]
    event = store.create_event(
        NewEvent(eventId=f"e-{tag}", title="Keyed property", capacity=capacity, hasWaitlist=waitlist)
    ).eventId
    users = [f"u{n}-{tag}" for n in range(4)]
    for user in users:
        store.create_user(NewUser(userId=user, name="P"))

    first: dict[int, tuple[tuple[str, int], tuple[object, ...]]] = {}
    for operation, user, key in sent:
        before = partition(store, event)
        run = workflows.register if operation == "register" else workflows.unregister
        # One caller (allowed to act for every user) sends every key: a key is its caller's own.
        outcome = run(event, users[user], idempotency_key=f"{tag}-{key}", caller=ADMIN_CALLER)
        if key not in first:
            first[key] = ((operation, user), _answer(outcome))
            assert outcome.error not in ("IdempotencyKeyReused", "RequestInProgress"), outcome
        elif first[key][0] == (operation, user):
            assert _answer(outcome) == first[key][1]
            assert partition(store, event) == before
        else:
            assert outcome.error == "IdempotencyKeyReused", outcome
            assert partition(store, event) == before
        assert_consistent(store, event)
