"""Reconciliation in the synthesized template: the Standard workflow, its functions, the
schedule (rate, target, role), the alarms, and the one function that may start the cancel
workflow."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from infrastructure import execution_names, names
from infrastructure.constructs import reconciliation as construct
from infrastructure.local import iam
from infrastructure.local.iam_policies import Request
from infrastructure.local.template import parse_template
from registration import reconciliation as logic
from tests.fixtures.workflows import pages_per_execution, worst_case_history
from tests.infrastructure.conftest import Synthesized, function_id_from_arn
from tests.infrastructure.test_template import (
    POWERTOOLS_LAYER,
    as_list,
    join_to_text,
    policy_statements,
    table_id,
)
from workflows import common
from workflows import reconcile as workflow

pytestmark = pytest.mark.infrastructure

SCHEDULE = "AWS::Scheduler::Schedule"
ALARM = "AWS::CloudWatch::Alarm"
FUNCTION = "AWS::Lambda::Function"


@pytest.fixture(scope="module")
def machine_id(synthesized: Synthesized) -> str:
    return synthesized.output_ref(names.WORKFLOW_OUTPUTS[names.RECONCILE_WORKFLOW])


@pytest.fixture(scope="module")
def definition(synthesized: Synthesized, machine_id: str) -> dict[str, Any]:
    return synthesized.definition(machine_id)


@pytest.fixture(scope="module")
def reconcile_functions(synthesized: Synthesized) -> dict[str, str]:
    """Task name (as in `names.RECONCILE_HANDLERS`) -> logical id of its function."""
    by_handler = {
        r["Properties"]["Handler"]: logical_id for logical_id, r in synthesized.resources(FUNCTION).items()
    }
    return {task: by_handler[handler] for task, handler in names.RECONCILE_HANDLERS.items()}


def _only(synthesized: Synthesized, resource_type: str, prefix: str = "Reconciliation") -> dict[str, Any]:
    (resource,) = [r for lid, r in synthesized.resources(resource_type).items() if lid.startswith(prefix)]
    return resource


# --- the state machine -----------------------------------------------------------------


def test_a_standard_state_machine_logged_and_traced(synthesized: Synthesized, machine_id: str) -> None:
    props = synthesized.raw["Resources"][machine_id]["Properties"]
    assert props["StateMachineType"] == "STANDARD"
    assert props["StateMachineName"] == f"{names.STACK_NAME}-{names.RECONCILE_STATE_MACHINE_SUFFIX}"
    assert props["TracingConfiguration"] == {"Enabled": True}
    logging = props["LoggingConfiguration"]
    assert logging["Level"] in ("ERROR", "ALL")
    assert logging["IncludeExecutionData"] is True
    (destination,) = logging["Destinations"]
    log_group_id = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    assert synthesized.raw["Resources"][log_group_id]["Properties"]["RetentionInDays"] > 0


def test_the_arn_is_an_output_the_engine_finds(synthesized: Synthesized, machine_id: str) -> None:
    local = parse_template(synthesized.raw)
    spec = local.workflows[names.RECONCILE_WORKFLOW]
    assert (spec.logical_id, spec.type) == (machine_id, "STANDARD")


def test_the_workflow_pages_maps_and_loops(definition: dict[str, Any]) -> None:
    states = definition["States"]
    assert definition["StartAt"] == "NewOrContinuedRun"
    assert definition["TimeoutSeconds"] > 0
    assert states["NewOrContinuedRun"]["Choices"] == [
        {"Variable": f"$.{names.RECONCILE_CONTINUATION_KEY}", "IsPresent": True, "Next": "ResumeRun"}
    ]
    assert states["StartRun"]["Parameters"]["run"] == {
        "runId.$": "$$.Execution.Name",
        "startedAt.$": "$$.Execution.StartTime",
        "options.$": "$$.Execution.Input",
        "chainId.$": "States.UUID()",
    }
    assert states["StartRun"]["Parameters"]["segment"] == {
        "number": 1,
        "lastPage": workflow.PAGES_PER_EXECUTION,
    }
    flow = {
        name: state.get("Next") or state.get("Default")
        for name, state in states.items()
        if state["Type"] in ("Pass", "Task", "Map", "Choice")
    }
    assert flow == {
        "NewOrContinuedRun": "StartRun",
        "StartRun": "ListEventsPage",
        "ResumeRun": "ListEventsPage",
        "ListEventsPage": "ReconcileEvents",
        "ReconcileEvents": "Tally",
        "Tally": "MorePages",
        "MorePages": "RecordRun",
        "NameNextExecution": "StartNextExecution",
        "StartNextExecution": "Continued",
        "Continued": None,
        "RecordRun": "AllEventsReconciled",
        "AllEventsReconciled": "Reconciled",
    }
    assert states["Continued"]["End"] is True
    assert states["MorePages"]["Choices"] == [
        {
            "And": [
                {"Variable": "$.page.nextToken", "IsNull": False},
                {"Variable": "$.totals.pages", "NumericGreaterThanEqualsPath": "$.segment.lastPage"},
            ],
            "Next": "NameNextExecution",
        },
        {"Variable": "$.page.nextToken", "IsNull": False, "Next": "ListEventsPage"},
    ]
    assert states["AllEventsReconciled"]["Choices"] == [
        {"Variable": "$.failed", "NumericGreaterThan": 0, "Next": "ReconciliationIncomplete"}
    ]
    assert states["ReconciliationIncomplete"]["Type"] == "Fail"
    assert states["Reconciled"]["Type"] == "Succeed"
    # The state carries one page of results and the totals, never every result.
    assert states["ListEventsPage"]["ResultPath"] == "$.page"
    assert states["ReconcileEvents"]["ResultPath"] == "$.results"
    assert states["Tally"]["ResultPath"] == "$.totals"
    assert states["RecordRun"]["OutputPath"] == "$.summary"


def test_a_run_continues_in_a_new_execution_of_itself(definition: dict[str, Any]) -> None:
    states = definition["States"]
    start = states["StartNextExecution"]
    # Fire and forget (no `.sync`): this execution ends, the next one goes on.
    assert start["Resource"] == "arn:aws:states:::states:startExecution"
    parameters = start["Parameters"]
    assert parameters["StateMachineArn.$"] == "$$.StateMachine.Id"
    assert parameters["Name.$"] == "$.next.name"
    carried = parameters["Input"][names.RECONCILE_CONTINUATION_KEY]
    assert carried == {
        "run.$": "$.run",
        "page.$": "$.page",
        "totals.$": "$.totals",
        "segment.$": "$.next.segment",
    }
    assert parameters["Input"]["AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID.$"] == "$$.Execution.Id"
    # The next execution picks up exactly what this one hands over.
    resumed = states["ResumeRun"]["Parameters"]
    prefix = f"$.{names.RECONCILE_CONTINUATION_KEY}"
    assert {k: resumed[k] for k in ("run.$", "page.$", "totals.$")} == {
        "run.$": f"{prefix}.run",
        "page.$": f"{prefix}.page",
        "totals.$": f"{prefix}.totals",
    }
    assert resumed["segment"]["number.$"] == f"{prefix}.segment"
    assert resumed["segment"]["lastPage.$"] == (
        f"States.MathAdd({prefix}.totals.pages, {workflow.PAGES_PER_EXECUTION})"
    )
    # Named by the run's chain id and part number: a retried start cannot start it twice.
    named = states["NameNextExecution"]
    assert named["ResultPath"] == "$.next"
    next_part = "States.MathAdd($.segment.number, 1)"
    assert named["Parameters"] == {
        "segment.$": next_part,
        "name.$": (
            f"States.Format('{execution_names.continuation_format(names.RECONCILE_WORKFLOW)}', "
            f"{next_part}, $.run.chainId)"
        ),
    }
    already, transient = start["Retry"]
    assert already == {"ErrorEquals": [workflow.ALREADY_STARTED], "MaxAttempts": 0}
    assert transient["ErrorEquals"] == ["States.ALL"] and transient["MaxAttempts"] >= 1
    assert start["Catch"] == [
        {"ErrorEquals": [workflow.ALREADY_STARTED], "ResultPath": "$.alreadyStarted", "Next": "Continued"}
    ]
    assert states["Continued"]["Parameters"][f"{names.RECONCILE_CONTINUED_AS_KEY}.$"] == "$.next.name"


def test_one_execution_stays_within_the_history_quota(definition: dict[str, Any]) -> None:
    from infrastructure.local.history_quota import STANDARD_HISTORY_LIMIT
    from registration.reconciliation_models import ReconcileOptions

    largest_page = int(ReconcileOptions.model_json_schema()["properties"]["pageSize"]["maximum"])
    assert worst_case_history(definition, largest_page) < STANDARD_HISTORY_LIMIT
    # with a margin for what AWS records beyond this count, but not a wasteful one: twice
    # the pages per execution would not fit
    more = copy.deepcopy(definition)
    pages = pages_per_execution(definition)
    more["States"]["StartRun"]["Parameters"]["segment"]["lastPage"] = 2 * pages
    resumed = more["States"]["ResumeRun"]["Parameters"]["segment"]
    resumed["lastPage.$"] = resumed["lastPage.$"].replace(f", {pages})", f", {2 * pages})")
    assert worst_case_history(more, largest_page) > STANDARD_HISTORY_LIMIT


def test_the_map_reconciles_one_event_per_iteration(definition: dict[str, Any]) -> None:
    each = definition["States"]["ReconcileEvents"]
    assert each["Type"] == "Map"
    assert each["ItemsPath"] == "$.page.eventIds"
    assert each["ItemSelector"] == {
        "eventId.$": "$$.Map.Item.Value",
        "runId.$": "$.run.runId",
        "startedAt.$": "$.run.startedAt",
    }
    assert 1 <= each["MaxConcurrency"] <= 10
    processor = each["ItemProcessor"]
    assert processor["ProcessorConfig"] == {"Mode": "INLINE"}
    assert processor["StartAt"] == "ReconcileEvent"
    task = processor["States"]["ReconcileEvent"]
    assert task["End"] is True
    (catch,) = task["Catch"]
    assert catch == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "EventNotReconciled"}
    failed = processor["States"]["EventNotReconciled"]
    assert failed["Parameters"]["outcome"] == "failed"
    assert failed["End"] is True


def _all_tasks(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, state in definition["States"].items():
        if state["Type"] == "Task":
            found[name] = state
        if state["Type"] == "Map":
            found.update(_all_tasks(state["ItemProcessor"]))
    return found


def _lambda_tasks(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _all_tasks(definition).items() if ":function:" in s["Resource"]}


def test_every_task_retries_transient_failures(definition: dict[str, Any]) -> None:
    tasks = _all_tasks(definition)
    assert set(tasks) == {"ListEventsPage", "ReconcileEvent", "Tally", "RecordRun", "StartNextExecution"}
    for name, state in _lambda_tasks(definition).items():
        (retry,) = state["Retry"]
        assert retry["ErrorEquals"] == list(common.RETRYABLE_ERRORS), name
        assert (retry["IntervalSeconds"], retry["MaxAttempts"], retry["JitterStrategy"]) == (1, 3, "FULL")
        assert 1 <= state["TimeoutSeconds"] <= 300, name
    assert 1 <= tasks["StartNextExecution"]["TimeoutSeconds"] <= 300


def test_tasks_invoke_the_reconciliation_functions_only(
    synthesized: Synthesized, definition: dict[str, Any], machine_id: str, reconcile_functions: dict[str, str]
) -> None:
    used = {function_id_from_arn(s["Resource"]) for s in _lambda_tasks(definition).values()}
    assert used == set(reconcile_functions.values())
    role_id = synthesized.raw["Resources"][machine_id]["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    invocable: set[str] = set()
    startable: list[str] = []
    for statement in policy_statements(synthesized, role_id):
        actions = as_list(statement["Action"])
        if any(a.startswith("lambda:") for a in actions):
            assert actions == ["lambda:InvokeFunction"]
            for resource in as_list(statement["Resource"]):
                match = re.fullmatch(r"\$\{(\w+)\.Arn\}(:\*)?", join_to_text(resource))
                assert match, resource
                invocable.add(match.group(1))
        elif any(a.startswith("states:") for a in actions):
            assert actions == ["states:StartExecution"]
            startable += [join_to_text(r) for r in as_list(statement["Resource"])]
        else:
            assert not any(a.startswith(("dynamodb:", "iam:")) for a in actions)
    assert invocable == set(reconcile_functions.values())
    # It may start itself (the next part of a run) and nothing else: its ARN from its
    # fixed name, since a reference to the state machine would be a dependency cycle.
    name = synthesized.raw["Resources"][machine_id]["Properties"]["StateMachineName"]
    assert startable == [
        f"arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:stateMachine:{name}"
    ]


def test_definition_parses_in_motos_interpreter(synthesized: Synthesized, machine_id: str) -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    program, _ = AmazonStateLanguageParser.parse(synthesized.definition_string(machine_id))
    definition = synthesized.definition(machine_id)
    assert program.start_at.start_at_name == definition["StartAt"]
    assert set(program.states.states) == set(definition["States"])


# --- the functions -----------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(names.RECONCILE_HANDLERS))
def test_function_runtime_layer_and_least_privilege(
    synthesized: Synthesized, reconcile_functions: dict[str, str], task: str
) -> None:
    props = synthesized.raw["Resources"][reconcile_functions[task]]["Properties"]
    assert props["Runtime"] == "python3.13"
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["Timeout"] <= 200
    (layer,) = props["Layers"]
    assert POWERTOOLS_LAYER.match(join_to_text(layer))
    env = props["Environment"]["Variables"]
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == names.METRICS_NAMESPACE
    assert env["POWERTOOLS_SERVICE_NAME"] == names.POWERTOOLS_SERVICE_NAME

    role_id = props["Role"]["Fn::GetAtt"][0]
    roles = [f["Properties"]["Role"]["Fn::GetAtt"][0] for f in synthesized.resources(FUNCTION).values()]
    assert roles.count(role_id) == 1  # its own role
    assert "ManagedPolicyArns" not in synthesized.raw["Resources"][role_id]["Properties"]
    table_arn = {"Fn::GetAtt": [table_id(synthesized), "Arn"]}
    granted: set[str] = set()
    starts: list[dict[str, Any]] = []
    for statement in policy_statements(synthesized, role_id):
        actions = set(as_list(statement["Action"]))
        service = {a.split(":")[0] for a in actions}
        if service == {"dynamodb"}:
            (resource,) = as_list(statement["Resource"])
            if task == "ListEventsPage":
                assert join_to_text(resource) == "${" + table_id(synthesized) + ".Arn}/index/GSI1"
            else:
                assert resource == table_arn
            granted |= actions
        elif service == {"states"}:
            starts.append(statement)
        else:
            assert service <= {"logs", "xray"}, statement
    # Which actions each role needs is measured by a run that makes every repair
    # (tests/integration/test_reconciliation_grants.py); here: a function that may not
    # touch the table is not told its name.
    assert (names.ENV_TABLE_NAME in env) == bool(granted)
    # Only the task that reconciles an event may start anything (a cancel run, see below),
    # and only it is told the cancel workflow's ARN.
    assert bool(starts) == (task == workflow.RECONCILE_TASK)
    assert (names.ENV_WORKFLOW_ARNS[names.CANCEL_WORKFLOW] in env) == bool(starts)
    assert not set(env) & (
        set(names.ENV_WORKFLOW_ARNS.values()) - {names.ENV_WORKFLOW_ARNS[names.CANCEL_WORKFLOW]}
    )


def _may_start(authorizer: iam.Authorizer, role_arn: str, state_machine_arn: str) -> bool:
    """What IAM decides for StartExecution by this role on this state machine."""
    try:
        authorizer.check(
            iam.Principal(role_arn, "check"),
            [Request("states:StartExecution", state_machine_arn)],
            "StartExecution",
        )
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDeniedException"
        return False
    return True


def test_the_reconcile_task_may_start_the_cancel_workflow_and_nothing_else(synthesized: Synthesized) -> None:
    """A cancelled event still holding registrations gets its cancel run from reconciliation:
    decided by the twin's IAM evaluation over every role and state machine of the template."""
    local = parse_template(synthesized.raw)
    authorizer = iam.Authorizer(local, table_name=names.LOCAL_TABLE_NAME)
    cancel = local.workflows[names.CANCEL_WORKFLOW]
    (reconcile_task,) = [
        f for f in local.functions.values() if f.handler == names.RECONCILE_HANDLERS[workflow.RECONCILE_TASK]
    ]
    assert reconcile_task.role_arn is not None
    machines = {spec.arn for spec in local.state_machines.values()}
    assert len(machines) >= 4 and cancel.arn in machines

    assert {arn for arn in machines if _may_start(authorizer, reconcile_task.role_arn, arn)} == {cancel.arn}
    # It is told where that state machine is, as the API function is.
    assert reconcile_task.environment[names.ENV_WORKFLOW_ARNS[names.CANCEL_WORKFLOW]] == cancel.arn

    # Who else may start it: the API function (POST /events/{id}/cancel) and the cancel
    # workflow's own role (its Distributed Map's child executions). No other role.
    (api,) = [f for f in local.functions.values() if f.handler == names.API_HANDLER]
    starters = {role.arn for role in local.roles.values() if _may_start(authorizer, role.arn, cancel.arn)}
    assert starters == {reconcile_task.role_arn, api.role_arn, cancel.role_arn}


