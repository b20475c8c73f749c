"""The local engine enforces Step Functions' and Lambda's quotas as AWS does.

Each default is AWS's number, pinned here by what the engine does with a payload, a
name or a handler at the limit and just past it; tests that only need a limit to bite
lower it on their own engine.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError

from infrastructure.local.engine import LocalEngine
from infrastructure.local.execution_quotas import payload_size
from tests.fixtures.sample_template import (
    CHECK_FUNCTION,
    SAMPLE_OUTPUTS,
    SAMPLE_WORKFLOW,
    STATE_MACHINE,
    sample_template,
)

pytest_plugins = ["tests.fixtures.plugin"]

# Step Functions: "Maximum input or output size for a task, state, or execution:
# 256 KiB of data as a UTF-8 encoded string".
AWS_PAYLOAD_LIMIT = 256 * 1024
# StartExecution: "name ... Length Constraints: Minimum length of 1. Maximum length of 80."
AWS_NAME_LIMIT = 80
# Express workflows: "Maximum duration: 5 minutes".
AWS_EXPRESS_LIMIT_S = 5 * 60

# A Pass state whose output is its input plus a few bytes.
GROW = {
    "StartAt": "Grow",
    "States": {"Grow": {"Type": "Pass", "Parameters": {"pad.$": "$.pad", "extra": "x"}, "End": True}},
}
GROWN_BY = payload_size({"pad": "", "extra": "x"}) - payload_size({"pad": ""})


def _template(definition: Mapping[str, Any], state_machine_type: str = "EXPRESS") -> dict[str, Any]:
    template = sample_template()
    props = template["Resources"][STATE_MACHINE]["Properties"]
    props["DefinitionString"] = json.dumps(definition)
    props["StateMachineType"] = state_machine_type
    return template


@contextmanager
def _engine(
    definition: Mapping[str, Any], state_machine_type: str = "EXPRESS", **limits: Any
) -> Iterator[LocalEngine]:
    with LocalEngine(
        _template(definition, state_machine_type), workflow_outputs=SAMPLE_OUTPUTS, **limits
    ) as engine:
        yield engine


def _padded(total_bytes: int, char: str = "a") -> dict[str, str]:
    """`{"pad": ...}` whose compact UTF-8 JSON is `total_bytes` long."""
    room = total_bytes - payload_size({"pad": ""})
    width = len(char.encode("utf-8"))
    assert room % width == 0
    document = {"pad": char * (room // width)}
    assert payload_size(document) == total_bytes
    return document


def _start_error(engine: LocalEngine, execution_input: Any, name: str | None = None) -> dict[str, Any]:
    with pytest.raises(ClientError) as raised:
        engine.start_execution(SAMPLE_WORKFLOW, execution_input, name=name)
    error: dict[str, Any] = raised.value.response["Error"]
    return error


# --- payload size -------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["a", "é"])
def test_a_state_output_over_256_kib_fails_the_execution(char: str) -> None:
    with _engine(GROW) as engine:
        fits = engine.run(SAMPLE_WORKFLOW, _padded(AWS_PAYLOAD_LIMIT - GROWN_BY, char))
        over = engine.run(SAMPLE_WORKFLOW, _padded(AWS_PAYLOAD_LIMIT - GROWN_BY + len(char.encode()), char))

    assert fits.status == "SUCCEEDED", fits
    assert payload_size(fits.output) == AWS_PAYLOAD_LIMIT
    assert (over.status, over.error) == ("FAILED", "States.DataLimitExceeded")
    assert "Grow" in (over.cause or "")


def test_start_execution_refuses_an_input_over_256_kib() -> None:
    with _engine({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}) as engine:
        accepted = engine.run(SAMPLE_WORKFLOW, _padded(AWS_PAYLOAD_LIMIT))
        error = _start_error(engine, _padded(AWS_PAYLOAD_LIMIT + 1))

    assert accepted.status == "SUCCEEDED"
    assert error["Code"] == "ValidationException"
    assert "'input'" in error["Message"] and str(AWS_PAYLOAD_LIMIT) in error["Message"]


def test_the_payload_limit_is_the_engines_to_lower() -> None:
    with _engine(GROW, max_payload_bytes=1000) as engine:
        assert engine.run(SAMPLE_WORKFLOW, _padded(1000 - GROWN_BY)).succeeded
        assert engine.run(SAMPLE_WORKFLOW, _padded(1001 - GROWN_BY)).error == "States.DataLimitExceeded"
        assert _start_error(engine, _padded(1001))["Code"] == "ValidationException"


# Long enough that a loaded machine's slow run is not mistaken for a retry.
RETRY_INTERVAL_S = 10


def test_states_all_neither_catches_nor_retries_data_limit_exceeded() -> None:
    """AWS: States.ALL does not match the terminal States.DataLimitExceeded; its own name does."""

    def wrapped(errors: list[str], retry: bool) -> dict[str, Any]:
        run: dict[str, Any] = {
            "Type": "Parallel",
            "Branches": [copy.deepcopy(GROW)],
            "Catch": [{"ErrorEquals": errors, "ResultPath": None, "Next": "Caught"}],
            "End": True,
        }
        if retry:
            run["Retry"] = [{"ErrorEquals": errors, "MaxAttempts": 2, "IntervalSeconds": RETRY_INTERVAL_S}]
        caught = {"Type": "Pass", "Result": {"caught": True}, "End": True}
        return {"StartAt": "Run", "States": {"Run": run, "Caught": caught}}

    too_big = _padded(AWS_PAYLOAD_LIMIT - GROWN_BY + 1)
    with _engine(wrapped(["States.ALL"], retry=True)) as engine:
        started = time.monotonic()
        wildcard = engine.run(SAMPLE_WORKFLOW, too_big)
        unretried = time.monotonic() - started
    with _engine(wrapped(["States.DataLimitExceeded"], retry=False)) as engine:
        named = engine.run(SAMPLE_WORKFLOW, too_big)

    assert (wildcard.status, wildcard.error) == ("FAILED", "States.DataLimitExceeded")
    assert unretried < RETRY_INTERVAL_S  # the retrier's interval never elapsed
    assert (named.status, named.output) == ("SUCCEEDED", {"caught": True})


# --- execution names ----------------------------------------------------------------------


def test_execution_names_follow_step_functions_rules() -> None:
    with _engine({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}) as engine:
        longest = engine.start_execution(SAMPLE_WORKFLOW, {}, name="n" * AWS_NAME_LIMIT)
        too_long = _start_error(engine, {}, name="n" * (AWS_NAME_LIMIT + 1))
        refused = {
            name: _start_error(engine, {}, name=name)["Code"] for name in ("a b", "a/b", "a:b", "x\u0007")
        }

    assert longest.endswith(":" + "n" * AWS_NAME_LIMIT)
    assert too_long["Code"] == "ValidationException"
    assert "'name'" in too_long["Message"]
    assert set(refused.values()) == {"InvalidName"}


def test_the_name_limit_is_the_engines_to_lower() -> None:
    with _engine(
        {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}, max_execution_name_length=5
    ) as engine:
        assert engine.start_execution(SAMPLE_WORKFLOW, {}, name="abcde")
        assert _start_error(engine, {}, name="abcdef")["Code"] == "ValidationException"


def test_malformed_input_is_invalid_execution_input() -> None:
    with _engine({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}) as engine:
        sfn = engine._require_started()
        with pytest.raises(ClientError) as raised:
            sfn.start_execution(
                stateMachineArn=engine.state_machine_arn(SAMPLE_WORKFLOW), name="m", input="{no"
            )
    assert raised.value.response["Error"]["Code"] == "InvalidExecutionInput"


# --- Express duration ---------------------------------------------------------------------

WAIT = {"StartAt": "W", "TimeoutSeconds": 3600, "States": {"W": {"Type": "Wait", "Seconds": 2, "End": True}}}


def test_an_express_execution_stops_at_the_express_limit_whatever_its_timeout_says() -> None:
    with _engine(WAIT, express_max_duration_s=0.3) as engine:
        started = time.monotonic()
        result = engine.run(SAMPLE_WORKFLOW, {})
        took = time.monotonic() - started
        # moto sets the status before it appends the last event: on a busy machine the
        # history may lag the status by a moment, as AWS's may.
        deadline = time.monotonic() + 5
        history = [event["type"] for event in engine.history(result.execution_arn)]
        while history[-1] != "ExecutionTimedOut" and time.monotonic() < deadline:
            time.sleep(0.05)
            history = [event["type"] for event in engine.history(result.execution_arn)]

    assert result.status == "TIMED_OUT"
    assert took < 1.5
    assert history[-1] == "ExecutionTimedOut"


def test_a_standard_execution_is_not_held_to_the_express_limit() -> None:
    with _engine(WAIT, "STANDARD", express_max_duration_s=0.3) as engine:
        assert engine.run(SAMPLE_WORKFLOW, {}).status == "SUCCEEDED"


@pytest.mark.parametrize(
    ("state_machine_type", "declared", "limit"),
    [
        ("EXPRESS", 3600, AWS_EXPRESS_LIMIT_S),
        ("EXPRESS", None, AWS_EXPRESS_LIMIT_S),
        ("EXPRESS", 26, 26),
        ("STANDARD", 3600, 3600),
        ("STANDARD", None, None),
    ],
)
def test_the_execution_time_limit_by_default(
    state_machine_type: str, declared: int | None, limit: float | None
) -> None:
    """AWS accepts an Express state machine with a longer TimeoutSeconds and stops its
    executions after five minutes."""
    definition: dict[str, Any] = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    if declared is not None:
        definition["TimeoutSeconds"] = declared
    engine = LocalEngine(_template(definition, state_machine_type), workflow_outputs=SAMPLE_OUTPUTS)
    assert engine.execution_time_limit(SAMPLE_WORKFLOW) == limit


# --- Lambda timeout -----------------------------------------------------------------------


def test_a_handler_slower_than_its_functions_timeout_fails_as_lambda_does() -> None:
    """The template's Timeout (1 s, Lambda's smallest) is the function's timeout."""
    template = sample_template()
    check = template["Resources"][CHECK_FUNCTION]["Properties"]
    check["Handler"] = "tests.fixtures.sample_handlers.slow"
    check["Timeout"] = 1
    with LocalEngine(template, workflow_outputs=SAMPLE_OUTPUTS) as engine:
        started = time.monotonic()
        slow = engine.run(SAMPLE_WORKFLOW, {"id": "t1", "seconds": 3})
        took = time.monotonic() - started
        quick = engine.run(SAMPLE_WORKFLOW, {"id": "t2", "seconds": 0.1})
        failed = [
            e["taskFailedEventDetails"]
            for e in engine.history(slow.execution_arn)
            if e["type"] == "TaskFailed"
        ]

    assert (slow.status, slow.error) == ("FAILED", "Sandbox.Timedout")
    assert took < 2.5  # the execution did not wait for the handler's 3 s
    assert json.loads(failed[0]["cause"])["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert quick.status == "SUCCEEDED"


def test_time_scale_stretches_every_time_limit_for_a_slower_machine() -> None:
    template = sample_template()
    check = template["Resources"][CHECK_FUNCTION]["Properties"]
    check["Handler"] = "tests.fixtures.sample_handlers.slow"
    check["Timeout"] = 1
    with LocalEngine(template, workflow_outputs=SAMPLE_OUTPUTS, time_scale=2) as engine:
        # 1.3 s of work within a 1 s function timeout, on a machine twice as slow as AWS.
        assert engine.run(SAMPLE_WORKFLOW, {"id": "s1", "seconds": 1.3}).status == "SUCCEEDED"
    assert LocalEngine(_template(WAIT), workflow_outputs=SAMPLE_OUTPUTS, time_scale=2).execution_time_limit(
        SAMPLE_WORKFLOW
    ) == (2 * AWS_EXPRESS_LIMIT_S)
    waiting = {**WAIT, "TimeoutSeconds": 1}
    with _engine(waiting, time_scale=0.25) as engine:  # the Wait's 2 s outlast 0.25 x 1 s
        assert engine.run(SAMPLE_WORKFLOW, {}).status == "TIMED_OUT"
    short_task = {
        "StartAt": "Slow",
        "States": {
            "Slow": {
                "Type": "Task",
                "Resource": f"arn:aws:lambda:us-east-1:123456789012:function:{CHECK_FUNCTION}",
                "TimeoutSeconds": 1,
                "End": True,
            }
        },
    }
    template = _template(short_task)
    template["Resources"][CHECK_FUNCTION]["Properties"].update(
        Handler="tests.fixtures.sample_handlers.slow", Timeout=5
    )
    with LocalEngine(template, workflow_outputs=SAMPLE_OUTPUTS, time_scale=0.3) as engine:
        # The state's TimeoutSeconds too: 0.3 s, before the handler's 0.6 s.
        result = engine.run(SAMPLE_WORKFLOW, {"seconds": 0.6})
    assert (result.status, result.error) == ("FAILED", "States.Timeout")
