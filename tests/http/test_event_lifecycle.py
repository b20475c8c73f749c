"""An event's life after it is created, over HTTP: its details and times, the listing by
start, registration windows, and where one person stands.
"""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import pytest

from tests.http.client import ORGANIZERS, Client, eventually, uid

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


# --- changing an event ---------------------------------------------------------------------


def _patch(caller: Client, event_id: str, body: Any, etag: str | None = None) -> Any:
    headers = {"If-Match": etag} if etag is not None else None
    return caller.request("PATCH", f"/events/{event_id}", body, headers=headers)


def _waiting(client: Client, capacity: int, waiting: int) -> tuple[str, list[str], list[str]]:
    """An event whose `capacity` seats are taken and `waiting` more users wait, in order."""
    event_id = _event(client, capacity=capacity)["eventId"]
    seated = [client.user() for _ in range(capacity)]
    queued = [client.user() for _ in range(waiting)]
    for user_id in seated + queued:
        assert client.register(event_id, user_id).status == 201
    return event_id, seated, queued


def test_a_merge_patch_changes_the_fields_sent_and_a_null_removes_one(client: Client) -> None:
    created = _event(client, location="Room 1", description="First draft")
    event_id = created["eventId"]
    read = client.get(f"/events/{event_id}")
    etag = read.header("ETag")
    assert etag

    changed = _patch(
        client,
        event_id,
        {"title": "Renamed", "description": None, "startsAt": "2032-01-01T10:00:00+01:00"},
        etag,
    )

    assert changed.status == 200, changed.raw
    body = changed.body
    assert (body["title"], body["description"], body["location"]) == ("Renamed", None, "Room 1")
    assert body["startsAt"] == "2032-01-01T09:00:00.000Z"
    assert body["promoted"] == []
    assert changed.header("ETag") not in (None, etag)
    again = client.get(f"/events/{event_id}")
    assert again.header("ETag") == changed.header("ETag")
    assert {k: v for k, v in again.body.items()} == {k: v for k, v in body.items() if k != "promoted"}


def test_a_stale_if_match_is_a_412_and_changes_nothing(client: Client) -> None:
    event_id = _event(client)["eventId"]
    first = client.get(f"/events/{event_id}").header("ETag")
    assert _patch(client, event_id, {"title": "One"}, first).status == 200

    stale = _patch(client, event_id, {"title": "Two"}, first)

    stale.error(412, "PreconditionFailed")
    assert client.get(f"/events/{event_id}").body["title"] == "One"
    assert _patch(client, event_id, {"title": "Two"}, "*").status == 200
    _patch(client, event_id, {"title": "Three"}, "not-a-tag").error(422, "ValidationError")


def test_registrations_do_not_make_an_etag_stale(client: Client) -> None:
    event_id = _event(client, capacity=3)["eventId"]
    etag = client.get(f"/events/{event_id}").header("ETag")
    assert client.register(event_id, client.user()).status == 201

    assert client.get(f"/events/{event_id}").header("ETag") == etag
    assert _patch(client, event_id, {"location": "Hall C"}, etag).status == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": None}, "title"),
        ({"capacity": -1}, "capacity"),
        ({"capacity": "9"}, "capacity"),
        ({"eventId": "other"}, "eventId"),
        ({"registeredCount": 0}, "registeredCount"),
        ({"endsAt": "2031-01-01T00:00:00Z"}, "endsAt"),
    ],
)
def test_an_impossible_patch_is_a_422_and_changes_nothing(
    client: Client, body: dict[str, Any], field: str
) -> None:
    created = _event(client)
    event_id = created["eventId"]

    answer = _patch(client, event_id, body)

    error = answer.error(422, "ValidationError")
    assert field in str(error), error
    assert client.get(f"/events/{event_id}").body == created


def test_only_the_organizer_and_admins_change_an_event(client: Client) -> None:
    organizer = client.as_caller(client.user("olga"), ORGANIZERS)
    event_id = _event(organizer)["eventId"]

    _patch(client.as_caller(client.user("rival"), ORGANIZERS), event_id, {"title": "Mine"}).error(
        403, "Forbidden"
    )
    _patch(client.as_caller(client.user()), event_id, {"title": "Mine"}).error(403, "Forbidden")
    _patch(organizer, uid("nowhere"), {"title": "Mine"}).error(404, "EventNotFound")

    assert _patch(organizer, event_id, {"title": "Ours"}).status == 200
    assert client.get(f"/events/{event_id}").body["title"] == "Ours"