# --- the schedule ------------------------------------------------------------------------


def test_the_schedule_starts_the_workflow_every_15_minutes(synthesized: Synthesized, machine_id: str) -> None:
    props = _only(synthesized, SCHEDULE)["Properties"]
    assert props["ScheduleExpression"] == "rate(15 minutes)" == names.DEFAULT_RECONCILE_SCHEDULE
    assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert props["State"] == "ENABLED"
    target = props["Target"]
    assert target["Arn"] == {"Ref": machine_id}
    assert json.loads(target["Input"]) == {}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1


def test_the_schedule_role_may_only_start_this_workflow(synthesized: Synthesized, machine_id: str) -> None:
    target = _only(synthesized, SCHEDULE)["Properties"]["Target"]
    role_id = target["RoleArn"]["Fn::GetAtt"][0]
    role = synthesized.raw["Resources"][role_id]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert "ManagedPolicyArns" not in role
    statements = policy_statements(synthesized, role_id)
    assert statements == [
        {"Action": "states:StartExecution", "Effect": "Allow", "Resource": {"Ref": machine_id}}
    ]


def test_the_rate_is_configurable() -> None:
    from aws_cdk import App, Stack
    from aws_cdk.assertions import Template

    app = App(context={names.RECONCILE_SCHEDULE_CONTEXT: "rate(1 hour)"})
    stack = Stack(app, "ScheduleOnly")
    assert construct.schedule_expression_for(stack) == "rate(1 hour)"
    assert construct.schedule_expression_for(stack, "cron(0 3 * * ? *)") == "cron(0 3 * * ? *)"
    assert construct.schedule_expression_for(Stack(App(), "Default")) == "rate(15 minutes)"
    with pytest.raises(ValueError, match="not an EventBridge Scheduler expression"):
        construct.schedule_expression_for(stack, "every 15 minutes")

    from aws_cdk import aws_dynamodb as dynamodb
    from aws_cdk import aws_lambda as lambda_

    table = dynamodb.Table.from_table_name(stack, "Table", "t")
    layer = lambda_.LayerVersion.from_layer_version_arn(
        stack,
        "Layer",
        "arn:aws:lambda:us-east-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python313-x86_64:1",
    )
    from aws_cdk import aws_stepfunctions as sfn

    cancel = sfn.StateMachine.from_state_machine_arn(
        stack, "Cancel", "arn:aws:states:us-east-1:123456789012:stateMachine:cancel"
    )
    construct.Reconciliation(
        stack,
        "Reconciliation",
        table=table,
        powertools_layer=layer,
        cancel_state_machine=cancel,
        schedule_expression="rate(30 minutes)",
    )
    Template.from_stack(stack).has_resource_properties(SCHEDULE, {"ScheduleExpression": "rate(30 minutes)"})


