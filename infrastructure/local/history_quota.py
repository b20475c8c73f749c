"""Standard executions stop at 25,000 history events, as they do on AWS.

AWS's rule (Step Functions "Avoid reaching the history quota"): when an execution has
24,999 events, the next one decides. If event 25,000 is `ExecutionSucceeded` the
execution succeeds; otherwise event 25,000 is `ExecutionFailed` with error
`States.Runtime` and cause "The execution reached the maximum number of history events
(25000).", and the execution does nothing more. Express executions have no such limit.

moto's interpreter records every event through ``EventManager.add_event``: that is
the one place this hooks. Each Standard execution's environment gets a budget when
moto builds it (``ExecutionWorker._get_evaluation_environment``); at the limit the
budget writes the failure event, fails the execution (its error can no longer be
replaced by whatever the interrupted state would have failed with) and drops every
later event. An event that would schedule work (a task about to call its resource)
raises instead, so nothing runs after the cut, as nothing runs on AWS.

A Distributed Map's child workflows have their own histories on AWS; moto records them
in a separate, throwaway event manager, which no budget watches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

STANDARD_HISTORY_LIMIT = 25_000
HISTORY_LIMIT_ERROR = "States.Runtime"
STANDARD = "STANDARD"
# Events that come right before a task calls its resource (the call is the side effect).
SCHEDULING_EVENTS = frozenset({"TaskScheduled", "LambdaFunctionScheduled", "ActivityScheduled"})
SUCCEEDED_EVENT = "ExecutionSucceeded"


def history_limit_cause(limit: int) -> str:
    return f"The execution reached the maximum number of history events ({limit})."


class HistoryLimitReached(RuntimeError):
    """Raised into a task that would start work after its execution's history was full."""


class HistoryBudget:
    """One Standard execution's history: counts its events, cuts it at the limit."""

    def __init__(self, limit: int, env: Any) -> None:
        if limit < 2:
            raise ValueError("a history holds at least the start and the end of an execution")
        self.limit = limit
        self.env = env
        self.recorded = 0
        self.reached = False
        self._lock = threading.Lock()

    def add(self, record: Callable[..., int], manager: Any, event_type: Any, **event: Any) -> int:
        """Records one event through `record` (moto's `add_event`), or cuts the history."""
        kind = str(getattr(event_type, "value", event_type))
        with self._lock:
            if not self.reached and (self.recorded < self.limit - 1 or kind == SUCCEEDED_EVENT):
                self.recorded += 1
                if self.recorded >= self.limit:
                    self.reached = True
                return record(manager, event_type=event_type, **event)
            if not self.reached:
                self._cut(record, manager)
            last = self.recorded
        if kind in SCHEDULING_EVENTS:
            raise HistoryLimitReached(history_limit_cause(self.limit))
        return last

    def _cut(self, record: Callable[..., int], manager: Any) -> None:
        from moto.stepfunctions.parser.api import HistoryEventType
        from moto.stepfunctions.parser.asl.eval.event.event_manager import EventHistoryContext

        self.reached = True
        # moto's `ExecutionFailedEventDetails` and `EventDetails` (TypedDicts).
        details: dict[str, Any] = {"error": HISTORY_LIMIT_ERROR, "cause": history_limit_cause(self.limit)}
        self.recorded += 1
        record(
            manager,
            context=EventHistoryContext(previous_event_id=self.recorded - 1),
            event_type=HistoryEventType.ExecutionFailed,
            event_details={"executionFailedEventDetails": details},
        )
        # Every frame stops; the execution keeps this error whatever fails next.
        self.env.set_error(details)
        self.env.set_error = _keep_first_error


def _keep_first_error(error: Any) -> None:
    """The cut execution's `set_error`: its error is already the history limit."""


class HistoryQuota:
    """Installs the two hooks (process-wide, reference counted) and knows each engine's
    limit by the ARN prefix of its state machines (`arn:aws:states:<region>:<account>:`)."""

    lock = threading.Lock()
    users = 0
    originals: dict[str, Any] = {}  # noqa: RUF012 - process-wide state
    limits: dict[str, Callable[[], int | None]] = {}  # noqa: RUF012

    @staticmethod
    def _classes() -> tuple[Any, Any]:
        from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager
        from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

        return EventManager, ExecutionWorker

    @classmethod
    def limit_for(cls, state_machine_arn: str) -> int | None:
        for prefix, limit in list(cls.limits.items()):
            if state_machine_arn.startswith(prefix):
                return limit()
        return None

    @classmethod
    def install(cls, prefix: str, limit: Callable[[], int | None]) -> None:
        with cls.lock:
            cls.limits[prefix] = limit
            cls.users += 1
            if cls.users > 1:
                return
            manager_class, worker_class = cls._classes()
            add_event = manager_class.add_event
            environment = worker_class._get_evaluation_environment
            cls.originals = {"add_event": add_event, "_get_evaluation_environment": environment}

            def budgeted_add_event(
                manager: Any,
                context: Any,
                event_type: Any,
                event_details: Any = None,
                timestamp: Any = None,
                update_source_event_id: bool = True,
            ) -> int:
                event = {
                    "context": context,
                    "event_details": event_details,
                    "timestamp": timestamp,
                    "update_source_event_id": update_source_event_id,
                }
                budget: HistoryBudget | None = getattr(manager, "local_engine_budget", None)
                if budget is None:
                    return int(add_event(manager, event_type=event_type, **event))
                return budget.add(add_event, manager, event_type, **event)

            def budgeted_environment(worker: Any) -> Any:
                env = environment(worker)
                details = worker._evaluation_details
                arn = str(details.state_machine_details.arn)
                limit = cls.limit_for(arn)
                if limit is not None and _machine_type(details.aws_execution_details, arn) == STANDARD:
                    env.event_manager.local_engine_budget = HistoryBudget(limit, env)
                return env

            manager_class.add_event = budgeted_add_event
            worker_class._get_evaluation_environment = budgeted_environment

    @classmethod
    def uninstall(cls, prefix: str) -> None:
        with cls.lock:
            cls.limits.pop(prefix, None)
            cls.users -= 1
            if cls.users > 0 or not cls.originals:
                return
            manager_class, worker_class = cls._classes()
            manager_class.add_event = cls.originals["add_event"]
            worker_class._get_evaluation_environment = cls.originals["_get_evaluation_environment"]
            cls.originals = {}


def _machine_type(aws: Any, state_machine_arn: str) -> str:
    """STANDARD or EXPRESS, as the state machine was created.

    Not the execution's own type: moto 5.2.5 marks every state machine's `sm_type`
    STANDARD (only its `type` attribute keeps what was asked for).
    """
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    try:
        machine = stepfunctions_parser_backends[aws.account][aws.region].describe_state_machine(
            state_machine_arn
        )
    except Exception:  # an execution of something the engine did not create
        return STANDARD
    return str(getattr(machine, "type", STANDARD))
