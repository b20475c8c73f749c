"""The local server's pieces that need no database: routing, proxy events, names."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from handlers import api
from infrastructure import names
from infrastructure.execution_names import execution_name
from infrastructure.local import local_api as twin
from infrastructure.local.execution_results import ExecutionTimeout
from infrastructure.local.proxy_event import RouteTable, proxy_event, proxy_result
from registration import outcomes
from tests.fixtures.stub_engine import JSON_HEADERS, REGISTER, stub_engine


def test_routes_resolve_like_api_gateway() -> None:
    routes = RouteTable([*names.WORKFLOW_ROUTES, *names.LAMBDA_ROUTES])

    def resolve(method: str, path: str) -> tuple[str, dict[str, str]] | None:
        found = routes.resolve(method, path)
        return (found[0].path, found[1]) if found else None

    assert resolve("POST", "/events/e1/register") == ("/events/{eventId}/register", {"eventId": "e1"})
    assert resolve("DELETE", "/events/e1/register/u%201") == (
        "/events/{eventId}/register/{userId}",
        {"eventId": "e1", "userId": "u 1"},
    )
    assert resolve("GET", "/events/e1/registrations") == (
        "/events/{eventId}/registrations",
        {"eventId": "e1"},
    )
    assert resolve("GET", "/users/") == ("/users", {})
    assert resolve("GET", "/users//registrations") is None
    assert resolve("GET", "/events/e1/register") is None
    assert resolve("PUT", "/users") is None
    assert resolve("GET", "/users/a/b") is None


def test_proxy_event_reads_back_through_powertools() -> None:
    request_id = str(uuid.uuid4())
    event = APIGatewayProxyEvent(
        proxy_event(
            method="get",
            path="/events/e1/waitlist",
            query="limit=5&nextToken=abc&limit=7",
            headers=[("Content-Type", "application/json"), ("X-Many", "1"), ("X-Many", "2")],
            body=b'{"a": 1}',
            resource="/events/{eventId}/waitlist",
            path_parameters={"eventId": "e1"},
            request_id=request_id,
        )
    )

    assert event.http_method == "GET"
    assert event.resource == "/events/{eventId}/waitlist"
    assert event.path_parameters == {"eventId": "e1"}
    assert event.query_string_parameters == {"limit": "7", "nextToken": "abc"}
    assert event.multi_value_query_string_parameters == {"limit": ["5", "7"], "nextToken": ["abc"]}
    assert event.multi_value_headers["X-Many"] == ["1", "2"]
    assert event.json_body == {"a": 1}
    assert event.request_context.request_id == request_id
    assert event.request_context.stage == "local"


def test_binary_body_is_base64_encoded() -> None:
    event = proxy_event(
        method="POST",
        path="/users",
        query="",
        headers=[],
        body=b"\xff\x00",
        resource="/users",
        path_parameters={},
        request_id="r",
    )
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\x00"


def test_proxy_result_merges_headers() -> None:
    result = proxy_result(
        {
            "statusCode": 201,
            "headers": {"X-One": "1"},
            "multiValueHeaders": {"Content-Type": ["application/json"]},
            "body": "{}",
            "isBase64Encoded": False,
        }
    )
    assert result.status == 201
    assert sorted(result.headers) == [("Content-Type", "application/json"), ("X-One", "1")]
    assert result.body == b"{}"


@pytest.mark.parametrize(
    ("event_id", "user_id"),
    [
        ("e1", "u1"),
        ("e" * 64, "u" * 64),
        ("weird id/with:chars", "ü-ser"),
        ("", ""),
    ],
)
def test_execution_names_are_valid_and_findable(event_id: str, user_id: str) -> None:
    request_id = str(uuid.uuid4())
    for workflow in names.WORKFLOW_ROUTES.values():
        name = execution_name(workflow, event_id, user_id, request_id)
        assert 1 <= len(name) <= 80
        assert re.fullmatch(r"[A-Za-z0-9_-]+", name), name
        assert name.startswith(f"{workflow}-")
        assert name.endswith(request_id)
    short = execution_name("register", "e1", "u1", request_id)
    assert short == f"register-e1-u1-{request_id}"


def test_the_api_handler_serves_one_request_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Powertools keeps the current request on the resolver class: calls must not overlap."""
    engine = stub_engine()
    local_api = twin.LocalApi(engine)  # type: ignore[arg-type]
    inside = 0
    most = 0
    lock = threading.Lock()

    def slow_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.02)
        with lock:
            inside -= 1
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}

    monkeypatch.setattr(api, "handler", slow_handler)

    def one(_: int) -> int:
        reply = local_api.handle(method="GET", target="/users", headers=[], body=b"", request_id="r")
        return reply.status

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(one, range(16))) == [200] * 16
    assert most == 1


def test_unknown_routes_never_reach_the_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = stub_engine()
    local_api = twin.LocalApi(engine)  # type: ignore[arg-type]
    monkeypatch.setattr(api, "handler", lambda event, context: pytest.fail("called"))

    reply = local_api.handle(method="PUT", target="/users/u1", headers=[], body=b"", request_id="r")

    assert reply.status == 404
    assert b'"RouteNotFound"' in reply.body


def test_the_server_refuses_routes_as_the_api_lambda_does() -> None:
    assert twin.ROUTE_NOT_FOUND == api.ROUTE_NOT_FOUND
    refused = api.handle_content_type(RequestUnsupportedContentType("text/plain", errors=[]))
    assert refused.status_code == 415
    assert refused.body == {
        "error": twin.UNSUPPORTED_MEDIA_TYPE,
        "message": twin.UNSUPPORTED_MEDIA_MESSAGE,
    }


