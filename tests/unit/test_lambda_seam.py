"""The seam that runs Lambda handlers in-process for moto's Step Functions interpreter."""

from __future__ import annotations

import importlib
import json
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from infrastructure.local import lambda_seam
from infrastructure.local.lambda_seam import (
    PATCH_ATTRIBUTE,
    PATCH_MODULE,
    LambdaSeam,
    LocalFunction,
    LocalLambdaClient,
)
from tests.fixtures import sample_handlers

HANDLERS = "tests.fixtures.sample_handlers"


def _functions(**handlers: str) -> dict[str, LocalFunction]:
    return {
        name: LocalFunction(name=name, handler=f"{HANDLERS}.{handler}", timeout=7, memory_size=512)
        for name, handler in handlers.items()
    }


def _invoke(client: LocalLambdaClient, name: str, event: Any) -> tuple[dict[str, Any], Any]:
    response = client.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    return response, json.loads(response["Payload"].read())


def _moto_client_for() -> Any:
    return getattr(importlib.import_module(PATCH_MODULE), PATCH_ATTRIBUTE)


def test_invoke_calls_the_handler_with_event_and_context() -> None:
    client = LocalLambdaClient(_functions(Ctx="describe_context"))
    response, payload = _invoke(client, "Ctx", {"id": "x"})

    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert payload["event"] == {"id": "x"}
    assert payload["function_name"] == "Ctx"
    assert payload["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:Ctx"
    assert payload["memory_limit_in_mb"] == 512
    assert payload["aws_request_id"]
    assert 0 < payload["remaining_ms"] <= 7000


@pytest.mark.parametrize(
    "function_name",
    [
        "Ctx",
        "arn:aws:lambda:us-east-1:123456789012:function:Ctx",
        "arn:aws:lambda:us-east-1:123456789012:function:Ctx:$LATEST",
        "123456789012:function:Ctx",
    ],
)
def test_invoke_accepts_names_and_arns(function_name: str) -> None:
    client = LocalLambdaClient(_functions(Ctx="describe_context"))
    response, payload = _invoke(client, function_name, {})
    assert response["StatusCode"] == 200
    assert payload["function_name"] == "Ctx"


def test_exception_becomes_an_unhandled_function_error_named_after_its_class() -> None:
    client = LocalLambdaClient(_functions(Check="check"))
    response, payload = _invoke(client, "Check", {"id": "7", "fail": "check"})

    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "SampleError"
    assert payload["errorMessage"] == "item 7 refused"
    assert any("sample_handlers.py" in frame for frame in payload["stackTrace"])
    assert not any("lambda_seam.py" in frame for frame in payload["stackTrace"])


@pytest.mark.parametrize(
    ("handler", "error_type"),
    [
        ("missing_module.handler", "Runtime.ImportModuleError"),
        (f"{HANDLERS}.no_such_handler", "Runtime.HandlerNotFound"),
        (f"{HANDLERS}.unserializable", "Runtime.MarshalError"),
    ],
)
def test_runtime_errors_use_the_lambda_runtime_names(handler: str, error_type: str) -> None:
    client = LocalLambdaClient({"F": LocalFunction(name="F", handler=handler)})
    response, payload = _invoke(client, "F", {})
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == error_type


def test_unknown_function_is_a_resource_not_found_client_error() -> None:
    client = LocalLambdaClient(_functions(Check="check"))
    with pytest.raises(ClientError) as raised:
        client.invoke(FunctionName="Nope", Payload=b"{}")
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_invocations_can_be_recorded() -> None:
    client = LocalLambdaClient(_functions(Check="check"))
    client.record_invocations = True
    _invoke(client, "Check", {"id": "1"})
    _invoke(client, "Check", {"id": "2", "fail": "check"})
    assert [(i.function, i.error_type) for i in client.invocations] == [
        ("Check", None),
        ("Check", "SampleError"),
    ]


def test_seam_patches_moto_only_while_active_and_restores_the_original() -> None:
    original = _moto_client_for()
    seam = LambdaSeam(_functions(Check="check"))
    assert not lambda_seam.is_installed()

    with seam:
        assert lambda_seam.is_installed()
        assert seam.active
        lambda_client = _moto_client_for()(region="us-east-1", service="lambda")
        response, payload = _invoke(lambda_client, "Check", {"id": "1"})
        assert payload["id"] == "1"
        assert response["StatusCode"] == 200

    assert not lambda_seam.is_installed()
    assert _moto_client_for() is original


def test_other_services_still_get_moto_clients() -> None:
    with LambdaSeam(_functions(Check="check")):
        client = _moto_client_for()(region="us-east-1", service="sqs")
    assert client.meta.service_model.service_name == "sqs"


def test_nested_seams_route_each_function_and_unwind_in_any_order() -> None:
    original = _moto_client_for()
    outer = LambdaSeam(_functions(Outer="describe_context")).start()
    inner = LambdaSeam(_functions(Inner="describe_context")).start()
    try:
        client = _moto_client_for()(region="us-east-1", service="lambda")
        assert _invoke(client, "Outer", {})[1]["function_name"] == "Outer"
        assert _invoke(client, "Inner", {})[1]["function_name"] == "Inner"
        outer.stop()
        assert lambda_seam.is_installed()
        with pytest.raises(ClientError):
            client.invoke(FunctionName="Outer", Payload=b"{}")
    finally:
        inner.stop()
        outer.stop()
    assert _moto_client_for() is original


# --- timeout ---------------------------------------------------------------------------


def test_a_handler_that_outlives_its_timeout_fails_as_lambda_reports_it() -> None:
    """The caller stops waiting at the function's timeout; the handler's thread may go on."""
    client = LocalLambdaClient({"Slow": LocalFunction(name="Slow", handler=f"{HANDLERS}.slow", timeout=0.2)})
    client.record_invocations = True
    started = time.monotonic()
    response, payload = _invoke(client, "Slow", {"seconds": 1.0})
    took = time.monotonic() - started

    assert took < 0.8
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Sandbox.Timedout"
    assert payload["errorMessage"].startswith("RequestId: ")
    assert payload["errorMessage"].endswith("Error: Task timed out after 0.20 seconds")
    assert [i.error_type for i in client.invocations] == ["Sandbox.Timedout"]
    # Within its time, the same handler answers.
    assert _invoke(client, "Slow", {"seconds": 0.01})[1] == {"seconds": 0.01}


def test_the_handler_sees_the_callers_context_variables() -> None:
    client = LocalLambdaClient(_functions(Who="caller"))
    token = sample_handlers.CALLER.set("the-workflow")
    try:
        assert _invoke(client, "Who", {})[1] == {"caller": "the-workflow"}
    finally:
        sample_handlers.CALLER.reset(token)
