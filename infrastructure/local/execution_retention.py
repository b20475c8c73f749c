"""Dropping the finished executions moto would otherwise keep for ever.

moto keeps every execution (and looks them up by a linear scan) and every worker
thread object, so a long-running local server slows down and grows. What is dropped,
and when it is safe to drop it, is moto's internals; the engine only decides how many
to keep and how often to ask.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from infrastructure.local.execution_results import TERMINAL_STATUSES


def forget_finished_executions(backend: Any, state_machine_arns: Iterable[str], retain: int) -> int:
    """Forget the oldest finished executions of each state machine beyond ``retain``, and
    the worker threads that have ended; returns how many executions were dropped."""
    from moto.stepfunctions.parser.utils import TMP_THREADS

    dropped = 0
    for arn in state_machine_arns:
        executions = backend.describe_state_machine(arn).executions
        snapshot = list(executions)
        excess = len(snapshot) - retain
        for execution in snapshot:
            if excess <= 0:
                break
            if execution.status in TERMINAL_STATUSES:
                with contextlib.suppress(ValueError):
                    executions.remove(execution)
                    dropped += 1
                    excess -= 1
    for thread in [t for t in TMP_THREADS if not t.is_alive()]:
        with contextlib.suppress(ValueError):
            TMP_THREADS.remove(thread)
    return dropped