def test_added_seats_go_to_the_waitlists_heads_in_order(client: Client) -> None:
    event_id, _, queued = _waiting(client, capacity=2, waiting=5)

    raised = _patch(client, event_id, {"capacity": 5})

    assert raised.status == 200, raised.raw
    assert raised.body["promoted"] == queued[:3]
    assert (raised.body["registeredCount"], raised.body["waitlistCount"]) == (5, 2)
    waiting = [e["userId"] for e in client.all_items(f"/events/{event_id}/waitlist", limit=10)]
    assert waiting == queued[3:]
    assert client.get(f"/events/{event_id}/registrations/{queued[3]}").body["position"] == 1


def test_more_seats_than_one_transaction_holds_seat_the_whole_waitlist(client: Client) -> None:
    event_id, _, queued = _waiting(client, capacity=1, waiting=40)

    raised = _patch(client, event_id, {"capacity": 100})

    assert raised.body["promoted"] == queued
    assert (raised.body["registeredCount"], raised.body["waitlistCount"]) == (41, 0)
    late = client.user()
    assert client.register(event_id, late).body["status"] == "registered"


def test_lowering_capacity_evicts_nobody_and_seats_nobody_until_below_it(client: Client) -> None:
    event_id, seated, queued = _waiting(client, capacity=4, waiting=1)

    lowered = _patch(client, event_id, {"capacity": 2})

    assert lowered.status == 200, lowered.raw
    assert (lowered.body["capacity"], lowered.body["registeredCount"]) == (2, 4)
    for leaving in seated[:2]:  # 4 -> 3 -> 2 seats: none of them is a free seat
        assert client.unregister(event_id, leaving).body["promoted"] is None
    assert client.get(f"/events/{event_id}").body["waitlistCount"] == 1
    assert client.unregister(event_id, seated[2]).body["promoted"] == queued[0]
    event = client.get(f"/events/{event_id}").body
    assert (event["registeredCount"], event["waitlistCount"]) == (2, 0)


def test_the_waitlist_is_turned_off_only_when_nobody_waits(client: Client) -> None:
    event_id, _, queued = _waiting(client, capacity=1, waiting=1)

    _patch(client, event_id, {"hasWaitlist": False}).error(409, "WaitlistNotEmpty")

    assert client.unregister(event_id, queued[0]).status == 200
    assert _patch(client, event_id, {"hasWaitlist": False}).status == 200
    client.register(event_id, client.user()).error(409, "EventFull")
    assert _patch(client, event_id, {"hasWaitlist": True}).status == 200
    assert client.register(event_id, client.user()).body["status"] == "waitlisted"


@pytest.mark.local_only("reads the local bus's domain events")
def test_each_added_seat_is_a_promotion_for_capacity_on_the_bus(server: Any, client: Client) -> None:
    from infrastructure.ops.local_backend import LocalBackend

    event_id, _, queued = _waiting(client, capacity=1, waiting=3)
    backend = LocalBackend(server.url)
    _, cursor = backend.domain_events(None, event_id, wait=0)

    assert _patch(client, event_id, {"capacity": 3}).body["promoted"] == queued[:2]

    seen: list[dict[str, Any]] = []  # the registrations' events may still be on their way
    while len(seen) < 2:
        more, cursor = backend.domain_events(cursor, event_id, wait=10)
        assert more, "no promotion reached the bus"
        seen += [e for e in more if e["detail-type"] == "registration.promoted"]
    assert sorted((e["detail-type"], e["detail"]["userId"], e["detail"]["reason"]) for e in seen) == sorted(
        ("registration.promoted", user_id, "capacity") for user_id in queued[:2]
    )
    assert {e["detail"]["fromPosition"] for e in seen} == {1}


# --- exports -------------------------------------------------------------------------------


