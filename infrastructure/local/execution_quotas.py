"""Step Functions' quotas, enforced on moto's interpreter as AWS enforces them: payload
sizes, execution names, the Express duration."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from infrastructure.local.patching import Patches, Replacement

# Step Functions quotas (AWS's values; the engine's defaults). See the Step Functions
# Developer Guide, "Service quotas", and the StartExecution API reference.
# Input or output of a task, state or execution: 256 KiB as a UTF-8 encoded string.
MAX_PAYLOAD_BYTES = 262_144
# Execution names: 1 to 80 characters, none of AWS's forbidden characters.
MAX_EXECUTION_NAME_LENGTH = 80
# An Express execution runs at most five minutes, whatever its TimeoutSeconds says.
EXPRESS_MAX_DURATION_S = 300.0
DATA_LIMIT_EXCEEDED = "States.DataLimitExceeded"
EXPRESS = "EXPRESS"
# The modules of moto's interpreter that check a state's or task's output size.
_SIZE_CHECKING_MODULES = (
    "moto.stepfunctions.parser.asl.component.state.state",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.state_task_lambda",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service",
)


def payload_size(value: Any) -> int:
    """Bytes of a payload as Step Functions counts them: the UTF-8 of its JSON text."""
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    )
    return len(text.encode("utf-8"))


def execution_time_limit(
    state_machine_type: str, timeout_seconds: float | None, express_max: float, time_scale: float = 1.0
) -> float | None:
    """Seconds an execution may run: its ``TimeoutSeconds``, at most ``express_max`` for
    an Express state machine (AWS accepts a larger value and stops the execution at the
    cap); both stretched by ``time_scale``."""
    if state_machine_type == EXPRESS:
        limit = express_max if timeout_seconds is None else min(timeout_seconds, express_max)
    elif timeout_seconds is None:
        return None
    else:
        limit = timeout_seconds
    return limit * time_scale


class ExecutionQuotas:
    """What AWS enforces and moto's interpreter does not, or not as AWS does, hooked in
    one place (process-wide; the last engine started sets the values):

    * ``StartExecution``: names (1 to ``max_name_length`` characters, none of the
      characters AWS forbids: ``InvalidName``; too long: ``ValidationException``, as AWS
      answers a length constraint) and input (valid JSON: ``InvalidExecutionInput``; at
      most ``max_payload_bytes``: ``ValidationException``).
    * State and task outputs over ``max_payload_bytes`` fail with
      ``States.DataLimitExceeded`` (moto counts spaced, ASCII-escaped JSON and refuses
      exactly 256 KiB; AWS counts the UTF-8 bytes and allows it), a terminal error that
      ``States.ALL`` neither retries nor catches (it can be caught by its own name).
    * An Express execution stops (``TIMED_OUT``) after ``express_max_duration_s``, even
      when its ``TimeoutSeconds`` is larger or absent.
    * ``time_scale`` stretches every time limit (a state's and an execution's
      ``TimeoutSeconds``, the Express limit) for a machine that runs the workflows that
      many times slower than AWS; the history shows a Task's stretched timeout.
    """

    max_payload_bytes = MAX_PAYLOAD_BYTES
    max_name_length = MAX_EXECUTION_NAME_LENGTH
    express_max_duration_s = EXPRESS_MAX_DURATION_S
    time_scale = 1.0

    @classmethod
    def within_payload_quota(cls, value: Any) -> bool:
        return payload_size(value) <= cls.max_payload_bytes

    @classmethod
    def validate_start(cls, name: str | None, execution_input: str | None) -> None:
        from moto.stepfunctions.exceptions import InvalidExecutionInput, InvalidName, ValidationException
        from moto.stepfunctions.models import StepFunctionBackend

        if name is not None:
            forbidden = (
                *StepFunctionBackend.invalid_chars_for_name,
                *StepFunctionBackend.invalid_unicodes_for_name,
            )
            if not name or any(char in name for char in forbidden):
                raise InvalidName(f"Invalid Name: '{name}'")
            if len(name) > cls.max_name_length:
                raise ValidationException(
                    f"1 validation error detected: Value '{name}' at 'name' failed to satisfy "
                    f"constraint: Member must have length less than or equal to {cls.max_name_length}"
                )
        if execution_input is not None:
            if len(execution_input.encode("utf-8")) > cls.max_payload_bytes:
                raise ValidationException(
                    "1 validation error detected: Value at 'input' failed to satisfy constraint: "
                    f"Member must have length less than or equal to {cls.max_payload_bytes}"
                )
            try:
                json.loads(execution_input)
            except ValueError as exc:
                raise InvalidExecutionInput(f"Invalid State Machine Execution Input: '{exc}'") from exc

    @classmethod
    def _replacements(cls) -> list[Replacement]:
        import importlib

        from moto.stepfunctions.parser.asl.component.common.error_name.error_equals_decl import (
            ErrorEqualsDecl,
        )
        from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import (
            Timeout,
            TimeoutSeconds,
        )
        from moto.stepfunctions.parser.asl.component.program.program import Program
        from moto.stepfunctions.parser.models import StepFunctionsParserBackend

        replacements: list[Replacement] = []
        for module_name in _SIZE_CHECKING_MODULES:
            replacements.append(
                (importlib.import_module(module_name), "is_within_size_quota", cls.within_payload_quota)
            )

        start_execution: Callable[..., Any] = StepFunctionsParserBackend.start_execution

        def _start_execution(
            backend: Any,
            state_machine_arn: str,
            name: str | None = None,
            execution_input: str | None = None,
            trace_header: str | None = None,
        ) -> Any:
            cls.validate_start(name, execution_input)
            return start_execution(backend, state_machine_arn, name, execution_input, trace_header)

        replacements.append((StepFunctionsParserBackend, "start_execution", _start_execution))

        equals = ErrorEqualsDecl._eval_body

        def _error_equals(decl: Any, env: Any) -> None:
            error_name = env.stack[-1] if env.stack else None
            equals(decl, env)
            terminal = getattr(error_name, "error_name", None) == DATA_LIMIT_EXCEEDED
            if terminal and env.stack and env.stack[-1] is True:
                # Matched only through States.ALL: not a match.
                env.stack[-1] = any(
                    getattr(name, "error_name", None) == DATA_LIMIT_EXCEEDED for name in decl.error_names
                )

        replacements.append((ErrorEqualsDecl, "_eval_body", _error_equals))

        program_eval = Program.eval

        def _program_eval(program: Any, env: Any) -> None:
            declared = program.timeout_seconds
            if env.is_frame():  # a Parallel branch: the execution's timer covers it
                return program_eval(program, env)
            seconds = declared.timeout_seconds if declared is not None else None
            kind = getattr(env.execution_type, "value", env.execution_type)
            limit = execution_time_limit(kind, seconds, cls.express_max_duration_s, cls.time_scale)
            if limit != seconds and limit is not None:
                program.timeout_seconds = TimeoutSeconds(limit)  # type: ignore[arg-type]
            try:
                program_eval(program, env)
            finally:
                program.timeout_seconds = declared

        replacements.append((Program, "eval", _program_eval))

        state_timeout = Timeout._eval_body

        def _state_timeout(timeout: Any, env: Any) -> None:
            state_timeout(timeout, env)
            if cls.time_scale != 1 and not timeout.is_default_value():
                env.stack[-1] = min(env.stack[-1] * cls.time_scale, threading.TIMEOUT_MAX)

        replacements.append((Timeout, "_eval_body", _state_timeout))
        return replacements

    @classmethod
    def install(cls) -> None:
        _PATCHES.install()

    @classmethod
    def uninstall(cls) -> None:
        _PATCHES.uninstall()


_PATCHES = Patches(ExecutionQuotas._replacements)
