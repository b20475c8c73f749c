"""A reconcile run that continues in further executions is still one run for the operator:
its names, its report, `regctl reconcile` following it, the schedule's line about it."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import uuid
from typing import Any

import pytest

from infrastructure import execution_names, names
from infrastructure.local.execution_results import ExecutionResult
from infrastructure.local.operator_endpoints import run_line
from infrastructure.ops import cli, executions
from infrastructure.ops.backend import NotFound

WORKFLOW = names.RECONCILE_WORKFLOW
CHAIN = str(uuid.uuid4())
ROOT = execution_names.reconcile_name(WORKFLOW, None, execution_names.STARTED_BY_SCHEDULE)
SECOND = execution_names.continuation_name(WORKFLOW, 2, CHAIN)
T0 = dt.datetime(2026, 11, 27, 13, 0, tzinfo=dt.UTC)


def _result(event_id: str, outcome: str) -> dict[str, Any]:
    return {"eventId": event_id, "outcome": outcome, "countRepairs": int(outcome == "repaired")}


def _totals(events: int, repaired: list[str]) -> dict[str, Any]:
    return {"pages": events, "events": events, "repaired": len(repaired), "repairedEventIds": repaired}


CONTINUED = {
    "runId": ROOT,
    names.RECONCILE_CONTINUED_AS_KEY: SECOND,
    "segment": 1,
    "totals": _totals(2, ["a"]),
}
SUMMARY = {**_totals(3, ["a", "c"]), "runId": ROOT, "countRepairs": 2, "recorded": True}
CARRIED = {names.RECONCILE_CONTINUATION_KEY: {"run": {"runId": ROOT, "startedAt": T0.isoformat()}}}


def _events(*results: dict[str, Any]) -> list[dict[str, Any]]:
    """Normalized history events: one Map iteration of ReconcileEvent per result."""
    events: list[dict[str, Any]] = []
    for index, result in enumerate(results):
        first = len(events) + 1
        when = executions.iso(T0)
        events += [
            {
                "id": first,
                "previousEventId": 0,
                "type": "MapIterationStarted",
                "timestamp": when,
                "details": {"index": index},
            },
            {
                "id": first + 1,
                "previousEventId": first,
                "type": "TaskStateEntered",
                "timestamp": when,
                "details": {"name": "ReconcileEvent", "input": "{}"},
            },
            {
                "id": first + 2,
                "previousEventId": first + 1,
                "type": "TaskStateExited",
                "timestamp": when,
                "details": {"name": "ReconcileEvent", "output": json.dumps(result)},
            },
        ]
    return events


def _execution(
    name: str, status: str, output: Any, start: int, stop: int | None, **extra: Any
) -> dict[str, Any]:
    start_iso = executions.iso(T0 + dt.timedelta(seconds=start))
    stop_iso = executions.iso(T0 + dt.timedelta(seconds=stop)) if stop is not None else None
    return {
        "name": name,
        "status": status,
        "startDate": start_iso,
        "stopDate": stop_iso,
        "durationMs": executions.duration_ms(start_iso, stop_iso),
        "output": output,
        "error": None,
        "cause": None,
        **extra,
    }


# --- names -----------------------------------------------------------------------------


def test_continuations_are_named_like_every_other_run() -> None:
    assert execution_names.continuation_format(WORKFLOW).format(2, CHAIN) == SECOND
    longest = execution_names.continuation_name(WORKFLOW, 10**9, CHAIN)
    assert len(longest) <= execution_names.MAX_LENGTH
    assert execution_names.clean(longest) == longest
    parts = execution_names.parse(SECOND, [WORKFLOW, names.REGISTER_WORKFLOW])
    assert parts is not None and (parts.workflow, parts.event_id, parts.request_id) == (
        WORKFLOW,
        execution_names.ALL_EVENTS,
        CHAIN,
    )
    assert execution_names.is_continuation(SECOND, WORKFLOW)
    assert not execution_names.is_continuation(ROOT, WORKFLOW)
    assert not execution_names.is_continuation(
        execution_names.execution_name(names.REGISTER_WORKFLOW, "all", "part2", CHAIN), WORKFLOW
    )


# --- the run behind an execution -----------------------------------------------------


def test_an_execution_knows_its_run_and_whether_it_handed_over() -> None:
    assert executions.continued_as(CONTINUED) == SECOND
    assert executions.continued_as(SUMMARY) is None
    assert executions.continued_as(None) is None
    assert executions.run_of({}, ROOT) == {"runId": ROOT, "startedAt": None}
    assert executions.run_of(CARRIED, SECOND)["runId"] == ROOT
    assert executions.run_status("SUCCEEDED", CONTINUED) == "RUNNING"
    assert executions.run_status("SUCCEEDED", SUMMARY) == "SUCCEEDED"
    assert executions.run_status("FAILED", None) == "FAILED"


def test_the_last_run_is_reported_as_its_first_execution_named_it() -> None:
    newest = executions.summary(
        name=SECOND, workflow=WORKFLOW, status="RUNNING", start=T0 + dt.timedelta(seconds=9)
    )
    run = executions.last_run(newest, CARRIED, None)
    assert (run["name"], run["execution"], run["status"]) == (ROOT, SECOND, "RUNNING")
    assert run["startDate"] == executions.iso(T0)
    single = executions.summary(name=ROOT, workflow=WORKFLOW, status="SUCCEEDED", start=T0, stop=T0)
    assert executions.last_run(single, {}, SUMMARY) == single


# --- the report --------------------------------------------------------------------------


def test_a_report_covers_every_execution_of_the_run() -> None:
    parts = [
        (
            _execution(ROOT, "SUCCEEDED", CONTINUED, 0, 4),
            executions.timeline(_events(_result("a", "repaired"), _result("b", "clean"))),
        ),
        (
            _execution(SECOND, "SUCCEEDED", SUMMARY, 4, 6),
            executions.timeline(_events(_result("c", "repaired"))),
        ),
    ]
    report = executions.reconcile_report(parts)
    assert (report["name"], report["status"], report["executions"]) == (ROOT, "SUCCEEDED", [ROOT, SECOND])
    assert report["durationMs"] == 6000
    assert report["totals"] == SUMMARY
    assert report["events"] == 3
    assert [r["eventId"] for r in report["repairs"]] == ["a", "c"]
    # A run that broke off in a later execution still shows the totals it had reached.
    broken = [parts[0], (_execution(SECOND, "FAILED", None, 4, 5, error="States.Runtime"), [])]
    failed = executions.reconcile_report(broken)
    assert (failed["status"], failed["error"]) == ("FAILED", "States.Runtime")
    assert failed["totals"] == {**CONTINUED["totals"], "runId": ROOT}
    with pytest.raises(ValueError):
        executions.reconcile_report([])


class ChainBackend:
    """A stack whose reconcile run continues once; the second execution shows up late."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, bool]] = []

    def start_reconcile(self, event_id: str | None) -> dict[str, Any]:
        return {"name": ROOT, "workflow": WORKFLOW}

    def execution(self, name: str, *, history: bool = True, since: str | None = None) -> dict[str, Any]:
        self.asked.append((name, history))
        if name == ROOT:
            return {
                "execution": _execution(ROOT, "SUCCEEDED", CONTINUED, 0, 4),
                "events": _events(_result("a", "repaired")),
            }
        if name != SECOND:
            raise NotFound(name)
        seen = sum(1 for asked, _ in self.asked if asked == SECOND)
        if seen == 1:
            raise NotFound(name)
        if seen == 2:
            return {"execution": _execution(SECOND, "RUNNING", None, 4, None, input=CARRIED)}
        return {
            "execution": _execution(SECOND, "SUCCEEDED", SUMMARY, 4, 6, input=CARRIED),
            "events": _events(_result("c", "repaired")),
        }


