"""Erasing a user through the synthesized erase workflow (the twin's in-memory DynamoDB):
the mark hides the user at once; the run releases every seat (to the waitlist's head)
and place, then deletes the user's idempotency records and the user; the id may then be
created again."""

from __future__ import annotations

import uuid

import pytest

from infrastructure import names
from infrastructure.local.engine import LocalEngine
from registration import domain_events, erasure, idempotency, keys
from registration.data import RegistrationStore
from registration.errors import UserAlreadyExists, UserNotFound
from registration.models import ErasureInput, NewUser
from tests.fixtures.workflows import Workflows, new_event, new_users


def _erase(engine: LocalEngine, store: RegistrationStore, user_id: str) -> tuple[ErasureInput, str]:
    """As `DELETE /users/{id}` does: the mark, then the erase workflow's whole run (no
    registration is in flight here, so it need not settle)."""
    since = erasure.mark(store, user_id)
    run = ErasureInput(
        userId=user_id, requestId=f"erase-{uuid.uuid4().hex}", erasingSince=since, settleSeconds=0
    )
    result = engine.run(
        names.ERASE_WORKFLOW,
        run.model_dump(mode="json"),
        name=erasure.execution_name(user_id, since),
        timeout=60,
    )
    assert result.succeeded, (result.status, result.error, result.cause)
    return run, since


def _changes(store: RegistrationStore, event_id: str, request_id: str) -> list[domain_events.DomainEvent]:
    """The domain events the request's changes of the event carry (seats and change items)."""
    found = []
    for prefix in (keys.REG_PREFIX, keys.CHANGE_PREFIX):
        for item in store.iter_partition(event_id, prefix):
            text = item.get(domain_events.DETAIL_ATTRIBUTE)
            if text and item.get("requestId") == request_id:
                found.append(domain_events.parse(str(text)))
    return sorted(found, key=lambda e: e.type)


def test_the_mark_hides_the_user_removes_their_name_and_refuses_registering_them(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows
) -> None:
    (user,) = new_users(store, 1)
    store.change_user(user, {"email": "someone@example.org"})
    event = new_event(store, capacity=5, waitlist=False)
    since = erasure.mark(store, user)

    with pytest.raises(UserNotFound):
        store.get_user(user)
    with pytest.raises(UserNotFound):
        store.change_user(user, {"name": "Back again"})
    item = store._get(keys.user_key(user))
    assert item is not None and not {"name", "email", "GSI1PK"} & set(item)
    assert user not in {u.userId for u in store.list_users(limit=100).items}
    assert workflows.register(event, user).error == "UserNotFound"
    # The id stays taken until the run has erased it; marking again finds the same erasure.
    with pytest.raises(UserAlreadyExists):
        store.create_user(NewUser(userId=user, name="Too soon"))
    assert erasure.mark(store, user) == since
    with pytest.raises(UserNotFound):
        erasure.mark(store, f"nobody-{uuid.uuid4().hex[:6]}")


