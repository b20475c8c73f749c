"""The local engine: CDK-shaped template -> moto Step Functions -> in-process handlers."""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from infrastructure.local import lambda_seam
from infrastructure.local.engine import LocalEngine
from infrastructure.local.execution_results import ExecutionTimeout
from infrastructure.local.intrinsic_functions import TemplateError
from infrastructure.local.program_pool import PROGRAM_POOL_SIZE
from infrastructure.local.template import parse_template
from tests.fixtures.engines import recorded_history
from tests.fixtures.sample_template import (
    CHECK_FUNCTION,
    SAMPLE_OUTPUTS,
    SAMPLE_WORKFLOW,
    STATE_MACHINE,
    sample_template,
)

pytest_plugins = ["tests.fixtures.plugin"]


def _item(engine: LocalEngine, item_id: str) -> dict[str, Any] | None:
    response = engine.table().get_item(Key={"PK": f"ITEM#{item_id}", "SK": "METADATA"}, ConsistentRead=True)
    item: dict[str, Any] | None = response.get("Item")
    return item


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


# Template ----------------------------------------------------------------------------


def test_template_resolves_definition_functions_table_and_outputs() -> None:
    local = parse_template(sample_template(), workflow_outputs=SAMPLE_OUTPUTS)

    definition = local.workflows[SAMPLE_WORKFLOW].definition_dict
    check = definition["States"]["Check"]
    assert check["Resource"] == "arn:aws:states:::lambda:invoke"
    assert check["Parameters"]["FunctionName"] == local.functions[CHECK_FUNCTION].arn
    assert definition["States"]["Write"]["Resource"].startswith("arn:aws:lambda:us-east-1:")
    assert local.workflows[SAMPLE_WORKFLOW].type == "EXPRESS"
    assert local.functions[CHECK_FUNCTION].environment["TABLE_NAME"] == "event-registration"
    assert local.functions[CHECK_FUNCTION].timeout == 10
    assert local.outputs["TableName"] == "event-registration"
    kwargs = local.table.create_table_kwargs()
    assert kwargs["BillingMode"] == "PAY_PER_REQUEST"
    assert kwargs["GlobalSecondaryIndexes"][0]["IndexName"] == "GSI1"


def test_template_resolves_fn_sub_and_refuses_unknown_intrinsics() -> None:
    template = sample_template()
    variables = template["Resources"][CHECK_FUNCTION]["Properties"]["Environment"]["Variables"]
    variables["QUEUE"] = {"Fn::Sub": "${AWS::Region}/${AWS::AccountId}/${!Literal}"}
    local = parse_template(template, workflow_outputs=SAMPLE_OUTPUTS)
    assert local.functions[CHECK_FUNCTION].environment["QUEUE"] == ("us-east-1/123456789012/${Literal}")

    variables["QUEUE"] = {"Fn::ImportValue": "Elsewhere"}
    with pytest.raises(TemplateError, match="Fn::ImportValue"):
        parse_template(template, workflow_outputs=SAMPLE_OUTPUTS)


# Engine ------------------------------------------------------------------------------


def test_handler_runs_in_process_and_writes_the_table(sample_engine: LocalEngine) -> None:
    assert sample_engine.seam is not None
    sample_engine.seam.client.record_invocations = True

    result = sample_engine.run(SAMPLE_WORKFLOW, {"id": "a1"})

    assert result.status == "SUCCEEDED", result
    assert result.output == {"id": "a1", "written": True}
    item = _item(sample_engine, "a1")
    assert item is not None
    invocations = sample_engine.seam.client.invocations
    assert [i.function for i in invocations] == [CHECK_FUNCTION, "WriteFunctionE5F6A7B8"]
    assert item["requestId"] == invocations[1].request_id


def test_exception_class_name_is_the_error_that_catch_matches(
    sample_engine: LocalEngine,
) -> None:
    # Check uses arn:aws:states:::lambda:invoke.
    result = sample_engine.run(SAMPLE_WORKFLOW, {"id": "b1", "fail": "check"})

    assert result.status == "FAILED"
    assert result.error == "SampleError"  # via Catch -> Fail state's ErrorPath
    assert result.cause is not None
    assert json.loads(result.cause)["errorMessage"] == "item b1 refused"
    events = sample_engine.history(result.execution_arn)
    failed = [e for e in events if e["type"] == "TaskFailed"]
    assert failed[0]["taskFailedEventDetails"]["error"] == "SampleError"
    assert "FailStateEntered" in _types(events)
    assert _item(sample_engine, "b1") is None


