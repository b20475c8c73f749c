"""Synthesize the stack once per test session and share the result."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from infrastructure import names

# A made-up account and region to turn `Fn::GetAtt` Lambda ARNs into literal ARNs.
FAKE_ARN_PREFIX = f"arn:aws:lambda:{names.LOCAL_REGION}:{names.LOCAL_ACCOUNT}:function:"
# An existing user pool given as context, in another region than the stack's (whose
# region is a deploy-time value).
EXISTING_POOL_ID = "eu-west-1_AbCdEf123"
EXISTING_CLIENT_ID = "1example23456789abcdefghij"
# Its ARN as the stack resolves it.
EXISTING_POOL_ARN = {
    "Fn::Join": [
        "",
        [
            "arn:",
            {"Ref": "AWS::Partition"},
            ":cognito-idp:eu-west-1:",
            {"Ref": "AWS::AccountId"},
            f":userpool/{EXISTING_POOL_ID}",
        ],
    ]
}


@dataclass(frozen=True)
class Synthesized:
    """The synthesized stack: an assertions `Template` and the raw template dict."""

    template: Any  # aws_cdk.assertions.Template (imported lazily: importing CDK is slow)
    raw: dict[str, Any]
    outdir: Path
    _definitions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.raw["Resources"].items()
            if resource["Type"] == resource_type
        }

    def output_ref(self, output_name: str) -> str:
        """Logical id of the resource an output refers to (`Ref`)."""
        ref: str = self.raw["Outputs"][output_name]["Value"]["Ref"]
        return ref

    def definition_string(self, state_machine_id: str) -> str:
        """The state machine's ASL with every `Fn::GetAtt [X, Arn]` replaced by
        `arn:aws:lambda:<region>:<account>:function:X` (and the partition by `aws`)."""
        resource = self.raw["Resources"][state_machine_id]
        return resolve_join(resource["Properties"]["DefinitionString"])

    def definition(self, state_machine_id: str) -> dict[str, Any]:
        if state_machine_id not in self._definitions:
            self._definitions[state_machine_id] = json.loads(self.definition_string(state_machine_id))
        return self._definitions[state_machine_id]


def resolve_join(value: Any) -> str:
    """Resolve the `Fn::Join` CDK emits around a state machine definition."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(resolve_join(part) for part in parts)
    if "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        if attribute != "Arn":
            raise ValueError(f"unexpected attribute in definition: {value}")
        return FAKE_ARN_PREFIX + str(logical_id)
    if value == {"Ref": "AWS::Partition"}:  # service integrations' resources
        return "aws"
    raise ValueError(f"unexpected intrinsic in definition: {value}")


def function_id_from_arn(arn: str) -> str:
    assert arn.startswith(FAKE_ARN_PREFIX), arn
    return arn[len(FAKE_ARN_PREFIX) :]


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    from aws_cdk.assertions import Template

    from infrastructure.app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(outdir=outdir)
    assembly = app.synth()
    template_path = Path(assembly.get_stack_by_name(stack.stack_name).template_full_path)
    raw = json.loads(template_path.read_text(encoding="utf-8"))
    yield Synthesized(template=Template.from_json(raw), raw=raw, outdir=outdir)


@pytest.fixture(scope="session")
def with_existing_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Any]]:
    """The whole app synthesized once with `-c userPoolId=... -c userPoolClientId=...`:
    (the raw template, the stack)."""
    from infrastructure.app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out.existing-pool")
    app, stack = build_app(
        outdir=outdir,
        context={
            names.USER_POOL_ID_CONTEXT: EXISTING_POOL_ID,
            names.USER_POOL_CLIENT_ID_CONTEXT: EXISTING_CLIENT_ID,
        },
    )
    assembly = app.synth()
    path = Path(assembly.get_stack_by_name(stack.stack_name).template_full_path)
    yield json.loads(path.read_text(encoding="utf-8")), stack


@pytest.fixture(scope="session")
def template(synthesized: Synthesized) -> Any:
    return synthesized.template


@pytest.fixture(scope="session")
def state_machine_ids(synthesized: Synthesized) -> dict[str, str]:
    """Workflow identifier -> logical id of its state machine (via the stack outputs)."""
    return {workflow: synthesized.output_ref(output) for workflow, output in names.WORKFLOW_OUTPUTS.items()}


@pytest.fixture(scope="session")
def function_ids(synthesized: Synthesized) -> dict[str, str]:
    """Task name (as in `names.TASK_HANDLERS`) -> logical id of its function."""
    by_handler = {
        resource["Properties"]["Handler"]: logical_id
        for logical_id, resource in synthesized.resources("AWS::Lambda::Function").items()
    }
    return {task: by_handler[handler] for task, handler in names.TASK_HANDLERS.items()}
