"""A keyed request has its effect at most once, whatever crashes: the serving process is
killed (SIGKILL) at each point between claim, write and record, restarted on its data,
and the request retried with the same key.

A retry answers what the first run did (status and body, byte for byte) once that run
has written, or 409 `RequestInProgress` while the claim's lease runs; after the lease a
request that had changed nothing runs, once. Each crash is compared with a clean run of
the same steps: the answers and the event's items must match, and a registration made
after the crash is left alone by the retry.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer

from infrastructure.local.dynamodb_local import free_port
from registration import domain_events, keys
from registration.models import scoped_key
from tests.fixtures import figures
from tests.fixtures.processes import READY, Process
from tests.http.client import ADMIN_CALLER, Answer, Client, uid

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("http-crash"),
    pytest.mark.local_only("kills the local server's process"),
]

CRASHING_SERVER = "tests.fixtures.crashing_server"
_DESER = TypeDeserializer()


# --- the stack, killed and restarted -----------------------------------------------------


class Stack:
    """The local server (with its own DynamoDB Local on `data_dir`), started again after each kill."""

    def __init__(self, data_dir: Path, crash_file: Path) -> None:
        self.data_dir, self.crash_file = data_dir, crash_file
        self.port = free_port()
        self.process: Process | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = Client(self.url, timeout=60)  # signed in at each start (see start)
        self.restarts: list[float] = []

    def start(self) -> None:
        began = time.monotonic()
        args = [str(self.crash_file), "--port", str(self.port), "--data-dir", str(self.data_dir)]
        self.process = Process([*args, "--quiet", "--reconcile-every", "0"], module=CRASHING_SERVER)
        line = self.process.wait_for("DynamoDB Local at")
        self.endpoint = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)  # type: ignore[union-attr]
        self.process.wait_for(READY)
        self.restarts.append(time.monotonic() - began)
        # The local user pool lives in the server's process: a restarted server has a new
        # one, so its callers sign in again (an AWS pool outlives any crash).
        self.client = Client(self.url, timeout=60).as_admin()

    def crash_at(self, point: str, key: str) -> None:
        self.crash_file.write_text(json.dumps({"point": point, "key": key}))

    def killed(self) -> bool:
        assert self.process is not None
        code = self.process.popen.wait(timeout=60)
        return code == -9

    def stop(self) -> None:
        if self.process is not None and self.process.popen.poll() is None:
            self.process.popen.kill()
            self.process.popen.wait(timeout=30)

    def table(self) -> Any:
        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        (name,) = dynamodb.list_tables()["TableNames"]
        return dynamodb, name

    def items(self, event_id: str) -> list[dict[str, Any]]:
        dynamodb, name = self.table()
        pages = dynamodb.get_paginator("query").paginate(
            TableName=name,
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues={":pk": {"S": keys.event_pk(event_id)}},
            ConsistentRead=True,
        )
        return [
            {k: _DESER.deserialize(v) for k, v in item.items()} for page in pages for item in page["Items"]
        ]

    def record(self, key: str) -> dict[str, Any]:
        dynamodb, name = self.table()
        item = dynamodb.get_item(
            TableName=name,
            # The client is signed in as the admin: the record is the key scoped to them.
            Key={k: {"S": v} for k, v in keys.idempotency_key(scoped_key(key, ADMIN_CALLER)).items()},
            ConsistentRead=True,
        )["Item"]
        return {k: _DESER.deserialize(v) for k, v in item.items()}

    def end_lease(self, key: str) -> None:
        """As if the claim's lease had run out: what 90 s of waiting would do."""
        dynamodb, name = self.table()
        dynamodb.update_item(
            TableName=name,
            # The client is signed in as the admin: the record is the key scoped to them.
            Key={k: {"S": v} for k, v in keys.idempotency_key(scoped_key(key, ADMIN_CALLER)).items()},
            UpdateExpression="SET leaseExpiresAt = :past",
            ExpressionAttributeValues={":past": {"N": "0"}},
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("crash")
    running = Stack(root / "data", root / "crash.json")
    running.start()
    try:
        yield running
    finally:
        running.stop()


# --- scenarios -------------------------------------------------------------------------


@dataclass
class Ids:
    event: str
    users: dict[str, str]  # role -> user id
    key: str


@dataclass(frozen=True)
class Scenario:
    """An event and who holds what, one keyed request, and what happens after it."""

    name: str
    capacity: int
    seated: tuple[str, ...]
    queued: tuple[str, ...]
    request: Callable[[Client, Ids], Answer]
    # After the first request (clean) or the restart (crashed), before any retry.
    then: Callable[[Client, Ids], Answer] | None = None


def _keyed(ids: Ids) -> dict[str, str]:
    return {"Idempotency-Key": ids.key}


def _register(role: str) -> Callable[[Client, Ids], Answer]:
    return lambda c, ids: c.post(
        f"/events/{ids.event}/register", {"userId": ids.users[role]}, headers=_keyed(ids)
    )


def _unregister(role: str) -> Callable[[Client, Ids], Answer]:
    return lambda c, ids: c.delete(f"/events/{ids.event}/register/{ids.users[role]}", headers=_keyed(ids))


def _register_again(role: str) -> Callable[[Client, Ids], Answer]:
    """A new request of the user's own, without the key."""
    return lambda c, ids: c.register(ids.event, ids.users[role])


def _create_event(c: Client, ids: Ids) -> Answer:
    # The id is generated: a second run would make a second event.
    body = {"title": f"Title of {ids.event}", "capacity": 3, "hasWaitlist": False}
    return c.post("/events", body, headers=_keyed(ids))


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("register", capacity=2, seated=("a",), queued=(), request=_register("new")),
        # The reported loss: an unregistration whose answer was lost, the user back
        # before the retry. The retry must answer the first answer and touch nothing.
        Scenario(
            "unregister_promoting",
            capacity=1,
            seated=("a",),
            queued=("w1", "w2"),
            request=_unregister("a"),
            then=_register_again("a"),
        ),
        Scenario("refused_full", capacity=1, seated=("a",), queued=(), request=_register("new")),
        Scenario("create_event", capacity=1, seated=(), queued=(), request=_create_event),
    )
}
# (scenario, crash point): every point the scenario's request passes.
CASES = [
    ("register", "claimed"),
    ("register", "written"),
    ("unregister_promoting", "claimed"),
    ("unregister_promoting", "written"),
    ("refused_full", "claimed"),
    ("refused_full", "before-record"),
    ("refused_full", "recorded"),
    ("create_event", "claimed"),
    ("create_event", "written"),
]
# Points after which the first run's effect (and answer) is in the table.
COMMITTED = {"written", "recorded"}


