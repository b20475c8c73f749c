"""What the local engine answers about executions, and the errors its calls raise.

Apart from :mod:`infrastructure.local.engine` because the engine's own parts (the table
set-up, the resources it registers in moto, the retention of finished executions) raise
these errors and read these statuses, and the engine imports them; what only reads
results (the reconciliation runs' tests, an API's timeout mapping) need not import the
engine either.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})


class EngineError(RuntimeError):
    """The local engine could not do what was asked."""


class ExecutionTimeout(EngineError, TimeoutError):
    """An execution did not finish within the wait timeout."""


@dataclass(frozen=True)
class ExecutionResult:
    execution_arn: str
    state_machine_arn: str
    name: str
    status: str
    input: Any
    output: Any
    error: str | None
    cause: str | None
    start_date: dt.datetime
    stop_date: dt.datetime | None

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    @property
    def duration_ms(self) -> float | None:
        if self.stop_date is None:
            return None
        return (self.stop_date - self.start_date).total_seconds() * 1000

    @classmethod
    def from_describe(cls, response: Mapping[str, Any]) -> ExecutionResult:
        output = response.get("output")
        return cls(
            execution_arn=response["executionArn"],
            state_machine_arn=response["stateMachineArn"],
            name=response["name"],
            status=response["status"],
            input=json.loads(response["input"]) if response.get("input") else None,
            output=json.loads(output) if output is not None else None,
            error=response.get("error"),
            cause=response.get("cause"),
            start_date=response["startDate"],
            stop_date=response.get("stopDate"),
        )
