"""Every route of the HTTP API, its success and each error it documents, over HTTP.

The server is the local twin of API Gateway: workflow routes run the synthesized state
machines on the local engine, the others call the API Lambda's handler with proxy
events; the database is DynamoDB Local. `make e2e URL=...` runs the same tests against a
deployed stage (see conftest.py).
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.http.client import Client, base_url, eventually, uid

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("http")]

REPO = Path(__file__).resolve().parents[2]
# Page size for walking a whole listing: small pages on a test's own table, larger ones
# on a deployed table, which keeps everything earlier runs created.
WALK_LIMIT = 2 if base_url() is None else 100


# --- users -----------------------------------------------------------------------------


def test_create_user_then_read_it_back(client: Client) -> None:
    user_id = uid("ada")
    created = client.post("/users", {"userId": user_id, "name": "Ada Lovelace"})

    assert created.status == 201
    assert created.header("content-type") == "application/json"
    assert created.body["userId"] == user_id
    assert created.body["name"] == "Ada Lovelace"
    read = client.get(f"/users/{user_id}")
    assert read.status == 200
    assert read.body == created.body


def test_duplicate_user_is_refused_and_the_stored_one_kept(client: Client) -> None:
    user_id = client.user()
    before = client.get(f"/users/{user_id}").body

    client.post("/users", {"userId": user_id, "name": "Someone else"}).error(409, "UserAlreadyExists")
    assert client.get(f"/users/{user_id}").body == before


def test_unknown_user_is_404(client: Client) -> None:
    client.get(f"/users/{uid('nobody')}").error(404, "UserNotFound")


def test_user_at_the_limits_is_accepted(client: Client) -> None:
    user_id = ("x" * 52) + uuid.uuid4().hex[:12]  # 64 characters
    answer = client.post("/users", {"userId": user_id, "name": "n" * 200})
    assert answer.status == 201, answer.raw
    assert client.get(f"/users/{user_id}").body["name"] == "n" * 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "No id"}, "userId"),
        ({"userId": "u-1"}, "name"),
        ({"userId": "", "name": "Empty id"}, "userId"),
        ({"userId": "u-1", "name": ""}, "name"),
        ({"userId": "u-1", "name": "   "}, "name"),
        ({"userId": "x" * 65, "name": "Too long an id"}, "userId"),
        ({"userId": "u-1", "name": "n" * 201}, "name"),
        ({"userId": "has space", "name": "Bad id"}, "userId"),
        ({"userId": 5, "name": "Numeric id"}, "userId"),
        ({"userId": "u-1", "name": ["a list"]}, "name"),
        ({"userId": "u-1", "name": "Extra", "admin": True}, "admin"),
        ([{"userId": "u-1", "name": "In a list"}], "body"),
        ("just a string", "body"),
        (None, "body"),
    ],
)
def test_invalid_users_are_422_with_the_field(client: Client, body: Any, field: str) -> None:
    client.post("/users", body).invalid(field)


def test_malformed_or_missing_body_is_422(client: Client) -> None:
    json_headers = {"Content-Type": "application/json"}
    for raw in ('{"userId": "u-1", "name": ', "{'userId': 'u-1'}", "", "\xff"):
        fields = client.post("/users", body=raw, headers=json_headers).invalid("body")
        assert fields[0]["type"] in ("json_invalid", "missing"), fields


def test_invalid_user_id_in_the_path_is_422(client: Client) -> None:
    client.get("/users/" + "x" * 65).invalid("userId")
    client.get("/users/bad.id").invalid("userId")


def test_users_are_listed_page_by_page(client: Client) -> None:
    mine = {client.user("page") for _ in range(3)}

    def walk() -> list[dict[str, Any]]:
        listed = client.all_items("/users", limit=WALK_LIMIT)
        assert mine <= {u["userId"] for u in listed}
        return listed

    listed = eventually(walk)

    ids = [u["userId"] for u in listed]
    assert len(ids) == len(set(ids)), "a user appeared on two pages"
    assert all(set(u) == {"userId", "name", "createdAt", "email"} for u in listed)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=2.5", "limit"),
        ("nextToken=not-a-token", "nextToken"),
    ],
)
def test_bad_pagination_is_422(client: Client, query: str, field: str) -> None:
    for listing in ("/users", "/events"):
        client.get(f"{listing}?{query}").invalid(field)


def test_a_token_from_another_listing_is_422(client: Client) -> None:
    client.user()
    client.user()
    token = client.get("/users?limit=1").body["nextToken"]
    assert token
    client.get(f"/events?limit=1&nextToken={token}").invalid("nextToken")


# --- events ----------------------------------------------------------------------------


def test_create_event_then_read_it_back(client: Client) -> None:
    event_id = uid("conf")
    created = client.post("/events", {"eventId": event_id, "title": "Conference", "capacity": 3})

    assert created.status == 201
    event = created.body
    assert event["eventId"] == event_id
    assert (event["title"], event["capacity"], event["hasWaitlist"]) == ("Conference", 3, False)
    assert (event["registeredCount"], event["waitlistCount"]) == (0, 0)
    read = client.get(f"/events/{event_id}")
    assert read.status == 200
    assert read.body == event


def test_event_id_is_generated_when_absent(client: Client) -> None:
    created = client.post("/events", {"title": "No id given", "capacity": 0, "hasWaitlist": True})

    assert created.status == 201
    event_id = created.body["eventId"]
    assert 1 <= len(event_id) <= 64
    assert client.get(f"/events/{event_id}").body["hasWaitlist"] is True


def test_capacity_limits_are_accepted(client: Client) -> None:
    for capacity in (0, 1_000_000):
        answer = client.post("/events", {"title": "Limits", "capacity": capacity})
        assert answer.status == 201, answer.raw
        assert answer.body["capacity"] == capacity


def test_duplicate_event_is_refused(client: Client) -> None:
    event_id = client.event(capacity=1)
    client.post("/events", {"eventId": event_id, "title": "Again", "capacity": 9}).error(
        409, "EventAlreadyExists"
    )
    assert client.get(f"/events/{event_id}").body["capacity"] == 1


def test_unknown_event_is_404(client: Client) -> None:
    client.get(f"/events/{uid('nothing')}").error(404, "EventNotFound")


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"title": "T", "capacity": "5"}, ["capacity"]),
        ({"title": "T", "capacity": 5, "hasWaitlist": "yes"}, ["hasWaitlist"]),
        ({"title": "T", "capacity": "5", "hasWaitlist": "yes"}, ["capacity", "hasWaitlist"]),
        ({"title": "T", "capacity": -1}, ["capacity"]),
        ({"title": "T", "capacity": 1_000_001}, ["capacity"]),
        ({"title": "T", "capacity": 2.5}, ["capacity"]),
        ({"title": "T", "capacity": True}, ["capacity"]),
        ({"title": "T"}, ["capacity"]),
        ({"capacity": 5}, ["title"]),
        ({"title": "t" * 201, "capacity": 5}, ["title"]),
        ({"title": "", "capacity": 5}, ["title"]),
        ({"eventId": "e" * 65, "title": "T", "capacity": 5}, ["eventId"]),
        ({"eventId": "a/b", "title": "T", "capacity": 5}, ["eventId"]),
        ({"title": "T", "capacity": 5, "seats": 5}, ["seats"]),
    ],
)
def test_invalid_events_are_422_with_the_fields(
    client: Client, body: dict[str, Any], fields: list[str]
) -> None:
    client.post("/events", body).invalid(*fields)


def test_events_are_listed_page_by_page(client: Client) -> None:
    mine = {client.event(capacity=1, prefix="listed") for _ in range(3)}

    def walk() -> list[dict[str, Any]]:
        listed = client.all_items("/events", limit=WALK_LIMIT)
        assert mine <= {e["eventId"] for e in listed}
        return listed

    listed = eventually(walk)

    ids = [e["eventId"] for e in listed]
    assert len(ids) == len(set(ids))
    assert all({"registeredCount", "waitlistCount", "capacity"} <= set(e) for e in listed)


# --- register / unregister -------------------------------------------------------------


def test_register_takes_a_seat(client: Client) -> None:
    event_id, user_id = client.event(capacity=2), client.user()

    answer = client.register(event_id, user_id)

    assert answer.status == 201, answer.raw
    assert answer.body["eventId"] == event_id
    assert answer.body["userId"] == user_id
    assert answer.body["status"] == "registered"
    request_id = answer.request_id
    assert request_id is not None and uuid.UUID(request_id)
    assert client.get(f"/events/{event_id}").body["registeredCount"] == 1


def test_full_event_without_waitlist_refuses(client: Client) -> None:
    event_id = client.event(capacity=1)
    assert client.register(event_id, client.user()).status == 201

    client.register(event_id, client.user()).error(409, "EventFull")
    assert client.get(f"/events/{event_id}").body["registeredCount"] == 1


def test_zero_capacity_with_waitlist_waitlists_at_once(client: Client) -> None:
    event_id = client.event(capacity=0, has_waitlist=True)

    answer = client.register(event_id, client.user())

    assert answer.status == 201
    assert (answer.body["status"], answer.body["position"]) == ("waitlisted", 1)


def test_full_event_with_waitlist_queues_in_order(client: Client) -> None:
    event_id = client.event(capacity=1, has_waitlist=True)
    assert client.register(event_id, client.user()).body["status"] == "registered"

    first = client.register(event_id, client.user())
    second = client.register(event_id, client.user())

    assert first.status == second.status == 201
    assert (first.body["status"], first.body["position"]) == ("waitlisted", 1)
    assert (second.body["status"], second.body["position"]) == ("waitlisted", 2)


def test_registering_twice_is_refused(client: Client) -> None:
    event_id = client.event(capacity=1, has_waitlist=True)
    seated, waiting = client.user(), client.user()
    client.register(event_id, seated)
    client.register(event_id, waiting)

    client.register(event_id, seated).error(409, "AlreadyRegistered")
    client.register(event_id, waiting).error(409, "AlreadyWaitlisted")


def test_register_unknown_user_or_event_is_404(client: Client) -> None:
    event_id, user_id = client.event(capacity=5), client.user()

    client.register(event_id, uid("ghost")).error(404, "UserNotFound")
    client.register(uid("nowhere"), user_id).error(404, "EventNotFound")
    assert client.get(f"/events/{event_id}").body["registeredCount"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"userId": 5}, "userId"),
        ({}, "userId"),
        ({"userId": ""}, "userId"),
        ({"userId": "u" * 65}, "userId"),
        ({"userId": "a b"}, "userId"),
        ({"userId": "u-1", "extra": 1}, "extra"),
        (["u-1"], "body"),
        (None, "body"),
    ],
)
def test_invalid_register_body_is_422(client: Client, body: Any, field: str) -> None:
    event_id = client.event(capacity=1)
    client.post(f"/events/{event_id}/register", body).invalid(field)


def test_malformed_register_body_is_422(client: Client) -> None:
    event_id = client.event(capacity=1)
    path = f"/events/{event_id}/register"
    json_headers = {"Content-Type": "application/json"}

    client.post(path, body='{"userId": ', headers=json_headers).invalid("body")
    client.post(path, body="", headers=json_headers).invalid("body")
    client.post(path, body=b"\xff\xfe", headers=json_headers).invalid("body")


def test_register_body_must_be_json(client: Client) -> None:
    event_id, user_id = client.event(capacity=1), client.user()
    answer = client.post(
        f"/events/{event_id}/register",
        body=f"userId={user_id}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    answer.error(415, "UnsupportedMediaType")


def test_form_bodies_are_refused_everywhere(client: Client) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    client.post("/users", body="userId=u-1&name=Form", headers=form).error(415, "UnsupportedMediaType")
    client.post("/events", body="title=T&capacity=1", headers=form).error(415, "UnsupportedMediaType")


def test_invalid_event_id_in_a_workflow_path_is_422(client: Client) -> None:
    user_id = client.user()
    # The workflow's first task validates the ids (API Gateway cannot check a pattern).
    client.register("e" * 65, user_id).error(422, "ValidationError")
    client.unregister("bad.id", user_id).error(422, "ValidationError")


def test_unregister_frees_the_seat(client: Client) -> None:
    event_id, user_id = client.event(capacity=1), client.user()
    client.register(event_id, user_id)

    answer = client.unregister(event_id, user_id)

    assert answer.status == 200, answer.raw
    assert answer.body == {"eventId": event_id, "userId": user_id, "status": "unregistered", "promoted": None}
    assert client.get(f"/events/{event_id}").body["registeredCount"] == 0


def test_unregister_someone_not_there_is_404(client: Client) -> None:
    event_id, user_id = client.event(capacity=1), client.user()

    client.unregister(event_id, user_id).error(404, "NotRegistered")
    client.unregister(uid("nowhere"), user_id).error(404, "EventNotFound")


# --- listings --------------------------------------------------------------------------


def test_user_registrations_list_seats_and_places(client: Client) -> None:
    user_id = client.user()
    seat_event = client.event(capacity=5)
    full_event = client.event(capacity=1, has_waitlist=True)
    client.register(full_event, client.user())
    client.register(seat_event, user_id)
    client.register(full_event, user_id)
    client.event(capacity=5)  # never registered for

    def listed() -> dict[str, dict[str, Any]]:
        items = client.all_items(f"/users/{user_id}/registrations", limit=1)
        by_event = {i["eventId"]: i for i in items}
        assert set(by_event) == {seat_event, full_event}, by_event
        return by_event

    by_event = eventually(listed)
    assert by_event[seat_event]["status"] == "registered"
    assert (by_event[full_event]["status"], by_event[full_event]["position"]) == ("waitlisted", 1)


def test_user_registrations_of_unknown_user_is_404(client: Client) -> None:
    client.get(f"/users/{uid('ghost')}/registrations").error(404, "UserNotFound")


def test_event_registrations_and_waitlist(client: Client) -> None:
    event_id = client.event(capacity=2, has_waitlist=True)
    users = [client.user() for _ in range(5)]
    for user_id in users:
        assert client.register(event_id, user_id).status == 201

    seats = client.all_items(f"/events/{event_id}/registrations", limit=1)
    waitlist = client.all_items(f"/events/{event_id}/waitlist", limit=2)

    assert sorted(s["userId"] for s in seats) == sorted(users[:2])
    assert all(s["registeredAt"] for s in seats)
    assert [w["userId"] for w in waitlist] == users[2:]
    assert [w["position"] for w in waitlist] == [1, 2, 3]
    assert all(w["joinedAt"] for w in waitlist)


def test_event_listings_of_unknown_event_are_404(client: Client) -> None:
    missing = uid("nowhere")
    client.get(f"/events/{missing}/registrations").error(404, "EventNotFound")
    client.get(f"/events/{missing}/waitlist").error(404, "EventNotFound")


def test_listing_limits_are_checked(client: Client) -> None:
    event_id = client.event(capacity=1)
    client.get(f"/events/{event_id}/waitlist?limit=0").invalid("limit")
    client.get(f"/events/{event_id}/registrations?limit=500").invalid("limit")
    client.get(f"/events/{event_id}/registrations?nextToken=garbage").invalid("nextToken")


@pytest.mark.local_only("the local server's body limit is 1 MB; API Gateway's is 10 MB")
def test_oversized_body_is_413(client: Client) -> None:
    body = json.dumps({"userId": "big", "name": "n" * (2 * 1024 * 1024)})
    client.post("/users", body=body, headers={"Content-Type": "application/json"}).error(
        413, "PayloadTooLarge"
    )


# --- routing, documents ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nothing-here"),
        ("GET", "/users/u-1/friends"),
        ("GET", "/events/e-1/register"),
        ("PUT", "/users"),
        ("PUT", "/users/u-1"),
        ("PUT", "/events/e-1"),
        ("POST", "/events/e-1/register/u-1"),
        ("OPTIONS", "/users"),
        ("BREW", "/users"),
    ],
)
def test_unknown_routes_and_methods_are_404(client: Client, method: str, path: str) -> None:
    client.request(method, path).error(404, "RouteNotFound")


@pytest.mark.local_only("the local server serves the OpenAPI document; the deployed API has no such route")
def test_openapi_document_is_served_and_matches_the_checked_in_one(client: Client) -> None:
    answer = client.get("/openapi.json")

    assert answer.status == 200
    assert answer.body == json.loads((REPO / "docs" / "openapi.json").read_text(encoding="utf-8"))
    for path, operations in answer.body["paths"].items():
        target = re.sub(r"\{[^}]+\}", "no-such-id", path)
        for method in operations:
            routed = client.request(method.upper(), target, *([{}] if method == "post" else []))
            assert not (routed.status == 404 and routed.body.get("error") == "RouteNotFound"), (method, path)


@pytest.mark.local_only("the local server serves the docs page; the deployed API has no such route")
def test_docs_page_works_offline(client: Client) -> None:
    page = client.get("/docs")

    assert page.status == 200
    html = page.raw.decode()
    assert "/openapi.json" in html
    assert "http://" not in html and "https://" not in html, "the page must not need the internet"
    for asset in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"):
        assert asset in html
        served = client.get(asset)
        assert served.status == 200 and len(served.raw) > 10_000


# --- hostile input ---------------------------------------------------------------------


def test_media_types_are_case_insensitive_on_every_route(client: Client) -> None:
    event_id, user_id = uid("e"), uid("u")
    for content_type, path, body in (
        ("APPLICATION/JSON", "/users", {"userId": user_id, "name": "Upper"}),
        ("Application/Json; charset=UTF-8", "/events", {"eventId": event_id, "title": "T", "capacity": 1}),
        ("APPLICATION/JSON;charset=utf-8", f"/events/{event_id}/register", {"userId": user_id}),
    ):
        answer = client.post(path, body=json.dumps(body), headers={"Content-Type": content_type})
        assert answer.status == 201, (path, answer.raw)


def test_deeply_nested_or_huge_numbers_are_422_on_every_body_route(client: Client) -> None:
    event_id = client.event(capacity=1)
    deep = "[" * 1000 + "]" * 1000
    json_headers = {"Content-Type": "application/json"}
    for path in ("/users", "/events", f"/events/{event_id}/register"):
        client.post(path, body=deep, headers=json_headers).error(422, "ValidationError")
    huge = '{"title": "T", "capacity": ' + "9" * 5000 + "}"
    client.post("/events", body=huge, headers=json_headers).invalid("body")


def test_a_token_of_another_listing_of_the_same_event_is_422(client: Client) -> None:
    event_id = client.event(capacity=1, has_waitlist=True)
    for _ in range(3):
        assert client.register(event_id, client.user()).status == 201
    waitlist = client.get(f"/events/{event_id}/waitlist?limit=1").body["nextToken"]
    assert waitlist
    answer = client.get(f"/events/{event_id}/registrations?nextToken={waitlist}")
    assert answer.invalid("nextToken")[0]["message"] == "nextToken is not a token this listing returned"
    payload, _, mac = waitlist.partition(".")
    client.get(f"/events/{event_id}/waitlist?nextToken={payload[:-2]}.{mac}").invalid("nextToken")
