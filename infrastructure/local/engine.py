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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from infrastructure import names
from infrastructure.local import iam
from infrastructure.local.execution_quotas import (
    EXPRESS_MAX_DURATION_S,
    MAX_EXECUTION_NAME_LENGTH,
    MAX_PAYLOAD_BYTES,
    ExecutionQuotas,
    execution_time_limit,
)
from infrastructure.local.history_quota import STANDARD_HISTORY_LIMIT, HistoryQuota
from infrastructure.local.lambda_seam import LambdaSeam, LocalFunction
from infrastructure.local.moto_dynamodb import DYNAMODB_RULES
from infrastructure.local.program_pool import ProgramPool
from infrastructure.local.states_integration import StatesIntegration
from infrastructure.local.template import DEFAULT_TEMPLATE_PATH, load_template, parse_template
from infrastructure.local.template_specs import FunctionSpec, LocalTemplate, StateMachineSpec

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
            ProgramPool.reuse_programs = self.reuse_programs
            ProgramPool.install()
            self._hook_installed = True
            ExecutionQuotas.max_payload_bytes = self.max_payload_bytes
            ExecutionQuotas.max_name_length = self.max_execution_name_length
            ExecutionQuotas.express_max_duration_s = self.express_max_duration_s
            ExecutionQuotas.time_scale = self.time_scale
            ExecutionQuotas.install()
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
            ExecutionQuotas.uninstall()
            self._quotas_installed = False
        if self._hook_installed:
            ProgramPool.uninstall()
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
        with ProgramPool.watching(execution_arn) as woken:
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
