"""Checks on the synthesized CloudFormation template (one synth per session)."""

from __future__ import annotations

import importlib.metadata
import json
import re
from typing import Any

import pytest

from infrastructure import names
from registration import outcomes
from tests.infrastructure.conftest import Synthesized, function_id_from_arn
from workflows import common

pytestmark = pytest.mark.infrastructure

FUNCTION = "AWS::Lambda::Function"
STATE_MACHINE = "AWS::StepFunctions::StateMachine"
# The layer of one Powertools release, resolved by CloudFormation from Powertools' public
# SSM parameter (`/aws/service/powertools/python/<arch>/<runtime>/<release>`).
POWERTOOLS_LAYER = re.compile(
    r"^\{\{resolve:ssm:/aws/service/powertools/python/"
    r"(?P<architecture>[^/]+)/(?P<runtime>[^/]+)/(?P<version>[^/}]+)\}\}$"
)
# The request-path workflows; reconciliation (Standard) has its own tests.
EXPRESS_WORKFLOWS = (names.REGISTER_WORKFLOW, names.UNREGISTER_WORKFLOW)
RETRYABLE = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.Unknown",
    "Lambda.ClientExecutionTimeoutException",
    "Sandbox.Timedout",
    "States.Timeout",
    "TransientDatabaseError",
]
# The functions the idempotency wrapper around each Express workflow invokes.
IDEMPOTENCY_FUNCTIONS = {"ClaimRequest", "RecordOutcome"}
WORKFLOW_FUNCTIONS = {
    names.REGISTER_WORKFLOW: {"Validate", "CheckCapacity", "WriteRegistration", *IDEMPOTENCY_FUNCTIONS},
    names.UNREGISTER_WORKFLOW: {
        "Validate",
        "CheckRegistration",
        "WriteUnregistration",
        "PromoteFromWaitlist",
        *IDEMPOTENCY_FUNCTIONS,
    },
}
# The wrapper's task that records how a failed execution ended, and where it goes when
# the record cannot be written (an answer that is not stored is not given out).
RECORD_TASKS = {"RecordFailure": "AnswerNotRecorded"}
# Items whose partition key starts with `IDEMPOTENCY#` (or `EVENT#`) and nothing else
# (IAM's `dynamodb:LeadingKeys`): the only conditions a table grant carries.
IDEMPOTENCY_ONLY = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["IDEMPOTENCY#*"]}}
# ClaimRequest reads the event, whose organizer may act for others, before it claims a
# key; it writes idempotency records only.
CONFINED_TASKS = {
    "ClaimRequest": {"IDEMPOTENCY#*": None, "EVENT#*": {"dynamodb:GetItem"}},
    "RecordOutcome": {"IDEMPOTENCY#*": None},
}


# --- helpers -------------------------------------------------------------------------


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def join_to_text(value: Any) -> str:
    """Render a `Fn::Join`/`Ref`/`Fn::GetAtt` value as `${...}` text, for matching."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return "${" + str(value["Ref"]) + "}"
    if "Fn::GetAtt" in value:
        return "${" + ".".join(value["Fn::GetAtt"]) + "}"
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(join_to_text(part) for part in parts)
    raise ValueError(value)


def policy_statements(synthesized: Synthesized, role_id: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in synthesized.resources("AWS::IAM::Policy").values():
        roles = [role["Ref"] for role in policy["Properties"]["Roles"]]
        if role_id in roles:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def table_id(synthesized: Synthesized) -> str:
    (logical_id,) = synthesized.resources("AWS::DynamoDB::Table")
    return logical_id


def edges(definition: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Every transition as (state, how, next): how is "next", "default", a Choice
    value or a caught error name."""
    result: set[tuple[str, str, str]] = set()
    for name, state in definition["States"].items():
        if "Next" in state:
            result.add((name, "next", state["Next"]))
        for catcher in state.get("Catch", []):
            for error in catcher["ErrorEquals"]:
                result.add((name, error, catcher["Next"]))
        for choice in state.get("Choices", []):
            result.add((name, choice_text(choice), choice["Next"]))
        if "Default" in state:
            result.add((name, "default", state["Default"]))
    return result


