"""The OpenAPI document of the whole HTTP API, built from the code.

The API Lambda's routes come from its Powertools resolver (the same models that
validate requests); the two workflow routes, which API Gateway sends to Step Functions
without a Lambda, are added from the same shared models and the error table in
`registration.errors`. `docs/openapi.json` is the checked-in copy; a test fails when
it drifts. Regenerate it with:

    python -m infrastructure.openapi            # writes docs/openapi.json
    python -m infrastructure.openapi --check    # exit 1 when the file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from handlers.api import app
from infrastructure import names
from infrastructure.workflow_responses import workflow_headers
from registration import outcomes
from registration.api_responses import IDEMPOTENCY_ERRORS, STATUS_TEXT, error_responses
from registration.idempotency import HEADER as IDEMPOTENCY_HEADER
from registration.idempotency import RETENTION_SECONDS
from registration.models import (
    ErrorBody,
    EventId,
    IdempotencyKey,
    RegisterRequest,
    RegisterResult,
    UnregisterResult,
    UserId,
)

TITLE = "Event registration API"
VERSION = "1.0.0"
DESCRIPTION = (
    "Users, events with limited seats, registrations and a first-come-first-served waitlist.\n\n"
    "Every route but `GET /health` needs `Authorization: Bearer <ID token>` of the stack's "
    "Cognito user pool: 401 `Unauthorized` without a valid one, 403 `Forbidden` for what the "
    "caller may not do. Users act for themselves; organizers also for anyone on the events "
    "they created; admins for anyone (docs/security.md has the table).\n\n"
    'JSON in, JSON out. Every error body is `{"error": "<Code>", "message": "<sentence>"}`; '
    "a 422 `ValidationError` also lists the offending `fields`. Lists are paginated with `limit` (1 to 100, "
    "default 25) and the `nextToken` of the previous page: an opaque, signed token that only the "
    "listing that returned it accepts (any other value is a 422 naming `nextToken`).\n\n"
    "`POST /events/{eventId}/register` and `DELETE /events/{eventId}/register/{userId}` run "
    "Step Functions workflows; every other route is served by one Lambda function.\n\n"
    f"Every POST and DELETE takes an optional `{IDEMPOTENCY_HEADER}` header, the caller's own: a "
    f"retry with the same key within {RETENTION_SECONDS // 3600} hours gets the first answer (status and body) "
    "and changes nothing; the same key with a different request is refused (422 "
    "`IdempotencyKeyReused`), and so is a retry while the first request still runs (409 "
    "`RequestInProgress`). A failure of ours (5xx) is not kept: a retry runs the request again.\n\n"
    f"A workflow that runs out of its time is stopped and answers {outcomes.EXECUTION_TIMED_OUT_STATUS} "
    f"`{outcomes.EXECUTION_TIMED_OUT_ERROR}` with `Retry-After`: it may have taken effect, so retry it "
    f"with the same `{IDEMPOTENCY_HEADER}`. A request API Gateway has no answer for within 29 s is "
    f"answered {outcomes.INTEGRATION_TIMEOUT_STATUS} `{outcomes.INTEGRATION_TIMEOUT_ERROR}`; the "
    "workflows stop before that."
)
DOCUMENT_PATH = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
REF_PREFIX = "#/components/schemas/"

IDEMPOTENT_METHODS = ("post", "delete")
# Error codes each route can answer with (422 ValidationError and 500 InternalError are
# implied). The workflow lists follow the Fail states of workflows/register.py and
# workflows/unregister.py.
REGISTER_ERRORS = (
    "UserNotFound",
    "EventNotFound",
    "AlreadyRegistered",
    "AlreadyWaitlisted",
    "EventFull",
    "EventCancelled",
    "RegistrationNotOpen",
    "RegistrationClosed",
    "EventStarted",
    "ContentionLimitExceeded",
    "TransientDatabaseError",
    *IDEMPOTENCY_ERRORS,
)
UNREGISTER_ERRORS = (
    "EventNotFound",
    "NotRegistered",
    "ContentionLimitExceeded",
    "TransientDatabaseError",
    *IDEMPOTENCY_ERRORS,
)


def _content(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema)}}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"{REF_PREFIX}{model.__name__}"}


def _schemas(
    models: Iterable[tuple[type[BaseModel], Literal["validation", "serialization"]]],
) -> dict[str, Any]:
    _, top = models_json_schema(list(models), ref_template=REF_PREFIX + "{model}")
    schemas: dict[str, Any] = top.get("$defs", {})
    return schemas


def _path_parameter(name: str) -> dict[str, Any]:
    schema = TypeAdapter(UserId if name == "userId" else EventId).json_schema()
    schema["title"] = name[0].upper() + name[1:].lower()
    return {"name": name, "in": "path", "required": True, "schema": schema}


def idempotency_parameter() -> dict[str, Any]:
    """The optional `Idempotency-Key` header, with the shared model's constraints.

    An empty value is no key (API Gateway's request templates cannot tell it from an
    absent header), so the pattern admits it: one plain string schema, which client
    generators take as a header (an `anyOf` with `const ""` they drop)."""
    key = TypeAdapter(IdempotencyKey).json_schema()
    schema = {
        "type": "string",
        "maxLength": key["maxLength"],
        "pattern": key["pattern"].replace("]+$", "]*$"),
        "description": f"{key['description']}; empty: no key",
        "examples": key.get("examples", []),
    }
    return {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": False,
        "description": (
            f"Makes a retry safe: the same request with the same key within "
            f"{RETENTION_SECONDS // 3600} hours gets the first answer and changes nothing. "
            "Send a new key (a UUID) for each new request; an empty value counts as none."
        ),
        "schema": schema,
    }


def _add_idempotency_parameter(paths: Mapping[str, Any]) -> None:
    for operations in paths.values():
        for method, operation in operations.items():
            if method in IDEMPOTENT_METHODS:
                parameters: list[dict[str, Any]] = operation.setdefault("parameters", [])
                if not any(p.get("name") == IDEMPOTENCY_HEADER for p in parameters):
                    parameters.append(idempotency_parameter())


# What API Gateway (its gateway responses, in the error shape) and the local server answer
# before any route runs: a body that is not JSON, a body over the size limit.
TRANSPORT_REFUSALS = {
    "415": "`UnsupportedMediaType`: the request's `Content-Type` is not `application/json`",
    "413": "`PayloadTooLarge`: the body is over the size limit (10 MB on API Gateway, 1 MB locally)",
}


# What a route answers when the service is over its capacity and refuses the request
# before it runs: API Gateway when Step Functions refuses to start the execution, the
# local server when it sheds load. Sent with `Retry-After`. The health check is never
# refused so (`outcomes.NEVER_SHED_PATHS`).
OVERLOADED_REFUSAL = (
    f"`{outcomes.UNAVAILABLE_ERROR}`: the service is over its capacity and did not run the "
    "request; retry after `Retry-After` seconds"
)


def _add_overload_refusal(path: str, responses: dict[str, Any]) -> None:
    if path in outcomes.NEVER_SHED_PATHS:
        return
    status = str(outcomes.UNAVAILABLE_STATUS)
    existing = responses.get(status)
    if existing is None:
        responses[status] = {"description": OVERLOADED_REFUSAL, "content": _content(_ref(ErrorBody))}
    elif f"`{outcomes.UNAVAILABLE_ERROR}`" not in existing["description"]:
        existing["description"] += f"; {OVERLOADED_REFUSAL}"


def _add_transport_refusals(paths: dict[str, Any]) -> None:
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            _add_overload_refusal(path, responses)
            if method not in IDEMPOTENT_METHODS:
                continue
            for status, description in TRANSPORT_REFUSALS.items():
                if status == "413" and "requestBody" not in operation:
                    continue
                responses.setdefault(
                    status, {"description": description, "content": _content(_ref(ErrorBody))}
                )
            operation["responses"] = dict(sorted(responses.items()))


SECURITY_SCHEME = "idToken"
SECURITY_SCHEME_DOCUMENT = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": (
        "An ID token of the stack's Cognito user pool (locally: `regctl token USER_ID`), "
        "sent as `Authorization: Bearer <token>`. The caller is its `cognito:username`, "
        "their roles its `cognito:groups` (`organizers`, `admins`); see docs/security.md."
    ),
}
SIGN_IN_REFUSALS = {
    "401": "`Unauthorized`: no valid ID token (missing, malformed, expired, forged, or not an ID token)",
    "403": "`Forbidden`: the caller may not do this (the message says what was refused)",
}


def _add_security(document: dict[str, Any], paths: dict[str, Any]) -> None:
    """Every route but the open ones asks for an ID token, and may answer 401 and 403."""
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = SECURITY_SCHEME_DOCUMENT
    open_routes = {(method.lower(), path) for method, path in names.OPEN_ROUTES}
    for path, operations in paths.items():
        for method, operation in operations.items():
            if (method, path) in open_routes:
                operation["security"] = []
                continue
            operation["security"] = [{SECURITY_SCHEME: []}]
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for status, description in SIGN_IN_REFUSALS.items():
                responses.setdefault(
                    status, {"description": description, "content": _content(_ref(ErrorBody))}
                )
            operation["responses"] = dict(sorted(responses.items()))


def _add_retry_after(paths: dict[str, Any]) -> None:
    """The `Retry-After` header on the responses that carry a "not yet" refusal."""
    for operations in paths.values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                codes = [c for c in sorted(outcomes.RETRY_LATER_CODES) if f"`{c}`" in response["description"]]
                if not codes:
                    continue
                timed_out = f"`{outcomes.EXECUTION_TIMED_OUT_ERROR}`"
                if timed_out in response["description"]:  # sent with it too (workflow_error_responses)
                    codes.append(outcomes.EXECUTION_TIMED_OUT_ERROR)
                sent_with = ", ".join(f"`{c}`" for c in codes)
                for name in outcomes.error_headers(codes[0]):
                    response.setdefault("headers", {})[name] = {
                        "description": f"Seconds to wait before retrying (sent with {sent_with})",
                        "schema": {"type": "integer"},
                    }


def _add_request_id_header(paths: dict[str, Any]) -> None:
    for operations in paths.values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                response.setdefault("headers", {})[outcomes.REQUEST_ID_HEADER] = {
                    "description": "The request's id, as in the API's access log and the workflow's execution name",
                    "schema": {"type": "string"},
                }


def workflow_error_responses(codes: Iterable[str]) -> dict[int, dict[str, Any]]:
    """A workflow route's error responses: its codes, and the answer of a timed-out execution."""
    responses = {s: {**r, "content": _content(_ref(ErrorBody))} for s, r in error_responses(codes).items()}
    timed_out = responses.setdefault(
        outcomes.EXECUTION_TIMED_OUT_STATUS,
        {"description": STATUS_TEXT.get(outcomes.EXECUTION_TIMED_OUT_STATUS, "Error"), "content": {}},
    )
    timed_out["description"] += f"; `{outcomes.EXECUTION_TIMED_OUT_ERROR}` when the workflow ran out of time"
    timed_out["content"] = _content(_ref(ErrorBody))
    timed_out["headers"] = {
        name: {
            "description": "Seconds to wait before retrying (sent with `ExecutionTimedOut`)",
            "schema": {"type": "integer"},
        }
        for name in workflow_headers(outcomes.TIMED_OUT)
    }
    return responses


