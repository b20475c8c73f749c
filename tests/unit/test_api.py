"""The API Lambda's handler with API Gateway proxy events, over moto's DynamoDB."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from handlers import api
from infrastructure import names
from infrastructure.local.lambda_seam import LambdaContext, LocalFunction
from infrastructure.local.proxy_event import RouteTable, proxy_event
from infrastructure.local.request_validation import register_request
from registration import errors, idempotency, settings
from registration.data import RegistrationStore
from registration.errors import ValidationError
from registration.models import scoped_key
from registration.observability import logger
from tests.fixtures.tables import moto_store

ROUTES = RouteTable(names.LAMBDA_ROUTES)
# What API Gateway's Cognito authorizer hands on for an admin's ID token; the ownership
# rules themselves are tested in test_access.py and over HTTP in test_ownership.py.
ADMIN = "test-admin"
ADMIN_CLAIMS = {"cognito:username": ADMIN, "cognito:groups": "admins", "token_use": "id"}


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[RegistrationStore]:
    with moto_store() as moto:
        monkeypatch.setattr(api, "get_store", lambda: moto)
        yield moto


def call(
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    query: str = "",
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
    claims: dict[str, str] | None = ADMIN_CLAIMS,
) -> tuple[int, dict[str, Any]]:
    resolved = ROUTES.resolve(method, path)
    resource, parameters = (resolved[0].path, resolved[1]) if resolved else (path, {})
    if body is not None:
        raw = json.dumps(body).encode()
    request_id = request_id or str(uuid.uuid4())
    event = proxy_event(
        method=method,
        path=path,
        query=query,
        headers=list((headers or {"Content-Type": "application/json"}).items()),
        body=raw,
        resource=resource,
        path_parameters=parameters,
        request_id=request_id,
        claims=claims,
    )
    result = api.handler(event, LambdaContext(LocalFunction("api", names.API_HANDLER), request_id))
    assert "application/json" in json.dumps(result.get("multiValueHeaders") or result.get("headers"))
    return int(result["statusCode"]), json.loads(result["body"])


def test_every_answer_names_the_request_id(store: RegistrationStore) -> None:
    for method, path, body in (
        ("GET", "/users/nobody", None),
        ("POST", "/users", {"userId": "ada", "name": "A"}),
    ):
        request_id = str(uuid.uuid4())
        event = proxy_event(
            method=method,
            path=path,
            query="",
            headers=[("Content-Type", "application/json")],
            body=json.dumps(body).encode() if body else None,
            resource=path if body else "/users/{userId}",
            path_parameters={} if body else {"userId": "nobody"},
            request_id=request_id,
            claims=ADMIN_CLAIMS,
        )
        result = api.handler(event, LambdaContext(LocalFunction("api", names.API_HANDLER), "lambda-id"))
        headers = result.get("multiValueHeaders") or result.get("headers") or {}
        assert headers.get("X-Request-Id") in (request_id, [request_id]), result


def test_user_round_trip(store: RegistrationStore) -> None:
    status, created = call("POST", "/users", {"userId": "ada", "name": "Ada"})
    assert status == 201
    assert call("GET", "/users/ada") == (200, created)


def test_domain_errors_keep_their_status_and_code(store: RegistrationStore) -> None:
    call("POST", "/users", {"userId": "ada", "name": "Ada"})
    status, body = call("POST", "/users", {"userId": "ada", "name": "Again"})
    assert (status, body["error"]) == (409, "UserAlreadyExists")
    assert set(body) == {"error", "message"}
    assert call("GET", "/events/none")[1]["error"] == "EventNotFound"
    assert call("GET", "/users/none/registrations")[0] == 404


def test_validation_errors_list_the_fields(store: RegistrationStore) -> None:
    status, body = call("POST", "/events", {"title": "T", "capacity": "5", "hasWaitlist": "yes"})

    assert status == 422
    assert body["error"] == "ValidationError"
    assert [f["field"] for f in body["fields"]] == ["capacity", "hasWaitlist"]
    assert "capacity" in body["message"]


def test_list_body_is_not_taken_for_its_first_element(store: RegistrationStore) -> None:
    status, body = call("POST", "/users", [{"userId": "ada", "name": "Ada"}])
    assert (status, body["fields"][0]["field"]) == (422, "body")
    assert call("GET", "/users/ada")[0] == 404


def test_malformed_json_names_the_problem(store: RegistrationStore) -> None:
    status, body = call("POST", "/users", raw=b'{"userId": "ada",')
    assert status == 422
    assert body["fields"][0]["type"] == "json_invalid"
    assert body["fields"][0]["message"].startswith("Malformed JSON: ")


def test_non_utf8_body_is_422(store: RegistrationStore) -> None:
    assert call("POST", "/users", raw=b"\xff\xfe\x00")[0] == 422


def test_other_media_types_are_415(store: RegistrationStore) -> None:
    status, body = call("POST", "/users", raw=b"hello", headers={"Content-Type": "text/plain"})
    assert (status, body["error"]) == (415, "UnsupportedMediaType")


DEEP = b"[" * 1000 + b"]" * 1000
LONG_INTEGER = b'{"title": "T", "capacity": ' + b"9" * 5000 + b"}"


@pytest.mark.parametrize(
    "raw",
    [
        DEEP,
        b'{"userId": "ada", "name": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}",
        LONG_INTEGER,
        b'{"userId": "ada", "name": "Ada", "n": -' + b"1" * 21 + b"}",
    ],
)
@pytest.mark.parametrize("path", ["/users", "/events"])
def test_bodies_beyond_the_json_bounds_are_malformed(store: RegistrationStore, path: str, raw: bytes) -> None:
    status, body = call("POST", path, raw=raw)
    assert status == 422
    assert [(f["field"], f["type"]) for f in body["fields"]] == [("body", "json_invalid")]
    assert "4300" not in body["message"] and "sys." not in body["message"]  # nothing of Python's own
    assert _users(store) == [] and _events(store) == []


def test_bodies_within_the_json_bounds_reach_the_model(store: RegistrationStore) -> None:
    nested = {"userId": "ada", "name": "Ada", "x": json.loads("[" * 31 + "]" * 31)}
    assert call("POST", "/users", nested)[1]["fields"][0]["field"] == "x"  # the model's refusal
    status, body = call("POST", "/events", raw=b'{"title": "T", "capacity": ' + b"9" * 20 + b"}")
    assert (status, body["fields"][0]["field"]) == (422, "capacity")


def test_a_body_of_many_unknown_keys_lists_only_the_first_errors(store: RegistrationStore) -> None:
    status, body = call("POST", "/users", {f"k{n}": 1 for n in range(90_000)})
    assert status == 422
    listed = body["fields"]
    assert len(listed) == errors.MAX_FIELD_ERRORS + 1
    assert listed[-1]["type"] == errors.TOO_MANY_ERRORS
    # userId and name missing, and 90,000 unknown keys: all counted.
    left_out = 2 + 90_000 - errors.MAX_FIELD_ERRORS
    assert listed[-1]["message"].startswith(f"{left_out} more")
    assert len(json.dumps(body)) < 10_000


@pytest.mark.parametrize(
    "content_type",
    [
        "APPLICATION/JSON",
        "Application/Json; charset=UTF-8",
        "application/json;charset=utf-8",
        " application/json ",
    ],
)
def test_media_types_are_case_insensitive_and_may_have_parameters(
    store: RegistrationStore, content_type: str
) -> None:
    status, created = call(
        "POST", "/users", raw=b'{"userId": "ada", "name": "Ada"}', headers={"Content-Type": content_type}
    )
    assert status == 201, created
    assert call("GET", "/users/ada") == (200, created)


@pytest.mark.parametrize("text", ["a\x00b", "tab\there", "line\n", "\x1b[31mred", "del\x7f", "c1\x85"])
def test_control_characters_are_refused_in_every_text_field(store: RegistrationStore, text: str) -> None:
    assert call("POST", "/users", {"userId": "ada", "name": text})[1]["fields"][0]["field"] == "name"
    assert call("POST", "/events", {"title": text, "capacity": 1})[1]["fields"][0]["field"] == "title"
    assert _users(store) == [] and _events(store) == []


def test_query_parameters_are_validated(store: RegistrationStore) -> None:
    assert call("GET", "/users", query="limit=0")[1]["fields"][0]["field"] == "limit"
    assert call("GET", "/users", query="nextToken=x")[1]["fields"][0]["field"] == "nextToken"
    status, page = call("GET", "/users", query="limit=100")
    assert (status, page) == (200, {"items": [], "nextToken": None})


def test_unknown_route_is_route_not_found(store: RegistrationStore) -> None:
    status, body = call("GET", "/somewhere")
    assert (status, body["error"]) == (404, "RouteNotFound")


def test_unexpected_failure_is_a_generic_500(
    store: RegistrationStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret connection string")

    monkeypatch.setattr(store, "get_user", broken)

    status, body = call("GET", "/users/ada")

    assert status == 500
    assert body == {"error": "InternalError", "message": body["message"]}
    assert "secret" not in body["message"]
    logged = [r.exc_info[1] for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert "secret connection string" in str(logged)  # logged, not returned


def test_correlation_id_is_the_api_gateway_request_id(store: RegistrationStore) -> None:
    request_id = str(uuid.uuid4())
    call("GET", "/users/ada", request_id=request_id)
    assert logger.get_correlation_id() == request_id


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"{", "body"),
        (b"\xff", "body"),
        (b"[]", "body"),
        (b"5", "body"),
        (b'{"userId": 5}', "userId"),
        (b'{"userId": "u", "x": 1}', "x"),
        (b'{"userId": "' + b"u" * 65 + b'"}', "userId"),
        (DEEP, "body"),
        (b'{"userId": ' + b"9" * 5000 + b"}", "body"),
    ],
)
def test_register_request_refuses_bad_bodies(body: bytes, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        register_request(body)
    assert field in [f["field"] for f in refused.value.fields]


def test_register_request_accepts_a_user_id() -> None:
    assert register_request(b'{"userId": "u-1"}').userId == "u-1"


# --- Idempotency-Key -------------------------------------------------------------------


def keyed(method: str, path: str, body: Any = None, *, key: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", idempotency.HEADER: key}
    return call(method, path, body, headers=headers, **kwargs)


def _users(store: RegistrationStore) -> list[dict[str, Any]]:
    return [u.model_dump() for u in store.list_users(100, None).items]


def _events(store: RegistrationStore) -> list[dict[str, Any]]:
    return [e.model_dump() for e in store.list_events(100, None).items]


def test_a_replay_gets_the_first_answer_and_changes_nothing(store: RegistrationStore) -> None:
    key = str(uuid.uuid4())
    first = keyed("POST", "/users", {"userId": "ada", "name": "Ada"}, key=key)
    assert first[0] == 201
    users = _users(store)
    record = store.get_request(scoped_key(key, ADMIN))
    assert record is not None and record.status == "COMPLETED"

    # The same request, spelled differently (key order, spacing): the same request.
    again = keyed("POST", "/users", raw=b'{ "name" : "Ada",\n "userId":"ada" }', key=key)

    assert again == first
    assert _users(store) == users
    assert store.get_request(scoped_key(key, ADMIN)) == record


def test_a_replayed_event_creation_is_the_same_generated_event(store: RegistrationStore) -> None:
    key = str(uuid.uuid4())
    body = {"title": "Keynote", "capacity": 3}
    status, created = keyed("POST", "/events", body, key=key)
    assert status == 201
    events = _events(store)

    assert keyed("POST", "/events", body, key=key) == (201, created)
    assert _events(store) == events
    assert [e["eventId"] for e in events] == [created["eventId"]]
    # Without the key the same body is a new request, and a new event.
    assert call("POST", "/events", body)[1]["eventId"] != created["eventId"]


def test_a_refusal_is_replayed_too(store: RegistrationStore) -> None:
    call("POST", "/users", {"userId": "ada", "name": "Ada"})
    key = str(uuid.uuid4())
    refused = keyed("POST", "/users", {"userId": "ada", "name": "Again"}, key=key)
    assert (refused[0], refused[1]["error"]) == (409, "UserAlreadyExists")

    record = store.get_request(scoped_key(key, ADMIN))
    assert record is not None and record.response is not None
    assert (record.response.statusCode, record.response.document()) == refused

    assert keyed("POST", "/users", {"userId": "ada", "name": "Again"}, key=key) == refused


def test_the_same_key_for_a_different_request_is_refused(store: RegistrationStore) -> None:
    key = str(uuid.uuid4())
    assert keyed("POST", "/users", {"userId": "ada", "name": "Ada"}, key=key)[0] == 201

    for method, path, body in [
        ("POST", "/users", {"userId": "grace", "name": "Grace"}),
        ("POST", "/users", {"userId": "ada", "name": "Ada L."}),
        ("POST", "/events", {"userId": "ada", "name": "Ada"}),
    ]:
        status, refused = keyed(method, path, body, key=key)
        assert (status, refused["error"]) == (422, "IdempotencyKeyReused"), (method, path, body)
        assert set(refused) == {"error", "message"}
    assert [u["userId"] for u in _users(store)] == ["ada"]
    assert _events(store) == []


def test_a_request_whose_first_is_still_running_gets_409(store: RegistrationStore) -> None:
    key = str(uuid.uuid4())
    body = {"userId": "ada", "name": "Ada"}
    running = idempotency.begin(
        store,
        key,
        ADMIN,
        idempotency.request_fingerprint("POST", "/users", None, json.dumps(body)),
        "the-first-request",
    )
    assert running is None  # the first request holds the key

    status, answer = keyed("POST", "/users", body, key=key)

    assert (status, answer["error"]) == (409, "RequestInProgress")
    assert _users(store) == []
    # A different request with that key is told it is a different request.
    assert keyed("POST", "/users", {**body, "name": "B"}, key=key)[1]["error"] == "IdempotencyKeyReused"
    record = store.get_request(scoped_key(key, ADMIN))
    assert record is not None and (record.status, record.requestId) == ("IN_PROGRESS", "the-first-request")


def test_a_failure_of_ours_releases_the_key(
    store: RegistrationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = str(uuid.uuid4())
    create_user = store.create_user

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(store, "create_user", broken)
    status, answer = keyed("POST", "/users", {"userId": "ada", "name": "Ada"}, key=key)
    assert (status, answer["error"]) == (500, "InternalError")
    assert store.get_request(scoped_key(key, ADMIN)) is None

    monkeypatch.setattr(store, "create_user", create_user)
    assert keyed("POST", "/users", {"userId": "ada", "name": "Ada"}, key=key)[0] == 201
    assert [u["userId"] for u in _users(store)] == ["ada"]


@pytest.mark.parametrize("key", ["has space", "é", "a/b", "k" * 129])
def test_a_malformed_key_is_422_naming_the_header(store: RegistrationStore, key: str) -> None:
    status, body = keyed("POST", "/users", {"userId": "ada", "name": "Ada"}, key=key)

    assert (status, body["error"]) == (422, "ValidationError")
    assert [f["field"] for f in body["fields"]] == ["Idempotency-Key"]
    assert _users(store) == []


def test_the_header_name_is_case_insensitive_and_an_empty_key_is_none(store: RegistrationStore) -> None:
    key = str(uuid.uuid4())
    lower = {"content-type": "application/json", "idempotency-key": key}
    first = call("POST", "/users", {"userId": "ada", "name": "Ada"}, headers=lower)
    assert first[0] == 201
    assert keyed("POST", "/users", {"userId": "ada", "name": "Ada"}, key=key) == first

    empty = keyed("POST", "/users", {"userId": "grace", "name": "Grace"}, key="")
    assert empty[0] == 201
    assert keyed("POST", "/users", {"userId": "grace", "name": "Grace"}, key="")[1]["error"] == (
        "UserAlreadyExists"
    )


def test_get_ignores_the_header(store: RegistrationStore) -> None:
    call("POST", "/users", {"userId": "ada", "name": "Ada"})
    headers = {idempotency.HEADER: "not a valid key!"}

    status, user = call("GET", "/users/ada", headers=headers)

    assert (status, user["userId"]) == (200, "ada")
    assert call("GET", "/users", headers={idempotency.HEADER: "k-1"})[0] == 200
    assert store.get_request(scoped_key("k-1", ADMIN)) is None


def test_a_body_refused_for_its_media_type_does_not_take_the_key(store: RegistrationStore) -> None:
    key = str(uuid.uuid4())
    headers = {"Content-Type": "text/plain", idempotency.HEADER: key}
    assert call("POST", "/users", raw=b'{"userId": "ada", "name": "Ada"}', headers=headers)[0] == 415
    assert store.get_request(scoped_key(key, ADMIN)) is None

    assert keyed("POST", "/users", {"userId": "ada", "name": "Ada"}, key=key)[0] == 201


def test_request_fingerprints_are_what_the_request_asks_for() -> None:
    fingerprint = idempotency.request_fingerprint
    same = fingerprint("POST", "/users", None, '{"a": 1, "b": [1, 2]}')
    assert fingerprint("post", "/users", {}, '{"b":[1,2],"a":1}') == same
    assert fingerprint("POST", "/events", None, '{"a": 1, "b": [1, 2]}') != same
    assert fingerprint("DELETE", "/users", None, '{"a": 1, "b": [1, 2]}') != same
    assert fingerprint("POST", "/users", None, '{"a": 1, "b": [2, 1]}') != same
    assert fingerprint("POST", "/e/{id}", {"id": "1"}, None) != fingerprint(
        "POST", "/e/{id}", {"id": "2"}, None
    )
    # Not JSON: the text itself; a JSON string is not the same as that text.
    assert fingerprint("POST", "/users", None, "a b") != fingerprint("POST", "/users", None, "a  b")
    assert fingerprint("POST", "/users", None, '"x"') != fingerprint("POST", "/users", None, "x")
    assert fingerprint("POST", "/users", None, None) == fingerprint("POST", "/users", None, "")


# --- health ----------------------------------------------------------------------------


def _state_machine(name: str) -> str:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    definition = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    role = "arn:aws:iam::123456789012:role/unit"
    return str(sfn.create_state_machine(name=name, definition=definition, roleArn=role)["stateMachineArn"])


def test_health_is_ok_when_the_table_and_the_workflows_answer(
    store: RegistrationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for workflow, variable in settings.WORKFLOW_ARNS.items():
        monkeypatch.setenv(variable, _state_machine(workflow))
    status, report = call("GET", "/health")
    assert (status, report["status"], report["database"]["status"]) == (200, "ok", "ok")
    assert {name: w["status"] for name, w in report["workflows"].items()} == {
        "register": "ok",
        "unregister": "ok",
        "cancel": "ok",
        "erase": "ok",
    }


def test_health_is_503_and_names_what_is_down(
    store: RegistrationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.WORKFLOW_ARNS["register"], _state_machine("register"))
    monkeypatch.delenv(settings.WORKFLOW_ARNS["unregister"], raising=False)
    boto3.client("dynamodb", region_name="us-east-1").delete_table(TableName=store.table_name)

    status, report = call("GET", "/health")

    assert (status, report["status"]) == (503, "down")
    assert report["database"] == {"status": "down", "detail": "ResourceNotFoundException"}
    assert report["workflows"]["register"]["status"] == "ok"
    assert report["workflows"]["unregister"] == {"status": "down", "detail": "NotConfigured"}