def test_direct_function_arn_resource_errors_are_matched_too(
    sample_engine: LocalEngine,
) -> None:
    result = sample_engine.run(SAMPLE_WORKFLOW, {"id": "c1", "fail": "write"})

    assert result.status == "FAILED"
    assert result.error == "SampleError"
    assert json.loads(result.cause or "{}")["errorMessage"] == "item c1 not written"
    events = sample_engine.history(result.execution_arn)
    failed = [e for e in events if e["type"] == "LambdaFunctionFailed"]
    assert failed[0]["lambdaFunctionFailedEventDetails"]["error"] == "SampleError"


def test_a_template_without_a_user_pool_starts_no_identity(sample_engine: LocalEngine) -> None:
    assert sample_engine.template.user_pool is None and sample_engine.identity is None


def test_retry_matches_the_exception_class_name(sample_engine: LocalEngine) -> None:
    # The first run leaves its parsed program in the pool: the retry below runs on a
    # reused program, whose attempt counters must start afresh.
    assert sample_engine.run(SAMPLE_WORKFLOW, {"id": "d0"}).succeeded
    result = sample_engine.run(SAMPLE_WORKFLOW, {"id": "d1", "flaky": True})

    assert result.status == "SUCCEEDED", result
    events = sample_engine.history(result.execution_arn)
    task_events = [e["type"] for e in events if e["type"].startswith("Task")]
    assert task_events.count("TaskFailed") == 1
    assert task_events.count("TaskSucceeded") == 1
    assert _item(sample_engine, "d1") is not None


def test_history_records_the_lambda_tasks(sample_engine: LocalEngine) -> None:
    result = sample_engine.run(SAMPLE_WORKFLOW, {"id": "e1"})
    events = sample_engine.history(result.execution_arn)
    types = _types(events)

    assert types[0] == "ExecutionStarted"
    assert types[-1] == "ExecutionSucceeded"
    for expected in ("TaskScheduled", "TaskSucceeded", "LambdaFunctionScheduled", "LambdaFunctionSucceeded"):
        assert expected in types
    scheduled = next(e for e in events if e["type"] == "TaskScheduled")
    assert json.loads(scheduled["taskScheduledEventDetails"]["parameters"])["Payload"] == {"id": "e1"}


def test_without_the_seam_no_handler_runs() -> None:
    # Proves the tests above depend on the seam: moto alone never runs our code.
    with LocalEngine(sample_template(), workflow_outputs=SAMPLE_OUTPUTS, use_seam=False) as engine:
        assert not lambda_seam.is_installed()
        ok = engine.run(SAMPLE_WORKFLOW, {"id": "f1"})
        refused = engine.run(SAMPLE_WORKFLOW, {"id": "f2", "fail": "check"})
        assert _item(engine, "f1") is None
    assert ok.output != {"id": "f1", "written": True}
    assert refused.status != "FAILED"


def test_many_concurrent_runs_from_threads(sample_engine: LocalEngine) -> None:
    ids = [f"g{i}" for i in range(24)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda i: sample_engine.run(SAMPLE_WORKFLOW, {"id": i}), ids))

    assert {r.status for r in results} == {"SUCCEEDED"}
    assert [r.output["id"] for r in results] == ids
    assert all(_item(sample_engine, i) is not None for i in ids)
    assert len({r.execution_arn for r in results}) == len(ids)


