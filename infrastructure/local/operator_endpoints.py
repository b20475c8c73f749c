"""Operator endpoints of the local server, and the local reconcile schedule.

The local stack's executions live in the server process (moto keeps them in memory), so
`regctl` reaches them over HTTP, under a prefix the public API does not use:

    GET  /_ops/executions?workflow&status&eventId&userId&since&until&limit
    GET  /_ops/executions/{name}[?history=0]   describe (+ normalized history events)
    GET  /_ops/events/{eventId}                counters, waitlist head, last repair and run
    POST /_ops/reconcile  {"eventId"?}         starts the reconcile workflow (202)
    POST /_ops/token      {"userId", "groups"?} an ID token of the user pool, the user in
                                               exactly those groups (created on first use)

The server listens on 127.0.0.1 only. Answers are JSON; errors `{"error", "message"}`, and
an id or name the public API would refuse is a 422 `ValidationError` with its `fields`.

`ReconcileSchedule` starts the reconcile workflow every N seconds from a background
thread, as the EventBridge Scheduler schedule does on AWS, and prints one line per run.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import parse_qsl, unquote

import pydantic
from pydantic import TypeAdapter

from infrastructure import execution_names, names
from infrastructure.local.engine import LocalEngine
from infrastructure.local.execution_results import ExecutionResult
from infrastructure.ops import executions
from infrastructure.ops.events import EventMissing, event_report
from registration import bounded_json, outcomes
from registration.data import RegistrationStore
from registration.errors import ValidationError, invalid_input
from registration.models import Identifier, UserId
from registration.validation import field_errors

LOG = logging.getLogger(__name__)

# A whole reconcile run (the schedule waits this long before it gives up watching).
RECONCILE_WAIT_S = 600.0
_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}

Answer = tuple[int, Any]


def schedule_seconds(expression: str = names.DEFAULT_RECONCILE_SCHEDULE) -> int:
    """Seconds between runs of a `rate(...)` schedule expression (0 for anything else)."""
    found = _RATE.match(expression.strip())
    if not found:
        return 0
    return int(found.group(1)) * _UNIT_SECONDS[found.group(2).rstrip("s")]


def _error(status: int, code: str, message: str) -> Answer:
    return status, {"error": code, "message": message}


_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
_USER_ID: TypeAdapter[str] = TypeAdapter(UserId)
_EXECUTION_NAME = re.compile(rf"^[A-Za-z0-9_-]{{1,{execution_names.MAX_LENGTH}}}$")


def _check_ids(event_id: str | None, user_id: str | None) -> None:
    """Ids as the public routes take them (422 naming the field), before any read."""
    fields = []
    for name, value in (("eventId", event_id), ("userId", user_id)):
        if value is None:
            continue
        try:
            _IDENTIFIER.validate_python(value)
        except pydantic.ValidationError as exc:
            fields += [{**f, "field": name} for f in field_errors(exc)]
    if fields:
        raise invalid_input(fields)


def _execution_name(name: str) -> str:
    """Step Functions' execution names: 1 to 80 letters, digits, '-' or '_'."""
    if not _EXECUTION_NAME.match(name):
        message = f"1 to {execution_names.MAX_LENGTH} letters, digits, '-' or '_'"
        raise invalid_input([{"field": "name", "message": message, "type": "string_pattern_mismatch"}])
    return name