def choice_text(choice: dict[str, Any]) -> str:
    """A Choice rule as its compared string (`"seat"`), else `<variable> <test> <value>`."""
    if "StringEquals" in choice:
        return str(choice["StringEquals"])
    ((test, value),) = [(k, v) for k, v in choice.items() if k not in ("Variable", "Next")]
    return f"{choice['Variable']} {test} {json.dumps(value)}"


def task_states(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in definition["States"].items() if s["Type"] == "Task"}


def all_task_states(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Task states at every level (inside Parallel branches and Map processors too)."""
    found = dict(task_states(definition))
    for state in definition["States"].values():
        nested = [*state.get("Branches", [])]
        if "ItemProcessor" in state:
            nested.append(state["ItemProcessor"])
        for machine in nested:
            for name, task in all_task_states(machine).items():
                assert name not in found, f"task name {name} is used twice"
                found[name] = task
    return found


def workflow_body(definition: dict[str, Any]) -> dict[str, Any]:
    """The workflow itself: the one branch of the `Run` Parallel state of the wrapper."""
    (branch,) = definition["States"]["Run"]["Branches"]
    body: dict[str, Any] = branch
    return body


# --- table -----------------------------------------------------------------------------


def test_one_table_with_keys_gsi_pitr_ttl_and_retain(synthesized: Synthesized) -> None:
    tables = synthesized.resources("AWS::DynamoDB::Table")
    assert len(tables) == 1
    (table,) = tables.values()
    props = table["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": "PK", "KeyType": "HASH"},
        {"AttributeName": "SK", "KeyType": "RANGE"},
    ]
    assert {(a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"]} == {
        ("PK", "S"),
        ("SK", "S"),
        ("GSI1PK", "S"),
        ("GSI1SK", "S"),
    }
    assert props["GlobalSecondaryIndexes"] == [
        {
            "IndexName": "GSI1",
            "KeySchema": [
                {"AttributeName": "GSI1PK", "KeyType": "HASH"},
                {"AttributeName": "GSI1SK", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"


def test_table_name_is_an_output(synthesized: Synthesized) -> None:
    assert synthesized.output_ref(names.TABLE_OUTPUT) == table_id(synthesized)


# --- task functions --------------------------------------------------------------------


def test_one_function_per_task_handler(synthesized: Synthesized, function_ids: dict[str, str]) -> None:
    assert set(function_ids) == set(names.TASK_HANDLERS)
    assert len(set(function_ids.values())) == len(names.TASK_HANDLERS)
    # Construct id = task name, so the logical id starts with the construct path.
    for task, logical_id in function_ids.items():
        assert logical_id.startswith(f"TaskFunctions{task}"), logical_id
    assert len(synthesized.resources(FUNCTION)) >= len(names.TASK_HANDLERS)


@pytest.mark.parametrize("task", sorted(names.TASK_HANDLERS))
def test_function_runtime_layer_tracing_and_environment(
    synthesized: Synthesized, function_ids: dict[str, str], task: str
) -> None:
    props = synthesized.raw["Resources"][function_ids[task]]["Properties"]
    assert props["Runtime"] == "python3.13"
    assert props["Architectures"] == ["x86_64"]
    assert props["Handler"] == names.TASK_HANDLERS[task]
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert 256 <= props["MemorySize"] <= 512
    assert props["Timeout"] <= 15
    layers = [join_to_text(layer) for layer in props["Layers"]]
    assert len(layers) == 1 and POWERTOOLS_LAYER.match(layers[0]), layers
    env = props["Environment"]["Variables"]
    assert env[names.ENV_TABLE_NAME] == {"Ref": table_id(synthesized)}
    assert env["POWERTOOLS_SERVICE_NAME"] == names.POWERTOOLS_SERVICE_NAME
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == names.METRICS_NAMESPACE
    assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"
    # Its own log group, with a retention.
    log_group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = synthesized.raw["Resources"][log_group_id]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"]["RetentionInDays"] > 0


def test_the_layer_is_the_powertools_release_the_tests_ran(synthesized: Synthesized) -> None:
    """Every function's layer is Powertools' own layer of the release installed here (the
    one every test ran against), for the function's runtime and architecture."""
    installed = importlib.metadata.version("aws-lambda-powertools")
    handlers = {*names.TASK_HANDLERS.values(), *names.RECONCILE_HANDLERS.values(), names.API_HANDLER}
    deployed: set[str] = set()
    ours = {
        lid: f
        for lid, f in synthesized.resources(FUNCTION).items()
        if f["Properties"].get("Handler") in handlers
    }
    assert len(ours) == len(handlers)
    for lid, function in ours.items():
        props = function["Properties"]
        (layer,) = props["Layers"]
        match = POWERTOOLS_LAYER.match(join_to_text(layer))
        assert match, (lid, layer)
        assert match["runtime"] == props["Runtime"], lid
        assert [match["architecture"]] == props["Architectures"], lid
        deployed.add(match["version"])
    assert deployed == {installed}


def test_function_code_is_a_plain_asset(synthesized: Synthesized, function_ids: dict[str, str]) -> None:
    keys = {
        synthesized.raw["Resources"][logical_id]["Properties"]["Code"]["S3Key"]
        for logical_id in function_ids.values()
    }
    assert len(keys) == 1  # one asset (the lambdas/ directory) shared by every task
    (asset_dir,) = [p for p in synthesized.outdir.iterdir() if p.name.startswith("asset.")]
    assert not list(asset_dir.rglob("__pycache__"))


def test_every_function_has_its_own_role(synthesized: Synthesized, function_ids: dict[str, str]) -> None:
    roles = [
        synthesized.raw["Resources"][logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]
        for logical_id in function_ids.values()
    ]
    assert len(set(roles)) == len(roles)
    all_function_roles = [
        f["Properties"]["Role"]["Fn::GetAtt"][0] for f in synthesized.resources(FUNCTION).values()
    ]
    for role in roles:
        assert all_function_roles.count(role) == 1
        assume = synthesized.raw["Resources"][role]["Properties"]["AssumeRolePolicyDocument"]
        assert assume["Statement"] == [
            {
                "Action": "sts:AssumeRole",
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
            }
        ]
        # No managed policies (AWSLambdaBasicExecutionRole would allow every log group).
        assert "ManagedPolicyArns" not in synthesized.raw["Resources"][role]["Properties"]


@pytest.mark.parametrize("task", sorted(names.TASK_HANDLERS))
def test_function_role_is_least_privilege(
    synthesized: Synthesized, function_ids: dict[str, str], task: str
) -> None:
    props = synthesized.raw["Resources"][function_ids[task]]["Properties"]
    role_id = props["Role"]["Fn::GetAtt"][0]
    log_group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
    table_arn = {"Fn::GetAtt": [table_id(synthesized), "Arn"]}

    dynamodb_actions: set[str] = set()
    for statement in policy_statements(synthesized, role_id):
        assert statement["Effect"] == "Allow"
        actions = set(as_list(statement["Action"]))
        resources = as_list(statement["Resource"])
        services = {action.split(":")[0] for action in actions}
        assert len(services) == 1, statement
        (service,) = services
        if service == "dynamodb":
            assert resources == [table_arn], statement  # the table only, no index
            confined = CONFINED_TASKS.get(task)
            if confined is None:
                assert "Condition" not in statement, statement
            else:
                (prefix,) = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
                assert prefix in confined, statement
                allowed = confined[prefix]
                assert allowed is None or actions <= allowed, statement
            dynamodb_actions |= actions
        elif service == "logs":
            assert actions == {"logs:CreateLogStream", "logs:PutLogEvents"}
            assert resources == [{"Fn::GetAtt": [log_group_id, "Arn"]}]
        elif service == "xray":
            assert actions <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
        else:
            pytest.fail(f"unexpected statement for {task}: {statement}")
    # Which actions: what the task's code calls. The local engine authorises every call
    # against this role, so a missing grant fails the suite; the suite's IAM report lists
    # grants no call used.
    assert dynamodb_actions, f"{task} is granted no table access"


# --- state machines --------------------------------------------------------------------


@pytest.mark.parametrize("workflow", EXPRESS_WORKFLOWS)
def test_state_machine_is_express_logged_and_traced(
    synthesized: Synthesized, state_machine_ids: dict[str, str], workflow: str
) -> None:
    resource = synthesized.raw["Resources"][state_machine_ids[workflow]]
    assert resource["Type"] == STATE_MACHINE
    props = resource["Properties"]
    assert props["StateMachineType"] == "EXPRESS"
    assert props["TracingConfiguration"] == {"Enabled": True}
    logging = props["LoggingConfiguration"]
    assert logging["Level"] == "ALL"
    assert logging["IncludeExecutionData"] is True
    (destination,) = logging["Destinations"]
    log_group_id = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    assert synthesized.raw["Resources"][log_group_id]["Properties"]["RetentionInDays"] > 0


def test_state_machines_log_under_vended_logs_one_group_each(
    synthesized: Synthesized, state_machine_ids: dict[str, str]
) -> None:
    """Names under /aws/vendedlogs/ keep the account's CloudWatch Logs resource policy
    (5,120 characters, which Step Functions adds every log group to) from growing; the
    stack's name in each keeps two stacks in one account and region apart."""
    log_groups: dict[str, str] = {}
    for workflow, machine_id in state_machine_ids.items():
        logging = synthesized.raw["Resources"][machine_id]["Properties"]["LoggingConfiguration"]
        (destination,) = logging["Destinations"]
        log_group_id = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
        log_groups[workflow] = synthesized.raw["Resources"][log_group_id]["Properties"]["LogGroupName"]
    for workflow, name in log_groups.items():
        assert name.startswith("/aws/vendedlogs/states/"), name
        assert names.STACK_NAME in name and workflow in name, name
    assert len(set(log_groups.values())) == len(log_groups)


def test_each_workflow_is_a_state_machine_with_an_output(
    synthesized: Synthesized, state_machine_ids: dict[str, str]
) -> None:
    assert set(state_machine_ids.values()) == set(synthesized.resources(STATE_MACHINE))
    assert len(set(state_machine_ids.values())) == len(names.WORKFLOW_OUTPUTS)


@pytest.mark.parametrize("workflow", EXPRESS_WORKFLOWS)
def test_definition_uses_jsonpath(
    synthesized: Synthesized, state_machine_ids: dict[str, str], workflow: str
) -> None:
    definition = synthesized.definition(state_machine_ids[workflow])
    assert definition.get("QueryLanguage", "JSONPath") == "JSONPath"
    for name, state in definition["States"].items():
        assert state.get("QueryLanguage", "JSONPath") == "JSONPath", name
        assert "Arguments" not in state and "Output" not in state, name  # JSONata fields
    assert "{%" not in synthesized.definition_string(state_machine_ids[workflow])


@pytest.mark.parametrize("workflow", EXPRESS_WORKFLOWS)
def test_tasks_invoke_only_their_workflows_functions(
    synthesized: Synthesized,
    state_machine_ids: dict[str, str],
    function_ids: dict[str, str],
    workflow: str,
) -> None:
    definition = synthesized.definition(state_machine_ids[workflow])
    used = {function_id_from_arn(s["Resource"]) for s in all_task_states(definition).values()}
    expected = {function_ids[task] for task in WORKFLOW_FUNCTIONS[workflow]}
    assert used == expected


@pytest.mark.parametrize("workflow", EXPRESS_WORKFLOWS)
def test_state_machine_role_may_invoke_only_its_functions(
    synthesized: Synthesized,
    state_machine_ids: dict[str, str],
    function_ids: dict[str, str],
    workflow: str,
) -> None:
    props = synthesized.raw["Resources"][state_machine_ids[workflow]]["Properties"]
    role_id = props["RoleArn"]["Fn::GetAtt"][0]
    own = {function_ids[task] for task in WORKFLOW_FUNCTIONS[workflow]}
    invocable: set[str] = set()
    for statement in policy_statements(synthesized, role_id):
        actions = as_list(statement["Action"])
        if any(action.startswith("lambda:") for action in actions):
            assert actions == ["lambda:InvokeFunction"], statement
            for resource in as_list(statement["Resource"]):
                text = join_to_text(resource)
                match = re.fullmatch(r"\$\{(\w+)\.Arn\}(:\*)?", text)
                assert match, text
                invocable.add(match.group(1))
        else:
            assert not any(a.startswith(("dynamodb:", "iam:", "states:")) for a in actions)
    assert invocable == own


# --- the workflow contract -------------------------------------------------------------


@pytest.mark.parametrize("workflow", EXPRESS_WORKFLOWS)
def test_every_task_retries_transient_failures_only(
    synthesized: Synthesized, state_machine_ids: dict[str, str], workflow: str
) -> None:
    definition = synthesized.definition(state_machine_ids[workflow])
    tasks = all_task_states(definition)
    assert set(RECORD_TASKS) | {"ClaimRequest", "Validate"} <= set(tasks)
    for name, state in tasks.items():
        (retry,) = state["Retry"]
        assert retry["ErrorEquals"] == RETRYABLE, name
        assert retry["IntervalSeconds"] == 1
        assert retry["BackoffRate"] == 2
        # How many, and how long each attempt may take: test_budget.py.
        assert retry["MaxAttempts"] >= 1
        assert retry.get("JitterStrategy") == "FULL"
        assert 1 <= state["TimeoutSeconds"] <= 30
        if name in RECORD_TASKS:
            # Whatever stops the record, the caller is told to retry (503), not given an
            # answer a retry would not get back.
            assert state["Catch"] == [
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.recordError", "Next": RECORD_TASKS[name]}
            ], name
            continue
        assert not any(
            "States.ALL" in c["ErrorEquals"] or "States.TaskFailed" in c["ErrorEquals"]
            for c in state.get("Catch", [])
        ), name


@pytest.mark.parametrize("workflow", EXPRESS_WORKFLOWS)
def test_fail_states_take_the_cause_of_the_caught_error(
    synthesized: Synthesized, state_machine_ids: dict[str, str], workflow: str
) -> None:
    definition = workflow_body(synthesized.definition(state_machine_ids[workflow]))
    states = definition["States"]
    for name, state in task_states(definition).items():
        for catcher in state.get("Catch", []):
            (error,) = catcher["ErrorEquals"]
            target = states[catcher["Next"]]
            if error == "DecisionStale":
                assert catcher["ResultPath"] == "$.conflict"
                assert state["Catch"][0] is catcher, f"{name}: DecisionStale must come first"
                continue
            assert catcher["ResultPath"] == "$.error"
            assert catcher["Next"] == error
            assert target == {"Type": "Fail", "Error": error, "CausePath": "$.error.Cause"}
    for name, state in states.items():
        if state["Type"] == "Fail":
            assert state["Error"] == name  # one Fail state per error name


KEYED = "$.idempotencyKey IsPresent true"
WRAPPER_EDGES = {
    ("IdempotencyKeyGiven", KEYED, "ClaimRequest"),
    ("IdempotencyKeyGiven", "default", "Run"),
    ("ClaimRequest", "next", "ReplayOrRun"),
    ("ClaimRequest", "ValidationError", "Failed"),
    ("ClaimRequest", "IdempotencyKeyReused", "Failed"),
    ("ClaimRequest", "RequestInProgress", "Failed"),
    ("ClaimRequest", "Forbidden", "Failed"),
    ("ReplayOrRun", "$.claim.replay BooleanEquals false", "Run"),
    ("ReplayOrRun", "$.claim.succeeded BooleanEquals true", "ReplayedSuccess"),
    ("ReplayOrRun", "default", "ReplayedFailure"),
    # A success has written, and stored its answer with the write: nothing to record.
    ("Run", "next", "Done"),
    *(("Run", error, "RecordFailureIfKeyed") for error in common.RECORDED_ERRORS),
    ("RecordFailureIfKeyed", KEYED, "RecordFailure"),
    ("RecordFailureIfKeyed", "default", "Failed"),
    ("RecordFailure", "next", "Failed"),
    ("RecordFailure", "States.ALL", "AnswerNotRecorded"),
}


@pytest.mark.parametrize("workflow", EXPRESS_WORKFLOWS)
def test_idempotency_wrapper_contract(
    synthesized: Synthesized,
    state_machine_ids: dict[str, str],
    function_ids: dict[str, str],
    workflow: str,
) -> None:
    """With `idempotencyKey` in the input: claim, then replay or run, then record the
    outcome. Without it: the workflow runs in `Run` and ends as it always did."""
    definition = synthesized.definition(state_machine_ids[workflow])
    states = definition["States"]
    assert definition["StartAt"] == "IdempotencyKeyGiven"
    assert edges(definition) == WRAPPER_EDGES
    assert set(states) == {name for edge in WRAPPER_EDGES for name in (edge[0], edge[2])}

    # The workflow itself is the one branch of `Run`, from Validate on.
    run = states["Run"]
    assert run["Type"] == "Parallel"
    (branch,) = run["Branches"]
    assert branch["StartAt"] == "Validate"
    assert run["ResultSelector"] == {"output.$": "$[0]"}
    assert run["ResultPath"] == "$.outcome"
    assert "Retry" not in run
    # Every business outcome and known transient failure of the workflow (a Fail state's
    # error included) is recorded and goes on as it was; `States.*` errors are not caught
    # (a Fail state's ErrorPath may not name one), so the execution fails with them as is.
    (catch,) = run["Catch"]
    assert catch["ResultPath"] == "$.error" and catch["Next"] == "RecordFailureIfKeyed"
    assert not any(e.startswith("States.") for e in catch["ErrorEquals"])
    claim_refusals = {"IdempotencyKeyReused", "RequestInProgress"}  # ClaimRequest's, not the body's
    assert not claim_refusals & set(catch["ErrorEquals"])
    business = {
        code for code, status in outcomes.WORKFLOW_ERROR_STATUS.items() if status < 500
    } - claim_refusals
    assert business | {"TransientDatabaseError", "ContentionLimitExceeded", "UnexpectedDecision"} <= set(
        catch["ErrorEquals"]
    )
    assert states["Failed"] == {"Type": "Fail", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"}
    assert states["Done"] == {"Type": "Succeed", "OutputPath": "$.outcome.output"}
    assert states["AnswerNotRecorded"] == {
        "Type": "Fail",
        "Error": "TransientDatabaseError",
        "Cause": outcomes.UNRECORDED_ANSWER_MESSAGE,
    }
    assert states["ReplayedSuccess"] == {"Type": "Succeed", "OutputPath": "$.claim.output"}
    assert states["ReplayedFailure"] == {
        "Type": "Fail",
        "ErrorPath": "$.claim.error",
        "CausePath": "$.claim.cause",
    }

    request = {
        "idempotencyKey.$": "$.idempotencyKey",
        "operation": workflow,
        "eventId.$": "$.eventId",
        "userId.$": "$.userId",
        "requestId.$": "$.requestId",
        "caller.$": "$.caller",
    }
    claim = states["ClaimRequest"]
    assert function_id_from_arn(claim["Resource"]) == function_ids["ClaimRequest"]
    assert claim["Parameters"] == request
    assert claim["ResultPath"] == "$.claim"
    assert all(c["ResultPath"] == "$.error" for c in claim["Catch"])
    for name, extra in (("RecordFailure", {"error.$": "$.error"}),):
        record = states[name]
        assert function_id_from_arn(record["Resource"]) == function_ids["RecordOutcome"], name
        assert record["Parameters"] == {**request, **extra}, name
        assert record["ResultPath"] is None, name  # the answer is the workflow's, not the record's
    for choice in ("IdempotencyKeyGiven", "RecordFailureIfKeyed"):
        (rule,) = states[choice]["Choices"]
        assert (rule["Variable"], rule["IsPresent"]) == ("$.idempotencyKey", True), choice


def test_validate_parameters(synthesized: Synthesized, state_machine_ids: dict[str, str]) -> None:
    for workflow in EXPRESS_WORKFLOWS:
        validate = workflow_body(synthesized.definition(state_machine_ids[workflow]))["States"]["Validate"]
        assert validate["Parameters"] == {
            "eventId.$": "$.eventId",
            "userId.$": "$.userId",
            "requestId.$": "$.requestId",
            "caller.$": "$.caller",
            "operation": workflow,
        }
        assert validate["ResultPath"] == "$.event"


def test_register_workflow_contract(synthesized: Synthesized, state_machine_ids: dict[str, str]) -> None:
    definition = workflow_body(synthesized.definition(state_machine_ids[names.REGISTER_WORKFLOW]))
    states = definition["States"]
    assert definition["StartAt"] == "Validate"
    assert edges(definition) == {
        ("Validate", "next", "CheckCapacity"),
        ("Validate", "ValidationError", "ValidationError"),
        ("Validate", "Forbidden", "Forbidden"),
        ("Validate", "UserNotFound", "UserNotFound"),
        ("Validate", "EventNotFound", "EventNotFound"),
        ("CheckCapacity", "next", "SeatOrWaitlist"),
        ("CheckCapacity", "AlreadyRegistered", "AlreadyRegistered"),
        ("CheckCapacity", "ContentionLimitExceeded", "ContentionLimitExceeded"),
        ("CheckCapacity", "EventCancelled", "EventCancelled"),
        ("CheckCapacity", "RegistrationNotOpen", "RegistrationNotOpen"),
        ("CheckCapacity", "RegistrationClosed", "RegistrationClosed"),
        ("CheckCapacity", "EventStarted", "EventStarted"),
        ("SeatOrWaitlist", "seat", "TakeSeat"),
        ("SeatOrWaitlist", "waitlist", "JoinWaitlist"),
        ("SeatOrWaitlist", "full", "EventFull"),
        ("SeatOrWaitlist", "default", "UnexpectedDecision"),
        ("TakeSeat", "next", "Registered"),
        ("TakeSeat", "DecisionStale", "CheckCapacity"),
        ("TakeSeat", "AlreadyRegistered", "AlreadyRegistered"),
        ("TakeSeat", "AlreadyWaitlisted", "AlreadyWaitlisted"),
        ("JoinWaitlist", "next", "Waitlisted"),
        ("JoinWaitlist", "DecisionStale", "CheckCapacity"),
        ("JoinWaitlist", "AlreadyRegistered", "AlreadyRegistered"),
        ("JoinWaitlist", "AlreadyWaitlisted", "AlreadyWaitlisted"),
    }
    assert all(c["Variable"] == "$.decision.action" for c in states["SeatOrWaitlist"]["Choices"])
    assert states["CheckCapacity"]["ResultPath"] == "$.decision"
    assert "Parameters" not in states["CheckCapacity"]
    for write in ("TakeSeat", "JoinWaitlist"):
        assert "Parameters" not in states[write]
        assert states[write]["ResultPath"] == "$.result"
        assert states[write]["OutputPath"] == "$.result"
    assert states["Registered"]["Type"] == states["Waitlisted"]["Type"] == "Succeed"
    assert states["EventFull"] == {
        "Type": "Fail",
        "Error": "EventFull",
        "Cause": "The event is full and has no waitlist",
    }
    assert states["UnexpectedDecision"]["Type"] == "Fail"


def test_unregister_workflow_contract(
    synthesized: Synthesized, state_machine_ids: dict[str, str], function_ids: dict[str, str]
) -> None:
    definition = workflow_body(synthesized.definition(state_machine_ids[names.UNREGISTER_WORKFLOW]))
    states = definition["States"]
    assert definition["StartAt"] == "Validate"
    assert edges(definition) == {
        ("Validate", "next", "CheckRegistration"),
        ("Validate", "ValidationError", "ValidationError"),
        ("Validate", "Forbidden", "Forbidden"),
        ("Validate", "EventNotFound", "EventNotFound"),
        ("CheckRegistration", "next", "WhatToRemove"),
        ("CheckRegistration", "ContentionLimitExceeded", "ContentionLimitExceeded"),
        ("WhatToRemove", "unregister", "Unregister"),
        ("WhatToRemove", "leave_waitlist", "LeaveWaitlist"),
        ("WhatToRemove", "promote", "PromoteFromWaitlist"),
        ("WhatToRemove", "not_registered", "NotRegistered"),
        ("WhatToRemove", "default", "UnexpectedDecision"),
        ("Unregister", "next", "Unregistered"),
        ("Unregister", "DecisionStale", "CheckRegistration"),
        ("LeaveWaitlist", "next", "LeftWaitlist"),
        ("LeaveWaitlist", "DecisionStale", "CheckRegistration"),
        ("PromoteFromWaitlist", "next", "Promoted"),
        ("PromoteFromWaitlist", "DecisionStale", "CheckRegistration"),
    }
    assert all(c["Variable"] == "$.decision.action" for c in states["WhatToRemove"]["Choices"])
    assert states["CheckRegistration"]["ResultPath"] == "$.decision"
    writes = {
        "Unregister": "WriteUnregistration",
        "LeaveWaitlist": "WriteUnregistration",
        "PromoteFromWaitlist": "PromoteFromWaitlist",
    }
    for state_name, task in writes.items():
        state = states[state_name]
        assert function_id_from_arn(state["Resource"]) == function_ids[task]
        assert "Parameters" not in state
        assert state["ResultPath"] == "$.result"
        assert state["OutputPath"] == "$.result"
    for succeed in ("Unregistered", "LeftWaitlist", "Promoted"):
        assert states[succeed]["Type"] == "Succeed"
    assert states["NotRegistered"]["Type"] == "Fail"
    assert states["NotRegistered"]["Error"] == "NotRegistered"


@pytest.mark.parametrize("workflow", EXPRESS_WORKFLOWS)
def test_definition_parses_in_motos_interpreter(
    synthesized: Synthesized, state_machine_ids: dict[str, str], workflow: str
) -> None:
    """The local engine runs this exact ASL through moto's Step Functions parser."""
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    program, _ = AmazonStateLanguageParser.parse(synthesized.definition_string(state_machine_ids[workflow]))
    assert program is not None


def test_assertions_template_agrees(template: Any) -> None:
    template.resource_count_is(STATE_MACHINE, len(names.WORKFLOW_OUTPUTS))
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {"PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True}},
    )
    for output in [names.TABLE_OUTPUT, *names.WORKFLOW_OUTPUTS.values()]:
        template.has_output(output, {})
