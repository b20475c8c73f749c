"""Alarms and one dashboard for the whole stack; alarm actions go to one SNS topic.

What is alarmed, and why this way:

* Register and unregister end in a Fail state for every *refusal* (EventFull,
  AlreadyRegistered, ...): the state machines' `ExecutionsFailed` counts business
  outcomes, not faults. A metric filter on each Express log group counts the failed
  executions whose error is *not* a 4xx outcome (`registration.outcomes`), and the alarm
  adds the timed-out ones. For the same reason the task functions' Lambda `Errors`
  (a refusal is raised as an error for `Catch` to route) are not alarmed: a task that
  crashes fails its execution with a non-business error, which that filter counts.
* `ExecutionThrottled` of every state machine; Lambda `Throttles` of every function;
  Lambda `Errors` of the functions that raise no business errors (the API function and
  the reconciliation tasks).
* Reconciliation: its construct already alarms on failed runs and on any repair
  (`ReconciliationRepairs`); those alarms get the same actions and are on the dashboard.
* Domain events: their construct alarms on any message in the pipe's dead-letter queue
  (stream records the bus refused) and in the log rule's (events not logged); those
  alarms too come in as `existing_alarms`.
* API Gateway 5XX; DynamoDB throttled requests and system errors of the operations
  the functions use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import CfnOutput, Duration
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infrastructure import names
from registration.outcomes import WORKFLOW_ERROR_STATUS

PERIOD = Duration.minutes(5)
ALARM_TOPIC_OUTPUT = "AlarmTopicArn"
DASHBOARD_OUTPUT = "DashboardName"
# Errors a workflow ends with that are answers (4xx), not faults.
BUSINESS_ERRORS = tuple(sorted(code for code, status in WORKFLOW_ERROR_STATUS.items() if status < 500))
# Powertools metrics the handlers emit (dimension `service`).
BUSINESS_METRICS = (
    "Registrations",
    "WaitlistJoins",
    "Unregistrations",
    "WaitlistLeaves",
    "Promotions",
    "TransactionConflicts",
)
REFUSAL_METRICS = tuple(f"Refused{code}" for code in BUSINESS_ERRORS if code != "ValidationError")
RECONCILIATION_METRICS = (
    names.RECONCILIATION_REPAIRS_METRIC,
    "ReconciliationCountRepairs",
    "ReconciliationWaitlistRepairs",
    "ReconciliationPromotions",
    "ReconciliationEventsBusy",
)
TABLE_OPERATIONS = (
    dynamodb.Operation.GET_ITEM,
    dynamodb.Operation.BATCH_GET_ITEM,
    dynamodb.Operation.PUT_ITEM,
    dynamodb.Operation.UPDATE_ITEM,
    dynamodb.Operation.DELETE_ITEM,
    dynamodb.Operation.QUERY,
    dynamodb.Operation.TRANSACT_WRITE_ITEMS,
)


def unexpected_failure_pattern() -> logs.IFilterPattern:
    """ExecutionFailed records (Express logging, level ALL) whose error is no business outcome."""
    return logs.FilterPattern.all(
        logs.FilterPattern.string_value("$.type", "=", "ExecutionFailed"),
        *(logs.FilterPattern.string_value("$.details.error", "!=", code) for code in BUSINESS_ERRORS),
    )


def _title(workflow: str) -> str:
    return workflow[:1].upper() + workflow[1:]


def unexpected_failures_metric(workflow: str) -> str:
    """Metric a workflow's log group's filter counts faults under (metric filters take no
    fixed dimensions, so each workflow has its own name)."""
    return f"{_title(workflow)}UnexpectedFailures"


class Monitoring(Construct):
    """Alarms (with an SNS topic as their action) and the operations dashboard."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        express_workflows: Mapping[str, tuple[sfn.IStateMachine, logs.ILogGroup]],
        standard_workflows: Mapping[str, sfn.IStateMachine],
        functions: Mapping[str, lambda_.IFunction],
        error_alarmed_functions: Sequence[str],
        table: dynamodb.ITable,
        rest_api: apigateway.RestApi | None = None,
        existing_alarms: Sequence[cloudwatch.IAlarm] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "AlarmTopic", display_name="Event registration alarms", enforce_ssl=True)
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        action = cloudwatch_actions.SnsAction(self.topic)

        # Workflows ------------------------------------------------------------------
        failure_graphs: list[cloudwatch.IMetric] = []
        for workflow, (state_machine, log_group) in express_workflows.items():
            title = _title(workflow)
            logs.MetricFilter(
                self,
                f"{title}UnexpectedFailuresFilter",
                log_group=log_group,
                filter_pattern=unexpected_failure_pattern(),
                metric_namespace=names.METRICS_NAMESPACE,
                metric_name=unexpected_failures_metric(workflow),
                metric_value="1",
                default_value=0,
            )
            unexpected = cloudwatch.Metric(
                namespace=names.METRICS_NAMESPACE,
                metric_name=unexpected_failures_metric(workflow),
                statistic=cloudwatch.Stats.SUM,
                period=PERIOD,
            )
            failed = cloudwatch.MathExpression(
                # Ids unique per workflow: the dashboard graphs every workflow's expression together.
                expression=f"FILL(u_{workflow}, 0) + FILL(t_{workflow}, 0) + FILL(a_{workflow}, 0)",
                using_metrics={
                    f"u_{workflow}": unexpected,
                    f"t_{workflow}": state_machine.metric_timed_out(
                        period=PERIOD, statistic=cloudwatch.Stats.SUM
                    ),
                    f"a_{workflow}": state_machine.metric_aborted(
                        period=PERIOD, statistic=cloudwatch.Stats.SUM
                    ),
                },
                label=f"{workflow}: faults (not refusals)",
                period=PERIOD,
            )
            failure_graphs.append(failed)
            self._alarm(
                f"{title}ExecutionsFailed",
                failed,
                f"{workflow} executions failed for a reason other than a refusal (a task crashed, "
                "timed out or hit an internal error): `regctl --aws executions list --workflow "
                f"{workflow} --status failed`",
            )
        all_machines: dict[str, sfn.IStateMachine] = {
            **{w: sm for w, (sm, _) in express_workflows.items()},
            **standard_workflows,
        }
        for workflow, state_machine in all_machines.items():
            self._alarm(
                f"{_title(workflow)}ExecutionsThrottled",
                state_machine.metric_throttled(period=PERIOD, statistic=cloudwatch.Stats.SUM),
                f"Step Functions throttled {workflow} executions",
            )

        # Functions ------------------------------------------------------------------
        for name, function in functions.items():
            self._alarm(
                f"{name}Throttles",
                function.metric_throttles(period=PERIOD, statistic=cloudwatch.Stats.SUM),
                f"Lambda throttled the {name} function",
            )
            if name in error_alarmed_functions:
                self._alarm(
                    f"{name}Errors",
                    function.metric_errors(period=PERIOD, statistic=cloudwatch.Stats.SUM),
                    f"The {name} function failed (it raises no business errors)",
                )

        # API and table --------------------------------------------------------------
        if rest_api is not None:
            self._alarm(
                "Api5xx",
                rest_api.metric_server_error(period=PERIOD, statistic=cloudwatch.Stats.SUM),
                "The HTTP API answered 5XX",
            )
        operations = list(TABLE_OPERATIONS)
        table_throttles = table.metric_throttled_requests_for_operations(operations=operations, period=PERIOD)
        table_errors = table.metric_system_errors_for_operations(operations=operations, period=PERIOD)
        self._alarm("TableThrottledRequests", table_throttles, "DynamoDB throttled requests to the table")
        self._alarm("TableSystemErrors", table_errors, "DynamoDB answered requests with a system error")

        every_alarm: list[cloudwatch.IAlarm] = [*self.alarms.values(), *existing_alarms]
        for alarm in existing_alarms:
            if isinstance(alarm, cloudwatch.Alarm):
                alarm.add_alarm_action(action)
        for alarm in self.alarms.values():
            alarm.add_alarm_action(action)

        # Dashboard ------------------------------------------------------------------
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{names.STACK_NAME}-operations",
            default_interval=Duration.hours(3),
        )
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=every_alarm, width=24, height=6)
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Executions started",
                left=[sm.metric_started(period=PERIOD, label=w) for w, sm in all_machines.items()],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Executions failed (all, incl. refusals)",
                left=[sm.metric_failed(period=PERIOD, label=w) for w, sm in all_machines.items()],
                width=8,
            ),
            cloudwatch.GraphWidget(title="Faults (alarmed)", left=failure_graphs, width=8),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Registrations and waitlist",
                left=[self._business(m) for m in BUSINESS_METRICS],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Refusals", left=[self._business(m) for m in REFUSAL_METRICS], width=8
            ),
            cloudwatch.GraphWidget(
                title="Reconciliation", left=[self._business(m) for m in RECONCILIATION_METRICS], width=8
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Lambda errors (task errors include refusals)",
                left=[f.metric_errors(period=PERIOD, label=n) for n, f in functions.items()],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Lambda throttles",
                left=[f.metric_throttles(period=PERIOD, label=n) for n, f in functions.items()],
                width=8,
            ),
            # Two graphs: both expressions name their per-operation metrics alike.
            cloudwatch.GraphWidget(title="DynamoDB throttled requests", left=[table_throttles], width=4),
            cloudwatch.GraphWidget(title="DynamoDB system errors", left=[table_errors], width=4),
        )
        if rest_api is not None:
            self.dashboard.add_widgets(
                cloudwatch.GraphWidget(
                    title="API responses",
                    left=[
                        rest_api.metric_count(period=PERIOD),
                        rest_api.metric_client_error(period=PERIOD),
                        rest_api.metric_server_error(period=PERIOD),
                    ],
                    right=[rest_api.metric_latency(period=PERIOD, statistic="p99")],
                    width=24,
                )
            )

        CfnOutput(
            self,
            ALARM_TOPIC_OUTPUT,
            value=self.topic.topic_arn,
            description="SNS topic every alarm notifies: subscribe to it",
        ).override_logical_id(ALARM_TOPIC_OUTPUT)
        CfnOutput(
            self, DASHBOARD_OUTPUT, value=self.dashboard.dashboard_name, description="CloudWatch dashboard"
        ).override_logical_id(DASHBOARD_OUTPUT)

    def _business(self, metric_name: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=names.METRICS_NAMESPACE,
            metric_name=metric_name,
            dimensions_map={"service": names.POWERTOOLS_SERVICE_NAME},
            statistic=cloudwatch.Stats.SUM,
            period=PERIOD,
        )

    def _alarm(self, alarm_id: str, metric: cloudwatch.IMetric, description: str) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            alarm_id,
            metric=metric,
            alarm_description=description,
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.alarms[alarm_id] = alarm
        return alarm
