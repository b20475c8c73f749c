"""CloudFormation's intrinsic functions, evaluated against the local physical ids.

Only the functions and attributes CDK actually emits for this stack are resolved;
anything else raises :class:`TemplateError`, so a template change the engine cannot
honour fails loudly instead of running a silently different workflow. Apart from
:mod:`infrastructure.local.template`, which applies the resolver to each resource it
reads, because what a ``Ref`` or an ``Fn::GetAtt`` names locally is one question of its
own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from infrastructure import names

TABLE_TYPES = ("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable")
FUNCTION_TYPE = "AWS::Lambda::Function"
STATE_MACHINE_TYPE = "AWS::StepFunctions::StateMachine"
ROLE_TYPE = "AWS::IAM::Role"
EVENT_BUS_TYPE = "AWS::Events::EventBus"
QUEUE_TYPE = "AWS::SQS::Queue"
PIPE_TYPE = "AWS::Pipes::Pipe"


class TemplateError(ValueError):
    """The template holds something the local engine cannot reproduce."""


class _NoValue:
    """``AWS::NoValue``: the property is dropped."""


NO_VALUE = _NoValue()


class Resolver:
    """Evaluates CloudFormation intrinsic functions against local physical ids."""

    PSEUDO_PARAMETERS = (
        "AWS::Region",
        "AWS::AccountId",
        "AWS::Partition",
        "AWS::URLSuffix",
        "AWS::StackName",
        "AWS::StackId",
        "AWS::NoValue",
    )

    def __init__(
        self,
        resources: Mapping[str, Mapping[str, Any]],
        *,
        region: str,
        account: str,
        table_name: str,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        self.resources = resources
        self.region = region
        self.account = account
        self.table_name = table_name
        self.parameters = dict(parameters or {})
        self._names: dict[str, str] = {}

    # Physical names -------------------------------------------------------------

    def _type(self, logical_id: str) -> str:
        resource = self.resources.get(logical_id)
        if resource is None:
            raise TemplateError(f"reference to unknown resource {logical_id!r}")
        resource_type: str = resource.get("Type", "")
        return resource_type

    def _explicit_name(self, logical_id: str, prop: str, limit: int) -> str:
        if logical_id not in self._names:
            value = self.resources[logical_id].get("Properties", {}).get(prop)
            name = self.resolve(value) if value is not None else logical_id[:limit]
            if not isinstance(name, str):
                raise TemplateError(f"{logical_id}.{prop} does not resolve to a string")
            self._names[logical_id] = name
        return self._names[logical_id]

    def function_name(self, logical_id: str) -> str:
        return self._explicit_name(logical_id, "FunctionName", 64)

    def function_arn(self, logical_id: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{self.function_name(logical_id)}"

    def state_machine_name(self, logical_id: str) -> str:
        return self._explicit_name(logical_id, "StateMachineName", 80)

    def state_machine_arn(self, logical_id: str) -> str:
        return (
            f"arn:aws:states:{self.region}:{self.account}:stateMachine:{self.state_machine_name(logical_id)}"
        )

    def role_arn(self, logical_id: str) -> str:
        return f"arn:aws:iam::{self.account}:role/{self._explicit_name(logical_id, 'RoleName', 64)}"

    def event_bus_name(self, logical_id: str) -> str:
        return self._explicit_name(logical_id, "Name", 256)

    def event_bus_arn(self, logical_id: str) -> str:
        return f"arn:aws:events:{self.region}:{self.account}:event-bus/{self.event_bus_name(logical_id)}"

    def queue_name(self, logical_id: str) -> str:
        return self._explicit_name(logical_id, "QueueName", 80)

    def queue_arn(self, logical_id: str) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account}:{self.queue_name(logical_id)}"

    def queue_url(self, logical_id: str) -> str:
        return f"https://sqs.{self.region}.amazonaws.com/{self.account}/{self.queue_name(logical_id)}"

    def table_arn(self) -> str:
        return f"arn:aws:dynamodb:{self.region}:{self.account}:table/{self.table_name}"

    def type_of_reference(self, value: Mapping[str, Any]) -> str | None:
        """The type of the template resource a `Ref` or an `Fn::GetAtt` names (None: neither)."""
        if isinstance(value.get("Ref"), str) and value["Ref"] in self.resources:
            return self._type(value["Ref"])
        target = value.get("Fn::GetAtt")
        if isinstance(target, str):
            target = target.split(".", 1)
        if isinstance(target, list) and target and isinstance(target[0], str):
            return self._type(target[0])
        return None

    def ref(self, name: str) -> Any:
        if name in self.PSEUDO_PARAMETERS:
            return self._pseudo(name)
        if name in self.parameters:
            return self.parameters[name]
        resource_type = self._type(name)
        if resource_type in TABLE_TYPES:
            return self.table_name
        if resource_type == FUNCTION_TYPE:
            return self.function_name(name)
        if resource_type == STATE_MACHINE_TYPE:
            return self.state_machine_arn(name)
        if resource_type == EVENT_BUS_TYPE:
            return self.event_bus_name(name)
        if resource_type == QUEUE_TYPE:
            return self.queue_url(name)
        # Roles, log groups, ...: their physical id only labels things locally.
        return name

    def _pseudo(self, name: str) -> Any:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": names.STACK_NAME,
            "AWS::StackId": (
                f"arn:aws:cloudformation:{self.region}:{self.account}:stack/"
                f"{names.STACK_NAME}/00000000-0000-0000-0000-000000000000"
            ),
            "AWS::NoValue": NO_VALUE,
        }[name]

    def get_att(self, logical_id: str, attribute: str) -> Any:
        resource_type = self._type(logical_id)
        if resource_type == FUNCTION_TYPE and attribute == "Arn":
            return self.function_arn(logical_id)
        if resource_type in TABLE_TYPES and attribute == "Arn":
            return self.table_arn()
        if resource_type in TABLE_TYPES and attribute == "StreamArn":
            return f"{self.table_arn()}/stream/1970-01-01T00:00:00.000"
        if resource_type == STATE_MACHINE_TYPE and attribute == "Arn":
            return self.state_machine_arn(logical_id)
        if resource_type == STATE_MACHINE_TYPE and attribute == "Name":
            return self.state_machine_name(logical_id)
        if resource_type == ROLE_TYPE and attribute == "Arn":
            return self.role_arn(logical_id)
        if resource_type == EVENT_BUS_TYPE and attribute == "Arn":
            return self.event_bus_arn(logical_id)
        if resource_type == EVENT_BUS_TYPE and attribute == "Name":
            return self.event_bus_name(logical_id)
        if resource_type == QUEUE_TYPE and attribute == "Arn":
            return self.queue_arn(logical_id)
        if resource_type == QUEUE_TYPE and attribute == "QueueName":
            return self.queue_name(logical_id)
        if resource_type == QUEUE_TYPE and attribute == "QueueUrl":
            return self.queue_url(logical_id)
        if resource_type == "AWS::Logs::LogGroup" and attribute == "Arn":
            return f"arn:aws:logs:{self.region}:{self.account}:log-group:{logical_id}:*"
        raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute} ({resource_type}) is not supported locally")

    # Intrinsic functions --------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self.resolve(item) for item in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key.startswith("Fn::") or key == "Condition":
                return self._function(key, arg)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def _function(self, key: str, arg: Any) -> Any:
        if key == "Fn::GetAtt":
            if isinstance(arg, str):
                arg = arg.split(".", 1)
            logical_id, attribute = self.resolve(arg)
            return self.get_att(logical_id, attribute)
        if key == "Fn::Join":
            delimiter, parts = arg
            resolved = self.resolve(parts)
            if not all(isinstance(p, str) for p in resolved):
                raise TemplateError(f"Fn::Join over non-strings: {resolved!r}")
            return str(delimiter).join(resolved)
        if key == "Fn::Sub":
            if isinstance(arg, str):
                return self._sub(arg, {})
            template, variables = arg
            return self._sub(template, self.resolve(variables))
        if key == "Fn::Select":
            index, items = self.resolve(arg)
            return items[int(index)]
        if key == "Fn::Split":
            delimiter, text = self.resolve(arg)
            return str(text).split(delimiter)
        raise TemplateError(f"intrinsic function {key} is not supported locally")

    _SUB_PATTERN = re.compile(r"\$\{([^}]+)\}")

    def _sub(self, template: str, variables: Mapping[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("!"):
                return "${" + expression[1:] + "}"
            if expression in variables:
                return str(variables[expression])
            if "." in expression and expression.split(".", 1)[0] in self.resources:
                logical_id, attribute = expression.split(".", 1)
                return str(self.get_att(logical_id, attribute))
            return str(self.ref(expression))

        return self._SUB_PATTERN.sub(replace, template)
