"""An event's life after it is created, over HTTP: its details and times, the listing by
start, registration windows, and where one person stands.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import pytest

from tests.http.client import ORGANIZERS, Client, uid

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("http")]


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _soon(**delta: float) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


def _event(client: Client, capacity: int = 5, waitlist: bool = True, **details: Any) -> dict[str, Any]:
    answer = client.post(
        "/events",
        {
            "eventId": uid("life"),
            "title": "Lifecycle",
            "capacity": capacity,
            "hasWaitlist": waitlist,
            **details,
        },
    )
    assert answer.status == 201, answer.raw
    return dict(answer.body)


# --- details and times ---------------------------------------------------------------------


def test_an_event_keeps_its_details_and_answers_its_times_in_utc(client: Client) -> None:
    paris = timezone(timedelta(hours=1))
    starts = datetime(2031, 6, 1, 18, 0, tzinfo=paris)
    sent = {
        "description": "Two talks,\nthen drinks.",
        "location": "Salle Pleyel, Paris",
        "startsAt": starts.isoformat(),
        "endsAt": (starts + timedelta(hours=3)).isoformat(),
        "registrationOpensAt": "2031-05-01T09:00:00+02:00",
        "registrationClosesAt": "2031-06-01T12:00:00Z",
    }

    created = _event(client, **sent)

    assert created["description"] == sent["description"]
    assert created["location"] == sent["location"]
    assert created["startsAt"] == "2031-06-01T17:00:00.000Z"
    assert created["endsAt"] == "2031-06-01T20:00:00.000Z"
    assert created["registrationOpensAt"] == "2031-05-01T07:00:00.000Z"
    assert created["registrationClosesAt"] == "2031-06-01T12:00:00.000Z"
    assert client.get(f"/events/{created['eventId']}").body == created


@pytest.mark.parametrize(
    ("details", "said"),
    [
        ({"startsAt": "2031-06-01T18:00:00"}, "offset"),
        ({"startsAt": "2031-06-01T18:00:00Z", "endsAt": "2031-06-01T17:00:00Z"}, "endsAt must be after"),
        (
            {"registrationClosesAt": "2031-06-01T00:00:00Z", "registrationOpensAt": "2031-06-02T00:00:00Z"},
            "after",
        ),
        ({"startsAt": 1780000000}, "string"),
        ({"location": "   "}, "location"),
    ],
)
def test_impossible_details_are_a_422_and_create_nothing(
    client: Client, details: dict[str, Any], said: str
) -> None:
    event_id = uid("bad")
    answer = client.post("/events", {"eventId": event_id, "title": "Bad", "capacity": 1, **details})

    body = answer.error(422, "ValidationError")
    assert said in body["message"]
    client.get(f"/events/{event_id}").error(404, "EventNotFound")


def test_events_are_listed_by_start_and_from_keeps_the_later_ones(client: Client) -> None:
    # Far in the future and in a random stretch of it, so a deployed table's other
    # events seldom fall between; they are filtered out either way.
    base = datetime(2900, 1, 1, tzinfo=UTC) + timedelta(days=random.randrange(30_000))
    starts = [base + timedelta(hours=h) for h in (5, 1, 3, 2, 4)]
    ids = {_event(client, startsAt=_utc(s))["eventId"]: s for s in starts}
    by_start = sorted(ids, key=ids.__getitem__)

    everything = [e["eventId"] for e in client.all_items("/events", limit=2) if e["eventId"] in ids]
    later = [
        e["eventId"]
        for e in client.all_items(f"/events?from={quote(_utc(base + timedelta(hours=3)))}", limit=2)
        if e["eventId"] in ids
    ]

    assert everything == by_start
    assert later == by_start[2:]


def test_a_page_token_resumes_only_the_listing_it_came_from(client: Client) -> None:
    start = datetime(2950, 1, 1, tzinfo=UTC) + timedelta(days=random.randrange(30_000))
    for hours in (1, 2):
        _event(client, startsAt=_utc(start + timedelta(hours=hours)))
    first = client.get(f"/events?limit=1&from={quote(_utc(start))}")
    token = first.body["nextToken"]
    assert token

    unfiltered = client.get(f"/events?limit=1&nextToken={quote(token)}")
    other_from = client.get(
        f"/events?limit=1&from={quote(_utc(start + timedelta(minutes=1)))}&nextToken={quote(token)}"
    )

    unfiltered.error(422, "ValidationError")
    other_from.error(422, "ValidationError")
    client.get("/events?from=tomorrow").error(422, "ValidationError")


# --- registration windows ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("details", "refusal"),
    [
        ({"registrationOpensAt": _utc(_soon(days=30))}, "RegistrationNotOpen"),
        (
            {"registrationClosesAt": _utc(_soon(seconds=-5)), "startsAt": _utc(_soon(days=30))},
            "RegistrationClosed",
        ),
        ({"startsAt": _utc(_soon(seconds=-5))}, "EventStarted"),
    ],
)
def test_registering_outside_the_window_is_a_409_that_says_why(
    client: Client, details: dict[str, str], refusal: str
) -> None:
    event_id = _event(client, **details)["eventId"]
    user_id = client.user()

    client.register(event_id, user_id).error(409, refusal)

    event = client.get(f"/events/{event_id}").body
    assert (event["registeredCount"], event["waitlistCount"]) == (0, 0)
    client.get(f"/events/{event_id}/registrations/{user_id}").error(404, "NotRegistered")


# --- where one person stands ---------------------------------------------------------------


def test_one_persons_seat_or_place_for_them_the_organizer_and_admins(client: Client) -> None:
    organizer_id = client.user("olga")
    organizer = client.as_caller(organizer_id, ORGANIZERS)
    event_id = _event(organizer, capacity=1)["eventId"]
    seated, first, second = (client.user() for _ in range(3))
    for user_id in (seated, first, second):
        assert client.register(event_id, user_id).status == 201

    mine = client.as_caller(second).get(f"/events/{event_id}/registrations/{second}")
    seat = organizer.get(f"/events/{event_id}/registrations/{seated}")
    place = client.get(f"/events/{event_id}/registrations/{first}")

    assert mine.status == 200, mine.raw
    assert mine.body["status"] == "waitlisted" and mine.body["position"] == 2
    assert seat.body["status"] == "registered" and seat.body.get("position") is None
    assert place.body["position"] == 1
    assert seat.body["since"] <= place.body["since"] <= mine.body["since"]
    client.as_caller(first).get(f"/events/{event_id}/registrations/{second}").error(403, "Forbidden")

    assert client.unregister(event_id, seated).body["promoted"] == first
    moved = client.get(f"/events/{event_id}/registrations/{second}").body
    assert moved["position"] == 1
    client.get(f"/events/{event_id}/registrations/{seated}").error(404, "NotRegistered")
    client.get(f"/events/{uid('nowhere')}/registrations/{seated}").error(404, "EventNotFound")
