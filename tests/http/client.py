"""A small JSON client for the HTTP API (standard library only).

It speaks to the local server (`http://127.0.0.1:PORT`) or to a deployed stage
(`https://ID.execute-api.REGION.amazonaws.com/v1/`): the base URL's path prefixes every
request path.

A client signs its requests with an ID token (`Authorization: Bearer ...`) when it has
one. `as_caller(user, *groups)` is a client signed in as that user: against a local
server it asks the server's operator endpoint for the token (`regctl token` does the
same); against a deployed stage, only the caller whose token `E2E_TOKEN` holds exists.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

ERROR_KEYS = {"error", "message"}
# `make e2e URL=...` sets it: the HTTP tests then run against that API, not a local server.
BASE_URL_VARIABLE = "E2E_URL"
# With E2E_URL: an admin's ID token for the deployed user pool (`make e2e` signs one in).
TOKEN_VARIABLE = "E2E_TOKEN"
# Who the suites act as when a test does not say: an admin may do anything, so a test of
# something else is not a test of the ownership rules (tests/http/test_ownership.py is).
ADMIN_CALLER = "test-admin"
ADMINS = "admins"
ORGANIZERS = "organizers"
# API Gateway's own name for the request id header; the local server sends X-Request-Id.
REQUEST_ID_HEADERS = ("x-request-id", "x-amzn-requestid")
# GSI1 (users, events, a user's registrations) is eventually consistent on AWS: how long
# a listing may take to show a write. DynamoDB Local shows it at once.
EVENTUAL_TIMEOUT_S = 20.0

_MISSING = object()
T = TypeVar("T")


def base_url() -> str | None:
    """The API the HTTP tests run against when it is not a local server of their own."""
    return os.environ.get(BASE_URL_VARIABLE, "").strip() or None


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def request_id(self) -> str | None:
        return next((self.headers[h] for h in REQUEST_ID_HEADERS if h in self.headers), None)

    def error(self, status: int, code: str) -> dict[str, Any]:
        """Asserts an error answer of the documented shape; returns its body."""
        assert self.status == status, (self.status, self.raw)
        assert self.header("content-type") == "application/json"
        body = self.body
        assert body["error"] == code, body
        assert isinstance(body["message"], str) and body["message"].strip(), body
        expected = ERROR_KEYS | ({"fields"} if code == "ValidationError" else set())
        assert set(body) == expected, body
        return dict(body)

    def invalid(self, *fields: str) -> list[dict[str, Any]]:
        """Asserts a 422 that names (at least) `fields`; returns the field list."""
        body = self.error(422, "ValidationError")
        named = {f["field"] for f in body["fields"]}
        assert set(fields) <= named, (fields, body)
        return list(body["fields"])


class Client:
    def __init__(self, url: str, timeout: float = 60.0, *, token: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self.secure = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.secure else 80)
        self.prefix = parts.path.rstrip("/")  # a deployed API's stage, e.g. /v1
        self.timeout = timeout
        self.token = token
        self._signed_in: dict[tuple[str, frozenset[str]], Client] = {}

    def as_caller(self, user_id: str, *groups: str) -> Client:
        """A client signed in as `user_id`, a member of exactly `groups` (cached)."""
        wanted = (user_id, frozenset(groups))
        found = self._signed_in.get(wanted)
        if found is None:
            found = self._signed_in[wanted] = Client(
                self.url, self.timeout, token=self.issue_token(user_id, *groups)
            )
        return found

    def as_admin(self) -> Client:
        if base_url() is not None and os.environ.get(TOKEN_VARIABLE):
            return Client(self.url, self.timeout, token=os.environ[TOKEN_VARIABLE])
        return self.as_caller(ADMIN_CALLER, ADMINS)

    def issue_token(self, user_id: str, *groups: str) -> str:
        """An ID token of the local server's user pool (its operator endpoint)."""
        answer = self.request(
            "POST", "/_ops/token", {"userId": user_id, "groups": list(groups)}, signed=False
        )
        assert answer.status == 200, (answer.status, answer.raw)
        return str(answer.body["token"])

    def _connection(self) -> http.client.HTTPConnection:
        if self.secure:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(
        self,
        method: str,
        path: str,
        json_body: Any = _MISSING,
        *,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        signed: bool = True,
    ) -> Answer:
        send_headers = dict(headers or {})
        if signed and self.token is not None and not any(k.lower() == "authorization" for k in send_headers):
            send_headers["Authorization"] = f"Bearer {self.token}"
        if json_body is not _MISSING:
            body = json.dumps(json_body)
            send_headers.setdefault("Content-Type", "application/json")
        payload = body.encode("utf-8") if isinstance(body, str) else body
        connection = self._connection()
        try:
            connection.request(method, self.prefix + path, body=payload, headers=send_headers)
            response = connection.getresponse()
            raw = response.read()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, raw)
        finally:
            connection.close()

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, json_body: Any = _MISSING, **kwargs: Any) -> Answer:
        return self.request("POST", path, json_body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Answer:
        return self.request("DELETE", path, **kwargs)

    # The story's steps, asserting success.

    def user(self, prefix: str = "u") -> str:
        user_id = uid(prefix)
        answer = self.post("/users", {"userId": user_id, "name": f"Name of {user_id}"})
        assert answer.status == 201, answer.raw
        return user_id

    def event(self, capacity: int, has_waitlist: bool = False, prefix: str = "e") -> str:
        event_id = uid(prefix)
        answer = self.post(
            "/events",
            {
                "eventId": event_id,
                "title": f"Title of {event_id}",
                "capacity": capacity,
                "hasWaitlist": has_waitlist,
            },
        )
        assert answer.status == 201, answer.raw
        return event_id

    def register(self, event_id: str, user_id: str) -> Answer:
        return self.post(f"/events/{event_id}/register", {"userId": user_id})

    def unregister(self, event_id: str, user_id: str) -> Answer:
        return self.delete(f"/events/{event_id}/register/{user_id}")

    def all_items(self, path: str, limit: int) -> list[dict[str, Any]]:
        """Every item of a listing, page by page."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        separator = "&" if "?" in path else "?"
        for _ in range(1000):
            query = f"{separator}limit={limit}" + (f"&nextToken={quote(token)}" if token else "")
            answer = self.get(path + query)
            assert answer.status == 200, answer.raw
            page = answer.body
            assert set(page) == {"items", "nextToken"}, page
            assert len(page["items"]) <= limit
            items.extend(page["items"])
            token = page["nextToken"]
            if token is None:
                return items
        raise AssertionError("the listing never ended")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def eventually(check: Callable[[], T], timeout: float = EVENTUAL_TIMEOUT_S) -> T:
    """`check()` once it stops failing an assertion: for what a listing from GSI1 says
    right after a write (on AWS the index usually catches up within a fraction of a second)."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def eventually_equal(read: Callable[[], T], expected: T, timeout: float = EVENTUAL_TIMEOUT_S) -> None:
    """`read()` comes to equal `expected` within `timeout` (see `eventually`)."""

    def check() -> T:
        value = read()
        assert value == expected, (value, expected)
        return value

    eventually(check, timeout)
