"""Reconcile workflow: page through the events, reconcile each one, record the run.

A Standard state machine (long runs, 90 days of history in the console, redrive),
started by a schedule or by hand. Input (all optional):
`{"pageSize": 1..100, "eventIds": [up to 100 ids]}`; the schedule sends `{}`.

    StartRun (Pass) -> ListEventsPage -> ReconcileEvents (Map, inline) -> Tally
        -> MorePages? --yes--> ListEventsPage
                      --no---> RecordRun -> AllEventsReconciled? -> Reconciled (Succeed)
                                                                 -> ReconciliationIncomplete (Fail)

No step's work grows with the table: a page is at most 100 events, the state carries one
page of results and the running totals (not every result), and each Map iteration
handles one event. An event whose task fails (after the transient retries) is recorded
as `failed` and the run goes on; the run then ends in `ReconciliationIncomplete`, so a
failure is visible (and alarmed) without blocking every later event.

Output of a successful run: the run summary (`ReconciliationRun`).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infrastructure import names
from workflows import common

# Events reconciled at once within a page (each one a Lambda invocation).
MAX_CONCURRENCY = 4
# A whole run; runs that overlap are safe, this only bounds a stuck one.
RUN_TIMEOUT = Duration.hours(2)
# Reconciling one event reads all of its items: allow for a large event.
RECONCILE_TASK_TIMEOUT = Duration.seconds(200)
INCOMPLETE = "ReconciliationIncomplete"
LIST_TASK = "ListEventsPage"
RECONCILE_TASK = "ReconcileEvent"
TALLY_TASK = "TallyReconciliation"
RECORD_TASK = "RecordReconciliation"
TASKS = (LIST_TASK, RECONCILE_TASK, TALLY_TASK, RECORD_TASK)


_task = common.invoke_task


class ReconcileWorkflow(Construct):
    """The Standard state machine that reconciles every event's counts and waitlist."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Mapping[str, lambda_.IFunction],
    ) -> None:
        super().__init__(scope, construct_id)
        missing = set(TASKS) - set(functions)
        if missing:
            raise ValueError(f"reconcile workflow needs functions for: {sorted(missing)}")

        start = sfn.Pass(
            self,
            "StartRun",
            parameters={
                "run": {
                    "runId": sfn.JsonPath.string_at("$$.Execution.Name"),
                    "startedAt": sfn.JsonPath.string_at("$$.Execution.StartTime"),
                    "options": sfn.JsonPath.object_at("$$.Execution.Input"),
                },
                "page": {},
                "totals": {},
            },
        )
        list_page = _task(
            self,
            LIST_TASK,
            functions[LIST_TASK],
            parameters={
                "runId": sfn.JsonPath.string_at("$.run.runId"),
                "options": sfn.JsonPath.object_at("$.run.options"),
                "page": sfn.JsonPath.object_at("$.page"),
            },
            result_path="$.page",
        )

        reconcile = _task(
            self,
            RECONCILE_TASK,
            functions[RECONCILE_TASK],
            result_path="$",
            timeout=RECONCILE_TASK_TIMEOUT,
        )
        not_reconciled = sfn.Pass(
            self,
            "EventNotReconciled",
            parameters={
                "eventId": sfn.JsonPath.string_at("$.eventId"),
                "outcome": "failed",
                "error": sfn.JsonPath.string_at("$.error.Error"),
            },
        )
        reconcile.add_catch(not_reconciled, errors=["States.ALL"], result_path=common.ERROR_RESULT_PATH)
        each_event = sfn.Map(
            self,
            "ReconcileEvents",
            items_path="$.page.eventIds",
            item_selector={
                "eventId": sfn.JsonPath.string_at("$$.Map.Item.Value"),
                "runId": sfn.JsonPath.string_at("$.run.runId"),
                "startedAt": sfn.JsonPath.string_at("$.run.startedAt"),
            },
            max_concurrency=MAX_CONCURRENCY,
            result_path="$.results",
        )
        each_event.item_processor(reconcile)

        tally = _task(
            self,
            "Tally",
            functions[TALLY_TASK],
            parameters={
                "totals": sfn.JsonPath.object_at("$.totals"),
                "results": sfn.JsonPath.list_at("$.results"),
            },
            result_path="$.totals",
        )
        record = _task(
            self,
            "RecordRun",
            functions[RECORD_TASK],
            parameters={
                "runId": sfn.JsonPath.string_at("$.run.runId"),
                "startedAt": sfn.JsonPath.string_at("$.run.startedAt"),
                "totals": sfn.JsonPath.object_at("$.totals"),
            },
            result_path="$.summary",
            output_path="$.summary",
        )
        finished = (
            sfn.Choice(self, "AllEventsReconciled")
            .when(
                sfn.Condition.number_greater_than("$.failed", 0),
                sfn.Fail(
                    self,
                    INCOMPLETE,
                    error=INCOMPLETE,
                    cause="Some events could not be reconciled; see the run's history and failedEventIds",
                ),
            )
            .otherwise(sfn.Succeed(self, "Reconciled"))
        )
        more_pages = (
            sfn.Choice(self, "MorePages")
            .when(sfn.Condition.is_not_null("$.page.nextToken"), list_page)
            .otherwise(record.next(finished))
        )
        definition = start.next(list_page).next(each_event).next(tally).next(more_pages)

        self.log_group = logs.LogGroup(
            self,
            "StateMachineLogs",
            log_group_name=common.state_machine_log_group_name(self, names.RECONCILE_WORKFLOW),
            retention=common.LOG_RETENTION,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            state_machine_type=sfn.StateMachineType.STANDARD,
            comment=f"Workflow {names.RECONCILE_WORKFLOW}: recount every event, repair drift, promote",
            timeout=RUN_TIMEOUT,
            tracing_enabled=True,
            # Standard executions keep their full history in Step Functions; the log
            # group holds the failures (with data) for CloudWatch Logs Insights.
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ERROR, include_execution_data=True
            ),
        )
