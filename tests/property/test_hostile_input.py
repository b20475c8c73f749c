"""No input gets a 5xx: hostile bodies, headers, tokens and path segments for every route.

Requests go through the local API (`LocalApi.handle`, the server minus its socket) over
the synthesized workflows on moto. Every answer must be one the route documents
(docs/openapi.json; the operator routes' own set), an error must have the documented
shape, and no message may carry anything internal. 415 (a body that is not JSON) and
404 `RouteNotFound` (a segment that splits the path) are documented for every route in
the README. The example count follows the hypothesis profile (`ci` in `make test`).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from infrastructure.local.engine import LocalEngine
from infrastructure.local.local_api import LocalApi, Reply
from tests.fixtures import figures

DOCUMENT = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
DOCUMENTED: dict[tuple[str, str], set[int]] = {
    (method.upper(), path): {int(status) for status in operation["responses"]}
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
}
OPS_ROUTES: dict[tuple[str, str], set[int]] = {
    ("GET", "/_ops/executions"): {200, 400, 422},
    ("GET", "/_ops/executions/{name}"): {200, 404, 422},
    ("GET", "/_ops/events/{eventId}"): {200, 404, 422},
    ("POST", "/_ops/reconcile"): {202, 400, 404, 422},
}
ROUTES = {**DOCUMENTED, **OPS_ROUTES}
EVERYWHERE = {415, 404}
ERROR_KEYS = {"error", "message"}
# What an error message must never carry: internals, endpoints, stack traces, class names.
LEAKS = (
    "Traceback",
    'File "',
    "Exception",
    "botocore",
    "boto3",
    "http://",
    "https://",
    "arn:aws",
    "pydantic",
)

hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300),
    st.sampled_from(["x" * 10_000, "\x00", "a\x00b", "..", "%00", "é" * 65, " ", "evt-1", "u-1", "a/b"]),
)


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.just(b""),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"userId": hostile_text, "name": hostile_text, "title": hostile_text, "capacity": st.integers()},
        optional={"eventId": hostile_text, "hasWaitlist": json_values},
    ).map(lambda v: json.dumps(v).encode()),
    st.sampled_from(
        [
            _deep(1000).encode(),
            ('{"userId": "u", "name": ' + '{"a": ' * 200 + "1" + "}" * 200 + "}").encode(),
            ('{"title": "T", "capacity": ' + "9" * 5000 + "}").encode(),
            ('{"userId": ' + "9" * 5000 + "}").encode(),
            json.dumps({f"k{n}": n for n in range(5000)}).encode(),
            b'{"userId": "u", "name": "a\\u0000b"}',
            b"\xff\xfe\x00",
            b"{",
            b"userId=u&name=n",
        ]
    ),
    st.binary(max_size=64),
)
content_types = st.one_of(
    st.sampled_from(
        [
            None,
            "application/json",
            "APPLICATION/JSON",
            "Application/Json; charset=UTF-8",
            "application/json;charset=utf-8",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
            "application/json; charset=\x00",
        ]
    ),
    st.text(max_size=30),
)


def _token(document: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


tokens = st.one_of(
    hostile_text,
    st.sampled_from(
        [
            _token({"k": {"PK": "EVENT#e", "SK": "QUEUE#000000000001"}, "o": 1e300}),
            _token({"k": {"PK": "USERS", "GSI1PK": "USERS", "SK": "METADATA"}}) + ".forged",
            "a.b",
            ".",
        ]
    ),
)
queries = st.one_of(
    st.just(""),
    st.builds(
        lambda limit, token: "&".join(
            part
            for part in (
                f"limit={quote(limit, safe='')}" if limit is not None else "",
                f"nextToken={quote(token, safe='')}" if token is not None else "",
            )
            if part
        ),
        st.none() | st.sampled_from(["1", "0", "101", "-1", "1e3", "abc", "9" * 5000]) | st.text(max_size=5),
        st.none() | tokens,
    ),
    st.text(max_size=40).map(lambda q: quote(q, safe="=&")),
)
idempotency_keys = st.none() | st.sampled_from(["", "k" * 200, "bad key", "\x00"]) | st.uuids().map(str)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, str, dict[str, str], bytes]:
    method, template = draw(st.sampled_from(sorted(ROUTES)))
    path = template
    for name in ("eventId", "userId", "name"):
        if "{" + name + "}" in path:
            path = path.replace("{" + name + "}", quote(draw(hostile_text), safe="") or "x")
    headers: dict[str, str] = {}
    content_type = draw(content_types)
    if content_type is not None:
        headers["Content-Type"] = content_type
    key = draw(idempotency_keys)
    if key is not None:
        headers["Idempotency-Key"] = key
    query = draw(queries) if method == "GET" else ""
    body = draw(bodies) if method in ("POST", "DELETE") else b""
    return method, template, path + (f"?{query}" if query else ""), headers, body


@pytest.fixture(scope="module")
def api(engine: LocalEngine) -> Iterator[LocalApi]:
    local = LocalApi(engine)
    for user in ("u-1", "u-2"):
        _call(local, "POST", "/users", {}, json.dumps({"userId": user, "name": "Name"}).encode())
    event = {"eventId": "evt-1", "title": "Event", "capacity": 1, "hasWaitlist": True}
    _call(local, "POST", "/events", {}, json.dumps(event).encode())
    yield local


@pytest.fixture(scope="module")
def answers() -> Iterator[Counter[int]]:
    """The statuses the hostile requests got, for docs/reliability.md."""
    statuses: Counter[int] = Counter()
    yield statuses
    if statuses:
        figures.merge(
            "hostile_input",
            {
                "requests": sum(statuses.values()),
                "routes": len(ROUTES),
                "statuses": {str(status): statuses[status] for status in sorted(statuses)},
            },
        )


def _call(api: LocalApi, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
    safe_headers = [(k, v) for k, v in headers.items() if "\x00" not in v and "\n" not in v and "\r" not in v]
    return api.handle(
        method=method, target=target, headers=safe_headers, body=body, request_id=str(uuid.uuid4())
    )


JSON_HEADERS = {"Content-Type": "application/json"}


# The findings this test stands for, always tried whatever the profile draws.
@given(request=requests())
@example(request=("POST", "/users", "/users", JSON_HEADERS, _deep(1000).encode()))
@example(
    request=("POST", "/events", "/events", JSON_HEADERS, b'{"title": "T", "capacity": ' + b"9" * 5000 + b"}")
)
@example(
    request=(
        "POST",
        "/events/{eventId}/register",
        "/events/evt-1/register",
        JSON_HEADERS,
        _deep(1000).encode(),
    )
)
@example(
    request=(
        "POST",
        "/users",
        "/users",
        {"Content-Type": "APPLICATION/JSON"},
        b'{"userId": "u-9", "name": "N"}',
    )
)
@example(request=("GET", "/_ops/events/{eventId}", "/_ops/events/" + "x" * 10_000, {}, b""))
@example(
    request=(
        "GET",
        "/events/{eventId}/registrations",
        "/events/evt-1/registrations?nextToken=" + _token({"k": {"PK": "EVENT#evt-1", "SK": "QUEUE#1"}}),
        {},
        b"",
    )
)
def test_every_hostile_request_gets_a_documented_answer(
    api: LocalApi, answers: Counter[int], request: tuple[str, str, str, dict[str, str], bytes]
) -> None:
    method, template, target, headers, body = request
    reply = _call(api, method, target, headers, body)
    answers[reply.status] += 1
    assert reply.status < 500, (method, target, reply.status, reply.body[:500])
    assert reply.status in ROUTES[(method, template)] | EVERYWHERE, (
        method,
        target,
        reply.status,
        reply.body[:500],
    )
    assert len(reply.body) < 64 * 1024, (method, target, len(reply.body))
    document = json.loads(reply.body)
    if reply.status < 400:
        return
    assert isinstance(document, dict) and ERROR_KEYS <= set(document) <= ERROR_KEYS | {"fields"}, document
    assert isinstance(document["error"], str) and document["error"]
    assert isinstance(document["message"], str) and document["message"].strip()
    if reply.status == 404 and (method, template) not in DOCUMENTED.keys() | OPS_ROUTES.keys():
        assert document["error"] == "RouteNotFound"
    if document["error"] == "ValidationError":
        assert isinstance(document["fields"], list) and len(document["fields"]) <= 21
    else:
        assert "fields" not in document, document
    text = document["message"] + json.dumps(document.get("fields") or [])
    assert not any(leak in text for leak in LEAKS), document
