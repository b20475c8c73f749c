"""Executions as the operator sees them: summaries, filters, timelines, reconcile results.

Shared by the local server's operator endpoints and the CLI's backends, so a run looks
the same whether it comes from the local engine, from `GetExecutionHistory` (Standard)
or from a state machine's CloudWatch log group (Express).

An *event* here is a history event normalized to
`{"id", "previousEventId", "type", "timestamp", "details"}`, whatever its source.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infrastructure import execution_names, names

STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
TERMINAL = frozenset(STATUSES[1:])
# Task events: what an attempt of a Task state is made of.
_ATTEMPT_START = re.compile(r"^(LambdaFunction|Task|Activity)Scheduled$")
_EXECUTION_ENDS = frozenset(
    {"ExecutionSucceeded", "ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted"}
)
_ATTEMPT_END = re.compile(
    r"^(LambdaFunction|Task|Activity)(Succeeded|Failed|TimedOut|StartFailed|ScheduleFailed)$"
)


# --- time ------------------------------------------------------------------------------


def iso(value: Any) -> str | None:
    """A timestamp as ISO 8601 UTC with milliseconds and `Z` (None stays None)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        moment = dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)
    elif isinstance(value, dt.datetime):
        moment = value
    else:
        text = str(value).strip()
        if text.isdigit():
            moment = dt.datetime.fromtimestamp(int(text) / 1000, tz=dt.UTC)
        else:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def duration_ms(start: str | None, stop: str | None) -> int | None:
    begin, end = parse_time(start), parse_time(stop)
    if begin is None or end is None:
        return None
    return round((end - begin).total_seconds() * 1000)


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- summaries and filters -------------------------------------------------------------


@dataclass(frozen=True)
class ExecutionQuery:
    """`regctl executions list` filters; times are ISO 8601 (UTC)."""

    workflow: str | None = None
    status: str | None = None
    event_id: str | None = None
    user_id: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int = 20

    def as_params(self) -> dict[str, str]:
        params = {
            "workflow": self.workflow,
            "status": self.status,
            "eventId": self.event_id,
            "userId": self.user_id,
            "since": self.since,
            "until": self.until,
            "limit": str(self.limit),
        }
        return {k: v for k, v in params.items() if v}

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> ExecutionQuery:
        status = params.get("status")
        if status and status.upper() not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        try:
            limit = int(params.get("limit") or 20)
        except ValueError:
            raise ValueError("limit must be a whole number") from None
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        query = cls(
            workflow=params.get("workflow") or None,
            status=status.upper() if status else None,
            event_id=params.get("eventId") or None,
            user_id=params.get("userId") or None,
            since=iso(params["since"]) if params.get("since") else None,
            until=iso(params["until"]) if params.get("until") else None,
            limit=limit,
        )
        return query

    def in_window(self, start: str | None) -> bool:
        if start is None:
            return True
        if self.since and start < self.since:
            return False
        return not (self.until and start > self.until)

    def name_may_match(self, name: str, workflows: Sequence[str]) -> bool:
        return execution_names.matches(name, list(workflows), event_id=self.event_id, user_id=self.user_id)

    def input_matches(self, execution_input: Any) -> bool:
        """Exact check on the execution input when it carries the ids (register, unregister)."""
        if not isinstance(execution_input, Mapping):
            return True
        if self.event_id is not None:
            ids = execution_input.get("eventIds")
            if "eventId" in execution_input and execution_input["eventId"] != self.event_id:
                return False
            if isinstance(ids, list) and self.event_id not in ids:
                return False
        return not (
            self.user_id is not None
            and "userId" in execution_input
            and execution_input["userId"] != self.user_id
        )


def summary(
    *,
    name: str,
    workflow: str | None,
    status: str,
    start: Any,
    stop: Any = None,
    execution_arn: str | None = None,
    execution_input: Any = None,
    error: str | None = None,
    cause: str | None = None,
    workflows: Sequence[str] = (),
) -> dict[str, Any]:
    """One execution as `executions list` shows it."""
    start_iso, stop_iso = iso(start), iso(stop)
    parts = execution_names.parse(name, list(workflows)) if workflows else None
    event_id = user_id = request_id = None
    if isinstance(execution_input, Mapping):
        event_id = execution_input.get("eventId")
        user_id = execution_input.get("userId")
        request_id = execution_input.get("requestId")
        ids = execution_input.get("eventIds")
        if event_id is None and isinstance(ids, list) and len(ids) == 1:
            event_id = ids[0]
    if parts is not None:
        event_id = event_id or parts.event_id
        user_id = user_id or parts.user_id
        request_id = request_id or parts.request_id
    return {
        "name": name,
        "workflow": workflow or (parts.workflow if parts else None),
        "status": status,
        "startDate": start_iso,
        "stopDate": stop_iso,
        "durationMs": duration_ms(start_iso, stop_iso),
        "eventId": event_id,
        "userId": user_id,
        "requestId": request_id,
        "error": error,
        "cause": cause,
        "executionArn": execution_arn,
    }


# --- history ---------------------------------------------------------------------------


