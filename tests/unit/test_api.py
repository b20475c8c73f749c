"""The API Lambda's handler with API Gateway proxy events, over moto's DynamoDB."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from handlers import api
from infrastructure import names
from infrastructure.local.lambda_seam import LambdaContext, LocalFunction
from infrastructure.local.proxy_event import RouteTable, proxy_event
from registration.errors import ValidationError
from registration.observability import logger
from registration.store import RegistrationStore
from tests.fixtures.tables import moto_store

ROUTES = RouteTable(names.LAMBDA_ROUTES)


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
    )
    result = api.handler(event, LambdaContext(LocalFunction("api", names.API_HANDLER), request_id))
    assert "application/json" in json.dumps(result.get("multiValueHeaders") or result.get("headers"))
    return int(result["statusCode"]), json.loads(result["body"])


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
    ],
)
def test_register_request_refuses_bad_bodies(body: bytes, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        api.register_request(body)
    assert field in [f["field"] for f in refused.value.fields]


def test_register_request_accepts_a_user_id() -> None:
    assert api.register_request(b'{"userId": "u-1"}').userId == "u-1"
