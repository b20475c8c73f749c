"""The checked-in OpenAPI document is the one the code builds, and it covers every route."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from infrastructure import names, openapi
from registration import idempotency
from registration.errors import ValidationError

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def test_checked_in_document_matches_the_code() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == openapi.render(openapi.document()), (
        "docs/openapi.json is out of date: run `.venv/bin/python -m infrastructure.openapi`"
    )


def test_every_route_is_documented_and_nothing_else() -> None:
    document = openapi.document()
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert documented == set(names.WORKFLOW_ROUTES) | set(names.LAMBDA_ROUTES)


def test_every_reference_resolves_and_every_error_has_the_error_body() -> None:
    document = openapi.document()
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = {int(s) for s in operation["responses"]}
            assert 500 in statuses, (method, path)
            # A 422 wherever there is input to refuse, and only there.
            takes_input = bool(operation.get("parameters")) or "requestBody" in operation
            assert (422 in statuses) == takes_input, (method, path)
            for status, response in operation["responses"].items():
                schema = response["content"]["application/json"]["schema"]
                if (path, status) == ("/health", "503"):
                    assert schema == {"$ref": "#/components/schemas/Health"}  # a report, not an error
                elif int(status) >= 400:
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)


def test_workflow_routes_document_their_models() -> None:
    paths = openapi.document()["paths"]
    register = paths["/events/{eventId}/register"]["post"]
    unregister = paths["/events/{eventId}/register/{userId}"]["delete"]

    assert register["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/RegisterRequest"
    )
    assert set(register["responses"]) == {
        "201",
        "401",
        "403",
        "404",
        "409",
        "413",
        "415",
        "422",
        "500",
        "503",
    }
    assert set(unregister["responses"]) == {"200", "401", "403", "404", "409", "415", "422", "500", "503"}
    assert "EventFull" in register["responses"]["409"]["description"]


# Header values around every edge of the key's rule (and the empty value, which is no key).
HEADER_VALUES = ("", "k", "4f1c2a9e-8d3b-4c5e-9a7f-0b6d2e1c3f4a", "a.b:c_d-e", "k" * 128, "k" * 129)
HEADER_VALUES += ("with space", "semi;colon", "ümlaut", "slash/", "new\nline")


def _server_takes(value: str) -> bool:
    try:
        idempotency.parse_key(value)
    except ValidationError:
        return False
    return True


def _schema_takes(schema: dict[str, Any], value: str) -> bool:
    assert schema["type"] == "string"
    return len(value) <= schema["maxLength"] and re.fullmatch(schema["pattern"], value) is not None


def test_every_post_and_delete_documents_the_idempotency_key() -> None:
    keyed = 0
    for path, operations in openapi.document()["paths"].items():
        for method, operation in operations.items():
            headers = [p for p in operation.get("parameters", []) if p["in"] == "header"]
            if method == "patch":  # a merge patch needs no key; an event's names its version
                expected = [("if-match", False)] if path == "/events/{eventId}" else []
                assert [(h["name"].lower(), h["required"]) for h in headers] == expected, path
                continue
            if method not in ("post", "delete"):
                assert headers == [], (method, path)
                continue
            keyed += 1
            assert [(h["name"], h["required"]) for h in headers] == [("Idempotency-Key", False)], path
            # One plain string schema (a header type generators take) that admits exactly
            # what the server takes, the empty value (no key) included.
            schema = headers[0]["schema"]
            for value in HEADER_VALUES:
                assert _schema_takes(schema, value) == _server_takes(value), (path, value)
            responses = operation["responses"]
            assert "`RequestInProgress`" in responses["409"]["description"], (method, path)
            assert "`IdempotencyKeyReused`" in responses["422"]["description"], (method, path)
    assert keyed == sum(
        1 for method, _ in {*names.WORKFLOW_ROUTES, *names.LAMBDA_ROUTES} if method in ("POST", "DELETE")
    )


def test_read_routes_do_not_list_the_idempotency_errors() -> None:
    for path, operations in openapi.document()["paths"].items():
        if "get" in operations:
            described = json.dumps(operations["get"]["responses"])
            assert "RequestInProgress" not in described, path
            assert "IdempotencyKeyReused" not in described, path


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text(json.dumps({"openapi": "3.1.0"}), encoding="utf-8")
    assert openapi.main(["--output", str(stale), "--check"]) == 1
    assert openapi.main(["--output", str(stale)]) == 0
    assert openapi.main(["--output", str(stale), "--check"]) == 0


def test_what_the_server_refuses_before_any_route_runs_is_documented() -> None:
    """A body that is not JSON (415) or too large (413) is answered by the local server
    (and API Gateway's gateway responses) before the route: every route that takes a body
    or a Content-Type documents those answers."""
    from infrastructure.local.local_api import LocalApi

    paths = openapi.document()["paths"]
    engine = SimpleNamespace(
        template=SimpleNamespace(functions={}, api_integrations={}),
        authorizer=None,
        region="us-east-1",
        account="123456789012",
    )
    api = LocalApi(engine)  # type: ignore[arg-type]
    for path, method, target in [
        ("/users", "post", "/users"),
        ("/events", "post", "/events"),
        ("/events/{eventId}/register", "post", "/events/e1/register"),
        ("/events/{eventId}/register/{userId}", "delete", "/events/e1/register/u1"),
    ]:
        reply = api.handle(
            method=method.upper(),
            target=target,
            headers=[("Content-Type", "text/plain")],
            body=b"x",
            request_id="r",
        )
        assert reply.status == 415, (path, reply.status)
        assert json.loads(reply.body)["error"] == "UnsupportedMediaType"
        assert str(reply.status) in paths[path][method]["responses"], (path, method)
