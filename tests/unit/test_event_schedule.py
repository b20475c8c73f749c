"""An event's times: what is accepted, when registering is refused, and what the start
changes for leaving, through the synthesized workflows on the twin's in-memory DynamoDB.

The clock is the decision tasks' own (`now_iso` where they read it), moved past the
start; the writes' conditions get the time the decision took, so they see the same
clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from infrastructure.local.engine import LocalEngine
from registration import reconciliation, service
from registration.data import RegistrationStore
from registration.data.dynamo import now_iso
from registration.errors import DecisionStale
from registration.models import NewEvent
from registration.reconciliation import Run
from tests.fixtures.workflows import Workflows, fresh_id, new_users


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(store: RegistrationStore, capacity: int, **times: str) -> str:
    return store.create_event(
        NewEvent(eventId=fresh_id("sch"), title="Scheduled", capacity=capacity, hasWaitlist=True, **times)
    ).eventId


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[timedelta]]:
    """The decision tasks' and reconciliation's clock, `clock[0]` ahead of the real one."""
    offset = [timedelta(0)]

    def ahead() -> str:
        return (datetime.now(UTC) + offset[0]).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    monkeypatch.setattr(service, "now_iso", ahead)
    monkeypatch.setattr(reconciliation, "now_iso", ahead)
    yield offset


# --- what is accepted --------------------------------------------------------------------


def test_times_are_stored_in_utc_whatever_offset_they_were_sent_with() -> None:
    event = NewEvent(
        title="Keynote",
        capacity=10,
        startsAt="2027-03-01T18:00:00+01:00",
        endsAt="2027-03-01T20:30:00+01:00",
        registrationOpensAt="2027-02-01T09:00:00-05:00",
        registrationClosesAt="2027-03-01T17:00Z",
    )
    assert (event.startsAt, event.endsAt) == ("2027-03-01T17:00:00.000Z", "2027-03-01T19:30:00.000Z")
    assert event.registrationOpensAt == "2027-02-01T14:00:00.000Z"
    assert event.registrationClosesAt == "2027-03-01T17:00:00.000Z"


@pytest.mark.parametrize(
    ("times", "said"),
    [
        ({"startsAt": "2027-03-01T18:00:00"}, "offset"),
        ({"startsAt": "next tuesday"}, "ISO 8601"),
        ({"startsAt": "0001-01-01T00:00:00+01:00"}, "ISO 8601"),
        ({"endsAt": "2027-03-01T18:00:00Z"}, "endsAt needs startsAt"),
        ({"startsAt": "2027-03-01T18:00:00Z", "endsAt": "2027-03-01T18:00:00Z"}, "endsAt must be after"),
        (
            {"registrationOpensAt": "2027-02-02T00:00:00Z", "registrationClosesAt": "2027-02-01T00:00:00Z"},
            "registrationClosesAt must be after registrationOpensAt",
        ),
        (
            {"startsAt": "2027-03-01T18:00:00Z", "registrationOpensAt": "2027-03-01T18:00:00Z"},
            "registrationOpensAt must be before startsAt",
        ),
        (
            {"startsAt": "2027-03-01T18:00:00Z", "registrationClosesAt": "2027-03-01T18:00:01Z"},
            "registrationClosesAt must not be after startsAt",
        ),
    ],
)
def test_times_that_cannot_be_are_refused(times: dict[str, Any], said: str) -> None:
    with pytest.raises(ValidationError, match=said):
        NewEvent(title="Keynote", capacity=10, **times)


# --- when registering is refused ---------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "refusal"),
    [
        ({"registrationOpensAt": _at(timedelta(days=1))}, "RegistrationNotOpen"),
        (
            {"registrationClosesAt": _at(timedelta(seconds=-1)), "startsAt": _at(timedelta(days=1))},
            "RegistrationClosed",
        ),
        ({"startsAt": _at(timedelta(seconds=-1))}, "EventStarted"),
    ],
)
def test_registering_outside_the_window_is_refused_and_writes_nothing(
    engine: LocalEngine,
    store: RegistrationStore,
    workflows: Workflows,
    times: dict[str, str],
    refusal: str,
) -> None:
    event_id = _event(store, 5, **times)
    (user,) = new_users(store, 1)

    outcome = workflows.register(event_id, user)

    assert outcome.error == refusal, outcome
    event = store.get_event(event_id)
    assert (event.registeredCount, event.waitlistCount) == (0, 0)
    assert store.get_membership(event_id, user) is None


def test_the_window_is_decided_by_the_tasks_clock(
    store: RegistrationStore, workflows: Workflows, clock: list[timedelta]
) -> None:
    event_id = _event(store, 5, registrationOpensAt=_at(timedelta(hours=1)))
    first, second = new_users(store, 2)
    assert workflows.register(event_id, first).error == "RegistrationNotOpen"

    clock[0] = timedelta(hours=2)

    assert workflows.register(event_id, second).output == {
        "eventId": event_id,
        "userId": second,
        "status": "registered",
        "position": None,
    }


# --- what the start changes --------------------------------------------------------------


def test_a_seat_freed_after_the_close_goes_to_the_head_of_the_waitlist(
    store: RegistrationStore, workflows: Workflows, clock: list[timedelta]
) -> None:
    event_id = _event(
        store, 1, registrationClosesAt=_at(timedelta(hours=1)), startsAt=_at(timedelta(hours=2))
    )
    seated, waiting = new_users(store, 2)
    assert workflows.register(event_id, seated).ok
    assert workflows.register(event_id, waiting).output["status"] == "waitlisted"  # type: ignore[index]

    clock[0] = timedelta(minutes=90)  # closed, not started
    left = workflows.unregister(event_id, seated)

    assert left.output == {
        "eventId": event_id,
        "userId": seated,
        "status": "unregistered",
        "promoted": waiting,
    }


def test_once_started_a_freed_seat_stays_free_and_nobody_is_promoted(
    store: RegistrationStore, workflows: Workflows, clock: list[timedelta]
) -> None:
    event_id = _event(store, 1, startsAt=_at(timedelta(hours=1)))
    seated, waiting, late = new_users(store, 3)
    assert workflows.register(event_id, seated).ok
    assert workflows.register(event_id, waiting).output["status"] == "waitlisted"  # type: ignore[index]

    clock[0] = timedelta(hours=2)
    left = workflows.unregister(event_id, seated)

    assert left.output == {"eventId": event_id, "userId": seated, "status": "unregistered", "promoted": None}
    event = store.get_event(event_id)
    assert (event.registeredCount, event.waitlistCount) == (0, 1)
    assert store.get_membership(event_id, waiting).status == "waitlisted"  # type: ignore[union-attr]
    assert workflows.register(event_id, late).error == "EventStarted"
    # Leaving the waitlist is still allowed.
    assert workflows.unregister(event_id, waiting).output["status"] == "left_waitlist"  # type: ignore[index]


def test_reconciliation_promotes_nobody_into_a_started_event(
    store: RegistrationStore, workflows: Workflows, clock: list[timedelta]
) -> None:
    event_id = _event(store, 1, startsAt=_at(timedelta(hours=1)))
    seated, waiting = new_users(store, 2)
    assert workflows.register(event_id, seated).ok
    assert workflows.register(event_id, waiting).ok
    clock[0] = timedelta(hours=2)
    assert workflows.unregister(event_id, seated).ok

    result = reconciliation.reconcile_event(store, event_id, Run(fresh_id("run"), now_iso()))

    assert result.promotions == 0
    assert store.get_membership(event_id, waiting).status == "waitlisted"  # type: ignore[union-attr]


def test_a_seat_cannot_be_written_after_the_start_whatever_the_decision_said(
    store: RegistrationStore,
) -> None:
    """The write's own condition: a decision taken before the start, written after it,
    meets a start that has passed and is decided again."""
    event_id = _event(store, 1, startsAt=_at(timedelta(milliseconds=1)))
    (user,) = new_users(store, 1)
    with pytest.raises(DecisionStale):
        store.take_seat(event_id, user, fresh_id("req"), _at(timedelta(seconds=1)))
    assert store.get_event(event_id).registeredCount == 0
