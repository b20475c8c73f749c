"""Who may do what, cell by cell: every route x every kind of caller, over HTTP.

The expected statuses are the table of the sign-in requirement, written out by hand
in `tests.fixtures.ownership_table` (not derived from the code's rules): the user acted on themselves, another user,
the event's organizer, another event's organizer and an admin, plus no token, a forged
one and an expired one. Every cell runs on its own event and its own target user, made
through the API by the people allowed to make them, so no cell depends on another; a
refused cell must also have written nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.fixtures import tokens
from tests.fixtures.ownership_table import CALLERS, EXPECTED
from tests.http.client import ADMINS, ORGANIZERS, Answer, Client, uid

pytestmark = pytest.mark.local_only("signs in any user through the local pool")


@dataclass
class Cell:
    """One cell's world: `target` is the user acted on, `event_id` organized by `olga`."""

    anonymous: Client
    admin: Client
    organizer: Client
    target: str
    event_id: str
    callers: dict[str, Client]
    webhook_id: str | None = None  # the organizer's subscription to the event, when prepared

    def as_(self, caller: str) -> Client:
        return self.callers[caller]


@pytest.fixture(scope="module")
def people(anonymous: Client, client: Client) -> dict[str, str]:
    """The standing cast: another user and two organizers (their users exist too)."""
    cast = {"other": uid("other"), "organizer": uid("olga"), "other_organizer": uid("oscar")}
    for user_id in cast.values():
        assert client.post("/users", {"userId": user_id, "name": user_id}).status == 201
    return cast


def _cell(anonymous: Client, admin: Client, people: dict[str, str], *, prepare: str | None = None) -> Cell:
    organizer = anonymous.as_caller(people["organizer"], ORGANIZERS)
    target = uid("ada")
    assert admin.post("/users", {"userId": target, "name": "Ada"}).status == 201
    event_id = uid("e")
    created = organizer.post(
        "/events", {"eventId": event_id, "title": "T", "capacity": 5, "hasWaitlist": True}
    )
    assert created.status == 201, created.raw
    assert created.body["organizerId"] == people["organizer"]
    webhook_id = None
    if prepare == REGISTERED:
        assert admin.register(event_id, target).status == 201
    elif prepare == SUBSCRIBED:
        made = organizer.post("/webhooks", {"url": RECEIVER, "eventId": event_id})
        assert made.status == 201, made.raw
        webhook_id = str(made.body["webhookId"])
    real_token = anonymous.as_caller(target).token
    assert real_token is not None
    callers = {
        "none": anonymous,
        "forged": Client(anonymous.url, token=tokens.forged(real_token)),
        "expired": Client(anonymous.url, token=tokens.expired(real_token)),
        "self": anonymous.as_caller(target),
        "other": anonymous.as_caller(people["other"]),
        "organizer": organizer,
        "other_organizer": anonymous.as_caller(people["other_organizer"], ORGANIZERS),
        "admin": admin,
    }
    return Cell(anonymous, admin, organizer, target, event_id, callers, webhook_id)


Request = Callable[[Cell, Client], Answer]
# A receiver URL the local stack accepts (nothing needs to listen: no event follows).
RECEIVER = "http://127.0.0.1:9/hook"