def normalize_history(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`GetExecutionHistory` events (boto3 shape) -> normalized events."""
    out = []
    for event in events:
        details: dict[str, Any] = {}
        for key, value in event.items():
            if key.endswith("EventDetails") and isinstance(value, Mapping):
                details = dict(value)
        out.append(
            {
                "id": int(event["id"]),
                "previousEventId": int(event.get("previousEventId") or 0),
                "type": str(event["type"]),
                "timestamp": iso(event["timestamp"]),
                "details": details,
            }
        )
    return sorted(out, key=lambda e: e["id"])


def normalize_log_events(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Express executions' CloudWatch log records (`level ALL`, with data) -> normalized events."""
    out = []
    for record in messages:
        out.append(
            {
                "id": int(record.get("id") or 0),
                "previousEventId": int(record.get("previous_event_id") or 0),
                "type": str(record.get("type")),
                "timestamp": iso(record.get("event_timestamp")),
                "details": dict(record.get("details") or {}),
            }
        )
    return sorted(out, key=lambda e: e["id"])


def _attempt_status(event_type: str) -> str:
    for suffix, status in (
        ("Succeeded", "succeeded"),
        ("TimedOut", "timed_out"),
        ("StartFailed", "failed"),
        ("ScheduleFailed", "failed"),
        ("Failed", "failed"),
    ):
        if event_type.endswith(suffix):
            return status
    return "unknown"  # pragma: no cover - _ATTEMPT_END only matches the suffixes above


def timeline(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The states an execution went through, in the order they were entered.

    Each: name, type, iteration (inside a Map), enteredAt, exitedAt, durationMs, input,
    output, attempts (for tasks: start, end, duration, status, error, cause), retries,
    error and cause (of the last failed attempt, or of the state's own failure).
    """
    built = _Timeline()
    for event in events:
        built.add(event)
    return built.states


class _Timeline:
    """The states of a history so far, and which state each event belongs to."""

    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []
        self.owner: dict[int, int] = {}  # event id -> index of the state it belongs to
        self.iteration: dict[int, int] = {}  # event id -> Map iteration index
        self.open_attempt: dict[int, dict[str, Any]] = {}  # state index -> attempt in progress

    def add(self, event: Mapping[str, Any]) -> None:
        event_id, previous, kind = event["id"], event["previousEventId"], event["type"]
        details = event.get("details") or {}
        if kind == "MapIterationStarted":
            self.iteration[event_id] = int(details.get("index", 0))
        elif previous in self.iteration and not kind.startswith("MapIteration"):
            self.iteration[event_id] = self.iteration[previous]
        if kind.endswith("StateEntered"):
            self._entered(event, kind, details)
        elif kind.endswith("StateExited"):
            self._exited(event, details)
        elif kind in _EXECUTION_ENDS:
            self._execution_ended(event, kind, details)
        elif (index := self.owner.get(previous)) is not None:
            self.owner[event_id] = index
            self._state_event(index, event, kind, details)

    def _entered(self, event: Mapping[str, Any], kind: str, details: Mapping[str, Any]) -> None:
        self.states.append(
            {
                "name": details.get("name"),
                "type": kind[: -len("StateEntered")],
                "iteration": self.iteration.get(event["id"]),
                "enteredAt": event["timestamp"],
                "exitedAt": None,
                "durationMs": None,
                "input": _json(details.get("input")),
                "output": None,
                "attempts": [],
                "retries": 0,
                "error": None,
                "cause": None,
            }
        )
        self.owner[event["id"]] = len(self.states) - 1

    def _exited(self, event: Mapping[str, Any], details: Mapping[str, Any]) -> None:
        index = self.owner.get(event["previousEventId"])
        states = self.states
        if index is None or states[index]["name"] != details.get("name") or states[index]["exitedAt"]:
            index = self._open_state_named(str(details.get("name")))
        if index is None:
            return
        state = states[index]
        state["exitedAt"] = event["timestamp"]
        state["durationMs"] = duration_ms(state["enteredAt"], event["timestamp"])
        state["output"] = _json(details.get("output"))
        self.owner[event["id"]] = index

    def _open_state_named(self, name: str) -> int | None:
        for index in range(len(self.states) - 1, -1, -1):
            if self.states[index]["name"] == name and self.states[index]["exitedAt"] is None:
                return index
        return None

    def _execution_ended(self, event: Mapping[str, Any], kind: str, details: Mapping[str, Any]) -> None:
        for state in self.states:
            if state["exitedAt"] is None:
                state["exitedAt"] = event["timestamp"]
                state["durationMs"] = duration_ms(state["enteredAt"], event["timestamp"])
                if kind != "ExecutionSucceeded" and state["error"] is None:
                    state["error"], state["cause"] = details.get("error"), details.get("cause")

    def _state_event(
        self, index: int, event: Mapping[str, Any], kind: str, details: Mapping[str, Any]
    ) -> None:
        state = self.states[index]
        if _ATTEMPT_START.match(kind):
            attempt = {
                "startedAt": event["timestamp"],
                "endedAt": None,
                "durationMs": None,
                "status": "running",
                "error": None,
                "cause": None,
            }
            state["attempts"].append(attempt)
            state["retries"] = len(state["attempts"]) - 1
            self.open_attempt[index] = attempt
        elif _ATTEMPT_END.match(kind):
            attempt = self.open_attempt.pop(index) if index in self.open_attempt else {"startedAt": None}
            if attempt not in state["attempts"]:
                state["attempts"].append(attempt)
            attempt["endedAt"] = event["timestamp"]
            attempt["durationMs"] = duration_ms(attempt.get("startedAt"), event["timestamp"])
            attempt["status"] = _attempt_status(kind)
            if attempt["status"] != "succeeded":
                attempt["error"] = details.get("error")
                attempt["cause"] = details.get("cause")
                state["error"], state["cause"] = attempt["error"], attempt["cause"]
            else:
                state["error"] = state["cause"] = None
        elif kind.endswith("Failed") and ("error" in details or "cause" in details):
            state["error"], state["cause"] = details.get("error"), details.get("cause")


def cause_summary(cause: str | None) -> str | None:
    """A Lambda error's cause (JSON with errorType/errorMessage/stackTrace) as one line."""
    if not cause:
        return cause
    parsed = _json(cause)
    if isinstance(parsed, Mapping) and "errorMessage" in parsed:
        kind = parsed.get("errorType")
        message = str(parsed["errorMessage"])
        return f"{kind}: {message}" if kind else message
    return cause


# --- reconcile runs --------------------------------------------------------------------
#
# A run over many events continues in fresh executions of the state machine (a Standard
# execution's history is capped): the output of each execution but the last names its
# successor, and each successor's input carries the run (its id is the first
# execution's name). The newest execution of a run is always its current one: each
# starts its successor just before it ends.


def continued_as(output: Any) -> str | None:
    """The name of the execution a reconcile run continued in, or None (the run ended)."""
    if isinstance(output, Mapping):
        name = output.get(names.RECONCILE_CONTINUED_AS_KEY)
        if isinstance(name, str) and name:
            return name
    return None


def run_of(execution_input: Any, name: str) -> dict[str, Any]:
    """`{"runId", "startedAt"}` of the run an execution belongs to (for the first, its own
    name; `startedAt` only known from a later execution's input)."""
    if isinstance(execution_input, Mapping):
        carried = execution_input.get(names.RECONCILE_CONTINUATION_KEY)
        if isinstance(carried, Mapping) and isinstance(carried.get("run"), Mapping):
            run = carried["run"]
            return {"runId": str(run.get("runId") or name), "startedAt": run.get("startedAt")}
    return {"runId": name, "startedAt": None}


def run_status(status: str, output: Any) -> str:
    """A run's status from its newest execution: still running while it hands over."""
    return "RUNNING" if status == "SUCCEEDED" and continued_as(output) else status


def last_run(summary: Mapping[str, Any], execution_input: Any, output: Any) -> dict[str, Any]:
    """The newest execution of a reconcile run, as the run: its id, status and start."""
    run = run_of(execution_input, str(summary["name"]))
    out = dict(summary)
    if run["runId"] != summary["name"]:
        out.update(name=run["runId"], execution=summary["name"])
        out["startDate"] = iso(run["startedAt"]) or summary.get("startDate")
        out["durationMs"] = duration_ms(out["startDate"], summary.get("stopDate"))
    out["status"] = run_status(str(summary["status"]), output)
    return out


def reconcile_report(
    parts: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]],
) -> dict[str, Any]:
    """What a reconcile run did: its totals and every event it did not find clean.

    `parts`: each execution of the run, in order, with its states (`timeline`).
    """
    if not parts:
        raise ValueError("a run has at least one execution")
    results: list[dict[str, Any]] = []
    totals: dict[str, Any] | None = None
    for execution, states in parts:
        for state in states:
            output = state.get("output")
            if not isinstance(output, Mapping):
                continue
            if "outcome" in output and "eventId" in output and state.get("iteration") is not None:
                results.append(dict(output))
            elif "runId" in output and "events" in output and "pages" in output:
                totals = dict(output)
        final = execution.get("output")
        if isinstance(final, Mapping) and "runId" in final and "events" in final:
            totals = dict(final)
        elif isinstance(final, Mapping) and continued_as(final) and isinstance(final.get("totals"), Mapping):
            totals = {**final["totals"], "runId": final.get("runId")}  # so far
    first, last = parts[0][0], parts[-1][0]
    repairs = [r for r in results if r.get("outcome") != "clean"]
    start, stop = first.get("startDate"), last.get("stopDate")
    return {
        "name": first.get("name"),
        "status": run_status(str(last.get("status")), last.get("output")),
        "startDate": start,
        "stopDate": stop,
        "durationMs": duration_ms(start, stop) if len(parts) > 1 else first.get("durationMs"),
        "error": last.get("error"),
        "cause": last.get("cause"),
        "totals": totals,
        "events": len(results),
        "executions": [execution.get("name") for execution, _ in parts],
        "repairs": repairs,
    }
