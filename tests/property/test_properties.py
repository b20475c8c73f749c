"""The seed's properties 1 to 9, each driven through the real workflows on the local engine.

Every example works on fresh ids, so examples share one engine without sharing data.
"""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from registration.data import RegistrationStore
from registration.models import NewEvent, NewUser
from tests.fixtures.workflows import Workflows

ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
ids = st.text(ID_ALPHABET, min_size=1, max_size=40)
# Names and titles are any text but control characters (which the models refuse).
names = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=200).filter(
    lambda s: not s.isspace() and s.strip() != ""
)


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _users(store: RegistrationStore, count: int) -> list[str]:
    user_ids = [_fresh("u") for _ in range(count)]
    for user_id in user_ids:
        store.create_user(NewUser(userId=user_id, name=f"Person {user_id}"))
    return user_ids


def _event(store: RegistrationStore, capacity: int, waitlist: bool) -> str:
    return store.create_event(
        NewEvent(eventId=_fresh("e"), title="Property event", capacity=capacity, hasWaitlist=waitlist)
    ).eventId


def _registered(store: RegistrationStore, event_id: str) -> list[str]:
    return [r.userId for r in store.list_registrations(event_id, limit=100).items]


def _waitlist(store: RegistrationStore, event_id: str) -> list[str]:
    return [w.userId for w in store.list_waitlist(event_id, limit=100).items]


@given(suffix=ids, name=names)
def test_property_1_user_creation_round_trip(store: RegistrationStore, suffix: str, name: str) -> None:
    user_id = f"{uuid.uuid4().hex[:8]}{suffix}"[:64]
    created = store.create_user(NewUser(userId=user_id, name=name))
    fetched = store.get_user(user_id)
    assert fetched == created
    assert (fetched.userId, fetched.name) == (user_id, name)


@given(capacity=st.integers(min_value=0, max_value=1_000_000), waitlist=st.booleans(), title=names)
def test_property_2_event_initialization_invariant(
    store: RegistrationStore, capacity: int, waitlist: bool, title: str
) -> None:
    created = store.create_event(NewEvent(title=title, capacity=capacity, hasWaitlist=waitlist))
    fetched = store.get_event(created.eventId)
    assert (fetched.registeredCount, fetched.waitlistCount) == (0, 0)
    assert (fetched.capacity, fetched.hasWaitlist, fetched.title) == (capacity, waitlist, title)
    assert _waitlist(store, created.eventId) == []
    assert _registered(store, created.eventId) == []


@given(capacity=st.integers(0, 3), arrivals=st.integers(1, 8))
def test_property_3_waitlist_ordering_preservation(
    store: RegistrationStore, workflows: Workflows, capacity: int, arrivals: int
) -> None:
    event_id = _event(store, capacity, waitlist=True)
    users = _users(store, arrivals)
    outcomes = [workflows.register(event_id, u) for u in users]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    expected_waitlist = users[capacity:]
    assert _waitlist(store, event_id) == expected_waitlist
    positions = [o.output["position"] for o in outcomes if o.output and o.output["status"] == "waitlisted"]
    assert positions == list(range(1, len(expected_waitlist) + 1))


operations = st.lists(st.tuples(st.sampled_from(["register", "unregister"]), st.integers(0, 5)), max_size=14)


@given(capacity=st.integers(0, 3), waitlist=st.booleans(), ops=operations)
def test_property_4_registration_count_consistency(
    store: RegistrationStore, workflows: Workflows, capacity: int, waitlist: bool, ops: list[tuple[str, int]]
) -> None:
    event_id = _event(store, capacity, waitlist)
    users = _users(store, 6)
    for op, who in ops:
        run = workflows.register if op == "register" else workflows.unregister
        outcome = run(event_id, users[who])
        assert outcome.ok or outcome.error in {
            "EventFull",
            "AlreadyRegistered",
            "AlreadyWaitlisted",
            "NotRegistered",
        }, outcome
        event = store.get_event(event_id)
        registered = _registered(store, event_id)
        assert event.registeredCount == len(registered) <= capacity
        assert event.waitlistCount == len(_waitlist(store, event_id))