# What a cell prepares before the request: the target registered, or the organizer's
# subscription to the event.
REGISTERED, SUBSCRIBED = "registered", "subscribed"
# (name, request, expected status per caller, what the cell prepares)
MATRIX: list[tuple[str, Request, dict[str, int], str | None]] = [
    (
        "POST /users",
        lambda c, k: k.post("/users", {"userId": c.target + "-new", "name": "New"}),
        EXPECTED["POST /users"],
        None,
    ),
    (
        "GET /users/{userId}",
        lambda c, k: k.get(f"/users/{c.target}"),
        EXPECTED["GET /users/{userId}"],
        None,
    ),
    (
        "PATCH /users/{userId}",
        lambda c, k: k.request("PATCH", f"/users/{c.target}", {"email": "someone@example.org"}),
        EXPECTED["PATCH /users/{userId}"],
        None,
    ),
    (
        "DELETE /users/{userId}",
        lambda c, k: k.delete(f"/users/{c.target}"),
        EXPECTED["DELETE /users/{userId}"],
        None,
    ),
    (
        "GET /users/{userId}/registrations",
        lambda c, k: k.get(f"/users/{c.target}/registrations"),
        EXPECTED["GET /users/{userId}/registrations"],
        None,
    ),
    (
        "GET /users",
        lambda c, k: k.get("/users?limit=1"),
        EXPECTED["GET /users"],
        None,
    ),
    (
        "POST /events",
        lambda c, k: k.post("/events", {"title": "New", "capacity": 1}),
        EXPECTED["POST /events"],
        None,
    ),
    (
        "GET /events",
        lambda c, k: k.get("/events?limit=1"),
        EXPECTED["GET /events"],
        None,
    ),
    (
        "GET /events/{eventId}",
        lambda c, k: k.get(f"/events/{c.event_id}"),
        EXPECTED["GET /events/{eventId}"],
        None,
    ),
    (
        "POST /events/{eventId}/register",
        lambda c, k: k.register(c.event_id, c.target),
        EXPECTED["POST /events/{eventId}/register"],
        None,
    ),
    (
        "DELETE /events/{eventId}/register/{userId}",
        lambda c, k: k.unregister(c.event_id, c.target),
        EXPECTED["DELETE /events/{eventId}/register/{userId}"],
        REGISTERED,
    ),
    (
        "GET /events/{eventId}/registrations",
        lambda c, k: k.get(f"/events/{c.event_id}/registrations"),
        EXPECTED["GET /events/{eventId}/registrations"],
        None,
    ),
    (
        "POST /events/{eventId}/cancel",
        lambda c, k: k.post(f"/events/{c.event_id}/cancel"),
        EXPECTED["POST /events/{eventId}/cancel"],
        None,
    ),
    (
        "PATCH /events/{eventId}",
        lambda c, k: k.request("PATCH", f"/events/{c.event_id}", {"location": "Room 2"}),
        EXPECTED["PATCH /events/{eventId}"],
        None,
    ),
    (
        "GET /events/{eventId}/registrations/{userId}",
        lambda c, k: k.get(f"/events/{c.event_id}/registrations/{c.target}"),
        EXPECTED["GET /events/{eventId}/registrations/{userId}"],
        REGISTERED,
    ),
    (
        "GET /events/{eventId}/waitlist",
        lambda c, k: k.get(f"/events/{c.event_id}/waitlist"),
        EXPECTED["GET /events/{eventId}/waitlist"],
        None,
    ),
    (
        "POST /webhooks",
        lambda c, k: k.post("/webhooks", {"url": RECEIVER, "eventId": c.event_id}),
        EXPECTED["POST /webhooks"],
        None,
    ),
    (
        "GET /webhooks",
        lambda c, k: k.get("/webhooks?limit=1"),
        EXPECTED["GET /webhooks"],
        None,
    ),
    (
        "DELETE /webhooks/{webhookId}",
        lambda c, k: k.delete(f"/webhooks/{c.webhook_id}"),
        EXPECTED["DELETE /webhooks/{webhookId}"],
        SUBSCRIBED,
    ),
]


def _world(cell: Cell) -> tuple[object, ...]:
    """What a refused request must leave as it was: the event, the target's places, the
    subscriptions."""
    event = cell.admin.get(f"/events/{cell.event_id}").body
    places = cell.admin.get(f"/users/{cell.target}/registrations").body["items"]
    users_created = cell.admin.get(f"/users/{cell.target}-new").status
    hooks = sorted(w["webhookId"] for w in cell.admin.all_items("/webhooks", 100))
    return event["registeredCount"], event["waitlistCount"], places, users_created, hooks


@pytest.mark.parametrize(("route", "send", "expected", "prepare"), MATRIX, ids=[row[0] for row in MATRIX])
def test_every_caller_gets_the_status_the_table_gives(
    anonymous: Client,
    client: Client,
    people: dict[str, str],
    route: str,
    send: Request,
    expected: dict[str, int],
    prepare: str | None,
) -> None:
    got: dict[str, int] = {}
    for caller in CALLERS:
        cell = _cell(anonymous, client, people, prepare=prepare)
        before = _world(cell)
        answer = send(cell, cell.as_(caller))
        got[caller] = answer.status
        if answer.status == 401:
            answer.error(401, "Unauthorized")
        elif answer.status == 403:
            body = answer.error(403, "Forbidden")
            assert "Only" in body["message"], body
        if answer.status >= 400:
            assert _world(cell) == before, (route, caller)
    assert got == expected, route