def test_the_run_releases_every_seat_and_place_hands_seats_over_and_forgets_the_user(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows
) -> None:
    user, head, seated, waiting = new_users(store, 4)
    handed = new_event(store, capacity=1, waitlist=True)  # the user's seat goes to `head`
    queued = new_event(store, capacity=1, waitlist=True)  # the user waits behind `seated`
    alone = new_event(store, capacity=3, waitlist=False)  # nobody to hand the seat to
    assert workflows.register(handed, user).output["status"] == "registered"  # type: ignore[index]
    assert workflows.register(handed, head).output["status"] == "waitlisted"  # type: ignore[index]
    assert workflows.register(queued, seated).ok and workflows.register(queued, user).ok
    assert workflows.register(queued, waiting).ok
    assert workflows.register(alone, user).ok
    # Requests the user sent with an Idempotency-Key, and one of another caller's.
    assert workflows.register(alone, seated, idempotency_key="theirs").ok
    assert workflows.unregister(alone, user, idempotency_key="k-1").ok
    assert workflows.register(alone, user, idempotency_key="k-2").ok
    assert store.get_request(f"k-1#{user}") is not None

    run, _ = _erase(engine, store, user)

    assert [r.userId for r in store.list_registrations(handed).items] == [head]
    assert store.list_waitlist(handed).items == []
    assert [(w.userId, w.position) for w in store.list_waitlist(queued).items] == [(waiting, 1)]
    assert store.list_registrations(alone).items[0].userId == seated
    counts = {e: store.get_event(e) for e in (handed, queued, alone)}
    assert [(c.registeredCount, c.waitlistCount) for c in counts.values()] == [(1, 0), (1, 1), (1, 0)]
    # Each release says why; the hand-over promotes the head as a leaving user's would.
    handed_over = _changes(store, handed, run.requestId)
    assert [(e.type, e.userId, e.reason) for e in handed_over] == [
        (domain_events.PROMOTED, head, domain_events.BY_UNREGISTRATION),
        (domain_events.UNREGISTERED, user, domain_events.USER_ERASED),
    ]
    assert [(e.type, e.reason) for e in _changes(store, queued, run.requestId)] == [
        (domain_events.LEFT_WAITLIST, domain_events.USER_ERASED)
    ]
    assert [(e.type, e.reason) for e in _changes(store, alone, run.requestId)] == [
        (domain_events.UNREGISTERED, domain_events.USER_ERASED)
    ]
    # Their records and the user are gone; another caller's record is not.
    assert store.get_request(f"k-1#{user}") is None and store.get_request(f"k-2#{user}") is None
    assert store.get_request(f"theirs#{seated}") is not None
    assert store._get(keys.user_key(user)) is None
    assert store.list_user_registrations(user).items == []
    # The id may be created again, and is a new user.
    again = store.create_user(NewUser(userId=user, name="New owner"))
    assert store.get_user(user) == again


def test_the_late_turns_release_what_a_registration_in_flight_at_the_mark_committed(
    engine: LocalEngine, store: RegistrationStore
) -> None:
    """A register execution that read the user before the mark may commit after the first
    turns: the turns after the wait find its seat and release it, under their own request
    id (the first turns' release of the same event is another change)."""
    (user,) = new_users(store, 1)
    event = new_event(store, capacity=2, waitlist=False)
    since = erasure.mark(store, user)
    run = ErasureInput(userId=user, requestId="erase-r", erasingSince=since, settleSeconds=0)
    assert store.take_seat(event, user, "in-flight", "2026-01-01T00:00:00.000Z")  # it had read the user
    first = erasure.release_next(store, run)
    assert (first.found, first.released, first.more) == (1, 1, True)
    assert store.take_seat(event, user, "in-flight-2", "2026-01-01T00:00:01.000Z")  # and again
    late = erasure.release_late(store, run)
    assert (late.found, late.released) == (1, 1)
    assert store.get_membership(event, user) is None and store.get_event(event).registeredCount == 0
    done = erasure.release_late(store, run)
    assert (done.found, done.released, done.more) == (0, 0, False)


def test_a_repeated_forget_step_deletes_nothing_more_and_never_a_user_created_since(
    store: RegistrationStore,
) -> None:
    (user,) = new_users(store, 1)
    idempotency.begin(store, "k", user, "fingerprint", "request-1")
    since = erasure.mark(store, user)
    run = ErasureInput(userId=user, requestId="erase-r", erasingSince=since, settleSeconds=0)
    assert erasure.forget(store, run) == 1
    store.create_user(NewUser(userId=user, name="Created since"))
    assert erasure.forget(store, run) == 0  # a redriven step
    assert store.get_user(user).name == "Created since"


def test_execution_names_fit_step_functions_and_differ_per_erasure() -> None:
    longest = "u" * 64
    first = erasure.execution_name(longest, "2026-12-04T10:00:00.000Z")
    second = erasure.execution_name(longest, "2026-12-04T10:00:00.001Z")
    assert len(first) <= 80 and first != second
    assert first.startswith(f"erase-{longest}-")