def workflow_paths() -> dict[str, dict[str, Any]]:
    """The workflow routes as API Gateway serves them (StartSyncExecution, mapped responses)."""
    register_errors = workflow_error_responses(REGISTER_ERRORS)
    unregister_errors = workflow_error_responses(UNREGISTER_ERRORS)
    return {
        "/events/{eventId}/register": {
            "post": {
                "tags": ["registrations"],
                "summary": "Register a user for an event",
                "description": (
                    "Runs the register workflow. A free seat registers the user; a full event "
                    "with a waitlist (or anyone already waiting) puts them at the waitlist's tail, "
                    "with their 1-based `position`; a full event without a waitlist refuses "
                    "(`EventFull`). The response carries the request id in `X-Request-Id`."
                ),
                "operationId": "register",
                "parameters": [_path_parameter("eventId")],
                "requestBody": {"required": True, "content": _content(_ref(RegisterRequest))},
                "responses": {
                    "201": {
                        "description": "Registered, or waitlisted with a position",
                        "content": _content(_ref(RegisterResult)),
                    },
                    **{str(s): r for s, r in register_errors.items()},
                },
            }
        },
        "/events/{eventId}/register/{userId}": {
            "delete": {
                "tags": ["registrations"],
                "summary": "Unregister a user, or take them off the waitlist",
                "description": (
                    "Runs the unregister workflow. A registered user's seat goes to the head of "
                    "the waitlist (`promoted`), if anyone waits; a waitlisted user leaves the queue "
                    "and everyone behind moves up."
                ),
                "operationId": "unregister",
                "parameters": [_path_parameter("eventId"), _path_parameter("userId")],
                "responses": {
                    "200": {
                        "description": "Unregistered (`promoted` names who got the seat) or left the waitlist",
                        "content": _content(_ref(UnregisterResult)),
                    },
                    **{str(s): r for s, r in unregister_errors.items()},
                },
            }
        },
    }