def _build(client: Client, scenario: Scenario) -> Ids:
    roles = ("a", "new", *scenario.seated, *scenario.queued)
    ids = Ids(
        event=uid("crash"),
        users={role: client.user(f"crash-{role}") for role in dict.fromkeys(roles)},
        key=str(uuid.uuid4()),
    )
    if scenario.name != "create_event":
        created = client.post(
            "/events",
            {
                "eventId": ids.event,
                "title": "Crash",
                "capacity": scenario.capacity,
                "hasWaitlist": bool(scenario.queued),
            },
        )
        assert created.status == 201, created.raw
    for role in (*scenario.seated, *scenario.queued):
        assert client.register(ids.event, ids.users[role]).status == 201
    return ids


def _normalised(text: str, ids: Ids, created_event: str | None = None) -> str:
    for role, user in ids.users.items():
        text = text.replace(user, f"<user:{role}>")
    text = text.replace(ids.event, "<event>")
    if created_event:
        text = text.replace(created_event, "<created>")
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "<time>", text)


def _answer(answer: Answer, ids: Ids, created_event: str | None = None) -> tuple[int, str]:
    return answer.status, _normalised(answer.raw.decode(), ids, created_event)


def _event_items(stack: Stack, ids: Ids, created_event: str | None) -> list[str]:
    items = stack.items(created_event or ids.event)
    for item in items:
        item.pop("requestId", None)  # each run's own
        if domain_events.DETAIL_ATTRIBUTE in item:
            # The event it carries names that request, and its id is a digest of it.
            carried = json.loads(item[domain_events.DETAIL_ATTRIBUTE])
            carried.pop("requestId"), carried.pop("id")
            item[domain_events.DETAIL_ATTRIBUTE] = carried
        if str(item["SK"]).startswith(keys.CHANGE_PREFIX):
            item["SK"] = f"{keys.CHANGE_PREFIX}<change>"
            item.pop("expiresAt")  # its time's
    return sorted(_normalised(json.dumps(i, sort_keys=True, default=str), ids, created_event) for i in items)


