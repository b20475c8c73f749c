"""Building blocks shared by the workflow constructs: error names, retries, catches.

Definitions stay in JSONPath (the state machine's default query language): moto's
interpreter, which runs the same ASL locally, does not support JSONata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infrastructure import names
from registration import errors, outcomes

# Error names raised by the task handlers: the exception class names, which Lambda
# reports as the error type and Step Functions matches in Catch/Retry.
VALIDATION_ERROR = errors.ValidationError.code
USER_NOT_FOUND = errors.UserNotFound.code
EVENT_NOT_FOUND = errors.EventNotFound.code
ALREADY_REGISTERED = errors.AlreadyRegistered.code
ALREADY_WAITLISTED = errors.AlreadyWaitlisted.code
EVENT_FULL = errors.EventFull.code
REGISTRATION_NOT_OPEN = errors.RegistrationNotOpen.code
REGISTRATION_CLOSED = errors.RegistrationClosed.code
EVENT_CANCELLED = errors.EventCancelled.code
EVENT_STARTED = errors.EventStarted.code
NOT_REGISTERED = errors.NotRegistered.code
CONTENTION_LIMIT_EXCEEDED = errors.ContentionLimitExceeded.code
IDEMPOTENCY_KEY_REUSED = errors.IdempotencyKeyReused.code
REQUEST_IN_PROGRESS = errors.RequestInProgress.code
# The caller may not do this (`registration.access`): refused before anything is written.
FORBIDDEN = errors.Forbidden.code
# The decision a write was based on no longer holds: decide again (a loop in the graph).
DECISION_STALE = errors.DecisionStale.code
# A throttled or failed database call the task could not absorb itself: retried here.
TRANSIENT_DATABASE_ERROR = errors.TransientDatabaseError.code
# A Choice met a decision it does not know (a contract mismatch between task and graph).
UNEXPECTED_DECISION = "UnexpectedDecision"

RETRYABLE_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.Unknown",
    "Lambda.ClientExecutionTimeoutException",
    # What Lambda reports when a function runs out of time (Step Functions passes it on).
    "Sandbox.Timedout",
    "States.Timeout",
    TRANSIENT_DATABASE_ERROR,
)
RETRY_INTERVAL = Duration.seconds(1)
RETRY_BACKOFF_RATE = 2.0
RETRY_MAX_ATTEMPTS = 3
RETRY_MAX_DELAY = Duration.seconds(5)

TASK_TIMEOUT = Duration.seconds(15)

# The register and unregister workflows answer API Gateway's StartSyncExecution, which
# gives up after 29 s: every one of their tasks, with every retry used, must end well
# before that. Each attempt of a task is bounded by its TimeoutSeconds (its function's
# own timeout is shorter: infrastructure/constructs/task_functions.py), so the longest
# path (ClaimRequest, Validate, the decision, the write, RecordOutcome) takes at most
# 5 x (2 attempts x 2 s + 1 s between them) = 25 s, and the execution stops at 26 s
# whatever happens (a decision loop that keeps losing races, an unforeseen delay):
# then it ends TIMED_OUT, which the API answers 503 `ExecutionTimedOut`, 3 s before API
# Gateway would answer a 504 while the workflow went on writing.
# tests/infrastructure/test_budget.py computes this from the synthesized ASL.
EXPRESS_TASK_TIMEOUT = Duration.seconds(2)
EXPRESS_RETRY_MAX_ATTEMPTS = 1
EXPRESS_RETRY_MAX_DELAY = Duration.seconds(1)
EXPRESS_WORKFLOW_TIMEOUT = Duration.seconds(26)
LOG_RETENTION = logs.RetentionDays.ONE_MONTH
# Where the state machines' log groups are named (see state_machine_log_group_name).
VENDED_LOGS_PREFIX = "/aws/vendedlogs/states/"

# Where caught errors land in the state; a Fail state takes its cause from there.
ERROR_RESULT_PATH = "$.error"
ERROR_CAUSE_PATH = "$.error.Cause"
CONFLICT_RESULT_PATH = "$.conflict"


def invoke_task(
    scope: Construct,
    state_name: str,
    function: lambda_.IFunction,
    *,
    result_path: str | None = None,
    output_path: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    timeout: Duration = TASK_TIMEOUT,
    max_attempts: int = RETRY_MAX_ATTEMPTS,
    max_delay: Duration = RETRY_MAX_DELAY,
) -> tasks.LambdaInvoke:
    """A Task state whose resource is the function ARN and whose result is the
    handler's return value, retried on transient failures only."""
    task = tasks.LambdaInvoke(
        scope,
        state_name,
        lambda_function=function,
        payload=sfn.TaskInput.from_object(dict(parameters)) if parameters is not None else None,
        payload_response_only=True,
        retry_on_service_exceptions=False,
        result_path=result_path,
        output_path=output_path,
        task_timeout=sfn.Timeout.duration(timeout),
    )
    task.add_retry(
        errors=list(RETRYABLE_ERRORS),
        interval=RETRY_INTERVAL,
        backoff_rate=RETRY_BACKOFF_RATE,
        max_attempts=max_attempts,
        max_delay=max_delay,
        jitter_strategy=sfn.JitterType.FULL,
    )
    return task