def _drop_impossible_validation_errors(paths: Mapping[str, Any]) -> None:
    """Powertools documents a 422 on every route; a route that takes no input never answers it."""
    for operations in paths.values():
        for operation in operations.values():
            if not operation.get("parameters") and "requestBody" not in operation:
                operation.get("responses", {}).pop("422", None)


def _references(document: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(REF_PREFIX):
                found.add(value[len(REF_PREFIX) :])
            else:
                found |= _references(value)
    elif isinstance(document, list):
        for value in document:
            found |= _references(value)
    return found


def _drop_unreferenced(document: dict[str, Any]) -> None:
    """Powertools adds its own 422 schemas to every document; ours replace them."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    while True:
        used = _references({k: v for k, v in document.items() if k != "components"})
        used |= _references([schemas[name] for name in used if name in schemas])
        unused = [name for name in schemas if name not in used]
        if not unused:
            return
        for name in unused:
            del schemas[name]


def build_document(app: APIGatewayRestResolver) -> dict[str, Any]:
    """The full OpenAPI document: the resolver's routes plus the workflow routes."""
    raw = app.get_openapi_json_schema(title=TITLE, version=VERSION, description=DESCRIPTION)
    document: dict[str, Any] = json.loads(raw)
    paths: dict[str, Any] = document.setdefault("paths", {})
    for path, operations in workflow_paths().items():
        clash = set(paths.get(path, {})) & set(operations)
        if clash:
            raise ValueError(f"{path}: the API Lambda also serves {sorted(clash)}")
        paths.setdefault(path, {}).update(operations)
    _drop_impossible_validation_errors(paths)
    _add_idempotency_parameter(paths)
    _add_transport_refusals(paths)
    _add_security(document, paths)
    _add_retry_after(paths)
    _add_request_id_header(paths)
    document["paths"] = dict(sorted(paths.items()))
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    extra = _schemas(
        [
            (RegisterRequest, "validation"),
            (RegisterResult, "serialization"),
            (UnregisterResult, "serialization"),
            (ErrorBody, "serialization"),
        ]
    )
    for name, schema in extra.items():
        # A model the API Lambda already documents keeps Powertools' rendering of it.
        schemas.setdefault(name, schema)
    _drop_unreferenced(document)
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    return document


def document() -> dict[str, Any]:
    """The document for the API Lambda in `handlers.api`."""
    return build_document(app)


def render(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infrastructure.openapi", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--output", type=Path, default=DOCUMENT_PATH, help="default: docs/openapi.json")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs from the code")
    args = parser.parse_args(argv)
    text = render(document())
    output: Path = args.output
    if args.check:
        current = output.read_text(encoding="utf-8") if output.is_file() else ""
        if current != text:
            print(f"{output} is out of date: run `python -m infrastructure.openapi`", file=sys.stderr)
            return 1
        print(f"{output} is up to date")
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
