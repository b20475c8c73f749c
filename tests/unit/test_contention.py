"""The write tasks re-decide a lost race on the waitlist's tail or head themselves (moto).

A decision taken on a snapshot that another request has since changed must still end
right: the join lands at the new tail with its true position, the promotion takes the
new head, a retry of a join that had committed reports it instead of refusing it, and
anything that changes the decision itself goes back to the workflow (DecisionStale).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from registration import service
from registration.access import Caller
from registration.data import RegistrationStore
from registration.errors import DecisionStale
from registration.models import (
    NewEvent,
    NewUser,
    RegisterResult,
    RegisterState,
    UnregisterState,
)
from tests.fixtures.tables import moto_store


@pytest.fixture
def store() -> Iterator[RegistrationStore]:
    with moto_store() as s:
        yield s


# The races are under test, not the clock: a loaded machine must not spend a task's
# in-task budget (0.5 s by default) before its first re-decision.
AMPLE_BUDGET_S = 30.0


def _event(store: RegistrationStore, capacity: int, users: str) -> None:
    for u in users:
        store.create_user(NewUser(userId=u, name=f"User {u}"))
    store.create_event(NewEvent(eventId="e", title="Event", capacity=capacity, hasWaitlist=True))


def _register(store: RegistrationStore, user: str, request: str | None = None) -> RegisterResult:
    state = RegisterState(
        eventId="e",
        userId=user,
        caller=Caller(userId=user),
        requestId=request or f"r-{user}",
        event=store.get_event("e"),
    )
    decided = state.model_copy(update={"decision": service.check_capacity(store, state)})
    return service.write_registration(store, decided)


def _stale_register_state(store: RegistrationStore, user: str, request: str) -> RegisterState:
    state = RegisterState(
        eventId="e", userId=user, caller=Caller(userId=user), requestId=request, event=store.get_event("e")
    )
    return state.model_copy(update={"decision": service.check_capacity(store, state)})


def test_a_join_that_lost_the_tail_lands_behind_the_winner(store: RegistrationStore) -> None:
    _event(store, capacity=1, users="abc")
    _register(store, "a")
    late = _stale_register_state(store, "c", "r-c")  # decided: waitlist at position 1
    assert _register(store, "b").position == 1  # b takes that place first

    result = service.write_registration(store, late, budget_s=AMPLE_BUDGET_S)

    assert (result.status, result.position) == ("waitlisted", 2)
    assert [e.userId for e in store.list_waitlist("e").items] == ["b", "c"]
    event = store.get_event("e")
    assert (event.waitlistCount, event.waitlistSeq) == (2, 2)


def test_a_join_out_of_time_gives_the_race_back_to_the_workflow(store: RegistrationStore) -> None:
    """The in-task re-decisions stop at their budget (a share of the function's time)."""
    _event(store, capacity=1, users="abc")
    _register(store, "a")
    late = _stale_register_state(store, "c", "r-c")
    _register(store, "b")

    with pytest.raises(DecisionStale):
        service.write_registration(store, late, budget_s=0)
    assert [e.userId for e in store.list_waitlist("e").items] == ["b"]
    # The budget leaves part of the function's time for the last transaction and the answer.
    assert 0 < service.in_task_budget(1000) < 1.0
    assert service.in_task_budget(0) == 0


def test_a_retried_join_that_had_committed_reports_its_place(store: RegistrationStore) -> None:
    _event(store, capacity=1, users="abc")
    _register(store, "a")
    first_try = _stale_register_state(store, "c", "r-c")
    _register(store, "b")
    service.write_registration(store, first_try, budget_s=AMPLE_BUDGET_S)  # committed at the re-decided tail

    # The task runs again with the same input (its answer was lost).
    again = service.write_registration(store, first_try, budget_s=AMPLE_BUDGET_S)

    assert (again.status, again.position) == ("waitlisted", 2)
    assert store.get_event("e").waitlistCount == 2


def test_a_join_whose_seat_came_free_goes_back_to_the_decision(store: RegistrationStore) -> None:
    _event(store, capacity=1, users="ab")
    _register(store, "a")
    stale = _stale_register_state(store, "b", "r-b")  # waitlist: the only seat is taken
    state = UnregisterState(
        eventId="e", userId="a", caller=Caller(userId="a"), requestId="r-out", event=store.get_event("e")
    )
    decided = state.model_copy(update={"decision": service.check_registration(store, state)})
    service.write_unregistration(store, decided)  # the seat is free, nobody waits

    with pytest.raises(DecisionStale):
        service.write_registration(store, stale)
    assert store.get_event("e").waitlistCount == 0


def test_a_promotion_that_lost_the_head_takes_the_next_one(store: RegistrationStore) -> None:
    _event(store, capacity=2, users="abxyz")
    for u in "abxyz":
        _register(store, u)
    states = []
    for leaving in "ab":
        state = UnregisterState(
            eventId="e",
            userId=leaving,
            caller=Caller(userId=leaving),
            requestId=f"out-{leaving}",
            event=store.get_event("e"),
        )
        states.append(state.model_copy(update={"decision": service.check_registration(store, state)}))
    assert {s.decision.head.userId for s in states if s.decision and s.decision.head} == {"x"}

    first = service.promote_from_waitlist(store, states[0], budget_s=AMPLE_BUDGET_S)
    second = service.promote_from_waitlist(store, states[1], budget_s=AMPLE_BUDGET_S)

    assert (first.promoted, second.promoted) == ("x", "y")
    assert [e.userId for e in store.list_waitlist("e").items] == ["z"]
    assert sorted(r.userId for r in store.list_registrations("e").items) == ["x", "y"]
    event = store.get_event("e")
    assert (event.registeredCount, event.waitlistCount) == (2, 1)


def test_backoffs() -> None:
    assert service.redecide_backoff(1) == 0.0
    assert all(0 <= service.redecide_backoff(n) <= service.REDECIDE_BACKOFF_CAP_S for n in range(2, 40))
    ceilings = [
        max(
            service.TAIL_BACKOFF_FLOOR_S,
            service.TAIL_BACKOFF_FIRST_S * service.TAIL_BACKOFF_DECAY ** (retry - 1),
        )
        for retry in range(1, 60)
    ]
    assert ceilings == sorted(ceilings, reverse=True)  # who has lost longest waits least
    assert all(
        0 <= service.tail_backoff(r, a) <= service.TAIL_BACKOFF_FIRST_S for r in (1, 5) for a in (1, 3)
    )