def test_a_user_creates_their_own_user_and_no_other(anonymous: Client, client: Client) -> None:
    """The `POST /users` cell for "themselves": the token's user is the body's."""
    newcomer = uid("new")
    as_newcomer = anonymous.as_caller(newcomer)
    assert as_newcomer.post("/users", {"userId": newcomer + "-x", "name": "X"}).error(403, "Forbidden")
    assert as_newcomer.post("/users", {"userId": newcomer, "name": "Me"}).status == 201
    organizer = uid("org")
    assert (
        anonymous.as_caller(organizer, ORGANIZERS).post("/users", {"userId": organizer, "name": "O"}).status
        == 201
    )
    assert client.get(f"/users/{newcomer}-x").status == 404


def test_a_refused_request_does_not_spend_its_idempotency_key(anonymous: Client, client: Client) -> None:
    """A refused keyed request claims nothing: the caller allowed to, sending the same
    key, runs the request (not a replay of the refusal)."""
    user, stranger = uid("ada"), uid("bob")
    for who in (user, stranger):
        assert client.post("/users", {"userId": who, "name": who}).status == 201
    organizer = anonymous.as_caller(uid("olga"), ORGANIZERS)
    event_id = organizer.event(capacity=3)
    # An organizer acting for someone on their own event, with a key: the claim's task
    # reads who organizes the event before it claims the key.
    seated = uid("cyd")
    assert client.post("/users", {"userId": seated, "name": seated}).status == 201
    by_organizer = organizer.post(
        f"/events/{event_id}/register", {"userId": seated}, headers={"Idempotency-Key": uid("key")}
    )
    assert by_organizer.status == 201, by_organizer.raw
    other_event = anonymous.as_caller(uid("oscar"), ORGANIZERS).event(capacity=1)
    not_theirs = organizer.post(
        f"/events/{other_event}/register", {"userId": seated}, headers={"Idempotency-Key": uid("key")}
    )
    not_theirs.error(403, "Forbidden")
    key = {"Idempotency-Key": uid("key")}
    refused = anonymous.as_caller(stranger).post(
        f"/events/{event_id}/register", {"userId": user}, headers=key
    )
    refused.error(403, "Forbidden")
    done = anonymous.as_caller(user).post(f"/events/{event_id}/register", {"userId": user}, headers=key)
    assert done.status == 201, done.raw
    # The same key from another caller is another request, not a replay of this one.
    again = anonymous.as_caller(stranger).post(f"/events/{event_id}/register", {"userId": user}, headers=key)
    again.error(403, "Forbidden")
    admin_key = client.post(f"/events/{event_id}/register", {"userId": stranger}, headers=key)
    assert admin_key.status == 201 and admin_key.body["userId"] == stranger, admin_key.raw
    # Keys on the API function's routes are the caller's too.
    create = {"userId": uid("c"), "name": "C"}
    refused_create = anonymous.as_caller(stranger).post("/users", create, headers=key)
    refused_create.error(403, "Forbidden")
    assert anonymous.as_caller(create["userId"]).post("/users", create, headers=key).status == 201


def test_groups_in_the_body_or_a_header_do_not_make_an_admin(anonymous: Client, client: Client) -> None:
    user = uid("ada")
    assert client.post("/users", {"userId": user, "name": "Ada"}).status == 201
    as_user = anonymous.as_caller(user)
    sneaky = as_user.request(
        "GET", "/users?limit=1", headers={"X-Cognito-Groups": ADMINS, "X-Amzn-Oidc-Data": ADMINS}
    )
    sneaky.error(403, "Forbidden")
    event_id = anonymous.as_caller(uid("olga"), ORGANIZERS).event(capacity=1)
    other = uid("bob")
    assert client.post("/users", {"userId": other, "name": "Bob"}).status == 201
    smuggled = as_user.post(
        f"/events/{event_id}/register",
        body=f'{{"userId": "{other}", "caller": {{"userId": "{other}", "groups": "admins"}}}}',
        headers={"Content-Type": "application/json"},
    )
    # The body's extra field is refused by the request model before anything runs.
    assert smuggled.status in (403, 422), smuggled.raw
    assert client.get(f"/users/{other}/registrations").body["items"] == []