def test_more_executions_starting_at_once_than_the_pool_holds_never_parse_concurrently(
    sample_engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto's ASL preprocessor keeps state on its class and ANTLR shares its caches: two
    parses at once can kill an execution in the interpreter. With the pool empty, every
    execution of a burst parses; the parses must take turns."""
    from moto.stepfunctions.parser.asl.antlr.runtime.ASLIntrinsicParser import ASLIntrinsicParser
    from moto.stepfunctions.parser.asl.antlr.runtime.ASLParser import ASLParser

    active = 0
    most = 0
    counting = threading.Lock()

    def counted(original: Any) -> Any:
        def parse_rule(parser: Any) -> Any:
            nonlocal active, most
            with counting:
                active += 1
                most = max(most, active)
            try:
                time.sleep(0.005)  # widens the window two unguarded parses would overlap in
                return original(parser)
            finally:
                with counting:
                    active -= 1

        return parse_rule

    monkeypatch.setattr(ASLParser, "state_machine", counted(ASLParser.state_machine))
    monkeypatch.setattr(ASLIntrinsicParser, "func_decl", counted(ASLIntrinsicParser.func_decl))
    burst = 2 * PROGRAM_POOL_SIZE
    ready = threading.Barrier(burst)

    def run(i: int) -> Any:
        ready.wait()
        return sample_engine.run(SAMPLE_WORKFLOW, {"id": f"burst{i}"}, timeout=60)

    with ThreadPoolExecutor(max_workers=burst) as pool:
        results = list(pool.map(run, range(burst)))

    assert {r.status for r in results} == {"SUCCEEDED"}
    assert most == 1, f"{most} parses ran at once"


def test_start_wait_describe_and_list(sample_engine: LocalEngine) -> None:
    arn = sample_engine.start_execution(SAMPLE_WORKFLOW, {"id": "h1"}, name="named-run")
    assert arn.endswith(":named-run")
    result = sample_engine.wait(arn, timeout=10)

    assert result.name == "named-run"
    assert result.input == {"id": "h1"}
    assert result.stop_date is not None and result.stop_date >= result.start_date
    assert sample_engine.describe(arn) == result
    listed = sample_engine.list_executions(SAMPLE_WORKFLOW)
    assert [e["executionArn"] for e in listed] == [arn]
    assert sample_engine.list_executions(SAMPLE_WORKFLOW, status="FAILED") == []
    # A workflow can also be named by state machine logical id or ARN.
    assert sample_engine.state_machine_arn(STATE_MACHINE) == result.state_machine_arn
    with pytest.raises(KeyError, match="unknown workflow"):
        sample_engine.state_machine_arn("nope")


def test_wait_times_out_on_a_slow_execution() -> None:
    template = sample_template()
    check = template["Resources"][CHECK_FUNCTION]["Properties"]
    check["Handler"] = "tests.fixtures.sample_handlers.slow"
    with LocalEngine(template, workflow_outputs=SAMPLE_OUTPUTS) as engine:
        arn = engine.start_execution(SAMPLE_WORKFLOW, {"id": "i1", "seconds": 0.5})
        with pytest.raises(ExecutionTimeout):
            engine.wait(arn, timeout=0.05)
        assert engine.wait(arn, timeout=10).status == "SUCCEEDED"


def test_handlers_see_the_local_environment_and_close_restores_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://elsewhere:1")
    monkeypatch.delenv("TABLE_NAME", raising=False)
    template = sample_template()
    template["Resources"][CHECK_FUNCTION]["Properties"]["Handler"] = (
        "tests.fixtures.sample_handlers.describe_context"
    )
    with LocalEngine(template, workflow_outputs=SAMPLE_OUTPUTS, environment={"EXTRA": "1"}) as engine:
        assert os.environ["TABLE_NAME"] == "event-registration"
        assert os.environ["POWERTOOLS_TRACE_DISABLED"] == "true"
        assert os.environ["EXTRA"] == "1"
        # Moto mode: no endpoint, so boto3 in the handlers is intercepted by moto.
        assert "AWS_ENDPOINT_URL_DYNAMODB" not in os.environ
        assert engine.environment()["POWERTOOLS_SERVICE_NAME"] == "sample"
    assert os.environ["AWS_ENDPOINT_URL_DYNAMODB"] == "http://elsewhere:1"
    assert "TABLE_NAME" not in os.environ
    assert "EXTRA" not in os.environ
    assert not lambda_seam.is_installed()
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    assert ExecutionWorker._execution_logic.__module__ == ExecutionWorker.__module__
    assert ExecutionWorker._get_evaluation_entrypoint.__module__ == ExecutionWorker.__module__
    assert ExecutionWorker._get_evaluation_environment.__module__ == ExecutionWorker.__module__
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
        StateTaskServiceSfn,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager

    assert EventManager.add_event.__module__ == EventManager.__module__
    assert StateTaskServiceSfn._normalise_parameters.__module__ == StateTaskServiceSfn.__module__


def test_differing_function_variables_are_not_set(caplog: pytest.LogCaptureFixture) -> None:
    template = copy.deepcopy(sample_template())
    variables = template["Resources"][CHECK_FUNCTION]["Properties"]["Environment"]["Variables"]
    variables["POWERTOOLS_SERVICE_NAME"] = "other"
    engine = LocalEngine(template, workflow_outputs=SAMPLE_OUTPUTS)
    env = engine.environment()
    assert env["POWERTOOLS_SERVICE_NAME"] == "event-registration"
    assert "POWERTOOLS_SERVICE_NAME" in caplog.text


def test_prune_keeps_only_recent_finished_executions() -> None:
    with LocalEngine(sample_template(), workflow_outputs=SAMPLE_OUTPUTS, retain_executions=3) as engine:
        arns = [engine.run(SAMPLE_WORKFLOW, {"id": f"j{i}"}).execution_arn for i in range(6)]
        engine.prune_executions()
        listed = [e["executionArn"] for e in engine.list_executions(SAMPLE_WORKFLOW)]
    assert sorted(listed) == sorted(arns[-3:])


# The history quota -------------------------------------------------------------------


def _standard(definition: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sample stack with a Standard state machine (its own definition, or `definition`)."""
    template = sample_template()
    props = template["Resources"][STATE_MACHINE]["Properties"]
    props["StateMachineType"] = "STANDARD"
    if definition is not None:
        props["DefinitionString"] = json.dumps(definition)
    return template


# Four history events per item; 30 workers keep each one's (recursive) job loop short.
MAP_OF_PASSES = {
    "StartAt": "Each",
    "States": {
        "Each": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "MaxConcurrency": 30,
            "ResultPath": None,
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "Nothing",
                "States": {"Nothing": {"Type": "Pass", "Result": 0, "End": True}},
            },
            "End": True,
        }
    },
}