class Operations:
    """The endpoints' logic over one started engine."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine
        self._store: RegistrationStore | None = None

    @property
    def store(self) -> RegistrationStore:
        if self._store is None:
            self._store = RegistrationStore(self.engine.table_name, self.engine.dynamodb_client())
        return self._store

    @property
    def workflows(self) -> list[str]:
        return sorted(self.engine.workflows)

    # Routing --------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, body: bytes) -> Answer:
        params = dict(parse_qsl(query, keep_blank_values=False))
        parts = [unquote(p) for p in path[len(names.LOCAL_OPS_PREFIX) :].strip("/").split("/") if p]
        try:
            if method == "GET" and parts == ["executions"]:
                _check_ids(params.get("eventId") or None, params.get("userId") or None)
                return 200, {
                    "executions": self.list_executions(executions.ExecutionQuery.from_params(params))
                }
            if method == "GET" and len(parts) == 2 and parts[0] == "executions":
                return self.show_execution(
                    _execution_name(parts[1]), history=params.get("history", "1") != "0"
                )
            if method == "GET" and len(parts) == 2 and parts[0] == "events":
                _check_ids(parts[1], None)
                return 200, self.event(parts[1])
            if method == "POST" and parts == ["reconcile"]:
                document = bounded_json.loads(body or b"{}")
                if not isinstance(document, dict):
                    raise ValueError("the body must be a JSON object")
                event_id = document.get("eventId")
                if event_id is not None and not isinstance(event_id, str):
                    raise ValueError("eventId must be a string")
                _check_ids(event_id, None)
                return 202, self.start_reconcile(event_id)
            if method == "POST" and parts == ["token"]:
                return self.token(body)
            if method == "GET" and parts == ["domain-events"]:
                return self.domain_events(params)
            if method == "GET" and parts == ["webhooks", "failed"]:
                return self.failed_webhooks()
            if method == "POST" and parts == ["webhooks", "redrive"]:
                return self.redrive_webhooks(body)
        except ValidationError as exc:
            return exc.http_status, outcomes.error_body(exc.code, exc.message, exc.fields)
        except EventMissing as exc:
            return _error(404, "EventNotFound", str(exc))
        except UnicodeDecodeError:
            return _error(400, "BadRequest", "the body is not UTF-8 text")
        except ValueError as exc:
            return _error(400, "BadRequest", str(exc))
        return _error(404, "RouteNotFound", f"No operator route {method} {path}")

    def domain_events(self, params: Mapping[str, str]) -> Answer:
        return domain_events_answer(self.engine, params)

    def failed_webhooks(self) -> Answer:
        if self.engine.webhooks is None:
            return _error(404, "NoWebhooks", "the template has no event bus to deliver from")
        return 200, {"failed": self.engine.webhooks.failed()}

    def redrive_webhooks(self, body: bytes) -> Answer:
        if self.engine.webhooks is None:
            return _error(404, "NoWebhooks", "the template has no event bus to deliver from")
        document = bounded_json.loads(body or b"{}")
        if not isinstance(document, dict):
            raise ValueError("the body must be a JSON object")
        webhook_id = document.get("webhookId")
        if webhook_id is not None and not isinstance(webhook_id, str):
            raise ValueError("webhookId must be a string")
        return 200, {"redriven": self.engine.webhooks.redrive(webhook_id)}

    # Executions -----------------------------------------------------------------------

    def _summary(
        self, workflow: str, item: Mapping[str, Any], result: ExecutionResult | None
    ) -> dict[str, Any]:
        return executions.summary(
            name=item["name"],
            workflow=workflow,
            status=result.status if result else item["status"],
            start=item["startDate"],
            stop=(result.stop_date if result else item.get("stopDate")),
            execution_arn=item["executionArn"],
            execution_input=result.input if result else None,
            error=result.error if result else None,
            cause=result.cause if result else None,
            workflows=self.workflows,
        )

    def list_executions(self, query: executions.ExecutionQuery) -> list[dict[str, Any]]:
        """Newest first, across the asked workflow (or all), filtered; at most `limit`."""
        if query.workflow and query.workflow not in self.engine.workflows:
            raise ValueError(f"unknown workflow {query.workflow!r}; known: {', '.join(self.workflows)}")
        candidates: list[tuple[str, dict[str, Any]]] = []
        for workflow in [query.workflow] if query.workflow else self.workflows:
            for item in self.engine.list_executions(workflow, status=query.status):
                start = executions.iso(item["startDate"])
                if query.in_window(start) and query.name_may_match(item["name"], self.workflows):
                    candidates.append((workflow, item))
        candidates.sort(key=lambda c: c[1]["startDate"], reverse=True)
        found: list[dict[str, Any]] = []
        for workflow, item in candidates:
            result = self.engine.describe(item["executionArn"])
            if not query.input_matches(result.input):
                continue
            found.append(self._summary(workflow, item, result))
            if len(found) >= query.limit:
                break
        return found

    def _find(self, name: str) -> tuple[str, dict[str, Any]] | None:
        parts = execution_names.parse(name, self.workflows)
        order = self.workflows
        if parts is not None:
            order = [parts.workflow, *[w for w in self.workflows if w != parts.workflow]]
        for workflow in order:
            for item in self.engine.list_executions(workflow):
                if item["name"] == name:
                    return workflow, item
        return None

    def show_execution(self, name: str, *, history: bool = True) -> Answer:
        found = self._find(name)
        if found is None:
            return _error(
                404,
                "ExecutionNotFound",
                f"No execution named {name} (locally, executions last until the server stops)",
            )
        workflow, item = found
        result = self.engine.describe(item["executionArn"])
        execution = self._summary(workflow, item, result)
        execution["input"] = result.input
        execution["output"] = result.output
        document: dict[str, Any] = {"execution": execution}
        if history:
            document["events"] = executions.normalize_history(self.engine.history(item["executionArn"]))
        return 200, document

    # Events and reconciliation --------------------------------------------------------

    def last_reconciliation(self, event_id: str | None) -> dict[str, Any] | None:
        """The newest reconcile run that covered the event (every run covers `all`): its
        newest execution, reported as the run (a long run continues in more executions)."""
        workflow = names.RECONCILE_WORKFLOW
        if workflow not in self.engine.workflows:
            return None
        for item in self.engine.list_executions(workflow):
            parts = execution_names.parse(item["name"], self.workflows)
            if (
                event_id is None
                or parts is None
                or parts.middle.startswith(execution_names.ALL_EVENTS + "-")
                or execution_names.matches(item["name"], self.workflows, event_id=event_id)
            ):
                result = self.engine.describe(item["executionArn"])
                return executions.last_run(self._summary(workflow, item, None), result.input, result.output)
        return None

    def event(self, event_id: str) -> dict[str, Any]:
        return event_report(self.store, event_id, last_run=self.last_reconciliation(event_id))

    def start_reconcile(
        self, event_id: str | None, started_by: str = execution_names.STARTED_BY_CLI
    ) -> dict[str, Any]:
        if event_id is not None and self.store.find_event(event_id) is None:
            raise EventMissing(f"Event {event_id} does not exist")
        workflow = names.RECONCILE_WORKFLOW
        name = execution_names.reconcile_name(workflow, event_id, started_by)
        execution_input: dict[str, Any] = {"eventIds": [event_id]} if event_id else {}
        arn = self.engine.start_execution(workflow, execution_input, name=name)
        return {"name": name, "workflow": workflow, "executionArn": arn, "input": execution_input}

    # Sign-in ----------------------------------------------------------------------------

    def token(self, body: bytes) -> Answer:
        """An ID token for `userId` (an id the API takes) in exactly `groups` (the pool's)."""
        identity = self.engine.identity
        if identity is None:
            return _error(
                404,
                "UserPoolNotFound",
                "The template has no Cognito user pool (AWS::Cognito::UserPool): no tokens to issue",
            )
        document = bounded_json.loads(body or b"{}")
        if not isinstance(document, dict):
            raise ValueError("the body must be a JSON object")
        user_id, groups = document.get("userId"), document.get("groups", [])
        if not isinstance(user_id, str):
            raise ValueError("userId must be a string")
        try:
            _USER_ID.validate_python(user_id)
        except pydantic.ValidationError:
            raise ValueError(f"userId must be {_USER_ID.json_schema().get('description')}") from None
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ValueError("groups must be a list of group names")
        # Unknown groups: a ValueError naming the pool's groups.
        return 200, {"token": identity.token(user_id, groups)}


_OPERATIONS: dict[int, Operations] = {}
_OPERATIONS_LOCK = threading.Lock()


# The longest a `GET /_ops/domain-events` waits for the next event (a tail's long poll).
MAX_EVENTS_WAIT_S = 20.0


def _bounded(params: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    try:
        value = float(params.get(name, default))
    except ValueError:
        raise ValueError(f"{name} must be a number") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}")
    return value


def domain_events_answer(engine: LocalEngine, params: Mapping[str, str]) -> Answer:
    """The bus's events after offset `after` (`eventId`: only that event's), waiting up to
    `wait` seconds for one; `next` is the offset to ask after next time."""
    if engine.pipes is None:
        return _error(404, "NoEventBus", "the template has no event bus")
    bus = engine.pipes.bus
    after = int(_bounded(params, "after", bus.last_offset if params.get("from") == "now" else 0, 0, 2**53))
    wait = _bounded(params, "wait", 0.0, 0.0, MAX_EVENTS_WAIT_S)
    limit = int(_bounded(params, "limit", 100, 1, 1000))
    event_id = params.get("eventId") or None
    _check_ids(event_id, None)
    deadline = time.monotonic() + wait
    while True:
        entries = bus.read(after, limit=limit, timeout=max(0.0, deadline - time.monotonic()))
        if entries:
            after = entries[-1].offset
        found = [e.body for e in entries if event_id is None or e.body["detail"].get("eventId") == event_id]
        if found or not entries or time.monotonic() >= deadline:
            return 200, {"events": found, "next": after}


def operations_for(engine: LocalEngine) -> Operations:
    with _OPERATIONS_LOCK:
        ops = _OPERATIONS.get(id(engine))
        if ops is None or ops.engine is not engine:
            ops = _OPERATIONS[id(engine)] = Operations(engine)
        return ops


def is_ops_path(path: str) -> bool:
    return path == names.LOCAL_OPS_PREFIX or path.startswith(names.LOCAL_OPS_PREFIX + "/")


def handle(engine: LocalEngine, method: str, path: str, query: str, body: bytes) -> Answer:
    """One operator request -> (HTTP status, JSON document)."""
    return operations_for(engine).handle(method, path, query, body)


# --- the schedule ------------------------------------------------------------------------


def run_line(result: ExecutionResult | Sequence[ExecutionResult]) -> str:
    """One line about a finished reconcile run (its executions, in order): status,
    duration, what it repaired."""
    parts = [result] if isinstance(result, ExecutionResult) else list(result)
    first, last = parts[0], parts[-1]
    took = (
        f"{(last.stop_date - first.start_date).total_seconds() * 1000:.0f}ms"
        if last.stop_date is not None
        else "?"
    )
    status = executions.run_status(last.status, last.output)
    head = f"reconcile {first.name} {status} in {took}"
    if len(parts) > 1:
        head += f" ({len(parts)} executions)"
    totals = last.output if isinstance(last.output, Mapping) else None
    if totals is None or executions.continued_as(totals):
        return f"{head}: {last.error or 'no summary'}"
    repaired = totals.get("repairedEventIds") or []
    repairs = sum(int(totals.get(k) or 0) for k in ("countRepairs", "waitlistRepairs", "promotions"))
    events = int(totals.get("events") or 0)
    text = f"{head}: {events} event{'' if events == 1 else 's'}, "
    if not repairs:
        return text + "no repairs"
    kinds = ", ".join(
        f"{totals.get(key, 0)} {label}"
        for key, label in (
            ("countRepairs", "count"),
            ("waitlistRepairs", "waitlist"),
            ("promotions", "promotion"),
        )
        if totals.get(key)
    )
    plural = "" if repairs == 1 else "s"
    return text + f"{repairs} repair{plural} ({kinds}) in {', '.join(map(str, repaired))}"


class ReconcileSchedule:
    """Starts the reconcile workflow every `every` seconds (0: never) until stopped."""

    def __init__(
        self,
        engine: LocalEngine,
        every: float,
        *,
        out: TextIO | None = None,
        on_run: Callable[[ExecutionResult], None] | None = None,
    ) -> None:
        self.engine = engine
        self.every = every
        self.out = out
        self.on_run = on_run
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.every > 0 and names.RECONCILE_WORKFLOW in self.engine.workflows

    def start(self) -> ReconcileSchedule:
        if self.enabled and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="reconcile-schedule", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """No new runs; stop watching the current one (the engine lets it finish)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.run_once()
            except Exception:  # a failed start must not end the schedule
                LOG.exception("scheduled reconcile run failed to start")

    def run_once(self) -> list[ExecutionResult] | None:
        """Starts a run and waits for its end; its executions (one, or more for a long run)."""
        ops = operations_for(self.engine)
        started = ops.start_reconcile(None, started_by=execution_names.STARTED_BY_SCHEDULE)
        deadline = time.monotonic() + RECONCILE_WAIT_S
        parts: list[ExecutionResult] = []
        arn = started["executionArn"]
        while True:
            result = self._finished(arn, deadline)
            if result is None:
                return None
            parts.append(result)
            following = executions.continued_as(result.output)
            if following is None:
                break
            arn = f"{result.execution_arn.rsplit(':', 1)[0]}:{following}"
        self.runs += 1
        if self.out is not None:
            self.out.write(f"{time.strftime('%H:%M:%S')} {run_line(parts)}\n")
            self.out.flush()
        if self.on_run is not None:
            self.on_run(parts[-1])
        return parts

    def _finished(self, execution_arn: str, deadline: float) -> ExecutionResult | None:
        """The execution once it ended; None when stopped or out of time."""
        while True:
            result = self.engine.describe(execution_arn)
            if result.status in executions.TERMINAL:
                return self.engine.wait(execution_arn, timeout=5)
            if self._stop.is_set() or time.monotonic() > deadline:
                return None
            time.sleep(0.1)
