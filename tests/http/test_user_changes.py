"""`PATCH /users/{id}` (a user changes their name and email, a merge patch) and
`DELETE /users/{id}` (a user erases themselves), over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.client import ORGANIZERS, Client, eventually, uid

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("http")]


def test_a_user_changes_their_name_and_email_and_a_null_removes_the_email(client: Client) -> None:
    user_id = client.user()
    me = client.as_caller(user_id)

    changed = me.request("PATCH", f"/users/{user_id}", {"name": "Ada King", "email": "ada@example.org"})

    assert changed.status == 200, changed.raw
    assert (changed.body["name"], changed.body["email"]) == ("Ada King", "ada@example.org")
    assert me.get(f"/users/{user_id}").body == changed.body
    removed = me.request("PATCH", f"/users/{user_id}", {"email": None})
    assert removed.body["email"] is None and removed.body["name"] == "Ada King"
    assert me.request("PATCH", f"/users/{user_id}", {}).body == removed.body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"email": "not an address"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"email": 7}, "email"),
        ({"userId": "someone-else"}, "userId"),
    ],
)
def test_an_impossible_change_is_a_422_and_changes_nothing(
    client: Client, body: dict[str, object], field: str
) -> None:
    user_id = client.user()
    before = client.get(f"/users/{user_id}").body

    error = client.request("PATCH", f"/users/{user_id}", body).error(422, "ValidationError")

    assert field in str(error), error
    assert client.get(f"/users/{user_id}").body == before


def test_only_the_user_and_admins_change_a_user(client: Client) -> None:
    user_id = client.user()

    client.as_caller(client.user()).request("PATCH", f"/users/{user_id}", {"name": "X"}).error(
        403, "Forbidden"
    )
    client.as_caller(client.user(), ORGANIZERS).request("PATCH", f"/users/{user_id}", {"name": "X"}).error(
        403, "Forbidden"
    )
    client.request("PATCH", f"/users/{uid('nobody')}", {"name": "X"}).error(404, "UserNotFound")
    assert client.request("PATCH", f"/users/{user_id}", {"name": "Renamed"}).body["name"] == "Renamed"


def _event(client: Client, capacity: int, waitlist: bool = True) -> str:
    made = client.post("/events", {"title": "Erasure", "capacity": capacity, "hasWaitlist": waitlist})
    assert made.status == 201, made.raw
    return str(made.body["eventId"])


def _erased(client: Client, user_id: str) -> None:
    """Waits for the erase run to have deleted the user: the id may be created again."""

    def created_again() -> None:
        made = client.post("/users", {"userId": user_id, "name": "Created again"})
        assert made.status == 201, made.raw

    eventually(created_again, timeout=60)


def test_a_user_erases_themselves_their_seat_goes_to_the_head_and_the_id_is_free_again(
    client: Client,
) -> None:
    user_id, head, other = client.user(), client.user(), client.user()
    me = client.as_caller(user_id)
    me.request("PATCH", f"/users/{user_id}", {"email": "gone@example.org"})
    seated, queued = _event(client, capacity=1), _event(client, capacity=1)
    assert me.register(seated, user_id).status == 201
    assert client.register(seated, head).body["status"] == "waitlisted"
    assert client.register(queued, other).status == 201
    assert me.register(queued, user_id).body["status"] == "waitlisted"

    erasing = me.delete(f"/users/{user_id}")

    assert erasing.status == 202, erasing.raw
    assert erasing.body["status"] == "erasing" and erasing.body["userId"] == user_id
    assert erasing.body["execution"].startswith(f"erase-{user_id}-")
    # At once: the user reads as gone, cannot be registered, is not listed.
    me.get(f"/users/{user_id}").error(404, "UserNotFound")
    me.request("PATCH", f"/users/{user_id}", {"name": "Back"}).error(404, "UserNotFound")
    assert user_id not in {u["userId"] for u in client.all_items("/users", limit=100)}
    client.register(_event(client, capacity=5), user_id).error(404, "UserNotFound")
    again = me.delete(f"/users/{user_id}")
    assert again.status == 202 and again.body == erasing.body  # the same run

    _erased(client, user_id)
    assert [r["userId"] for r in client.all_items(f"/events/{seated}/registrations", limit=10)] == [head]
    assert client.all_items(f"/events/{queued}/waitlist", limit=10) == []
    assert client.get(f"/events/{queued}").body["waitlistCount"] == 0
    fresh = client.get(f"/users/{user_id}").body
    assert (fresh["name"], fresh["email"]) == ("Created again", None)
    assert client.get(f"/users/{user_id}/registrations").body["items"] == []


def test_only_the_user_and_admins_erase_a_user(client: Client) -> None:
    user_id = client.user()

    client.as_caller(client.user()).delete(f"/users/{user_id}").error(403, "Forbidden")
    client.as_caller(client.user(), ORGANIZERS).delete(f"/users/{user_id}").error(403, "Forbidden")
    client.delete(f"/users/{uid('nobody')}").error(404, "UserNotFound")
    assert client.get(f"/users/{user_id}").body["userId"] == user_id


@pytest.mark.local_only("reads the local bus's domain events")
def test_each_release_of_an_erasure_is_a_domain_event_saying_so(server: Any, client: Client) -> None:
    from infrastructure.ops.local_backend import LocalBackend

    user_id, head = client.user(), client.user()
    event_id = _event(client, capacity=1)
    assert client.register(event_id, user_id).status == 201
    assert client.register(event_id, head).body["status"] == "waitlisted"
    backend = LocalBackend(server.url)
    _, cursor = backend.domain_events(None, event_id, wait=0)

    erasing = client.delete(f"/users/{user_id}")
    assert erasing.status == 202, erasing.raw
    _erased(client, user_id)

    seen: list[dict[str, Any]] = []
    while len(seen) < 2:
        more, cursor = backend.domain_events(cursor, event_id, wait=10)
        assert more, "the erasure's changes did not reach the bus"
        seen += [e for e in more if e["detail"].get("requestId") == erasing.header("X-Request-Id")]
    assert sorted((e["detail-type"], e["detail"]["userId"], e["detail"].get("reason")) for e in seen) == [
        ("registration.promoted", head, "unregistration"),
        ("registration.unregistered", user_id, "user_erased"),
    ]