def test_the_idempotency_key_header_is_read_as_api_gateway_passes_it() -> None:
    assert twin.idempotency_key([("Content-Type", "application/json")]) is None
    assert twin.idempotency_key([("idempotency-KEY", "k-1")]) == "k-1"
    assert twin.idempotency_key([("Idempotency-Key", "k-1"), ("Idempotency-Key", "k-2")]) == "k-2"
    assert twin.idempotency_key([("Idempotency-Key", "")]) is None
    # Malformed keys are passed on: the workflow refuses them.
    assert twin.idempotency_key([("Idempotency-Key", "not a key!")]) == "not a key!"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("Idempotency-Key", "k-1")], {"idempotencyKey": "k-1"}),
        ([("IDEMPOTENCY-KEY", "k-2")], {"idempotencyKey": "k-2"}),
        ([("Idempotency-Key", "")], {}),
        ([], {}),
    ],
)
@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("POST", "/events/e1/register", b'{"userId": "u1"}'),
        ("DELETE", "/events/e1/register/u1", b""),
    ],
)
def test_workflow_routes_pass_the_idempotency_key_to_the_execution(
    headers: list[tuple[str, str]], expected: dict[str, str], method: str, target: str, body: bytes
) -> None:
    started: list[dict[str, Any]] = []

    def run(workflow: str, execution_input: dict[str, Any], **kwargs: Any) -> Any:
        started.append(execution_input)
        return SimpleNamespace(status="SUCCEEDED", output={"ok": True}, error=None, cause=None)

    engine = stub_engine(run)
    local_api = twin.LocalApi(engine)  # type: ignore[arg-type]

    reply = local_api.handle(
        method=method,
        target=target,
        headers=[("Content-Type", "application/json"), *headers],
        body=body,
        request_id="r-1",
    )

    assert reply.status in (200, 201), reply.body
    # The stub's template guards no route: no claims, so the caller is empty, as the
    # request template renders it without an authorizer (the workflow then refuses it).
    nobody = {"userId": "", "groups": ""}
    assert started == [{"eventId": "e1", "userId": "u1", "requestId": "r-1", "caller": nobody, **expected}]


# --- API Gateway's limits ----------------------------------------------------------------


def test_a_workflow_waits_29_s_then_answers_what_api_gateway_answers() -> None:
    waited: list[float] = []

    def run(workflow: str, execution_input: dict[str, Any], **kwargs: Any) -> Any:
        waited.append(kwargs["timeout"])
        raise ExecutionTimeout("still running")

    reply = twin.LocalApi(stub_engine(run)).handle(headers=JSON_HEADERS, request_id="r-1", **REGISTER)  # type: ignore[arg-type]

    # API Gateway's integration timeout, counted from the request's arrival.
    assert len(waited) == 1 and 28.5 < waited[0] <= 29
    assert reply.status == 504
    # The template's INTEGRATION_TIMEOUT gateway response has the same body (test_api.py).
    assert json.loads(reply.body) == {
        "error": "IntegrationTimeout",
        "message": outcomes.INTEGRATION_TIMEOUT_MESSAGE,
    }


def test_a_timed_out_execution_is_a_definite_retryable_answer() -> None:
    def run(workflow: str, execution_input: dict[str, Any], **kwargs: Any) -> Any:
        return SimpleNamespace(status="TIMED_OUT", output=None, error=None, cause=None, execution_arn="arn")

    reply = twin.LocalApi(stub_engine(run)).handle(headers=JSON_HEADERS, request_id="r-1", **REGISTER)  # type: ignore[arg-type]

    assert reply.status == 503
    assert json.loads(reply.body)["error"] == "ExecutionTimedOut"
    assert ("Retry-After", "1") in reply.headers


def _slow_api(monkeypatch: pytest.MonkeyPatch, seconds: float) -> threading.Event:
    finished = threading.Event()

    def slow_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        time.sleep(seconds)
        finished.set()
        return {"statusCode": 200, "headers": {}, "body": "{}"}

    monkeypatch.setattr(api, "handler", slow_handler)
    return finished


def test_a_lambda_route_past_the_integration_timeout_answers_504(monkeypatch: pytest.MonkeyPatch) -> None:
    finished = _slow_api(monkeypatch, 1.0)
    local_api = twin.LocalApi(stub_engine(), integration_timeout=0.2)  # type: ignore[arg-type]

    started = time.monotonic()
    reply = local_api.handle(method="GET", target="/users", headers=[], body=b"", request_id="r")

    assert time.monotonic() - started < 0.8
    assert not finished.is_set()  # the handler's thread goes on, its answer is dropped
    assert reply.status == 504
    assert json.loads(reply.body)["error"] == "IntegrationTimeout"


def test_a_lambda_route_past_its_functions_timeout_answers_502(monkeypatch: pytest.MonkeyPatch) -> None:
    _slow_api(monkeypatch, 1.0)
    function = SimpleNamespace(name="Api", handler=names.API_HANDLER, timeout=0.2, memory_size=256)
    local_api = twin.LocalApi(stub_engine(functions={"Api": function}))  # type: ignore[arg-type]

    reply = local_api.handle(method="GET", target="/users", headers=[], body=b"", request_id="r")

    # The Lambda failed: API Gateway answers 502, with the template's DEFAULT_5XX body.
    assert reply.status == 502
    assert json.loads(reply.body) == {"error": outcomes.INTERNAL_ERROR, "message": outcomes.INTERNAL_MESSAGE}