def express_task(
    scope: Construct,
    state_name: str,
    function: lambda_.IFunction,
    **kwargs: Any,
) -> tasks.LambdaInvoke:
    """`invoke_task` within the Express workflows' budget (see EXPRESS_TASK_TIMEOUT)."""
    return invoke_task(
        scope,
        state_name,
        function,
        timeout=EXPRESS_TASK_TIMEOUT,
        max_attempts=EXPRESS_RETRY_MAX_ATTEMPTS,
        max_delay=EXPRESS_RETRY_MAX_DELAY,
        **kwargs,
    )


class FailStates:
    """One Fail state per error name per workflow, shared by every state that routes there.

    By default the Fail state's cause is the caught error's cause (`$.error.Cause`).
    """

    def __init__(self, scope: Construct) -> None:
        self._scope = scope
        self._states: dict[str, sfn.Fail] = {}

    def __getitem__(self, error: str) -> sfn.Fail:
        if error not in self._states:
            self._states[error] = sfn.Fail(self._scope, error, error=error, cause_path=ERROR_CAUSE_PATH)
        return self._states[error]

    def with_cause(self, error: str, cause: str) -> sfn.Fail:
        """A Fail state with a fixed cause (reached from a Choice, not from a Catch)."""
        if error in self._states:
            raise ValueError(f"Fail state {error} already exists")
        self._states[error] = sfn.Fail(self._scope, error, error=error, cause=cause)
        return self._states[error]

    def with_cause_from(self, error: str, template: str, *paths: str) -> sfn.Fail:
        """A Fail state whose cause is `template` with each `{}` filled from a path of the
        state (States.Format), reached from a Choice."""
        if error in self._states:
            raise ValueError(f"Fail state {error} already exists")
        arguments = "".join(f", {path}" for path in paths)
        quoted = template.replace("\\", "\\\\").replace("'", "\\'")
        cause_path = f"States.Format('{quoted}'{arguments})"
        self._states[error] = sfn.Fail(self._scope, error, error=error, cause_path=cause_path)
        return self._states[error]


def catch_errors(task: tasks.LambdaInvoke, fails: FailStates, errors: Iterable[str]) -> None:
    """Route each business error the task can raise to the Fail state of that name."""
    for error in errors:
        task.add_catch(fails[error], errors=[error], result_path=ERROR_RESULT_PATH)


def catch_decision_stale(task: tasks.LambdaInvoke, decide_again: sfn.IChainable) -> None:
    """Loop back to the deciding state when the write found its decision stale.

    Add this before any other catch on the task: catchers are tried in order.
    """
    task.add_catch(decide_again, errors=[DECISION_STALE], result_path=CONFLICT_RESULT_PATH)