def test_a_standard_execution_fails_at_25000_history_events_as_on_aws() -> None:
    # AWS: when an execution has 24,999 events and the next is not ExecutionSucceeded,
    # event 25,000 is ExecutionFailed (States.Runtime) and the execution ends there.
    with LocalEngine(_standard(MAP_OF_PASSES), workflow_outputs=SAMPLE_OUTPUTS) as engine:
        result = engine.run(SAMPLE_WORKFLOW, {"items": [0] * 6300}, timeout=120)
        events = recorded_history(engine, result.execution_arn)

    assert (result.status, result.error, result.cause) == (
        "FAILED",
        "States.Runtime",
        "The execution reached the maximum number of history events (25000).",
    )
    assert [e["id"] for e in events] == list(range(1, 25_001))
    last = events[-1]
    assert (last["type"], last["previousEventId"]) == ("ExecutionFailed", 24_999)
    assert last["executionFailedEventDetails"] == {"error": result.error, "cause": result.cause}
    assert _types(events).count("ExecutionFailed") == 1


def test_the_last_event_of_a_full_history_may_still_be_success() -> None:
    with LocalEngine(_standard(MAP_OF_PASSES), workflow_outputs=SAMPLE_OUTPUTS, history_limit=None) as engine:
        whole = engine.run(SAMPLE_WORKFLOW, {"items": [0] * 10})
        size = len(engine.history(whole.execution_arn))

        engine.history_limit = size
        exact = engine.run(SAMPLE_WORKFLOW, {"items": [0] * 10})
        engine.history_limit = size - 1
        short = engine.run(SAMPLE_WORKFLOW, {"items": [0] * 10})
        short_events = engine.history(short.execution_arn)

    assert whole.succeeded and exact.succeeded and exact.output == whole.output
    assert (short.status, short.error) == ("FAILED", "States.Runtime")
    assert short.cause == f"The execution reached the maximum number of history events ({size - 1})."
    assert len(short_events) == size - 1 and short_events[-1]["type"] == "ExecutionFailed"


def test_no_task_runs_once_the_history_is_full() -> None:
    with LocalEngine(_standard(), workflow_outputs=SAMPLE_OUTPUTS, history_limit=None) as engine:
        whole = engine.run(SAMPLE_WORKFLOW, {"id": "q1"})
        events = engine.history(whole.execution_arn)
        assert whole.succeeded and _item(engine, "q1") is not None
        # The write task's scheduling event: the one the history has no room for.
        (scheduled,) = [e for e in events if e["type"] == "LambdaFunctionScheduled"]

        engine.history_limit = scheduled["id"]
        cut = engine.run(SAMPLE_WORKFLOW, {"id": "q2"})
        cut_events = engine.history(cut.execution_arn)

        assert (cut.status, cut.error) == ("FAILED", "States.Runtime")
        assert _item(engine, "q2") is None  # the write never ran
        assert _types(cut_events) == [*_types(events)[: scheduled["id"] - 1], "ExecutionFailed"]


def test_express_executions_have_no_history_limit() -> None:
    with LocalEngine(sample_template(), workflow_outputs=SAMPLE_OUTPUTS, history_limit=3) as engine:
        result = engine.run(SAMPLE_WORKFLOW, {"id": "x1"})
        events = engine.history(result.execution_arn)
    assert result.succeeded
    assert len(events) > 3


def test_a_task_starts_an_execution_as_on_aws() -> None:
    # ASL spells the parameters and the result in Pascal case, the API in camel case.
    definition = {
        "StartAt": "Child?",
        "States": {
            "Child?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.child", "IsPresent": True, "Next": "Done"}],
                "Default": "StartChild",
            },
            "StartChild": {
                "Type": "Task",
                "Resource": "arn:aws:states:::states:startExecution",
                "Parameters": {
                    "StateMachineArn.$": "$$.StateMachine.Id",
                    "Name.$": "States.Format('{}-child', $$.Execution.Name)",
                    "Input": {"child.$": "$$.Execution.Name"},
                },
                "End": True,
            },
            "Done": {"Type": "Succeed"},
        },
    }
    with LocalEngine(_standard(definition), workflow_outputs=SAMPLE_OUTPUTS) as engine:
        parent = engine.run(SAMPLE_WORKFLOW, {}, name="parent")
        assert parent.succeeded, parent.cause
        assert set(parent.output) == {"ExecutionArn", "StartDate"}
        child = engine.wait(parent.output["ExecutionArn"])
    assert (child.name, child.input, child.status) == ("parent-child", {"child": "parent"}, "SUCCEEDED")