def test_an_organizer_exports_every_seat_and_the_whole_waitlist_as_csv(client: Client) -> None:
    organizer = client.as_caller(client.user("olga"), ORGANIZERS)
    event_id = _event(organizer, capacity=3)["eventId"]
    users = [client.user() for _ in range(7)]
    for user_id in users:
        assert client.register(event_id, user_id).status == 201

    seats = organizer.request("GET", f"/events/{event_id}/registrations", headers={"Accept": "text/csv"})
    queue = organizer.request(
        "GET",
        f"/events/{event_id}/waitlist?limit=1",
        headers={"Accept": "text/csv;q=0.9, application/json;q=0.5"},
    )

    assert seats.status == 200, seats.raw
    assert seats.header("Content-Type") == "text/csv; charset=utf-8"
    assert f'filename="{event_id}-registrations.csv"' in (seats.header("Content-Disposition") or "")
    rows = list(csv.reader(io.StringIO(seats.raw.decode())))
    assert rows[0] == ["eventId", "userId", "registeredAt"]
    assert sorted(r[1] for r in rows[1:]) == sorted(users[:3])
    waiting = list(csv.DictReader(io.StringIO(queue.raw.decode())))
    assert [(w["userId"], w["position"]) for w in waiting] == [
        (u, str(n)) for n, u in enumerate(users[3:], 1)
    ]
    # JSON stays the default, and the export follows the listing's rules.
    assert organizer.get(f"/events/{event_id}/waitlist").body["items"][0]["userId"] == users[3]
    client.as_caller(users[0]).request(
        "GET", f"/events/{event_id}/registrations", headers={"Accept": "text/csv"}
    ).error(403, "Forbidden")


# --- cancelling ----------------------------------------------------------------------------


def _released(client: Client, event_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any]:
        event = client.get(f"/events/{event_id}").body
        assert (event["registeredCount"], event["waitlistCount"]) == (0, 0), event
        return dict(event)

    return eventually(check, timeout=60)


def test_a_cancelled_event_takes_nobody_and_releases_every_seat_and_place(client: Client) -> None:
    organizer = client.as_caller(client.user("olga"), ORGANIZERS)
    event_id = _event(organizer, capacity=3)["eventId"]
    users = [client.user() for _ in range(5)]
    for user_id in users:
        assert client.register(event_id, user_id).status == 201

    cancelled = organizer.post(f"/events/{event_id}/cancel")

    assert cancelled.status == 202, cancelled.raw
    assert cancelled.body["status"] == "cancelled"
    assert cancelled.body["execution"] == f"cancel-{event_id}"
    client.register(event_id, client.user()).error(409, "EventCancelled")
    event = _released(client, event_id)
    assert event["status"] == "cancelled" and event["cancelledAt"] == cancelled.body["cancelledAt"]
    assert client.all_items(f"/events/{event_id}/registrations", limit=10) == []
    assert client.all_items(f"/events/{event_id}/waitlist", limit=10) == []
    for user_id in users:
        client.unregister(event_id, user_id).error(404, "NotRegistered")
    again = organizer.post(f"/events/{event_id}/cancel")
    assert again.status == 202 and again.body["cancelledAt"] == cancelled.body["cancelledAt"]
    _patch(organizer, event_id, {"capacity": 9}).error(409, "EventCancelled")


def test_only_the_organizer_and_admins_cancel_an_event(client: Client) -> None:
    organizer = client.as_caller(client.user("olga"), ORGANIZERS)
    event_id = _event(organizer)["eventId"]

    client.as_caller(client.user("rival"), ORGANIZERS).post(f"/events/{event_id}/cancel").error(
        403, "Forbidden"
    )
    client.as_caller(client.user()).post(f"/events/{event_id}/cancel").error(403, "Forbidden")
    organizer.post(f"/events/{uid('nowhere')}/cancel").error(404, "EventNotFound")

    assert client.get(f"/events/{event_id}").body["status"] == "scheduled"


@pytest.mark.local_only("reads the local bus's domain events")
def test_each_released_seat_and_place_is_an_unregistration_for_the_cancellation(
    server: Any, client: Client
) -> None:
    from infrastructure.ops.local_backend import LocalBackend

    event_id, seated, queued = _waiting(client, capacity=2, waiting=2)
    backend = LocalBackend(server.url)
    _, cursor = backend.domain_events(None, event_id, wait=0)

    cancelled = client.post(f"/events/{event_id}/cancel")
    assert cancelled.status == 202, cancelled.raw
    _released(client, event_id)

    ended: list[dict[str, Any]] = []  # the registrations' events may still be on their way
    while len(ended) < 4:
        more, cursor = backend.domain_events(cursor, event_id, wait=10)
        assert more, "not every release reached the bus"
        ended += [e for e in more if e["detail-type"] == "registration.unregistered"]
    assert sorted(e["detail"]["userId"] for e in ended) == sorted(seated + queued)
    assert {e["detail"]["reason"] for e in ended} == {"event_cancelled"}
    assert {e["detail"]["requestId"] for e in ended} == {cancelled.header("X-Request-Id")}
