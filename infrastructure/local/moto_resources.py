"""The template's role, functions and state machines, registered in moto.

moto's Step Functions interpreter runs only state machines it holds, and its Lambda
task integration invokes only functions it holds; these are created from the resolved
template when the engine starts. Apart from the engine, which runs them, so that the
engine reads as its life cycle and its executions.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from typing import Any

from infrastructure.local.execution_results import EngineError
from infrastructure.local.template_specs import FunctionSpec, StateMachineSpec

LOCAL_ROLE_NAME = "local-engine-role"


def _code_zip() -> bytes:
    # moto wants a deployment package; the code that runs is the handler module.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


def create_role(iam: Any) -> str:
    """The role moto's functions are created with (and its state machines, when IAM is not
    enforced); returns its ARN."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    # IAM is global to moto's account: a second engine in the process (in another
    # region) shares the role.
    try:
        role = iam.create_role(RoleName=LOCAL_ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName=LOCAL_ROLE_NAME)
    arn: str = role["Role"]["Arn"]
    return arn


def create_functions(client: Any, functions: Iterable[FunctionSpec], role_arn: str) -> None:
    code = _code_zip()
    for function in functions:
        client.create_function(
            FunctionName=function.name,
            Runtime=function.runtime,
            Role=role_arn,
            Handler=function.handler,
            Code={"ZipFile": code},
            Timeout=function.timeout,
            MemorySize=function.memory_size,
            Environment={"Variables": function.environment},
        )


def create_state_machines(
    sfn: Any,
    backend: Any,
    state_machines: Iterable[StateMachineSpec],
    role_arn: str,
    *,
    template_roles: bool,
) -> None:
    """Create each state machine under the ARN the template resolves it to.

    ``template_roles``: executions run as the template's role (see iam), when IAM is
    enforced; otherwise, and for a state machine without one, as ``role_arn``.
    """
    for spec in state_machines:
        execution_role = spec.role_arn if template_roles and spec.role_arn else role_arn
        response = sfn.create_state_machine(
            name=spec.name, definition=spec.definition, roleArn=execution_role, type=spec.type
        )
        if response["stateMachineArn"] != spec.arn:
            raise EngineError(
                f"{spec.logical_id}: moto named it {response['stateMachineArn']}, "
                f"the template resolves it to {spec.arn}"
            )
        # moto records the type but runs every execution as STANDARD
        # (`StateMachineInstance.sm_type`); its executions copy this attribute.
        from moto.stepfunctions.parser.api import StateMachineType

        backend.describe_state_machine(spec.arn).sm_type = StateMachineType(spec.type)
