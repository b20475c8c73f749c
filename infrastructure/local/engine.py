"""Run the synthesized workflows on one machine.

moto's Step Functions interpreter executes the exact ASL CDK synthesized; Lambda tasks
run the real handler modules in-process through :mod:`infrastructure.local.lambda_seam`;
the table lives in DynamoDB Local (``dynamodb_endpoint``) or, without one, in moto's
in-memory DynamoDB. Handlers reach the table through the standard
``AWS_ENDPOINT_URL_DYNAMODB`` variable and never learn they run locally.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from infrastructure import names
from infrastructure.local import iam
from infrastructure.local.history_quota import STANDARD_HISTORY_LIMIT, HistoryQuota
from infrastructure.local.lambda_seam import LambdaSeam, LocalFunction
from infrastructure.local.moto_dynamodb import DYNAMODB_RULES
from infrastructure.local.states_integration import StatesIntegration
from infrastructure.local.template import (
    DEFAULT_TEMPLATE_PATH,
    FunctionSpec,
    LocalTemplate,
    StateMachineSpec,
    load_template,
    parse_template,
)

if TYPE_CHECKING:
    from moto.core.config import DefaultConfig

LOG = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
MOTO_CONFIG: DefaultConfig = {
    "stepfunctions": {"execute_state_machine": True},
    "lambda": {"use_docker": False},
}
LOCAL_ROLE_NAME = "local-engine-role"
# Variables that would send the handlers' boto3 clients somewhere else (or fail
# on a missing profile) while the engine runs.
CLEARED_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
)


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


# States whose parsed components keep no per-execution data between runs (moto's
# interpreter keeps that in the execution's environment). A Parallel state's branch
# workers live only inside one evaluation, so it is reusable when its branches are; Map
# keeps item processors and is not.
REUSABLE_STATE_TYPES = frozenset({"Task", "Choice", "Pass", "Fail", "Succeed", "Wait"})
PARALLEL = "Parallel"


def _all_reusable(states: Mapping[str, Any]) -> bool:
    for state in states.values():
        if state.get("Type") == PARALLEL:
            if not all(_all_reusable(branch.get("States", {})) for branch in state.get("Branches", [])):
                return False
        elif state.get("Type") not in REUSABLE_STATE_TYPES:
            return False
    return True


def _branch_error_name(error_name: str) -> Any:
    """The error a failed Parallel branch passes on, as AWS passes it on.

    moto wraps it as a custom error name, which refuses the reserved `States.` prefix, so
    a branch that failed with `States.Timeout` would fail its Parallel state with
    `States.Runtime` instead.
    """
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
        CustomErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )

    if error_name and error_name.startswith("States."):
        try:
            return StatesErrorName.from_name(error_name)
        except (ValueError, KeyError):
            pass
    return CustomErrorName(error_name=error_name)


PROGRAM_POOL_SIZE = 16
# Held while moto parses an ASL definition or an intrinsic function (see _WorkerHooks).
# Re-entrant: parsing a definition parses the intrinsic functions inside it.
PARSE_LOCK = threading.RLock()


class _WorkerHooks:
    """Two wrappers around moto's ``ExecutionWorker`` (the body of an execution thread),
    and one fix to its Parallel state (see ``_branch_error_name``).

    * ``_execution_logic``: when it returns, the execution's status, output, error and
      cause are all set; the worker is flagged and its waiter woken, instead of being
      polled. It also notices a worker that died without reporting an end. Waiters
      still re-check on a slow poll, so a moto change that bypasses this costs
      latency, not correctness.
    * ``_get_evaluation_entrypoint``: moto re-parses the ASL with ANTLR for every
      execution (about 17 ms for the register workflow, over half of a run). Parsed
      programs of definitions made only of simple states (and Parallel states of
      them) go back to a small pool after the execution, so no program is ever shared
      by two running executions.
    * ``AmazonStateLanguageParser.parse`` and ``IntrinsicParser.parse`` run under one
      lock (see ``PARSE_LOCK``): moto's ASL ``Preprocessor`` keeps its query-language
      scopes in a class-level list and ANTLR's Python runtime shares its prediction
      caches, so programs parsed from several threads at once (more executions starting
      together than the pool holds) can fail inside the interpreter.
    """

    lock = threading.Lock()
    users = 0
    reuse_programs = True
    originals: dict[str, Callable[..., Any]] = {}  # noqa: RUF012 - process-wide state
    events: dict[str, threading.Event] = {}  # noqa: RUF012
    programs: dict[str, list[Any]] = {}  # noqa: RUF012
    reusable: dict[str, bool] = {}  # noqa: RUF012

    branch_error_name: Any = None
    parsers: list[tuple[Any, Any]] = []  # noqa: RUF012 - (class, its original parse)

    @staticmethod
    def _parser_classes() -> list[Any]:
        from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
        from moto.stepfunctions.parser.asl.parse.intrinsic.intrinsic_parser import IntrinsicParser

        return [AmazonStateLanguageParser, IntrinsicParser]

    @classmethod
    def _serialize_parsing(cls) -> None:
        for parser_class in cls._parser_classes():
            original = parser_class.__dict__["parse"]
            parse = original.__func__ if isinstance(original, staticmethod) else original

            def locked(source: str, _parse: Callable[[str], Any] = parse) -> Any:
                with PARSE_LOCK:
                    return _parse(source)

            parser_class.parse = staticmethod(locked)
            cls.parsers.append((parser_class, original))

    @staticmethod
    def _branches_module() -> Any:
        from moto.stepfunctions.parser.asl.component.state.exec.state_parallel import branches_decl

        return branches_decl

    @staticmethod
    def _worker_class() -> Any:
        from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

        return ExecutionWorker

    @classmethod
    def _is_reusable(cls, definition: str) -> bool:
        reusable = cls.reusable.get(definition)
        if reusable is None:
            try:
                reusable = _all_reusable(json.loads(definition).get("States", {}))
            except (ValueError, AttributeError):
                reusable = False
            cls.reusable[definition] = reusable
        return reusable

    @classmethod
    def _release_program(cls, worker: Any) -> None:
        from moto.stepfunctions.parser.asl.eval.program_state import ProgramTimedOut

        borrowed = getattr(worker, "local_engine_program", None)
        if borrowed is None or getattr(worker, "local_engine_crash", None) is not None:
            return
        # A timed-out program may still be running in moto's inner thread.
        if worker.env is None or isinstance(worker.env.program_state(), ProgramTimedOut):
            return
        definition, program = borrowed
        pool = cls.programs.setdefault(definition, [])
        if len(pool) < PROGRAM_POOL_SIZE:
            pool.append(program)

    @classmethod
    def install(cls) -> None:
        with cls.lock:
            cls.users += 1
            if cls.users > 1:
                return
            worker_class = cls._worker_class()
            run = worker_class._execution_logic
            parse = worker_class._get_evaluation_entrypoint
            cls.originals = {"_execution_logic": run, "_get_evaluation_entrypoint": parse}

            def _execution_logic(worker: Any) -> None:
                try:
                    run(worker)
                except BaseException as exc:
                    worker.local_engine_crash = exc
                    raise
                finally:
                    worker.local_engine_finished = True
                    arn = worker._evaluation_details.execution_details.arn
                    event = cls.events.get(arn)
                    if event is not None:
                        event.set()
                    cls._release_program(worker)

            def _get_evaluation_entrypoint(worker: Any) -> Any:
                definition = worker._evaluation_details.state_machine_details.definition
                if not (cls.reuse_programs and cls._is_reusable(definition)):
                    return parse(worker)
                try:
                    program = cls.programs.get(definition, []).pop()
                except IndexError:
                    program = parse(worker)
                worker.local_engine_program = (definition, program)
                return program

            worker_class._execution_logic = _execution_logic
            worker_class._get_evaluation_entrypoint = _get_evaluation_entrypoint

            branches = cls._branches_module()
            cls.branch_error_name = branches.CustomErrorName
            branches.CustomErrorName = _branch_error_name
            cls._serialize_parsing()

    @classmethod
    def uninstall(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users > 0 or not cls.originals:
                return
            worker_class = cls._worker_class()
            for name, original in cls.originals.items():
                setattr(worker_class, name, original)
            cls.originals = {}
            if cls.branch_error_name is not None:
                cls._branches_module().CustomErrorName = cls.branch_error_name
                cls.branch_error_name = None
            for parser_class, original in reversed(cls.parsers):
                parser_class.parse = original
            cls.parsers.clear()
            cls.programs.clear()
            cls.reusable.clear()

    @classmethod
    def installed(cls) -> bool:
        return bool(cls.originals)

    @classmethod
    @contextlib.contextmanager
    def watching(cls, execution_arn: str) -> Iterator[threading.Event]:
        event = cls.events.setdefault(execution_arn, threading.Event())
        try:
            yield event
        finally:
            cls.events.pop(execution_arn, None)


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


class _QuotaHooks:
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

    lock = threading.Lock()
    users = 0
    max_payload_bytes = MAX_PAYLOAD_BYTES
    max_name_length = MAX_EXECUTION_NAME_LENGTH
    express_max_duration_s = EXPRESS_MAX_DURATION_S
    time_scale = 1.0
    originals: list[tuple[Any, str, Any]] = []  # noqa: RUF012 - process-wide state

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
    def _patch(cls, owner: Any, attribute: str, replacement: Any) -> None:
        cls.originals.append((owner, attribute, getattr(owner, attribute)))
        setattr(owner, attribute, replacement)

    @classmethod
    def install(cls) -> None:
        with cls.lock:
            cls.users += 1
            if cls.users > 1:
                return
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

            for module_name in _SIZE_CHECKING_MODULES:
                cls._patch(
                    importlib.import_module(module_name), "is_within_size_quota", cls.within_payload_quota
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

            cls._patch(StepFunctionsParserBackend, "start_execution", _start_execution)

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

            cls._patch(ErrorEqualsDecl, "_eval_body", _error_equals)

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

            cls._patch(Program, "eval", _program_eval)

            state_timeout = Timeout._eval_body

            def _state_timeout(timeout: Any, env: Any) -> None:
                state_timeout(timeout, env)
                if cls.time_scale != 1 and not timeout.is_default_value():
                    env.stack[-1] = min(env.stack[-1] * cls.time_scale, threading.TIMEOUT_MAX)

            cls._patch(Timeout, "_eval_body", _state_timeout)

    @classmethod
    def uninstall(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users > 0:
                return
            while cls.originals:
                owner, attribute, original = cls.originals.pop()
                setattr(owner, attribute, original)


def route_moto_logs(path: Path | None = None, level: int = logging.WARNING) -> None:
    """Keep moto's loggers off the console.

    moto logs a long dump for every execution that ends in a ``Fail`` state; send it
    to ``path`` (appended) or drop it.
    """
    logger = logging.getLogger("moto")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler: logging.Handler
    if path is None:
        handler = logging.NullHandler()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _code_zip() -> bytes:
    # moto wants a deployment package; the code that runs is the handler module.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


def _common_environment(functions: Mapping[str, FunctionSpec]) -> dict[str, str]:
    """Variables every function agrees on.

    ``os.environ`` is shared by all the threads that run handlers, so a variable can
    only be set once for all of them; one that differs between functions is left
    out (and reported) rather than set to one function's value.
    """
    values: dict[str, set[str]] = {}
    for function in functions.values():
        for key, value in function.environment.items():
            values.setdefault(key, set()).add(value)
    conflicting = sorted(k for k, v in values.items() if len(v) > 1)
    if conflicting:
        LOG.warning(
            "environment variables differ between functions and are not set locally: %s",
            ", ".join(conflicting),
        )
    return {k: next(iter(v)) for k, v in values.items() if len(v) == 1}


class LocalEngine:
    """Step Functions + Lambda + DynamoDB from one CDK template, inside this process.

    Thread-safe for ``start_execution``/``wait``/``run``/``describe``/``history``:
    every execution runs in its own moto worker thread.

    ``history_limit``: the events a Standard execution's history may hold before it
    fails as AWS fails it (AWS's hard quota by default; None for no limit). Read when
    each execution starts, so changing it affects the executions started afterwards.
    """

    def __init__(
        self,
        template: LocalTemplate | Mapping[str, Any] | Path | None = None,
        *,
        dynamodb_endpoint: str | None = None,
        table_name: str = names.LOCAL_TABLE_NAME,
        region: str = names.LOCAL_REGION,
        environment: Mapping[str, str] | None = None,
        workflow_outputs: Mapping[str, str] | None = None,
        use_seam: bool = True,
        retain_executions: int = 1000,
        reuse_programs: bool = True,
        enforce_iam: bool = True,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        max_execution_name_length: int = MAX_EXECUTION_NAME_LENGTH,
        express_max_duration_s: float = EXPRESS_MAX_DURATION_S,
        time_scale: float = 1.0,
        history_limit: int | None = STANDARD_HISTORY_LIMIT,
    ) -> None:
        source: str | None = None
        if isinstance(template, LocalTemplate):
            self.template = template
        elif isinstance(template, Mapping):
            self.template = parse_template(
                template,
                region=region,
                table_name=table_name,
                workflow_outputs=workflow_outputs,
            )
        else:
            source = str((template or DEFAULT_TEMPLATE_PATH).resolve())
            self.template = load_template(
                template,
                region=region,
                table_name=table_name,
                workflow_outputs=workflow_outputs,
            )
        self.dynamodb_endpoint = dynamodb_endpoint
        self.table_name = table_name
        self.region = region
        self.account = self.template.account
        self._extra_environment = dict(environment or {})
        self.retain_executions = retain_executions
        self.reuse_programs = reuse_programs
        # Step Functions quotas, AWS's values by default (tests may lower them).
        self.max_payload_bytes = max_payload_bytes
        self.max_execution_name_length = max_execution_name_length
        self.express_max_duration_s = express_max_duration_s
        # How many times slower than AWS this machine runs the workflows: every time limit
        # (functions, states, executions) is stretched by it. 1: AWS's limits as they are.
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self.history_limit = history_limit
        self.seam: LambdaSeam | None = (
            LambdaSeam(
                {
                    fn.name: LocalFunction(
                        name=fn.name,
                        handler=fn.handler,
                        timeout=fn.timeout * time_scale,
                        memory_size=fn.memory_size,
                        region=region,
                        account=self.account,
                        environment=fn.environment,
                        role_arn=fn.role_arn if enforce_iam else None,
                    )
                    for fn in self.template.functions.values()
                }
            )
            if use_seam
            else None
        )
        # Every call a function or a state machine makes is authorised against its role.
        self.authorizer: iam.Authorizer | None = (
            iam.Authorizer(self.template, table_name=table_name, source=source) if enforce_iam else None
        )
        self._mock: Any = None
        self._saved_environment: dict[str, str | None] = {}
        self._sfn: Any = None
        self._backend: Any = None
        self._started = False
        self._hook_installed = False
        self._quotas_installed = False
        self._aws_rules_installed = False
        self._finished_since_prune = 0
        self._prune_lock = threading.Lock()

    # Life cycle ---------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """Variables the in-process handlers see (on top of the rest of os.environ)."""
        env = {
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            names.ENV_SERVICE_NAME: names.POWERTOOLS_SERVICE_NAME,
            names.ENV_METRICS_NAMESPACE: names.METRICS_NAMESPACE,
            # EMF lines on stdout for every invocation drown the local server's output.
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
        env.update(_common_environment(self.template.functions))
        env[names.ENV_TABLE_NAME] = self.table_name
        # No X-Ray daemon locally.
        env["POWERTOOLS_TRACE_DISABLED"] = "true"
        if self.dynamodb_endpoint:
            env["AWS_ENDPOINT_URL_DYNAMODB"] = self.dynamodb_endpoint
        env.update(self._extra_environment)
        return env

    def _apply_environment(self) -> None:
        env = self.environment()
        for key in (*CLEARED_VARIABLES, *env):
            if key not in self._saved_environment:
                self._saved_environment[key] = os.environ.get(key)
        for key in CLEARED_VARIABLES:
            os.environ.pop(key, None)
        os.environ.update(env)

    def _restore_environment(self) -> None:
        for key, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environment.clear()

    def start(self) -> LocalEngine:
        if self._started:
            return self
        from moto import mock_aws
        from moto.stepfunctions.parser.models import stepfunctions_parser_backends

        self._apply_environment()
        try:
            self._mock = mock_aws(config=MOTO_CONFIG)
            self._mock.start()
            _WorkerHooks.reuse_programs = self.reuse_programs
            _WorkerHooks.install()
            self._hook_installed = True
            _QuotaHooks.max_payload_bytes = self.max_payload_bytes
            _QuotaHooks.max_name_length = self.max_execution_name_length
            _QuotaHooks.express_max_duration_s = self.express_max_duration_s
            _QuotaHooks.time_scale = self.time_scale
            _QuotaHooks.install()
            self._quotas_installed = True
            HistoryQuota.install(self._arn_prefix, lambda: self.history_limit)
            StatesIntegration.install()
            DYNAMODB_RULES.install()
            self._aws_rules_installed = True
            if self.seam is not None:
                self.seam.start()
            if self.authorizer is not None:
                iam.install(self.authorizer)
            self._started = True
            self._sfn = self._client("stepfunctions")
            self._backend = stepfunctions_parser_backends[self.account][self.region]
            self._create_table()
            role_arn = self._create_role()
            self._create_functions(role_arn)
            self._create_state_machines(role_arn)
        except BaseException:
            self.close()
            raise
        return self

    def close(self, drain_timeout: float = 5.0) -> None:
        """Stop the engine: let running executions finish (briefly), undo every patch."""
        if self._started:
            with contextlib.suppress(Exception):
                self._drain(drain_timeout)
        if self.seam is not None:
            self.seam.stop()
        if self.authorizer is not None:
            iam.uninstall(self.authorizer)
        if self._quotas_installed:
            _QuotaHooks.uninstall()
            self._quotas_installed = False
        if self._hook_installed:
            _WorkerHooks.uninstall()
            self._hook_installed = False
        if self._aws_rules_installed:
            HistoryQuota.uninstall(self._arn_prefix)
            StatesIntegration.uninstall()
            DYNAMODB_RULES.uninstall()
            self._aws_rules_installed = False
        if self._mock is not None:
            self._mock.stop()
            self._mock = None
        self._restore_environment()
        self._started = False
        self._sfn = None
        self._backend = None

    def __enter__(self) -> LocalEngine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for spec in self.template.state_machines.values():
            for execution in list(self._backend.describe_state_machine(spec.arn).executions):
                while execution.status == "RUNNING" and time.monotonic() < deadline:
                    time.sleep(0.01)

    @property
    def _arn_prefix(self) -> str:
        return f"arn:aws:states:{self.region}:{self.account}:"

    # Resources ----------------------------------------------------------------------

    def _client(self, service: str, **kwargs: Any) -> Any:
        return boto3.client(
            service,
            region_name=self.region,
            aws_access_key_id="local",
            aws_secret_access_key="local",
            **kwargs,
        )

    def dynamodb_client(self) -> Any:
        """A client for the database the handlers use (DynamoDB Local or moto)."""
        if self.dynamodb_endpoint:
            return self._client(
                "dynamodb",
                endpoint_url=self.dynamodb_endpoint,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}),
            )
        return self._client("dynamodb")

    def table(self) -> Any:
        """A boto3 ``Table`` resource for the engine's table."""
        kwargs: dict[str, Any] = {
            "region_name": self.region,
            "aws_access_key_id": "local",
            "aws_secret_access_key": "local",
        }
        if self.dynamodb_endpoint:
            kwargs["endpoint_url"] = self.dynamodb_endpoint
        return boto3.resource("dynamodb", **kwargs).Table(self.table_name)

    def _create_table(self) -> None:
        client = self.dynamodb_client()
        spec = self.template.table
        try:
            existing = client.describe_table(TableName=self.table_name)["Table"]
        except client.exceptions.ResourceNotFoundException:
            existing = None
        if existing is not None:
            self._check_existing_table(existing)
            return
        client.create_table(**spec.create_table_kwargs(self.table_name))
        deadline = time.monotonic() + 30
        while client.describe_table(TableName=self.table_name)["Table"]["TableStatus"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise EngineError(f"table {self.table_name} did not become ACTIVE")
            time.sleep(0.05)
        if spec.ttl_attribute:
            client.update_time_to_live(
                TableName=self.table_name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
            )

    def _check_existing_table(self, existing: Mapping[str, Any]) -> None:
        spec = self.template.table
        wanted_keys = {(k["AttributeName"], k["KeyType"]) for k in spec.key_schema}
        found_keys = {(k["AttributeName"], k["KeyType"]) for k in existing["KeySchema"]}
        wanted_indexes = {i["IndexName"] for i in spec.global_secondary_indexes}
        found_indexes = {i["IndexName"] for i in existing.get("GlobalSecondaryIndexes", [])}
        if wanted_keys != found_keys or wanted_indexes != found_indexes:
            raise EngineError(
                f"table {self.table_name} already exists with another schema "
                f"(keys {sorted(found_keys)}, indexes {sorted(found_indexes)}; the template "
                f"wants keys {sorted(wanted_keys)}, indexes {sorted(wanted_indexes)}): "
                "delete the local database (.local/dynamodb) or the table"
            )

    def reset_table(self) -> None:
        """Delete and recreate the table (test isolation)."""
        client = self.dynamodb_client()
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_table(TableName=self.table_name)
        self._create_table()

    def _create_role(self) -> str:
        iam = self._client("iam")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        # IAM is global to moto's account: a second engine in the process (in another
        # region) shares the role.
        try:
            role = iam.create_role(RoleName=LOCAL_ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
        except iam.exceptions.EntityAlreadyExistsException:
            role = iam.get_role(RoleName=LOCAL_ROLE_NAME)
        arn: str = role["Role"]["Arn"]
        return arn

    def _create_functions(self, role_arn: str) -> None:
        client = self._client("lambda")
        code = _code_zip()
        for function in self.template.functions.values():
            client.create_function(
                FunctionName=function.name,
                Runtime=function.runtime,
                Role=role_arn,
                Handler=function.handler,
                Code={"ZipFile": code},
                Timeout=function.timeout,
                MemorySize=function.memory_size,
                Environment={"Variables": function.environment},
            )

    def _create_state_machines(self, role_arn: str) -> None:
        for spec in self.template.state_machines.values():
            # Executions run as the template's role (see iam), when IAM is enforced.
            execution_role = spec.role_arn if self.authorizer is not None and spec.role_arn else role_arn
            response = self._sfn.create_state_machine(
                name=spec.name, definition=spec.definition, roleArn=execution_role, type=spec.type
            )
            if response["stateMachineArn"] != spec.arn:
                raise EngineError(
                    f"{spec.logical_id}: moto named it {response['stateMachineArn']}, "
                    f"the template resolves it to {spec.arn}"
                )
            # moto records the type but runs every execution as STANDARD
            # (`StateMachineInstance.sm_type`); its executions copy this attribute.
            from moto.stepfunctions.parser.api import StateMachineType

            self._backend.describe_state_machine(spec.arn).sm_type = StateMachineType(spec.type)

    # Workflows ----------------------------------------------------------------------

    @property
    def workflows(self) -> dict[str, StateMachineSpec]:
        return dict(self.template.workflows)

    def state_machine_arn(self, workflow: str) -> str:
        """ARN for a workflow id (``register``), a logical id, a name or an ARN."""
        if workflow in self.template.workflows:
            return self.template.workflows[workflow].arn
        for spec in self.template.state_machines.values():
            if workflow in (spec.logical_id, spec.name, spec.arn):
                return spec.arn
        known = sorted(self.template.workflows) + sorted(self.template.state_machines)
        raise KeyError(f"unknown workflow {workflow!r}; known: {', '.join(known)}")

    def execution_time_limit(self, workflow: str) -> float | None:
        """Seconds an execution of ``workflow`` may run before it ends ``TIMED_OUT``
        (None: no limit), as the engine enforces it."""
        arn = self.state_machine_arn(workflow)
        spec = next(s for s in self.template.state_machines.values() if s.arn == arn)
        declared = spec.definition_dict.get("TimeoutSeconds")
        return execution_time_limit(spec.type, declared, self.express_max_duration_s, self.time_scale)

    def _require_started(self) -> Any:
        if not self._started:
            raise EngineError("the engine is not started (use start() or a with block)")
        return self._sfn

    def start_execution(self, workflow: str, input: Any, name: str | None = None) -> str:
        """Start an execution; returns its ARN. Names default to a fresh uuid."""
        sfn = self._require_started()
        response = sfn.start_execution(
            stateMachineArn=self.state_machine_arn(workflow),
            name=name or uuid.uuid4().hex,
            # Compact UTF-8, as the quota counts it (ASCII escapes would inflate it).
            input=json.dumps(input, separators=(",", ":"), ensure_ascii=False),
        )
        arn: str = response["executionArn"]
        return arn

    def _execution(self, execution_arn: str) -> Any:
        return self._backend.describe_execution(execution_arn)

    def wait(self, execution_arn: str, timeout: float = 30.0) -> ExecutionResult:
        """Block until the execution ends; raises :class:`ExecutionTimeout` after ``timeout``."""
        self._require_started()
        execution = self._execution(execution_arn)
        deadline = time.monotonic() + timeout
        terminal_since: float | None = None
        with _WorkerHooks.watching(execution_arn) as woken:
            while True:
                worker = execution.exec_worker
                if getattr(worker, "local_engine_finished", False):
                    crash = getattr(worker, "local_engine_crash", None)
                    if crash is not None and execution.status not in TERMINAL_STATUSES:
                        raise EngineError(
                            f"execution {execution_arn} died in the interpreter: {crash!r}"
                        ) from crash
                    break
                now = time.monotonic()
                if execution.status in TERMINAL_STATUSES:
                    # moto sets the status before the output; without the hook's
                    # flag, give the worker a moment to finish reporting.
                    terminal_since = terminal_since or now
                    if now - terminal_since > 0.2:
                        break
                if now >= deadline:
                    raise ExecutionTimeout(
                        f"execution {execution_arn} still {execution.status} after {timeout}s"
                    )
                woken.wait(min(deadline - now, 0.05))
        self._after_finish()
        return self.describe(execution_arn)

    def run(
        self, workflow: str, input: Any, name: str | None = None, timeout: float = 30.0
    ) -> ExecutionResult:
        """Start an execution and wait for its end."""
        return self.wait(self.start_execution(workflow, input, name=name), timeout=timeout)

    def describe(self, execution_arn: str) -> ExecutionResult:
        response = self._require_started().describe_execution(executionArn=execution_arn)
        return ExecutionResult.from_describe(response)

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        """Every event of ``get_execution_history``, oldest first."""
        sfn = self._require_started()
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
        while True:
            page = sfn.get_execution_history(**kwargs)
            events.extend(page["events"])
            token = page.get("nextToken")
            if not token:
                return events
            kwargs["nextToken"] = token

    def list_executions(
        self, workflow: str, status: str | None = None, max_results: int | None = None
    ) -> list[dict[str, Any]]:
        """Executions of a workflow, newest first (``ExecutionListItem`` dicts)."""
        sfn = self._require_started()
        kwargs: dict[str, Any] = {"stateMachineArn": self.state_machine_arn(workflow)}
        if status:
            kwargs["statusFilter"] = status
        items: list[dict[str, Any]] = []
        while True:
            page = sfn.list_executions(**kwargs)
            items.extend(page["executions"])
            token = page.get("nextToken")
            if not token or (max_results is not None and len(items) >= max_results):
                return items[:max_results] if max_results is not None else items
            kwargs["nextToken"] = token

    # Housekeeping --------------------------------------------------------------------

    def _after_finish(self) -> None:
        # moto keeps every execution (and looks them up by a linear scan) and every
        # worker thread object: a long-running local server must drop old ones.
        self._finished_since_prune += 1
        batch = max(1, self.retain_executions // 5)
        if self._finished_since_prune < batch:
            return
        if not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._finished_since_prune = 0
            self.prune_executions()
        finally:
            self._prune_lock.release()

    def prune_executions(self) -> int:
        """Forget the oldest finished executions beyond ``retain_executions``."""
        from moto.stepfunctions.parser.utils import TMP_THREADS

        dropped = 0
        for spec in self.template.state_machines.values():
            executions = self._backend.describe_state_machine(spec.arn).executions
            snapshot = list(executions)
            excess = len(snapshot) - self.retain_executions
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