def test_regctl_reconcile_follows_the_run_to_its_last_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "POLL_S", 0)
    backend = ChainBackend()
    out, err = io.StringIO(), io.StringIO()
    args = argparse.Namespace(event_id=None, timeout=10.0, json=True)

    code = cli._reconcile(backend, args, out, err)  # type: ignore[arg-type]

    report = json.loads(out.getvalue())
    assert code == 0
    assert (report["name"], report["status"], report["executions"]) == (ROOT, "SUCCEEDED", [ROOT, SECOND])
    assert [r["eventId"] for r in report["repairs"]] == ["a", "c"]
    assert report["totals"]["events"] == 3
    text = io.StringIO()
    args.json = False
    backend = ChainBackend()
    assert cli._reconcile(backend, args, text, io.StringIO()) == 0  # type: ignore[arg-type]
    assert text.getvalue().startswith(
        f"Reconcile run {ROOT} SUCCEEDED in 6.0s: 3 events checked in 2 executions"
    )


def test_the_schedule_prints_one_line_per_run() -> None:
    def part(name: str, start: int, stop: int, output: Any) -> ExecutionResult:
        return ExecutionResult(
            execution_arn=f"arn:aws:states:us-east-1:123456789012:execution:m:{name}",
            state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:m",
            name=name,
            status="SUCCEEDED",
            input={},
            output=output,
            error=None,
            cause=None,
            start_date=T0 + dt.timedelta(seconds=start),
            stop_date=T0 + dt.timedelta(seconds=stop),
        )

    line = run_line([part(ROOT, 0, 4, CONTINUED), part(SECOND, 4, 6, SUMMARY)])
    assert line == (
        f"reconcile {ROOT} SUCCEEDED in 6000ms (2 executions): 3 events, 2 repairs (2 count) in a, c"
    )
    assert run_line(part(ROOT, 0, 4, CONTINUED)).startswith(f"reconcile {ROOT} RUNNING in 4000ms")
