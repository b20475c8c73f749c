"""`regctl` against a running local stack: known executions, their JSON, the schedule."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest

from infrastructure import execution_names, names
from infrastructure.local.dynamodb_local import free_port
from infrastructure.local.engine import LocalEngine
from infrastructure.local.http_server import LocalServer
from infrastructure.local.operator_endpoints import ReconcileSchedule
from infrastructure.ops.cli import main
from infrastructure.ops.local_backend import LocalBackend
from registration.data import RegistrationStore
from tests.fixtures import drift
from tests.http.client import ADMIN_CALLER, Client

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("http"),
    pytest.mark.local_only("regctl and the schedule on the local stack (operator endpoints, table, engine)"),
]


def regctl(server: LocalServer, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([*args, "--url", server.url], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def regctl_json(server: LocalServer, *args: str) -> Any:
    code, out, err = regctl(server, *args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def story(client: Client) -> dict[str, str]:
    """A full event with a waitlist: ada registered, bob waitlisted, ada refused twice, cy
    refused (unknown user), then bob unregistered from the waitlist."""
    ada, bob = client.user("ada"), client.user("bob")
    event = client.event(capacity=1, has_waitlist=True, prefix="conf")
    assert client.register(event, ada).status == 201
    assert client.register(event, bob).status == 201
    assert client.register(event, ada).status == 409
    assert client.register(event, "nobody").status == 404
    assert client.unregister(event, bob).status == 200
    return {"event": event, "ada": ada, "bob": bob}


def test_list_filters_by_event_newest_first(server: LocalServer, story: dict[str, str]) -> None:
    items = regctl_json(server, "executions", "list", "--event", story["event"])["executions"]
    assert [(i["workflow"], i["userId"], i["status"]) for i in items] == [
        ("unregister", story["bob"], "SUCCEEDED"),
        ("register", "nobody", "FAILED"),
        ("register", story["ada"], "FAILED"),
        ("register", story["bob"], "SUCCEEDED"),
        ("register", story["ada"], "SUCCEEDED"),
    ]
    starts = [i["startDate"] for i in items]
    assert starts == sorted(starts, reverse=True)
    for item in items:
        assert item["eventId"] == story["event"]
        share = execution_names.budget(item["workflow"])
        assert item["name"].startswith(f"{item['workflow']}-{story['event'][:share]}-")
        assert item["name"].endswith(item["requestId"]) and len(item["name"]) <= 80
        assert item["durationMs"] >= 0


def test_list_filters_by_user_workflow_status_and_limit(server: LocalServer, story: dict[str, str]) -> None:
    event = story["event"]
    by_user = regctl_json(server, "executions", "list", "-e", event, "--user", story["ada"])["executions"]
    assert [i["status"] for i in by_user] == ["FAILED", "SUCCEEDED"]
    assert {i["userId"] for i in by_user} == {story["ada"]}
    failed = regctl_json(server, "executions", "list", "-e", event, "--status", "failed")["executions"]
    assert [(i["error"], i["userId"]) for i in failed] == [
        ("UserNotFound", "nobody"),
        ("AlreadyRegistered", story["ada"]),
    ]
    unregister = regctl_json(server, "executions", "list", "-e", event, "-w", "unregister")["executions"]
    assert [i["userId"] for i in unregister] == [story["bob"]]
    assert len(regctl_json(server, "executions", "list", "-e", event, "-n", "2")["executions"]) == 2


def test_list_filters_by_time_window(server: LocalServer, story: dict[str, str]) -> None:
    event = story["event"]
    items = regctl_json(server, "executions", "list", "-e", event)["executions"]
    oldest, newest = items[-1]["startDate"], items[0]["startDate"]
    assert len(regctl_json(server, "executions", "list", "-e", event, "--since", "1h")["executions"]) == 5
    assert regctl_json(server, "executions", "list", "-e", event, "--until", "1h")["executions"] == []
    window = regctl_json(server, "executions", "list", "-e", event, "--since", newest, "--until", newest)
    assert [i["startDate"] for i in window["executions"]] == [newest]
    assert (
        regctl_json(server, "executions", "list", "-e", event, "--until", oldest)["executions"][0][
            "startDate"
        ]
        == oldest
    )


def test_show_a_successful_run_as_a_timeline(server: LocalServer, story: dict[str, str]) -> None:
    (first,) = regctl_json(
        server, "executions", "list", "-e", story["event"], "-u", story["bob"], "-w", "register"
    )["executions"]
    shown = regctl_json(server, "executions", "show", first["name"])
    assert shown["execution"]["status"] == "SUCCEEDED"
    assert shown["execution"]["output"]["status"] == "waitlisted"
    states = shown["states"]
    # Sent without an Idempotency-Key: straight from the key check to the workflow itself.
    assert states[0]["name"] == "IdempotencyKeyGiven"
    assert "ClaimRequest" not in [s["name"] for s in states]
    assert states[-1]["type"] == "Succeed"
    for state in states:
        assert state["durationMs"] is not None and state["durationMs"] >= 0
        assert state["input"] is not None
    tasks = [s for s in states if s["type"] == "Task"]
    assert tasks[0]["name"] == "Validate"
    assert tasks and all(len(s["attempts"]) == 1 and s["retries"] == 0 for s in tasks)
    assert all(s["attempts"][0]["status"] == "succeeded" for s in tasks)


def test_show_marks_a_replayed_request(server: LocalServer, client: Client) -> None:
    user, event = client.user("rep"), client.event(capacity=2, prefix="replay")
    key = {"Idempotency-Key": f"replay-{user}"}
    first = client.post(f"/events/{event}/register", {"userId": user}, headers=key)
    again = client.post(f"/events/{event}/register", {"userId": user}, headers=key)
    assert (first.status, again.status, again.body) == (201, 201, first.body)

    runs = regctl_json(server, "executions", "list", "-e", event, "-u", user)["executions"]
    assert len(runs) == 2
    shown = {run["name"]: regctl(server, "executions", "show", run["name"])[1] for run in runs}
    replays = [name for name, text in shown.items() if "\n  replay   " in text]
    assert replays == [runs[0]["name"]]  # the newest, only
    assert "ReplayedSuccess" in shown[runs[0]["name"]]


def test_show_a_failed_run_with_its_error_and_cause(server: LocalServer, story: dict[str, str]) -> None:
    failed = regctl_json(
        server, "executions", "list", "-e", story["event"], "-u", story["ada"], "-s", "failed"
    )
    name = failed["executions"][0]["name"]
    shown = regctl_json(server, "executions", "show", name)
    execution = shown["execution"]
    assert (execution["status"], execution["error"]) == ("FAILED", "AlreadyRegistered")
    assert "already registered" in json.loads(execution["cause"])["errorMessage"]
    failing = [s for s in shown["states"] if any(a["status"] == "failed" for a in s["attempts"])]
    assert failing and failing[0]["error"] == "AlreadyRegistered"
    assert shown["states"][-1]["type"] == "Fail"

    code, text, _ = regctl(server, "executions", "show", name)
    assert code == 0
    assert "status FAILED" in text and "AlreadyRegistered: User" in text
    assert "stackTrace" not in text  # the cause is summarized unless --full
    code, full, _ = regctl(server, "executions", "show", name, "--full")
    assert code == 0 and "stackTrace" in full


def test_text_list_is_a_table(server: LocalServer, story: dict[str, str]) -> None:
    code, text, _ = regctl(server, "executions", "list", "-e", story["event"])
    assert code == 0
    header, *rows = text.strip().splitlines()
    assert header.split() == [
        "STARTED",
        "(UTC)",
        "WORKFLOW",
        "STATUS",
        "TOOK",
        "EVENT",
        "USER",
        "ERROR",
        "NAME",
    ]
    assert len(rows) == 5


def test_events_show(server: LocalServer, client: Client, story: dict[str, str]) -> None:
    event = client.event(capacity=1, has_waitlist=True, prefix="show")
    users = [client.user(p) for p in ("a", "b", "c")]
    for user in users:
        assert client.register(event, user).status == 201
    report = regctl_json(server, "events", "show", event)
    assert {k: report[k] for k in ("capacity", "registeredCount", "freeSeats", "waitlistCount")} == {
        "capacity": 1,
        "registeredCount": 1,
        "freeSeats": 0,
        "waitlistCount": 2,
    }
    assert [(w["position"], w["userId"]) for w in report["waitlistHead"]] == [(1, users[1]), (2, users[2])]
    assert report["lastRepair"] is None


def test_reconcile_one_event_prints_its_repairs(
    server: LocalServer, client: Client, local_store: RegistrationStore
) -> None:
    event = client.event(capacity=3, prefix="drift")
    user = client.user("r")
    assert client.register(event, user).status == 201

    clean = regctl_json(server, "reconcile", event)
    assert clean["status"] == "SUCCEEDED"
    assert (clean["events"], clean["repairs"]) == (1, [])
    share = execution_names.budget(names.RECONCILE_WORKFLOW)
    assert clean["name"].startswith(f"{names.RECONCILE_WORKFLOW}-{event[:share]}-regctl-")

    drift.set_fields(local_store, event, registeredCount=3)  # one seat, the counter says three
    repaired = regctl_json(server, "reconcile", event)
    assert repaired["status"] == "SUCCEEDED"
    (result,) = repaired["repairs"]
    assert (result["eventId"], result["outcome"]) == (event, "repaired")
    assert (result["before"]["registeredCount"], result["after"]["registeredCount"]) == (3, 1)
    assert repaired["totals"]["countRepairs"] >= 1

    report = regctl_json(server, "events", "show", event)
    assert report["registeredCount"] == 1
    assert report["lastRepair"]["runId"] == repaired["name"]
    assert report["lastReconciliation"]["name"] == repaired["name"]

    code, text, _ = regctl(server, "reconcile", event)
    assert code == 0 and "No repairs" in text


def test_unknown_names_and_events_are_one_line_errors(server: LocalServer) -> None:
    for args in (("executions", "show", "register-nope"), ("events", "show", "nope"), ("reconcile", "nope")):
        code, out, err = regctl(server, *args)
        assert (code, out) == (1, "")
        assert err.startswith("regctl: ") and err.count("\n") == 1, err


LONG_ID = "x" * 10_000


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", f"/_ops/events/{LONG_ID}", None, "eventId"),
        ("GET", "/_ops/events/bad%00id", None, "eventId"),
        ("GET", f"/_ops/executions/{LONG_ID}", None, "name"),
        ("GET", "/_ops/executions/bad.name", None, "name"),
        ("GET", f"/_ops/executions?eventId={LONG_ID}", None, "eventId"),
        ("GET", f"/_ops/executions?userId={LONG_ID}", None, "userId"),
        ("POST", "/_ops/reconcile", {"eventId": LONG_ID}, "eventId"),
    ],
)
def test_operator_ids_are_validated_as_the_public_routes_do(
    server: LocalServer, method: str, path: str, body: Any, field: str
) -> None:
    client = Client(server.url).as_admin()
    answer = client.request(method, path, body) if body is not None else client.request(method, path)
    answer.invalid(field)
    assert LONG_ID not in answer.raw.decode()  # the refusal does not echo the input back


def test_operator_bodies_are_parsed_within_bounds(server: LocalServer) -> None:
    client = Client(server.url).as_admin()
    for raw in ("[" * 1000 + "]" * 1000, '{"eventId": ' + "9" * 5000 + "}"):
        answer = client.post("/_ops/reconcile", body=raw, headers={"Content-Type": "application/json"})
        answer.error(400, "BadRequest")


def test_usage_errors_exit_2(server: LocalServer) -> None:
    code, _, err = regctl(server, "executions", "list", "--status", "sleeping")
    assert code == 2 and "status must be one of" in err


def test_no_server_is_one_clear_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["executions", "list", "--url", url], out=out, err=err) == 1
    assert err.getvalue() == f"regctl: No local stack at {url} — start it with `make run` (or pass --url)\n"
    assert out.getvalue() == ""


def test_the_schedule_starts_reconcile_runs(local_engine: LocalEngine) -> None:
    lines = io.StringIO()
    schedule = ReconcileSchedule(local_engine, 0.3, out=lines).start()
    try:
        deadline = time.monotonic() + 30
        while schedule.runs < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        schedule.stop()
    assert schedule.runs >= 2
    runs = local_engine.list_executions(names.RECONCILE_WORKFLOW)
    scheduled = [r for r in runs if r["name"].startswith("reconcile-all-schedule-")]
    assert len(scheduled) >= 2
    assert all(r["status"] == "SUCCEEDED" for r in scheduled[:2])
    text = lines.getvalue().splitlines()
    assert len(text) >= 2 and "SUCCEEDED" in text[0] and "reconcile-all-schedule-" in text[0]
    count = schedule.runs
    time.sleep(0.8)
    assert schedule.runs == count  # stopped: no more runs


def test_a_disabled_schedule_starts_nothing(local_engine: LocalEngine) -> None:
    schedule = ReconcileSchedule(local_engine, 0).start()
    assert not schedule.enabled
    schedule.stop()
    assert schedule.runs == 0


def test_events_tail_follows_one_events_changes_as_they_commit(server: LocalServer, client: Client) -> None:
    """`regctl events tail`: the server runs its pipe as `make run` does; the tail prints
    each of the event's domain events once, in commit order, and stops after --count."""
    ada, bob = client.user("ada"), client.user("bob")
    event = client.event(capacity=1, has_waitlist=True, prefix="tail")
    assert client.register(event, ada).status == 201
    assert client.register(event, bob).status == 201
    code, out, err = regctl(server, "events", "tail", "--event", event, "--all", "--count", "3", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["detail-type"], e["detail"].get("userId")) for e in lines] == [
        ("event.created", ADMIN_CALLER),
        ("registration.registered", ada),
        ("registration.waitlisted", bob),
    ]
    assert {e["source"] for e in lines} == {"event-registration"}
    # From now on: a tail that starts after these sees only what commits later.
    backend = LocalBackend(server.url)
    nothing, cursor = backend.domain_events(None, event, wait=0)
    assert nothing == []
    assert client.unregister(event, ada).status == 200
    handed_over, cursor = backend.domain_events(cursor, event, wait=10)
    if len(handed_over) < 2:  # the two records of one commit may come in two reads
        more, cursor = backend.domain_events(cursor, event, wait=10)
        handed_over += more
    assert sorted((e["detail-type"], e["detail"]["userId"]) for e in handed_over) == [
        ("registration.promoted", bob),
        ("registration.unregistered", ada),
    ]


