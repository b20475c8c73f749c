"""A whole registration story, and many clients at once, over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.http.client import Client, eventually_equal

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("http")]


def test_register_waitlist_unregister_with_promotion_leave_waitlist(client: Client) -> None:
    event_id = client.event(capacity=2, has_waitlist=True)
    ada, bob, cy, dee, eve = (client.user(name) for name in ("ada", "bob", "cy", "dee", "eve"))

    assert [client.register(event_id, u).body["status"] for u in (ada, bob)] == ["registered"] * 2
    queued = [client.register(event_id, u).body for u in (cy, dee, eve)]
    assert [(q["status"], q["position"]) for q in queued] == [("waitlisted", n) for n in (1, 2, 3)]

    # ada leaves: the head of the waitlist (cy) gets her seat.
    left = client.unregister(event_id, ada)
    assert left.status == 200
    assert left.body == {"eventId": event_id, "userId": ada, "status": "unregistered", "promoted": cy}
    event = client.get(f"/events/{event_id}").body
    assert (event["registeredCount"], event["waitlistCount"]) == (2, 2)
    waitlist = client.get(f"/events/{event_id}/waitlist").body["items"]
    assert [(w["userId"], w["position"]) for w in waitlist] == [(dee, 1), (eve, 2)]

    # dee leaves the waitlist: eve moves up, nobody is promoted.
    gone = client.unregister(event_id, dee)
    assert gone.status == 200
    assert gone.body == {"eventId": event_id, "userId": dee, "status": "left_waitlist", "promoted": None}
    waitlist = client.get(f"/events/{event_id}/waitlist").body["items"]
    assert [(w["userId"], w["position"]) for w in waitlist] == [(eve, 1)]

    seats = client.get(f"/events/{event_id}/registrations").body["items"]
    assert sorted(s["userId"] for s in seats) == sorted([bob, cy])

    # A user's registrations come from GSI1, which AWS updates eventually.
    def registrations(user_id: str) -> Callable[[], Any]:
        return lambda: client.get(f"/users/{user_id}/registrations").body["items"]

    eventually_equal(registrations(cy), [{"eventId": event_id, "status": "registered", "position": None}])
    eventually_equal(registrations(eve), [{"eventId": event_id, "status": "waitlisted", "position": 1}])
    eventually_equal(registrations(ada), [])
    refused = client.unregister(event_id, ada).error(404, "NotRegistered")
    assert refused["message"] == f"User {ada} is neither registered nor waitlisted for event {event_id}"
    event = client.get(f"/events/{event_id}").body
    assert (event["registeredCount"], event["waitlistCount"]) == (2, 1)


def test_parallel_registrations_fill_the_seats_then_the_waitlist(client: Client) -> None:
    event_id = client.event(capacity=5, has_waitlist=True)
    users = [client.user("crowd") for _ in range(20)]

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda u: client.register(event_id, u), users))

    assert [a.status for a in answers] == [201] * 20, [a.raw for a in answers if a.status != 201]
    registered = [a.body for a in answers if a.body["status"] == "registered"]
    waitlisted = [a.body for a in answers if a.body["status"] == "waitlisted"]
    assert len(registered) == 5
    assert sorted(w["position"] for w in waitlisted) == list(range(1, 16))
    event = client.get(f"/events/{event_id}").body
    assert (event["registeredCount"], event["waitlistCount"]) == (5, 15)
    # The listing agrees with what each client was told.
    listed = client.all_items(f"/events/{event_id}/waitlist", limit=100)
    told = {w["userId"]: w["position"] for w in waitlisted}
    assert {w["userId"]: w["position"] for w in listed} == told


def test_parallel_reads_each_get_their_own_answer(client: Client) -> None:
    # The API Lambda's resolver keeps the current request on its class: the server must
    # not let two requests share it.
    users = [client.user("reader") for _ in range(12)]

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda u: client.get(f"/users/{u}"), users * 3))

    assert [a.body["userId"] for a in answers] == users * 3
