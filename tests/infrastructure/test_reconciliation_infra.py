"""Reconciliation in the synthesized template: the Standard workflow, its functions, the
schedule (rate, target, role) and the alarms."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infrastructure import names
from infrastructure.constructs import reconciliation as construct
from infrastructure.local.template import parse_template
from registration import reconciliation as logic
from tests.infrastructure.conftest import Synthesized, function_id_from_arn
from tests.infrastructure.test_template import (
    POWERTOOLS_LAYER,
    as_list,
    join_to_text,
    policy_statements,
    table_id,
)
from workflows import common

pytestmark = pytest.mark.infrastructure

SCHEDULE = "AWS::Scheduler::Schedule"
ALARM = "AWS::CloudWatch::Alarm"
FUNCTION = "AWS::Lambda::Function"
DYNAMODB_ACTIONS = {
    "ListEventsPage": {"dynamodb:Query"},
    "ReconcileEvent": {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:ConditionCheckItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    },
    "TallyReconciliation": set(),
    "RecordReconciliation": {"dynamodb:PutItem"},
}


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
    assert definition["StartAt"] == "StartRun"
    assert definition["TimeoutSeconds"] > 0
    assert states["StartRun"]["Parameters"]["run"] == {
        "runId.$": "$$.Execution.Name",
        "startedAt.$": "$$.Execution.StartTime",
        "options.$": "$$.Execution.Input",
    }
    flow = {
        name: state.get("Next") or state.get("Default")
        for name, state in states.items()
        if state["Type"] in ("Pass", "Task", "Map", "Choice")
    }
    assert flow == {
        "StartRun": "ListEventsPage",
        "ListEventsPage": "ReconcileEvents",
        "ReconcileEvents": "Tally",
        "Tally": "MorePages",
        "MorePages": "RecordRun",
        "RecordRun": "AllEventsReconciled",
        "AllEventsReconciled": "Reconciled",
    }
    assert states["MorePages"]["Choices"] == [
        {"Variable": "$.page.nextToken", "IsNull": False, "Next": "ListEventsPage"}
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


def test_every_task_retries_transient_failures(definition: dict[str, Any]) -> None:
    tasks = _all_tasks(definition)
    assert set(tasks) == {"ListEventsPage", "ReconcileEvent", "Tally", "RecordRun"}
    for name, state in tasks.items():
        (retry,) = state["Retry"]
        assert retry["ErrorEquals"] == list(common.RETRYABLE_ERRORS), name
        assert (retry["IntervalSeconds"], retry["MaxAttempts"], retry["JitterStrategy"]) == (1, 3, "FULL")
        assert 1 <= state["TimeoutSeconds"] <= 300, name


def test_tasks_invoke_the_reconciliation_functions_only(
    synthesized: Synthesized, definition: dict[str, Any], machine_id: str, reconcile_functions: dict[str, str]
) -> None:
    used = {function_id_from_arn(s["Resource"]) for s in _all_tasks(definition).values()}
    assert used == set(reconcile_functions.values())
    role_id = synthesized.raw["Resources"][machine_id]["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    invocable: set[str] = set()
    for statement in policy_statements(synthesized, role_id):
        actions = as_list(statement["Action"])
        if any(a.startswith("lambda:") for a in actions):
            assert actions == ["lambda:InvokeFunction"]
            for resource in as_list(statement["Resource"]):
                match = re.fullmatch(r"\$\{(\w+)\.Arn\}(:\*)?", join_to_text(resource))
                assert match, resource
                invocable.add(match.group(1))
        else:
            assert not any(a.startswith(("dynamodb:", "iam:", "states:")) for a in actions)
    assert invocable == set(reconcile_functions.values())


def test_definition_parses_in_motos_interpreter(synthesized: Synthesized, machine_id: str) -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    program, _ = AmazonStateLanguageParser.parse(synthesized.definition_string(machine_id))
    assert program is not None


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
        else:
            assert service <= {"logs", "xray"}, statement
    assert granted == DYNAMODB_ACTIONS[task]
    assert (names.ENV_TABLE_NAME in env) == bool(DYNAMODB_ACTIONS[task])


def test_construct_grants_match_the_handlers() -> None:
    assert set(construct.TABLE_ACTIONS) == set(names.RECONCILE_HANDLERS)
    assert {k: set(v) for k, v in construct.TABLE_ACTIONS.items()} == DYNAMODB_ACTIONS


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
    construct.Reconciliation(
        stack, "Reconciliation", table=table, powertools_layer=layer, schedule_expression="rate(30 minutes)"
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