def test_regctl_lists_and_redrives_failed_webhook_deliveries(
    server: LocalServer, local_engine: LocalEngine, client: Client
) -> None:
    """A receiver nobody listens on: its message becomes a dead letter after the (here
    shortened) retries; `regctl webhooks failed` shows it, `redrive` queues it again."""
    attempts = len(local_engine.webhook_retry_schedule) + 1
    event = client.event(capacity=1, prefix="hooked")
    made = client.post("/webhooks", {"url": "http://127.0.0.1:9/nobody", "eventId": event})
    assert made.status == 201, made.raw
    hook = made.body["webhookId"]
    assert client.register(event, client.user("ada")).status == 201
    deadline = time.monotonic() + 30 + sum(local_engine.webhook_retry_schedule)
    while not any(f["webhookId"] == hook for f in regctl_json(server, "webhooks", "failed")["failed"]):
        assert time.monotonic() < deadline, "no dead letter"
        time.sleep(0.1)
    (failed,) = [f for f in regctl_json(server, "webhooks", "failed")["failed"] if f["webhookId"] == hook]
    assert (failed["type"], failed["eventId"], failed["attempts"]) == (
        "registration.registered",
        event,
        attempts,
    )
    assert failed["deadLetteredAt"] is not None
    code, out, _ = regctl(server, "webhooks", "failed")
    assert code == 0 and f"{hook}  registration.registered  event={event}" in out
    assert regctl_json(server, "webhooks", "redrive", "--webhook", hook) == {"redriven": 1}
    assert not any(f["webhookId"] == hook for f in regctl_json(server, "webhooks", "failed")["failed"])
    assert client.delete(f"/webhooks/{hook}").status == 200  # nothing more goes to it
