"""The Step Functions service integration (`arn:aws:states:::states:startExecution`) as AWS
runs it.

ASL names the API's parameters in Pascal case (`StateMachineArn`, `Name`, `Input`) and
the task's result likewise (`ExecutionArn`, `StartDate`); the Step Functions API itself
(and so boto3) spells them `stateMachineArn`, `executionArn`. LocalStack, whose
interpreter moto ported, translates both ways through the API's shapes; moto 5.2.5 left
that step out (`StateTaskService._normalise_parameters` is a no-op), so boto3 drops
every parameter and the task fails with `States.Runtime` ("'StateMachineArn'"). This
puts the translation back for the Step Functions integration only, with botocore's own
service model (and makes the result JSON: boto3's datetimes would break the execution's
output).
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from infrastructure.local.patching import Patches, Replacement


@functools.lru_cache(maxsize=8)
def _operation(service: str, action: str) -> Any:
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    for name in model.operation_names:
        if xform_name(name) == action:
            return model.operation_model(name)
    raise KeyError(f"{service} has no operation {action}")


def _task_operation(task: Any, boto_service_name: str | None, service_action_name: str | None) -> Any:
    """The botocore operation a Step Functions service task calls."""
    return _operation(
        task._get_boto_service_name(boto_service_name), task._get_boto_service_action(service_action_name)
    )


def _dates_as_numbers(value: Any) -> None:
    """A task's result is JSON, which has no dates: boto3's datetimes become epoch
    milliseconds (the `.sync` results AWS's documentation shows carry `StartDate` so)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in list(items):
        if isinstance(item, dt.datetime):
            value[key] = int(item.timestamp() * 1000)
        else:
            _dates_as_numbers(item)


def _replacements() -> list[Replacement]:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
        StateTaskServiceSfn,
    )

    original_parameters = StateTaskServiceSfn._normalise_parameters
    original_response = StateTaskServiceSfn._normalise_response

    # The argument names are moto's: its callers pass them by keyword too.
    def _normalise_parameters(
        task: Any,
        parameters: dict[str, Any],
        boto_service_name: str | None = None,
        service_action_name: str | None = None,
    ) -> None:
        # moto's own step first: `Input` as JSON text.
        original_parameters(task, parameters, boto_service_name, service_action_name)
        operation = _task_operation(task, boto_service_name, service_action_name)
        task._to_boto_request(parameters, operation.input_shape)

    def _normalise_response(
        task: Any,
        response: Any,
        boto_service_name: str | None = None,
        service_action_name: str | None = None,
    ) -> None:
        original_response(task, response, boto_service_name, service_action_name)
        operation = _task_operation(task, boto_service_name, service_action_name)
        if operation.output_shape is not None:
            task._from_boto_response(response, operation.output_shape)
        _dates_as_numbers(response)

    return [
        (StateTaskServiceSfn, "_normalise_parameters", _normalise_parameters),
        (StateTaskServiceSfn, "_normalise_response", _normalise_response),
    ]


# Installs the fix (process-wide, reference counted).
StatesIntegration = Patches(_replacements)
