"""Run the synthesized workflows on one machine.

moto's Step Functions interpreter executes the exact ASL CDK synthesized; Lambda tasks
run the real handler modules in-process through :mod:`infrastructure.local.lambda_seam`;
the table lives in DynamoDB Local (``dynamodb_endpoint``) or, without one, in moto's
in-memory DynamoDB. Handlers reach the table through the standard
``AWS_ENDPOINT_URL_DYNAMODB`` variable and never learn they run locally.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from infrastructure import names
from infrastructure.local import iam
from infrastructure.local.event_sources import LocalEventSources
from infrastructure.local.execution_quotas import (
    EXPRESS_MAX_DURATION_S,
    MAX_EXECUTION_NAME_LENGTH,
    MAX_PAYLOAD_BYTES,
    ExecutionQuotas,
    execution_time_limit,
)
from infrastructure.local.execution_results import (
    TERMINAL_STATUSES,
    EngineError,
    ExecutionResult,
    ExecutionTimeout,
)
from infrastructure.local.execution_retention import forget_finished_executions
from infrastructure.local.handler_environment import ProcessEnvironment, handler_environment
from infrastructure.local.history_quota import STANDARD_HISTORY_LIMIT, HistoryQuota
from infrastructure.local.identity import LocalIdentity
from infrastructure.local.lambda_seam import LambdaSeam, LocalFunction
from infrastructure.local.moto_dynamodb import DYNAMODB_RULES
from infrastructure.local.moto_resources import create_functions, create_role, create_state_machines
from infrastructure.local.pipes import LocalPipes
from infrastructure.local.program_pool import ProgramPool
from infrastructure.local.queues import LocalQueues
from infrastructure.local.states_integration import StatesIntegration
from infrastructure.local.table_setup import create_table, recreate_table
from infrastructure.local.template import DEFAULT_TEMPLATE_PATH, load_template, parse_template
from infrastructure.local.template_specs import LocalTemplate, StateMachineSpec
from infrastructure.local.webhook_delivery import (
    LOCAL_RETRY_SCHEDULE_S,
    QUEUES_DIRECTORY,
    QueueRuntime,
    WebhookDeadLetters,
    queue_runtime,
)
from registration import settings as function_settings

if TYPE_CHECKING:
    from moto.core.config import DefaultConfig

MOTO_CONFIG: DefaultConfig = {
    "stepfunctions": {"execute_state_machine": True},
    "lambda": {"use_docker": False},
}


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
        events_dir: Path | None = None,
        webhook_retry_schedule: Sequence[int] = LOCAL_RETRY_SCHEDULE_S,
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
        self._process_environment = ProcessEnvironment()
        self._sfn: Any = None
        self._backend: Any = None
        # The template's user pool once started (None without one): tokens and their checks.
        self.identity: LocalIdentity | None = None
        # The template's event buses and pipes once started (None without any); the buses'
        # logs live in `events_dir` (memory without one). Pipes poll only once started
        # (`pipes.start()`); `pipes.drain()` reads what is committed, now.
        self.events_dir = events_dir
        self.pipes: LocalPipes | None = None
        # The template's queues (their files under `events_dir`), the functions' event
        # sources among them, and the webhook deliveries' dead letters; the event sources
        # poll only once started (`event_sources.start()`). A failed webhook delivery
        # waits `webhook_retry_schedule` locally (AWS: 30 s doubling, for a day).
        self.webhook_retry_schedule = tuple(int(wait) for wait in webhook_retry_schedule)
        self.queue_runtime: QueueRuntime | None = None
        self._started = False
        self._hook_installed = False
        self._quotas_installed = False
        self._aws_rules_installed = False
        self._finished_since_prune = 0
        self._prune_lock = threading.Lock()

    # Life cycle ---------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """Variables the in-process handlers see (on top of the rest of os.environ)."""
        return handler_environment(
            self.template,
            region=self.region,
            table_name=self.table_name,
            dynamodb_endpoint=self.dynamodb_endpoint,
            extra={
                function_settings.WEBHOOK_RETRY_SCHEDULE: ",".join(map(str, self.webhook_retry_schedule)),
                **self._extra_environment,
            },
        )

    def start(self) -> LocalEngine:
        if self._started:
            return self
        from moto import mock_aws
        from moto.stepfunctions.parser.models import stepfunctions_parser_backends

        self._process_environment.apply(self.environment())
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
            create_table(self.dynamodb_client(), self.template.table, self.table_name)
            role_arn = create_role(self._client("iam"))
            create_functions(self._client("lambda"), self.template.functions.values(), role_arn)
            create_state_machines(
                self._sfn,
                self._backend,
                self.template.state_machines.values(),
                role_arn,
                template_roles=self.authorizer is not None,
            )
            self._start_queues()
            if self.template.pipes or self.template.event_buses:
                self.pipes = LocalPipes(
                    self.template,
                    dynamodb=self.dynamodb_client(),
                    streams=self.streams_client(),
                    table_name=self.table_name,
                    authorizer=self.authorizer,
                    directory=self.events_dir,
                    queues=self.queues,
                )
            if self.template.user_pool is not None:
                pool = self.template.user_pool
                self.identity = LocalIdentity(pool, self._client("cognito-idp"), self.region)
        except BaseException:
            self.close()
            raise
        return self

    def _start_queues(self) -> None:
        """The template's queues, answering the handlers' calls, and their event sources."""
        self.queue_runtime = queue_runtime(
            self.template,
            directory=self.events_dir / QUEUES_DIRECTORY if self.events_dir is not None else None,
            schedule=self.webhook_retry_schedule,
            lambdas=self.seam.client if self.seam is not None else None,
            region=self.region,
        )

    @property
    def queues(self) -> LocalQueues | None:
        return self.queue_runtime.queues if self.queue_runtime is not None else None

    @property
    def event_sources(self) -> LocalEventSources | None:
        return self.queue_runtime.event_sources if self.queue_runtime is not None else None

    @property
    def webhooks(self) -> WebhookDeadLetters | None:
        """The webhook deliveries' dead letters (None: the template has no webhooks)."""
        return self.queue_runtime.dead_letters if self.queue_runtime is not None else None

    def close(self, drain_timeout: float = 5.0) -> None:
        """Stop the engine: let running executions finish (briefly), undo every patch."""
        if self._started:
            with contextlib.suppress(Exception):
                self._drain(drain_timeout)
        if self.queue_runtime is not None:
            self.queue_runtime.close()
            self.queue_runtime = None
        if self.pipes is not None:
            self.pipes.stop()
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
        self._process_environment.restore()
        self._started = False
        self._sfn = None
        self._backend = None
        self.identity = None

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

    def streams_client(self) -> Any:
        """A client for the table's stream, in the same database."""
        if self.dynamodb_endpoint:
            return self._client("dynamodbstreams", endpoint_url=self.dynamodb_endpoint)
        # botocore sends a call naming a stream ARN to the account's own endpoint
        # (`<account>.streams-ddb...`), which moto does not answer: name the regional one.
        return self._client(
            "dynamodbstreams", endpoint_url=f"https://streams.dynamodb.{self.region}.amazonaws.com"
        )

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

    def reset_table(self) -> None:
        """Delete and recreate the table (test isolation)."""
        recreate_table(self.dynamodb_client(), self.template.table, self.table_name)
        if self.pipes is not None:
            self.pipes.forget_stream()  # the new table has a new stream

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
        arns = [spec.arn for spec in self.template.state_machines.values()]
        return forget_finished_executions(self._backend, arns, self.retain_executions)
