"""One Lambda function per workflow task, each with its own least-privilege role."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aws_cdk import CfnDynamicReference, CfnDynamicReferenceService, Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infrastructure import names
from registration import keys

# Repository-relative location of the Lambda code asset (handlers plus the shared package).
LAMBDA_ASSET_DIR = Path(__file__).resolve().parents[2] / "lambdas"
ASSET_EXCLUDES = ["**/__pycache__", "**/*.pyc", "**/.pytest_cache", "**/.mypy_cache"]

RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.X86_64

# Powertools for AWS Lambda (Python) v3, from the public layer AWS publishes in every
# commercial region. Layer version numbers are not release numbers (layers are published
# more often than releases), so the layer is looked up by release: Powertools keeps one
# public SSM parameter per release, runtime and architecture whose value is the layer
# version's full ARN in the stack's region. CloudFormation resolves it at deploy time; the
# release is the one requirements.txt pins, the one the tests ran.
REQUIREMENTS_FILE = Path(__file__).resolve().parents[2] / "requirements.txt"
POWERTOOLS_PACKAGE = "aws-lambda-powertools"
POWERTOOLS_SSM_PREFIX = "/aws/service/powertools/python"

MEMORY_SIZE_MB = 256
TIMEOUT = Duration.seconds(10)
# The register and unregister workflows' tasks: a handler takes tens of milliseconds, and
# its in-task retries stop halfway through its time (`service.in_task_budget`). Shorter than the Task
# state's TimeoutSeconds (`workflows.common.EXPRESS_TASK_TIMEOUT`), which also covers a
# cold start: an attempt that ran out of time is over before its retry begins.
TASK_FUNCTION_TIMEOUT = Duration.seconds(1)
LOG_RETENTION = logs.RetentionDays.ONE_MONTH
LOG_LEVEL = "INFO"

# DynamoDB actions per task: what its code calls (the local engine authorises every call
# against these roles, and the test suite reports grants no call used). TransactWriteItems
# has no IAM action of its own: each action inside a transaction is authorised as the
# matching item action (Put -> PutItem, Update -> UpdateItem, Delete -> DeleteItem,
# ConditionCheck -> ConditionCheckItem). No task queries GSI1, so no grant on indexes.
_READ_ITEMS = ("dynamodb:GetItem", "dynamodb:BatchGetItem")
_QUERY = ("dynamodb:Query",)
TABLE_ACTIONS: dict[str, tuple[str, ...]] = {
    "Validate": _READ_ITEMS,
    "CheckCapacity": (*_READ_ITEMS, *_QUERY),
    "WriteRegistration": (
        "dynamodb:ConditionCheckItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        *_READ_ITEMS,  # the membership read on the contention and retry paths is a BatchGetItem
        *_QUERY,
    ),
    "CheckRegistration": (*_READ_ITEMS, *_QUERY),
    "WriteUnregistration": (
        "dynamodb:ConditionCheckItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:GetItem",
        *_QUERY,
    ),
    "PromoteFromWaitlist": (
        "dynamodb:ConditionCheckItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        *_READ_ITEMS,
        *_QUERY,
    ),
    # Idempotency records only (see LEADING_KEYS).
    "ClaimRequest": ("dynamodb:PutItem", "dynamodb:GetItem"),
    "RecordOutcome": ("dynamodb:UpdateItem", "dynamodb:DeleteItem"),
}
# Tasks confined to items whose partition key starts with a prefix (IAM's
# `dynamodb:LeadingKeys`): the idempotency tasks can touch nothing else in the table.
IDEMPOTENCY_LEADING_KEYS = [f"{keys.IDEMPOTENCY_PREFIX}*"]
LEADING_KEYS: dict[str, list[str]] = {
    "ClaimRequest": IDEMPOTENCY_LEADING_KEYS,
    "RecordOutcome": IDEMPOTENCY_LEADING_KEYS,
}


# Reads a task needs beyond its own records: ClaimRequest checks the caller may make the
# request before it claims the key, which for an organizer acting for someone else
# means reading who organizes the event (`registration.access`), and nothing more.
EVENT_READS: dict[str, tuple[str, ...]] = {"ClaimRequest": ("dynamodb:GetItem",)}
EVENT_LEADING_KEYS = [f"{keys.EVENT_PREFIX}*"]
USER_LEADING_KEYS = [f"{keys.USER_PREFIX}*"]


def leading_keys_condition(patterns: list[str]) -> dict[str, Any]:
    return {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": patterns}}


def powertools_version(requirements: Path = REQUIREMENTS_FILE) -> str:
    """The Powertools release requirements.txt pins (`aws-lambda-powertools[extras]==X`)."""
    pattern = re.compile(rf"^{re.escape(POWERTOOLS_PACKAGE)}(\[[^\]]*\])?==(?P<version>[^\s;#]+)")
    for line in requirements.read_text(encoding="utf-8").splitlines():
        match = pattern.match(line.strip())
        if match:
            return match["version"]
    raise ValueError(f"{requirements} pins no exact {POWERTOOLS_PACKAGE} release (`{POWERTOOLS_PACKAGE}==X`)")


def powertools_layer_parameter(version: str) -> str:
    """The public SSM parameter holding the ARN of release `version`'s layer for this
    runtime and architecture (e.g. `/aws/service/powertools/python/x86_64/python3.13/3.37.0`)."""
    return f"{POWERTOOLS_SSM_PREFIX}/{ARCHITECTURE.name}/{RUNTIME.name}/{version}"


class TaskFunctions(Construct):
    """Creates every function in `names.TASK_HANDLERS`; access them by task name."""

    def __init__(self, scope: Construct, construct_id: str, *, table: dynamodb.ITable) -> None:
        super().__init__(scope, construct_id)

        missing = set(names.TASK_HANDLERS) ^ set(TABLE_ACTIONS)
        if missing:
            raise ValueError(f"task handlers and table grants disagree on: {sorted(missing)}")

        # `{{resolve:ssm:...}}`: CloudFormation reads the parameter when it deploys.
        layer_arn = CfnDynamicReference(
            CfnDynamicReferenceService.SSM, powertools_layer_parameter(powertools_version())
        ).to_string()
        self.powertools_layer = lambda_.LayerVersion.from_layer_version_arn(
            self, "PowertoolsLayer", layer_arn
        )
        code = lambda_.Code.from_asset(str(LAMBDA_ASSET_DIR), exclude=ASSET_EXCLUDES)

        self._functions: dict[str, lambda_.Function] = {}
        for task_name, handler in names.TASK_HANDLERS.items():
            self._functions[task_name] = self._task_function(task_name, handler, code=code, table=table)

    @property
    def functions(self) -> Mapping[str, lambda_.IFunction]:
        return dict(self._functions)

    def __getitem__(self, task_name: str) -> lambda_.IFunction:
        return self._functions[task_name]

    def _task_function(
        self,
        task_name: str,
        handler: str,
        *,
        code: lambda_.Code,
        table: dynamodb.ITable,
    ) -> lambda_.Function:
        leading_keys = LEADING_KEYS.get(task_name)
        grant = iam.PolicyStatement(
            actions=list(TABLE_ACTIONS[task_name]),
            resources=[table.table_arn],
            conditions=leading_keys_condition(leading_keys) if leading_keys else None,
        )
        statements = [grant]
        if task_name in EVENT_READS:
            statements.append(
                iam.PolicyStatement(
                    actions=list(EVENT_READS[task_name]),
                    resources=[table.table_arn],
                    conditions=leading_keys_condition(EVENT_LEADING_KEYS),
                )
            )
        return python_function(
            self,
            task_name,
            handler,
            code=code,
            layer=self.powertools_layer,
            statements=statements,
            table=table,
            role_description=f"Runs the {task_name} workflow task",
            description=f"Workflow task {task_name} ({handler})",
            timeout=TASK_FUNCTION_TIMEOUT,
        )


def python_function(
    scope: Construct,
    construct_id: str,
    handler: str,
    *,
    code: lambda_.Code,
    layer: lambda_.ILayerVersion,
    statements: Sequence[iam.PolicyStatement],
    table: dynamodb.ITable | None,
    role_description: str,
    description: str,
    memory_size: int = MEMORY_SIZE_MB,
    timeout: Duration = TIMEOUT,
) -> lambda_.Function:
    """One of the project's Lambda functions: python3.13 with the Powertools layer, traced,
    its own log group, and its own role allowed to write to that log group and to do what
    `statements` grant, nothing else. `table` (when given) is named in its environment."""
    log_group = logs.LogGroup(scope, f"{construct_id}LogGroup", retention=LOG_RETENTION)
    role = iam.Role(
        scope,
        f"{construct_id}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=role_description,
    )
    # Only its own log group (the function never creates one: it exists already).
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn],
        )
    )
    for statement in statements:
        role.add_to_policy(statement)
    environment = {
        names.ENV_SERVICE_NAME: names.POWERTOOLS_SERVICE_NAME,
        names.ENV_METRICS_NAMESPACE: names.METRICS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": LOG_LEVEL,
    }
    if table is not None:
        environment[names.ENV_TABLE_NAME] = table.table_name
    return lambda_.Function(
        scope,
        construct_id,
        runtime=RUNTIME,
        architecture=ARCHITECTURE,
        handler=handler,
        code=code,
        layers=[layer],
        memory_size=memory_size,
        timeout=timeout,
        tracing=lambda_.Tracing.ACTIVE,
        role=role,
        log_group=log_group,
        description=description,
        environment=environment,
    )


def workflow_functions(
    scope: Construct,
    handlers: Mapping[str, str],
    *,
    kind: str,
    layer: lambda_.ILayerVersion,
    table: dynamodb.ITable,
    statements: Callable[[str], Sequence[iam.PolicyStatement]],
    timeout: Callable[[str], Duration],
) -> dict[str, lambda_.Function]:
    """A Standard workflow's functions (construct id -> handler), one `python_function`
    each, from one code asset: `statements(task)` is what its role may do, `kind` what
    its descriptions call it ("cancellation")."""
    code = lambda_.Code.from_asset(str(LAMBDA_ASSET_DIR), exclude=ASSET_EXCLUDES)
    return {
        task: python_function(
            scope,
            task,
            handler,
            code=code,
            layer=layer,
            statements=statements(task),
            table=table,
            role_description=f"Runs the {task} {kind} task",
            description=f"{kind.capitalize()} task {task} ({handler})",
            timeout=timeout(task),
        )
        for task, handler in handlers.items()
    }