@given(capacity=st.integers(1, 3), waiting=st.integers(1, 4), data=st.data())
def test_property_5_waitlist_promotion_on_unregister(
    store: RegistrationStore, workflows: Workflows, capacity: int, waiting: int, data: st.DataObject
) -> None:
    event_id = _event(store, capacity, waitlist=True)
    users = _users(store, capacity + waiting)
    for u in users:
        assert workflows.register(event_id, u).ok
    leaving = data.draw(st.sampled_from(users[:capacity]))
    head = users[capacity]

    outcome = workflows.unregister(event_id, leaving)

    assert outcome.ok and outcome.output == {
        "eventId": event_id,
        "userId": leaving,
        "status": "unregistered",
        "promoted": head,
    }
    event = store.get_event(event_id)
    assert event.registeredCount == capacity
    assert event.waitlistCount == waiting - 1
    assert head in _registered(store, event_id) and leaving not in _registered(store, event_id)
    assert _waitlist(store, event_id) == users[capacity + 1 :]


@given(waiting=st.integers(1, 6), data=st.data())
def test_property_6_waitlist_removal_preserves_order(
    store: RegistrationStore, workflows: Workflows, waiting: int, data: st.DataObject
) -> None:
    event_id = _event(store, 0, waitlist=True)
    users = _users(store, waiting)
    for u in users:
        assert workflows.register(event_id, u).ok
    leaving = data.draw(st.sampled_from(users))

    outcome = workflows.unregister(event_id, leaving)

    assert outcome.ok and outcome.output is not None
    assert outcome.output["status"] == "left_waitlist" and outcome.output["promoted"] is None
    assert _waitlist(store, event_id) == [u for u in users if u != leaving]
    assert [w.position for w in store.list_waitlist(event_id).items] == list(range(1, waiting))


@given(plan=st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.booleans()), min_size=1, max_size=5))
def test_property_7_user_registrations_query_accuracy(
    store: RegistrationStore, workflows: Workflows, plan: list[tuple[int, bool, bool]]
) -> None:
    """plan: one event per entry, (capacity, has waitlist, does our user register)."""
    (user,) = _users(store, 1)
    expected: dict[str, tuple[str, int | None]] = {}
    for capacity, waitlist, joins in plan:
        event_id = _event(store, capacity, waitlist)
        # Somebody else arrives first, so some events are full by the time our user comes.
        (other,) = _users(store, 1)
        workflows.register(event_id, other)
        if not joins:
            continue
        outcome = workflows.register(event_id, user)
        if outcome.ok and outcome.output is not None:
            expected[event_id] = (outcome.output["status"], outcome.output.get("position"))
        else:
            assert outcome.error == "EventFull"
    listed = store.list_user_registrations(user, limit=100).items
    assert {r.eventId: (r.status, r.position) for r in listed} == expected


@given(capacity=st.integers(1, 5), already=st.integers(0, 4))
def test_property_8_registration_increases_count_by_one(
    store: RegistrationStore, workflows: Workflows, capacity: int, already: int
) -> None:
    already = min(already, capacity - 1)
    event_id = _event(store, capacity, waitlist=False)
    users = _users(store, already + 1)
    for u in users[:already]:
        assert workflows.register(event_id, u).ok
    before = store.get_event(event_id).registeredCount

    outcome = workflows.register(event_id, users[-1])

    assert outcome.ok and outcome.output == {
        "eventId": event_id,
        "userId": users[-1],
        "status": "registered",
        "position": None,
    }
    assert store.get_event(event_id).registeredCount == before + 1
    assert users[-1] in _registered(store, event_id)


@given(capacity=st.integers(1, 5), data=st.data())
def test_property_9_unregistration_decreases_count_by_one(
    store: RegistrationStore, workflows: Workflows, capacity: int, data: st.DataObject
) -> None:
    event_id = _event(store, capacity, waitlist=data.draw(st.booleans()))
    users = _users(store, capacity)
    for u in users:
        assert workflows.register(event_id, u).ok
    leaving = data.draw(st.sampled_from(users))
    before = store.get_event(event_id).registeredCount

    outcome = workflows.unregister(event_id, leaving)

    assert outcome.ok and outcome.output is not None
    assert outcome.output["status"] == "unregistered" and outcome.output["promoted"] is None
    assert store.get_event(event_id).registeredCount == before - 1
    assert leaving not in _registered(store, event_id)