@dataclass
class Clean:
    first: tuple[int, str]
    then: tuple[int, str] | None
    items: list[str]


def _created(answer: Answer) -> str | None:
    return str(answer.body["eventId"]) if answer.status == 201 and "title" in answer.body else None


@pytest.fixture(scope="module")
def clean_runs(stack: Stack) -> dict[str, Clean]:
    runs = {}
    for name, scenario in SCENARIOS.items():
        client = stack.client
        ids = _build(client, scenario)
        first = scenario.request(client, ids)
        then = scenario.then(client, ids) if scenario.then else None
        replay = scenario.request(client, ids)
        # A replay is the first answer byte for byte.
        assert (replay.status, replay.raw) == (first.status, first.raw), name
        created = _created(first)
        runs[name] = Clean(
            _answer(first, ids, created),
            _answer(then, ids, created) if then else None,
            _event_items(stack, ids, created),
        )
    return runs


@pytest.mark.parametrize(("name", "point"), CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_a_crash_at_any_point_leaves_one_effect_and_its_answer(
    stack: Stack, clean_runs: dict[str, Clean], name: str, point: str
) -> None:
    scenario, clean = SCENARIOS[name], clean_runs[name]
    client = stack.client
    ids = _build(client, scenario)

    stack.crash_at(point, ids.key)
    with pytest.raises(OSError):  # the connection dies with the process
        scenario.request(client, ids)
    assert stack.killed(), "the server died of SIGKILL at the point"
    stack.start()
    client = stack.client  # signed in again: the restarted server has a new user pool

    committed = point in COMMITTED
    then = scenario.then(client, ids) if scenario.then else None
    within_lease = scenario.request(client, ids)
    if committed:
        created = _created(within_lease)
        assert _answer(within_lease, ids, created) == clean.first
    else:
        within_lease.error(409, "RequestInProgress")
        assert within_lease.header("Retry-After") == "1"

    stack.end_lease(ids.key)
    after_lease = scenario.request(client, ids)
    created = _created(after_lease)
    assert _answer(after_lease, ids, created) == clean.first
    if committed:
        assert (after_lease.status, after_lease.raw) == (within_lease.status, within_lease.raw)
    replay = scenario.request(client, ids)
    assert (replay.status, replay.raw) == (after_lease.status, after_lease.raw)

    if then is not None and committed:
        # The same steps as the clean run, in the same order: the same answers, the same table.
        assert _answer(then, ids, created) == clean.then
    if then is None or committed:
        assert _event_items(stack, ids, created) == clean.items
    if name == "create_event":
        titled = [e for e in client.all_items("/events", 100) if e["title"] == f"Title of {ids.event}"]
        assert [e["eventId"] for e in titled] == [created], "one event, the one the answers name"
    record = stack.record(ids.key)
    assert record["status"] == "COMPLETED"
    assert (int(record["response"]["statusCode"]), record["response"]["body"]) == (
        after_lease.status,
        after_lease.raw.decode(),
    )
    figures.merge(
        "crash_replay",
        {
            f"{name}-{point}": {
                "scenario": name,
                "point": point,
                "answered": _shown(clean.first[0], json.loads(clean.first[1])),
                "within_lease": _shown(within_lease.status, within_lease.body),
                "after_lease": _shown(after_lease.status, after_lease.body),
                "restart_seconds": round(stack.restarts[-1], 1),
            }
        },
    )


def _shown(status: int, body: Any) -> str:
    """An answer as the figures show it: its status and its error code or status word."""
    detail = body.get("error") or body.get("status") if isinstance(body, dict) else None
    return f"{status} {detail}" if detail else str(status)