# --- the alarms --------------------------------------------------------------------------


def test_any_repair_raises_the_alarm(synthesized: Synthesized) -> None:
    alarms = [
        r["Properties"]
        for r in synthesized.resources(ALARM).values()
        if r["Properties"].get("MetricName") == names.RECONCILIATION_REPAIRS_METRIC
    ]
    (alarm,) = alarms
    assert names.RECONCILIATION_REPAIRS_METRIC == logic.REPAIRS_METRIC  # what the handler emits
    assert alarm["Namespace"] == names.METRICS_NAMESPACE
    # Powertools adds the service dimension to every metric it emits.
    assert alarm["Dimensions"] == [{"Name": "service", "Value": names.POWERTOOLS_SERVICE_NAME}]
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Sum",
        0,
        "GreaterThanThreshold",
    )
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["TreatMissingData"] == "notBreaching"


def test_a_failed_run_raises_an_alarm(synthesized: Synthesized, machine_id: str) -> None:
    (alarm,) = [
        r["Properties"]
        for r in synthesized.resources(ALARM).values()
        if r["Properties"].get("MetricName") == "ExecutionsFailed"
        and r["Properties"]["Dimensions"] == [{"Name": "StateMachineArn", "Value": {"Ref": machine_id}}]
    ]
    assert (alarm["Namespace"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "AWS/States",
        0,
        "GreaterThanThreshold",
    )
