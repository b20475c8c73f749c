"""Reconcile workflow: page through the events, reconcile each one, record the run.

A Standard state machine (long runs, 90 days of history in the console, redrive),
started by a schedule or by hand. Input (all optional):
`{"pageSize": 1..100, "eventIds": [up to 100 ids]}`; the schedule sends `{}`.

    NewOrContinuedRun? -> StartRun (Pass)  ---------------------------+
                       -> ResumeRun (Pass, a continued run) ----------+
    -> ListEventsPage -> ReconcileEvents (Map, inline) -> Tally -> MorePages?
        more pages, room in this execution -> ListEventsPage
        more pages, this execution's pages done -> NameNextExecution -> StartNextExecution
                                                   -> Continued (this execution ends)
        no more pages -> RecordRun -> AllEventsReconciled? -> Reconciled (Succeed)
                                                           -> ReconciliationIncomplete (Fail)

A Standard execution's history holds at most 25,000 events and every reconciled event
adds several (inline Map iterations are recorded in the parent's history), so one
execution could never page through a large table. Instead each execution handles at
most PAGES_PER_EXECUTION pages, then starts a fresh execution of this same state machine
(`states:startExecution`, addressed as `$$.StateMachine.Id`) with the run, the cursor
and the running totals, and ends. Every execution's history is bounded whatever the
table holds; the run stays one run: the run id and start time are the first
execution's, the totals travel along, and only the last execution records the run and
decides how it ends. Continuations are named `reconcile-all-part<N>-<chainId>`, the
chain id drawn once per run: a retried start cannot start the same part twice (Standard
executions are unique by name) and runs that overlap never collide. The state machine
has a fixed name, so that its role may start it, and nothing else, by ARN.

No step's work grows with the table: a page is at most 100 events, the state carries one
page of results and the running totals (not every result), and each Map iteration
handles one event. An event whose task fails (after the transient retries) is recorded
as `failed` and the run goes on; the run then ends in `ReconciliationIncomplete`, so a
failure is visible (and alarmed) without blocking every later event.

Output of a successful run: the run summary (`ReconciliationRun`), from its last
execution; the executions before it output `{"runId", "continuedAs", "segment", "totals"}`.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infrastructure import execution_names, names
from workflows import common

# Events reconciled at once within a page (each one a Lambda invocation).
MAX_CONCURRENCY = 4
# Pages one execution handles before the run continues in a fresh one. The worst case
# stays under AWS's 25,000 history events: a page of the largest size (100 events) whose
# every task is retried to the end and every event caught costs about 1,840 events
# (18 per event, 34 for the page's own tasks), so ten pages about 18,400, plus a few
# dozen to start and end. A page of 50 clean events costs about 380.
PAGES_PER_EXECUTION = 10
# One execution of a run; runs that overlap are safe, this only bounds a stuck one.
RUN_TIMEOUT = Duration.hours(2)
# Reconciling one event reads all of its items: allow for a large event.
RECONCILE_TASK_TIMEOUT = Duration.seconds(200)
INCOMPLETE = "ReconciliationIncomplete"
LIST_TASK = "ListEventsPage"
RECONCILE_TASK = "ReconcileEvent"
TALLY_TASK = "TallyReconciliation"
RECORD_TASK = "RecordReconciliation"
TASKS = (LIST_TASK, RECONCILE_TASK, TALLY_TASK, RECORD_TASK)
START_NEXT = "StartNextExecution"
CONTINUED = "Continued"
START_EXECUTION_RESOURCE = "states:startExecution"
# The next part already started (a retried start whose first attempt got through).
ALREADY_STARTED = "StepFunctions.ExecutionAlreadyExistsException"
START_RETRY_ATTEMPTS = 3


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

        continuation = f"$.{names.RECONCILE_CONTINUATION_KEY}"
        start = sfn.Pass(
            self,
            "StartRun",
            parameters={
                "run": {
                    "runId": sfn.JsonPath.string_at("$$.Execution.Name"),
                    "startedAt": sfn.JsonPath.string_at("$$.Execution.StartTime"),
                    "options": sfn.JsonPath.object_at("$$.Execution.Input"),
                    "chainId": sfn.JsonPath.uuid(),
                },
                "page": {},
                "totals": {},
                "segment": {"number": 1, "lastPage": PAGES_PER_EXECUTION},
            },
        )
        resume = sfn.Pass(
            self,
            "ResumeRun",
            comment="A run continued from its previous execution: its state, and room for more pages",
            parameters={
                "run": sfn.JsonPath.object_at(f"{continuation}.run"),
                "page": sfn.JsonPath.object_at(f"{continuation}.page"),
                "totals": sfn.JsonPath.object_at(f"{continuation}.totals"),
                "segment": {
                    "number": sfn.JsonPath.number_at(f"{continuation}.segment"),
                    "lastPage": sfn.JsonPath.math_add(
                        sfn.JsonPath.number_at(f"{continuation}.totals.pages"), PAGES_PER_EXECUTION
                    ),
                },
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
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_not_null("$.page.nextToken"),
                    sfn.Condition.number_greater_than_equals_json_path(
                        "$.totals.pages", "$.segment.lastPage"
                    ),
                ),
                self._continue_in_next_execution(),
            )
            .when(sfn.Condition.is_not_null("$.page.nextToken"), list_page)
            .otherwise(record.next(finished))
        )
        list_page.next(each_event).next(tally).next(more_pages)
        definition = (
            sfn.Choice(self, "NewOrContinuedRun")
            .when(sfn.Condition.is_present(continuation), resume.next(list_page))
            .otherwise(start.next(list_page))
        )

        stack = Stack.of(self)
        self.state_machine_name = f"{stack.stack_name}-{names.RECONCILE_STATE_MACHINE_SUFFIX}"
        self.state_machine, self.log_group = common.standard_state_machine(
            self,
            workflow=names.RECONCILE_WORKFLOW,
            definition=definition,
            comment=f"Workflow {names.RECONCILE_WORKFLOW}: recount every event, repair drift, promote",
            timeout=RUN_TIMEOUT,
            state_machine_name=self.state_machine_name,
        )
        # It starts its own next execution: named by ARN from the fixed name (a reference
        # to the state machine itself would make the role depend on it, a cycle).
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["states:StartExecution"],
                resources=[
                    stack.format_arn(
                        service="states",
                        resource="stateMachine",
                        resource_name=self.state_machine_name,
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )

    def _continue_in_next_execution(self) -> sfn.IChainable:
        """Name the run's next execution, start it with the run's state, end this one."""
        next_part = sfn.JsonPath.math_add(sfn.JsonPath.number_at("$.segment.number"), 1)
        name_next = sfn.Pass(
            self,
            "NameNextExecution",
            parameters={
                "segment": next_part,
                "name": sfn.JsonPath.format(
                    execution_names.continuation_format(names.RECONCILE_WORKFLOW),
                    next_part,
                    sfn.JsonPath.string_at("$.run.chainId"),
                ),
            },
            result_path="$.next",
        )
        start_next = sfn.CustomState(
            self,
            START_NEXT,
            state_json={
                "Type": "Task",
                "Resource": f"arn:{Stack.of(self).partition}:states:::{START_EXECUTION_RESOURCE}",
                "Parameters": {
                    "StateMachineArn.$": "$$.StateMachine.Id",
                    "Name.$": "$.next.name",
                    "Input": {
                        names.RECONCILE_CONTINUATION_KEY: {
                            "run.$": "$.run",
                            "page.$": "$.page",
                            "totals.$": "$.totals",
                            "segment.$": "$.next.segment",
                        },
                        # Links the two executions in the console.
                        "AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID.$": "$$.Execution.Id",
                    },
                },
                "ResultPath": "$.started",
                "TimeoutSeconds": int(common.TASK_TIMEOUT.to_seconds()),
            },
        )
        # A start that failed after getting through finds its execution there: done.
        start_next.add_retry(errors=[ALREADY_STARTED], max_attempts=0)
        start_next.add_retry(
            errors=[common.ANY_ERROR],
            interval=common.RETRY_INTERVAL,
            backoff_rate=common.RETRY_BACKOFF_RATE,
            max_attempts=START_RETRY_ATTEMPTS,
            max_delay=common.RETRY_MAX_DELAY,
            jitter_strategy=sfn.JitterType.FULL,
        )
        continued = sfn.Pass(
            self,
            CONTINUED,
            parameters={
                "runId": sfn.JsonPath.string_at("$.run.runId"),
                names.RECONCILE_CONTINUED_AS_KEY: sfn.JsonPath.string_at("$.next.name"),
                "segment": sfn.JsonPath.number_at("$.segment.number"),
                "totals": sfn.JsonPath.object_at("$.totals"),
            },
        )
        start_next.add_catch(continued, errors=[ALREADY_STARTED], result_path="$.alreadyStarted")
        return name_next.next(start_next).next(continued)
