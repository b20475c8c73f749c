"""Reconciliation on AWS: its task functions, the Standard workflow, the schedule, alarms.

Each function has its own least-privilege role (as the registration tasks do, see
`task_functions`). The schedule is an EventBridge Scheduler schedule whose role may
start this state machine and nothing else; the state machine's own role may invoke its
four functions and start itself (a long run continues in a fresh execution, see
`workflows.reconcile`). The ReconcileEvent function may also start the cancel workflow:
a cancelled event that still holds registrations gets its cancel run from reconciliation
when the API's start was lost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infrastructure import names
from infrastructure.constructs.table import GSI1_NAME
from infrastructure.constructs.task_functions import (
    ASSET_EXCLUDES,
    LAMBDA_ASSET_DIR,
    MEMORY_SIZE_MB,
    TIMEOUT,
    python_function,
)
from workflows import common
from workflows.reconcile import RECONCILE_TASK, ReconcileWorkflow

# Reconciling one event reads every item of it (keys only for seats): give it room.
RECONCILE_TIMEOUT = Duration.seconds(180)
RECONCILE_MEMORY_MB = 512

# DynamoDB actions per function (a transaction's actions are authorised one by one).
TABLE_ACTIONS: dict[str, tuple[str, ...]] = {
    "ListEventsPage": ("dynamodb:Query",),  # GSI1 only
    "ReconcileEvent": (
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:ConditionCheckItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    ),
    "TallyReconciliation": (),
    "RecordReconciliation": ("dynamodb:PutItem",),
}
# Which of them read GSI1 instead of the table.
INDEX_READERS = frozenset({"ListEventsPage"})
# Which of them start the cancel workflow (for a cancelled event still holding registrations).
CANCEL_STARTERS = frozenset({RECONCILE_TASK})

SCHEDULE_EXPRESSION = re.compile(
    r"^(rate\(\s*[1-9]\d*\s+(minute|minutes|hour|hours|day|days)\s*\)|cron\(.+\)|at\(.+\))$"
)
# EventBridge Scheduler retries a failed StartExecution this often, for this long.
SCHEDULE_RETRY_ATTEMPTS = 3
SCHEDULE_MAX_EVENT_AGE_S = 600
# Repairs are summed over this period; any repair raises the alarm.
ALARM_PERIOD = Duration.minutes(15)


def schedule_expression_for(scope: Construct, override: str | None = None) -> str:
    """The construct's argument, else the `reconcileSchedule` context value, else every 15 minutes."""
    value = override or scope.node.try_get_context(names.RECONCILE_SCHEDULE_CONTEXT)
    expression = str(value) if value else names.DEFAULT_RECONCILE_SCHEDULE
    if not SCHEDULE_EXPRESSION.match(expression):
        raise ValueError(
            f"{expression!r} is not an EventBridge Scheduler expression "
            "(e.g. 'rate(15 minutes)', 'cron(0 * * * ? *)')"
        )
    return expression


class Reconciliation(Construct):
    """The scheduled reconcile workflow with its functions and alarms."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        table: dynamodb.ITable,
        powertools_layer: lambda_.ILayerVersion,
        cancel_state_machine: sfn.IStateMachine,
        schedule_expression: str | None = None,
        schedule_enabled: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        if set(names.RECONCILE_HANDLERS) != set(TABLE_ACTIONS):
            raise ValueError("reconciliation handlers and table grants disagree")

        code = lambda_.Code.from_asset(str(LAMBDA_ASSET_DIR), exclude=ASSET_EXCLUDES)
        self._functions: dict[str, lambda_.Function] = {
            task: self._function(task, handler, code=code, table=table, layer=powertools_layer)
            for task, handler in names.RECONCILE_HANDLERS.items()
        }
        for task in CANCEL_STARTERS:
            self._may_start_cancel_runs(self._functions[task], cancel_state_machine)

        self.workflow = ReconcileWorkflow(self, "Workflow", functions=self.functions)
        self.state_machine: sfn.StateMachine = self.workflow.state_machine

        self.schedule_expression = schedule_expression_for(self, schedule_expression)
        self.schedule_role = iam.Role(
            self,
            "ScheduleRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
            description="Lets EventBridge Scheduler start the reconcile workflow",
        )
        self.schedule_role.add_to_policy(
            iam.PolicyStatement(
                actions=["states:StartExecution"],
                resources=[self.state_machine.state_machine_arn],
            )
        )
        self.schedule = scheduler.CfnSchedule(
            self,
            "Schedule",
            description="Starts the reconcile workflow",
            schedule_expression=self.schedule_expression,
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            state="ENABLED" if schedule_enabled else "DISABLED",
            target=scheduler.CfnSchedule.TargetProperty(
                arn=self.state_machine.state_machine_arn,
                role_arn=self.schedule_role.role_arn,
                input=json.dumps({}),
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                    maximum_retry_attempts=SCHEDULE_RETRY_ATTEMPTS,
                    maximum_event_age_in_seconds=SCHEDULE_MAX_EVENT_AGE_S,
                ),
            ),
        )

        self.repairs_metric = cloudwatch.Metric(
            namespace=names.METRICS_NAMESPACE,
            metric_name=names.RECONCILIATION_REPAIRS_METRIC,
            dimensions_map={"service": names.POWERTOOLS_SERVICE_NAME},
            statistic=cloudwatch.Stats.SUM,
            period=ALARM_PERIOD,
        )
        self.repairs_alarm = cloudwatch.Alarm(
            self,
            "RepairsAlarm",
            alarm_description=(
                "Reconciliation repaired drift (counts, waitlist items or a missed promotion): "
                "the repair records (RECONCILED#...) and the logs say which event and what changed"
            ),
            metric=self.repairs_metric,
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.failures_alarm = common.failed_runs_alarm(
            self, self.state_machine, "A reconciliation run failed or left events unreconciled"
        )

    @property
    def functions(self) -> Mapping[str, lambda_.IFunction]:
        return dict(self._functions)

    @staticmethod
    def _may_start_cancel_runs(function: lambda_.Function, cancel_state_machine: sfn.IStateMachine) -> None:
        """StartExecution on that one state machine (its executions are named per event, so
        a start for an event whose run exists changes nothing), and its ARN where
        `registration.settings` reads it."""
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["states:StartExecution"], resources=[cancel_state_machine.state_machine_arn]
            )
        )
        function.add_environment(
            names.ENV_WORKFLOW_ARNS[names.CANCEL_WORKFLOW], cancel_state_machine.state_machine_arn
        )

    def _function(
        self,
        task: str,
        handler: str,
        *,
        code: lambda_.Code,
        table: dynamodb.ITable,
        layer: lambda_.ILayerVersion,
    ) -> lambda_.Function:
        statements = []
        if TABLE_ACTIONS[task]:
            resource = f"{table.table_arn}/index/{GSI1_NAME}" if task in INDEX_READERS else table.table_arn
            statements.append(iam.PolicyStatement(actions=list(TABLE_ACTIONS[task]), resources=[resource]))
        long_running = task == RECONCILE_TASK
        return python_function(
            self,
            task,
            handler,
            code=code,
            layer=layer,
            statements=statements,
            table=table if TABLE_ACTIONS[task] else None,
            role_description=f"Runs the {task} reconciliation task",
            description=f"Reconciliation task {task} ({handler})",
            memory_size=RECONCILE_MEMORY_MB if long_running else MEMORY_SIZE_MB,
            timeout=RECONCILE_TIMEOUT if long_running else TIMEOUT,
        )