IDEMPOTENCY_KEY_PATH = "$.idempotencyKey"
# Who asks, as API Gateway's request template puts it from the verified token.
CALLER_PATH = "$.caller"
CLAIM_RESULT_PATH = "$.claim"
OUTCOME_RESULT_PATH = "$.outcome"
OUTPUT_PATH = "$.outcome.output"
RECORD_ERROR_PATH = "$.recordError"
UNRECORDED_ANSWER_MESSAGE = outcomes.UNRECORDED_ANSWER_MESSAGE
ANY_ERROR = "States.ALL"
# What the body's failures are caught as, to be recorded and failed again unchanged (a
# Fail state's ErrorPath may not name a `States.*` error): every business outcome, the
# transient failures the Retry policies gave up on, and an unknown decision. Anything
# else (`States.Timeout`, `States.Runtime`, a handler's unexpected exception) is left
# uncaught, so the execution fails with its own name as it would unwrapped; a keyed
# request's claim then waits for its lease (and a retry after it runs again).
RECORDED_ERRORS = (
    # The claim's own refusals come from ClaimRequest, never from the body (a Forbidden
    # from the body is only possible without a key: ClaimRequest checks first).
    *sorted(set(outcomes.WORKFLOW_ERROR_STATUS) - {IDEMPOTENCY_KEY_REUSED, REQUEST_IN_PROGRESS}),
    UNEXPECTED_DECISION,
    *(
        name
        for name in RETRYABLE_ERRORS
        if not name.startswith("States.") and name != TRANSIENT_DATABASE_ERROR
    ),
)


def idempotent(
    scope: Construct,
    operation: str,
    functions: Mapping[str, lambda_.IFunction],
    *,
    body: sfn.IChainable,
) -> sfn.IChainable:
    """Wrap a workflow's `body` so that a request sent with an `Idempotency-Key` runs once.

    With a key (`$.idempotencyKey`), `ClaimRequest` claims it first and either lets the
    body run or ends the execution as the first one with that key ended (a replay). A
    body that succeeds has written, and its write stored the answer on the claim in the
    same transaction (`registration.idempotency`); a body that fails wrote nothing, and
    `RecordFailure` stores how it failed. Without a key only the body runs.
    The body runs in a one-branch Parallel state, so every way it can end (its Fail
    states included) reaches one place: the error and cause it failed with are passed on
    unchanged (see RECORDED_ERRORS), and the HTTP answer is the same as without the wrapper.
    """
    request = {
        "idempotencyKey": sfn.JsonPath.string_at(IDEMPOTENCY_KEY_PATH),
        "operation": operation,
        "eventId": sfn.JsonPath.string_at("$.eventId"),
        "userId": sfn.JsonPath.string_at("$.userId"),
        "requestId": sfn.JsonPath.string_at("$.requestId"),
        "caller": sfn.JsonPath.object_at(CALLER_PATH),
    }
    failed = sfn.Fail(scope, "Failed", error_path="$.error.Error", cause_path="$.error.Cause")
    done = sfn.Succeed(scope, "Done", output_path=OUTPUT_PATH)

    run = sfn.Parallel(
        scope,
        "Run",
        comment="The workflow itself; one branch, so its failures are caught in one place",
        result_selector={"output": sfn.JsonPath.object_at("$[0]")},
        result_path=OUTCOME_RESULT_PATH,
    )
    run.branch(body)

    record_failure = express_task(
        scope,
        "RecordFailure",
        functions["RecordOutcome"],
        parameters={**request, "error": sfn.JsonPath.object_at(ERROR_RESULT_PATH)},
        result_path=sfn.JsonPath.DISCARD,
    )
    # A refusal nobody could record is not given out: a retry of the request would not
    # get it back. The caller is told to retry instead; the claim waits for its lease.
    record_failure.add_catch(
        sfn.Fail(scope, "AnswerNotRecorded", error=TRANSIENT_DATABASE_ERROR, cause=UNRECORDED_ANSWER_MESSAGE),
        errors=[ANY_ERROR],
        result_path=RECORD_ERROR_PATH,
    )

    keyed = sfn.Condition.is_present(IDEMPOTENCY_KEY_PATH)
    run.add_catch(
        sfn.Choice(scope, "RecordFailureIfKeyed").when(keyed, record_failure.next(failed)).otherwise(failed),
        errors=list(RECORDED_ERRORS),
        result_path=ERROR_RESULT_PATH,
    )
    run.next(done)

    claim = express_task(
        scope, "ClaimRequest", functions["ClaimRequest"], parameters=request, result_path=CLAIM_RESULT_PATH
    )
    claim.add_catch(
        failed,
        errors=[VALIDATION_ERROR, FORBIDDEN, IDEMPOTENCY_KEY_REUSED, REQUEST_IN_PROGRESS],
        result_path=ERROR_RESULT_PATH,
    )
    replay_or_run = (
        sfn.Choice(scope, "ReplayOrRun")
        .when(sfn.Condition.boolean_equals(f"{CLAIM_RESULT_PATH}.replay", False), run)
        .when(
            sfn.Condition.boolean_equals(f"{CLAIM_RESULT_PATH}.succeeded", True),
            sfn.Succeed(scope, names.REPLAYED_SUCCESS_STATE, output_path=f"{CLAIM_RESULT_PATH}.output"),
        )
        .otherwise(
            sfn.Fail(
                scope,
                names.REPLAYED_FAILURE_STATE,
                error_path=f"{CLAIM_RESULT_PATH}.error",
                cause_path=f"{CLAIM_RESULT_PATH}.cause",
            )
        )
    )
    return sfn.Choice(scope, "IdempotencyKeyGiven").when(keyed, claim.next(replay_or_run)).otherwise(run)


