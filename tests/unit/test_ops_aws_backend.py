"""`regctl --aws` over stubbed AWS clients: outputs, Standard history, Express logs."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from infrastructure import execution_names, names
from infrastructure.ops import executions
from infrastructure.ops.aws_backend import AwsBackend
from infrastructure.ops.backend import NotFound, OpsError
from infrastructure.ops.executions import ExecutionQuery

PREFIX = "arn:aws:states:eu-west-1:111122223333"
REGISTER_ARN = f"{PREFIX}:stateMachine:Register"
REGISTER_LOG_GROUP = "/aws/vendedlogs/states/EventRegistration-register"
RECONCILE_ARN = f"{PREFIX}:stateMachine:Reconcile"
T0 = dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC)
REQUEST = "0b1c2d3e-4f50-4617-8899-aabbccddeeff"
NAME = execution_names.execution_name("register", "conf", "ada", REQUEST)


def _ms(seconds: float) -> int:
    return int((T0 + dt.timedelta(seconds=seconds)).timestamp() * 1000)


def _record(event_id: int, previous: int, kind: str, at: float, **details: Any) -> dict[str, Any]:
    return {
        "message": json.dumps(
            {
                "id": str(event_id),
                "previous_event_id": str(previous),
                "type": kind,
                "event_timestamp": str(_ms(at)),
                "execution_arn": f"{PREFIX}:express:Register:{NAME}:abc",
                "details": details,
            }
        )
    }


LOG_RECORDS = [
    _record(
        1,
        0,
        "ExecutionStarted",
        0,
        input=json.dumps({"eventId": "conf", "userId": "ada", "requestId": REQUEST}),
    ),
    _record(2, 0, "TaskStateEntered", 0.001, name="Validate", input="{}"),
    _record(3, 2, "LambdaFunctionScheduled", 0.002),
    _record(4, 3, "LambdaFunctionFailed", 0.010, error="EventFull", cause='{"errorMessage": "full"}'),
    _record(5, 4, "TaskStateExited", 0.011, name="Validate", output="{}"),
    _record(6, 5, "FailStateEntered", 0.012, name="EventFull", input="{}"),
    _record(7, 6, "ExecutionFailed", 0.013, error="EventFull", cause='{"errorMessage": "full"}'),
]


class FakeClient:
    def __init__(self, responses: dict[str, Any]) -> None:
        self.responses = responses
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, operation: str) -> Any:
        def call(**kwargs: Any) -> Any:
            self.calls.append((operation, kwargs))
            answer = self.responses[operation]
            return answer(**kwargs) if callable(answer) else answer

        return call


class FakeSession:
    region_name = "eu-west-1"

    def __init__(self, clients: dict[str, FakeClient]) -> None:
        self.clients = clients

    def client(self, service: str) -> FakeClient:
        return self.clients[service]


def _describe_machine(stateMachineArn: str) -> dict[str, Any]:
    if stateMachineArn == REGISTER_ARN:
        # The stack names its workflows' log groups under /aws/vendedlogs/states/.
        group = f"arn:aws:logs:eu-west-1:111122223333:log-group:{REGISTER_LOG_GROUP}:*"
        return {
            "type": "EXPRESS",
            "loggingConfiguration": {"destinations": [{"cloudWatchLogsLogGroup": {"logGroupArn": group}}]},
        }
    return {"type": "STANDARD", "loggingConfiguration": {}}


def _describe_execution(executionArn: str) -> dict[str, Any]:
    if not executionArn.startswith(f"{PREFIX}:execution:Reconcile:reconcile-"):
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "ExecutionDoesNotExist", "Message": "no"}}, "DescribeExecution")
    name = executionArn.rsplit(":", 1)[1]
    return {
        "executionArn": executionArn,
        "name": name,
        "status": "SUCCEEDED",
        "startDate": T0,
        "stopDate": T0 + dt.timedelta(seconds=2),
        "input": "{}",
        "output": json.dumps({"runId": name, "events": 1, "pages": 1}),
    }


RECONCILE_NAME = execution_names.reconcile_name("reconcile", None, "schedule", REQUEST)


@pytest.fixture
def backend() -> AwsBackend:
    outputs = [
        {"OutputKey": names.WORKFLOW_OUTPUTS["register"], "OutputValue": REGISTER_ARN},
        {"OutputKey": names.WORKFLOW_OUTPUTS["reconcile"], "OutputValue": RECONCILE_ARN},
        {"OutputKey": names.TABLE_OUTPUT, "OutputValue": "table"},
    ]
    clients = {
        "cloudformation": FakeClient({"describe_stacks": {"Stacks": [{"Outputs": outputs}]}}),
        "stepfunctions": FakeClient(
            {
                "describe_state_machine": _describe_machine,
                "describe_execution": _describe_execution,
                "list_executions": {
                    "executions": [
                        {
                            "executionArn": f"{PREFIX}:execution:Reconcile:{RECONCILE_NAME}",
                            "name": RECONCILE_NAME,
                            "status": "SUCCEEDED",
                            "startDate": T0 + dt.timedelta(seconds=5),
                        }
                    ]
                },
                "get_execution_history": {
                    "events": [
                        {
                            "id": 1,
                            "previousEventId": 0,
                            "type": "ExecutionStarted",
                            "timestamp": T0,
                            "executionStartedEventDetails": {"input": "{}"},
                        },
                    ]
                },
            }
        ),
        "logs": FakeClient({"filter_log_events": {"events": LOG_RECORDS}}),
    }
    return AwsBackend(session=FakeSession(clients))


def test_lists_express_runs_from_logs_and_standard_runs_from_the_api(backend: AwsBackend) -> None:
    items = backend.list_executions(ExecutionQuery(since=executions.iso(T0 - dt.timedelta(hours=1))))
    assert [(i["workflow"], i["name"], i["status"]) for i in items] == [
        ("reconcile", RECONCILE_NAME, "SUCCEEDED"),
        ("register", NAME, "FAILED"),
    ]
    register = items[1]
    assert (register["eventId"], register["userId"], register["error"], register["durationMs"]) == (
        "conf",
        "ada",
        "EventFull",
        13,
    )
    (call,) = [c for c in backend.client("logs").calls if c[0] == "filter_log_events"]
    assert call[1]["logGroupName"] == REGISTER_LOG_GROUP


def test_filters_apply_to_both_kinds(backend: AwsBackend) -> None:
    since = executions.iso(T0 - dt.timedelta(hours=1))
    assert [i["workflow"] for i in backend.list_executions(ExecutionQuery(since=since, user_id="ada"))] == [
        "register"
    ]
    assert backend.list_executions(ExecutionQuery(since=since, event_id="other", workflow="register")) == []
    assert [
        i["status"] for i in backend.list_executions(ExecutionQuery(since=since, status="SUCCEEDED"))
    ] == ["SUCCEEDED"]


def test_shows_an_express_run_from_its_log_records(backend: AwsBackend) -> None:
    document = backend.execution(NAME)
    assert document["execution"]["status"] == "FAILED"
    states = executions.timeline(document["events"])
    assert [(s["name"], s["type"]) for s in states] == [("Validate", "Task"), ("EventFull", "Fail")]
    assert states[0]["attempts"][0]["error"] == "EventFull"
    assert states[0]["durationMs"] == 10


def test_shows_a_standard_run_through_its_history(backend: AwsBackend) -> None:
    document = backend.execution(RECONCILE_NAME)
    assert document["execution"]["output"]["runId"] == RECONCILE_NAME
    assert document["events"][0]["type"] == "ExecutionStarted"


def test_unknown_names_and_stacks_are_clear_errors(backend: AwsBackend) -> None:
    backend.client("logs").responses["filter_log_events"] = {"events": []}
    with pytest.raises(NotFound):
        backend.execution("nothing-like-this")
    with pytest.raises(OpsError, match="unknown workflow"):
        backend.list_executions(ExecutionQuery(workflow="unregister"))

    from botocore.exceptions import ClientError

    def missing(**kwargs: Any) -> Any:
        raise ClientError(
            {
                "Error": {
                    "Code": "ValidationError",
                    "Message": "Stack with id EventRegistration does not exist",
                }
            },
            "DescribeStacks",
        )

    backend._outputs = None
    backend.client("cloudformation").responses["describe_stacks"] = missing
    with pytest.raises(OpsError, match="No stack EventRegistration in eu-west-1"):
        backend.list_executions(ExecutionQuery())


def test_execution_names_round_trip() -> None:
    name = execution_names.execution_name("register", "conf-2026", "ada", REQUEST)
    assert len(name) <= 80
    parts = execution_names.parse(name, ["register", "unregister"])
    assert parts is not None and parts.request_id == REQUEST and parts.middle == "conf-2026-ada"
    assert execution_names.matches(name, ["register"], event_id="conf-2026", user_id="ada")
    assert not execution_names.matches(name, ["register"], event_id="conf-2027")
    assert not execution_names.matches(name, ["register"], user_id="bob")
    long = execution_names.execution_name("unregister", "e" * 60, "u" * 60, REQUEST)
    assert len(long) <= 80 and execution_names.matches(
        long, ["unregister"], event_id="e" * 60, user_id="u" * 60
    )
    assert execution_names.parse("a-scheduler-given-name", ["register"]) is None
