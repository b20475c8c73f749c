"""`Idempotency-Key` on every POST and DELETE, over HTTP against the local server (or,
for the tests that read no table, the API of `make e2e URL=...`).

A replay gets the first answer (status and body) and leaves the table exactly as it
was; the same key for another request is 422 `IdempotencyKeyReused`; a key whose first
request is still running is 409 `RequestInProgress`. The two workflow routes keep the
key in their executions (ClaimRequest, RecordOutcome), the others in the API Lambda.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from infrastructure.local.engine import LocalEngine
from registration import idempotency, keys
from registration.data import RegistrationStore
from tests.fixtures.table_checks import scan_table
from tests.http.client import ADMIN_CALLER, Answer, Client, eventually, uid

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("http")]

Table = Callable[[], list[dict[str, Any]]]
# What these tests check in the table itself, beyond what the API answers.
READS_THE_TABLE = pytest.mark.local_only("reads the whole table to check what was written")


@pytest.fixture(scope="module")
def table(local_engine: LocalEngine) -> Table:
    """The whole table, read back (this module's requests run one test at a time)."""
    client = local_engine.dynamodb_client()

    def read() -> list[dict[str, Any]]:
        items = scan_table(client, local_engine.table_name)
        return sorted(items, key=lambda item: (str(item["PK"]), str(item["SK"])))

    return read


def new_key() -> str:
    return str(uuid.uuid4())


def with_key(key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", idempotency.HEADER: key}


def register(client: Client, event_id: str, user_id: str, key: str) -> Answer:
    return client.post(f"/events/{event_id}/register", {"userId": user_id}, headers=with_key(key))


def unregister(client: Client, event_id: str, user_id: str, key: str) -> Answer:
    return client.delete(f"/events/{event_id}/register/{user_id}", headers=with_key(key))


def same_answer(replay: Answer, first: Answer) -> None:
    assert (replay.status, replay.body) == (first.status, first.body), (replay.raw, first.raw)
    assert replay.header("content-type") == "application/json"


def idempotency_records(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in items if str(item["PK"]).startswith(keys.IDEMPOTENCY_PREFIX)]


# --- a replay gets the first answer and changes nothing ---------------------------------


@READS_THE_TABLE
def test_create_user_replayed(client: Client, table: Table) -> None:
    key = new_key()
    user_id = uid("ada")
    first = client.post("/users", {"userId": user_id, "name": "Ada"}, headers=with_key(key))
    assert first.status == 201, first.raw
    before, users = table(), client.all_items("/users", 100)

    # Spelled differently (key order, spacing), it is the same request.
    replay = client.post("/users", body=f'{{ "name": "Ada",  "userId": "{user_id}" }}', headers=with_key(key))

    same_answer(replay, first)
    assert table() == before
    assert client.all_items("/users", 100) == users


@READS_THE_TABLE
def test_create_event_without_an_id_replayed_is_the_same_event(client: Client, table: Table) -> None:
    key = new_key()
    body = {"title": "Generated id", "capacity": 2}
    first = client.post("/events", body, headers=with_key(key))
    assert first.status == 201, first.raw
    before, events = table(), client.all_items("/events", 100)

    replay = client.post("/events", body, headers=with_key(key))

    same_answer(replay, first)
    assert table() == before
    assert client.all_items("/events", 100) == events
    assert [e["eventId"] for e in events].count(first.body["eventId"]) == 1


@READS_THE_TABLE
def test_register_replayed(client: Client, table: Table) -> None:
    event_id, user_id = client.event(capacity=2), client.user()
    key = new_key()
    first = register(client, event_id, user_id, key)
    assert (first.status, first.body["status"]) == (201, "registered"), first.raw
    before = table()

    same_answer(register(client, event_id, user_id, key), first)
    assert table() == before
    assert client.get(f"/events/{event_id}").body["registeredCount"] == 1
    # Without the key, the same request runs and is refused: the key is what made it a replay.
    client.register(event_id, user_id).error(409, "AlreadyRegistered")


@READS_THE_TABLE
def test_unregister_replayed_changes_nothing_even_after_the_user_came_back(
    client: Client, table: Table
) -> None:
    event_id, user_id = client.event(capacity=2), client.user()
    assert client.register(event_id, user_id).status == 201
    key = new_key()
    first = unregister(client, event_id, user_id, key)
    assert (first.status, first.body["status"]) == (200, "unregistered"), first.raw
    before = table()

    same_answer(unregister(client, event_id, user_id, key), first)
    assert table() == before

    # The user registers again; the replayed DELETE still only answers as the first did.
    assert client.register(event_id, user_id).status == 201
    seated = client.all_items(f"/events/{event_id}/registrations", 100)
    same_answer(unregister(client, event_id, user_id, key), first)
    assert client.all_items(f"/events/{event_id}/registrations", 100) == seated
    assert [r["userId"] for r in seated] == [user_id]


@READS_THE_TABLE
def test_a_refusal_is_replayed_even_after_the_event_gains_a_seat(client: Client, table: Table) -> None:
    event_id = client.event(capacity=1)
    holder, latecomer = client.user(), client.user()
    assert client.register(event_id, holder).status == 201
    key = new_key()
    first = register(client, event_id, latecomer, key)
    first.error(409, "EventFull")

    assert client.unregister(event_id, holder).status == 200  # a seat is free now
    before = table()

    same_answer(register(client, event_id, latecomer, key), first)
    assert table() == before
    assert client.all_items(f"/events/{event_id}/registrations", 100) == []
    # A new key is a new request, and it gets the seat.
    assert register(client, event_id, latecomer, new_key()).status == 201


def test_every_route_replays_its_first_answer_seen_through_the_api(client: Client) -> None:
    """The replays above, judged by what the API answers and lists (no table read)."""
    event_id, user_id, waiting = client.event(capacity=1, has_waitlist=True), uid("u"), client.user()

    def replayed(request: Callable[[str], Answer], other: Callable[[str], Answer]) -> Answer:
        key = new_key()
        first = request(key)
        assert first.status in (200, 201), first.raw
        same_answer(request(key), first)
        other(key).error(422, "IdempotencyKeyReused")
        same_answer(request(key), first)
        return first

    user = replayed(
        lambda k: client.post("/users", {"userId": user_id, "name": "Ada"}, headers=with_key(k)),
        lambda k: client.post("/users", {"userId": uid("u"), "name": "Ada"}, headers=with_key(k)),
    )
    assert client.get(f"/users/{user_id}").body == user.body
    event = replayed(
        lambda k: client.post("/events", {"title": "Replayed", "capacity": 2}, headers=with_key(k)),
        lambda k: client.post("/events", {"title": "Replayed", "capacity": 3}, headers=with_key(k)),
    )
    assert client.get(f"/events/{event.body['eventId']}").body == event.body

    seated = replayed(
        lambda k: register(client, event_id, user_id, k),
        lambda k: register(client, event_id, waiting, k),
    )
    assert seated.body["status"] == "registered"
    assert client.register(event_id, waiting).body["status"] == "waitlisted"
    left = replayed(
        lambda k: unregister(client, event_id, user_id, k),
        lambda k: unregister(client, event_id, waiting, k),
    )
    assert (left.body["status"], left.body["promoted"]) == ("unregistered", waiting)

    assert [r["userId"] for r in client.all_items(f"/events/{event_id}/registrations", 100)] == [waiting]
    assert client.all_items(f"/events/{event_id}/waitlist", 100) == []
    assert client.get(f"/events/{event_id}").body["registeredCount"] == 1


# --- the same key for a different request -----------------------------------------------


@READS_THE_TABLE
def test_the_same_key_for_a_different_request_is_refused(client: Client, table: Table) -> None:
    event_id, other_event = client.event(capacity=5), client.event(capacity=5)
    user_id, other_user = client.user(), client.user()
    assert client.register(event_id, other_user).status == 201

    cases: list[tuple[Callable[[str], Answer], Callable[[str], Answer]]] = [
        (
            lambda k: client.post("/users", {"userId": uid("u"), "name": "A"}, headers=with_key(k)),
            lambda k: client.post("/users", {"userId": uid("u"), "name": "B"}, headers=with_key(k)),
        ),
        (
            lambda k: client.post("/events", {"title": "A", "capacity": 1}, headers=with_key(k)),
            lambda k: client.post("/events", {"title": "A", "capacity": 2}, headers=with_key(k)),
        ),
        (
            lambda k: register(client, event_id, user_id, k),
            lambda k: register(client, other_event, user_id, k),
        ),
        (
            lambda k: unregister(client, event_id, other_user, k),
            lambda k: unregister(client, event_id, user_id, k),
        ),
        # One key, two routes: a workflow's key is no API Lambda key, and back.
        (
            lambda k: register(client, other_event, other_user, k),
            lambda k: client.post("/users", {"userId": uid("u"), "name": "C"}, headers=with_key(k)),
        ),
        (
            lambda k: client.post("/users", {"userId": uid("u"), "name": "D"}, headers=with_key(k)),
            lambda k: unregister(client, other_event, other_user, k),
        ),
    ]
    for index, (first_request, other_request) in enumerate(cases):
        key = new_key()
        first = first_request(key)
        assert first.status in (200, 201), (index, first.raw)
        before = table()

        other_request(key).error(422, "IdempotencyKeyReused")

        assert table() == before, index


# --- a key whose first request is still running ------------------------------------------


@pytest.mark.local_only("claims a key in the table directly, as a first request still running would")
def test_a_key_whose_first_request_is_in_progress_is_409(
    client: Client, table: Table, local_store: RegistrationStore
) -> None:
    event_id, user_id = client.event(capacity=5), client.user()
    seated = client.user()
    assert client.register(event_id, seated).status == 201
    new_user = {"userId": uid("u"), "name": "In progress"}
    new_event = {"title": "In progress", "capacity": 1}
    cases: list[tuple[str, Callable[[str], Answer]]] = [
        (
            idempotency.request_fingerprint("POST", "/users", None, json.dumps(new_user)),
            lambda k: client.post("/users", new_user, headers=with_key(k)),
        ),
        (
            idempotency.request_fingerprint("POST", "/events", None, json.dumps(new_event)),
            lambda k: client.post("/events", new_event, headers=with_key(k)),
        ),
        (
            idempotency.workflow_fingerprint("register", event_id, user_id),
            lambda k: register(client, event_id, user_id, k),
        ),
        (
            idempotency.workflow_fingerprint("unregister", event_id, seated),
            lambda k: unregister(client, event_id, seated, k),
        ),
    ]
    for fingerprint, request in cases:
        key = new_key()
        # The first request with this key has claimed it and not finished.
        assert idempotency.begin(local_store, key, ADMIN_CALLER, fingerprint, f"first-{key}") is None
        before = table()

        refused = request(key)
        refused.error(409, "RequestInProgress")
        assert refused.header("Retry-After") == "1", fingerprint  # "not yet", like a timeout

        assert table() == before, fingerprint
    assert client.get(f"/events/{event_id}").body["registeredCount"] == 1


# --- malformed and empty keys --------------------------------------------------------------


@READS_THE_TABLE
@pytest.mark.parametrize("bad_key", ["has space", "x" * 129, "a/b", "semi;colon"])
def test_a_malformed_key_is_refused_on_every_route(client: Client, table: Table, bad_key: str) -> None:
    event_id, user_id = client.event(capacity=5), client.user()
    seated = client.user()
    assert client.register(event_id, seated).status == 201
    before = table()

    client.post("/users", {"userId": uid("u"), "name": "N"}, headers=with_key(bad_key)).error(
        422, "ValidationError"
    )
    client.post("/events", {"title": "T", "capacity": 1}, headers=with_key(bad_key)).error(
        422, "ValidationError"
    )
    register(client, event_id, user_id, bad_key).error(422, "ValidationError")
    unregister(client, event_id, seated, bad_key).error(422, "ValidationError")

    assert table() == before


def test_the_api_lambda_names_the_malformed_header(client: Client) -> None:
    answer = client.post("/users", {"userId": uid("u"), "name": "N"}, headers=with_key("has space"))
    assert "Idempotency-Key" in [f["field"] for f in answer.invalid()]


@READS_THE_TABLE
def test_an_empty_key_is_no_key(client: Client, table: Table) -> None:
    event_id, user_id = client.event(capacity=5), client.user()
    before = idempotency_records(table())

    assert register(client, event_id, user_id, "").status == 201
    register(client, event_id, user_id, "").error(409, "AlreadyRegistered")
    assert client.post("/users", {"userId": uid("u"), "name": "N"}, headers=with_key("")).status == 201

    assert idempotency_records(table()) == before


# --- one key, many requests at once ---------------------------------------------------------


def test_concurrent_registrations_with_one_key_register_once(client: Client) -> None:
    event_id, user_id = client.event(capacity=5, has_waitlist=True), client.user()
    key = new_key()

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: register(client, event_id, user_id, key), range(8)))

    original = register(client, event_id, user_id, key)  # the stored answer, replayed
    assert (original.status, original.body["status"]) == (201, "registered"), original.raw
    for answer in answers:
        if answer.status == 409:
            answer.error(409, "RequestInProgress")
        else:
            same_answer(answer, original)
    assert sum(1 for a in answers if a.status == 201) >= 1
    assert [r["userId"] for r in client.all_items(f"/events/{event_id}/registrations", 100)] == [user_id]
    assert client.all_items(f"/events/{event_id}/waitlist", 100) == []
    assert client.get(f"/events/{event_id}").body["registeredCount"] == 1


def test_concurrent_event_creations_with_one_key_create_one_event(client: Client) -> None:
    key = new_key()
    title = uid("once")  # no other request creates an event with this title
    body = {"title": title, "capacity": 3}

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: client.post("/events", body, headers=with_key(key)), range(8)))

    original = client.post("/events", body, headers=with_key(key))
    assert original.status == 201, original.raw
    for answer in answers:
        if answer.status == 409:
            answer.error(409, "RequestInProgress")
        else:
            same_answer(answer, original)

    def created() -> set[str]:
        # The event listing comes from GSI1, which AWS updates eventually.
        found = {e["eventId"] for e in client.all_items("/events", 100) if e["title"] == title}
        assert original.body["eventId"] in found
        return found

    assert eventually(created) == {original.body["eventId"]}