def state_machine_log_group_name(scope: Construct, workflow: str) -> str:
    """`/aws/vendedlogs/states/<stack name>-<workflow>`: unique per stack and workflow.

    Step Functions adds each log group a state machine logs to into the account's
    CloudWatch Logs resource policy, which holds at most 5,120 characters; AWS
    recommends names under `/aws/vendedlogs/` so that the policy does not grow with
    every log group.
    """
    return f"{VENDED_LOGS_PREFIX}{Stack.of(scope).stack_name}-{workflow}"


def express_state_machine(
    scope: Construct,
    construct_id: str,
    *,
    workflow: str,
    definition: sfn.IChainable,
    comment: str,
) -> tuple[sfn.StateMachine, logs.LogGroup]:
    """An Express state machine logging every event (with data) to its own log group."""
    # Express executions keep no history in Step Functions: this log group is it.
    log_group = logs.LogGroup(
        scope,
        f"{construct_id}Logs",
        log_group_name=state_machine_log_group_name(scope, workflow),
        retention=LOG_RETENTION,
        removal_policy=RemovalPolicy.RETAIN,
    )
    state_machine = sfn.StateMachine(
        scope,
        construct_id,
        definition_body=sfn.DefinitionBody.from_chainable(definition),
        state_machine_type=sfn.StateMachineType.EXPRESS,
        comment=comment,
        timeout=EXPRESS_WORKFLOW_TIMEOUT,
        tracing_enabled=True,
        logs=sfn.LogOptions(
            destination=log_group,
            level=sfn.LogLevel.ALL,
            include_execution_data=True,
        ),
    )
    return state_machine, log_group


def standard_state_machine(
    scope: Construct,
    *,
    workflow: str,
    definition: sfn.IChainable,
    comment: str,
    timeout: Duration,
    state_machine_name: str | None = None,
) -> tuple[sfn.StateMachine, logs.LogGroup]:
    """A Standard state machine (`StateMachine`) with its log group (`StateMachineLogs`).

    Standard executions keep their full history in Step Functions; the log group holds
    the failures (with data) for CloudWatch Logs Insights."""
    log_group = logs.LogGroup(
        scope,
        "StateMachineLogs",
        log_group_name=state_machine_log_group_name(scope, workflow),
        retention=LOG_RETENTION,
        removal_policy=RemovalPolicy.RETAIN,
    )
    state_machine = sfn.StateMachine(
        scope,
        "StateMachine",
        state_machine_name=state_machine_name,
        definition_body=sfn.DefinitionBody.from_chainable(definition),
        state_machine_type=sfn.StateMachineType.STANDARD,
        comment=comment,
        timeout=timeout,
        tracing_enabled=True,
        logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ERROR, include_execution_data=True),
    )
    return state_machine, log_group


FAILED_RUNS_PERIOD = Duration.minutes(15)


def failed_runs_alarm(
    scope: Construct, state_machine: sfn.StateMachine, description: str
) -> cloudwatch.Alarm:
    """`FailedRunsAlarm`: any failed execution of a Standard workflow in 15 minutes."""
    return cloudwatch.Alarm(
        scope,
        "FailedRunsAlarm",
        alarm_description=description,
        metric=state_machine.metric_failed(period=FAILED_RUNS_PERIOD, statistic=cloudwatch.Stats.SUM),
        threshold=0,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=1,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
