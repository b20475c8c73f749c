"""Read the synthesized CloudFormation template into what the local engine needs.

Only the intrinsic functions CDK actually emits for this stack are resolved; anything
else raises, so a template change that the engine cannot honour fails loudly instead
of running a silently different workflow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infrastructure import names

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE_PATH = REPO_ROOT / names.CDK_OUT_DIR / names.TEMPLATE_FILE

TABLE_TYPES = ("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable")
FUNCTION_TYPE = "AWS::Lambda::Function"
STATE_MACHINE_TYPE = "AWS::StepFunctions::StateMachine"
ROLE_TYPE = "AWS::IAM::Role"
POLICY_TYPES = ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
API_METHOD_TYPE = "AWS::ApiGateway::Method"
API_RESOURCE_TYPE = "AWS::ApiGateway::Resource"


class TemplateError(ValueError):
    """The template holds something the local engine cannot reproduce."""


class _NoValue:
    """``AWS::NoValue``: the property is dropped."""


NO_VALUE = _NoValue()


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    name: str
    key_schema: list[dict[str, Any]]
    attribute_definitions: list[dict[str, Any]]
    global_secondary_indexes: list[dict[str, Any]] = field(default_factory=list)
    local_secondary_indexes: list[dict[str, Any]] = field(default_factory=list)
    billing_mode: str = "PAY_PER_REQUEST"
    provisioned_throughput: dict[str, Any] | None = None
    stream_specification: dict[str, Any] | None = None
    ttl_attribute: str | None = None

    def create_table_kwargs(self, table_name: str | None = None) -> dict[str, Any]:
        """Arguments for ``dynamodb.create_table`` building the same table."""
        provisioned = self.billing_mode == "PROVISIONED"
        default_throughput = {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        kwargs: dict[str, Any] = {
            "TableName": table_name or self.name,
            "KeySchema": self.key_schema,
            "AttributeDefinitions": self.attribute_definitions,
            "BillingMode": self.billing_mode,
        }
        if provisioned:
            kwargs["ProvisionedThroughput"] = self.provisioned_throughput or default_throughput
        if self.global_secondary_indexes:
            gsis = []
            for gsi in self.global_secondary_indexes:
                index: dict[str, Any] = {
                    k: gsi[k] for k in ("IndexName", "KeySchema", "Projection") if k in gsi
                }
                if provisioned:
                    index["ProvisionedThroughput"] = gsi.get("ProvisionedThroughput", default_throughput)
                gsis.append(index)
            kwargs["GlobalSecondaryIndexes"] = gsis
        if self.local_secondary_indexes:
            kwargs["LocalSecondaryIndexes"] = [
                {k: lsi[k] for k in ("IndexName", "KeySchema", "Projection") if k in lsi}
                for lsi in self.local_secondary_indexes
            ]
        if self.stream_specification and self.stream_specification.get("StreamViewType"):
            kwargs["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": self.stream_specification["StreamViewType"],
            }
        return kwargs


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    handler: str
    runtime: str
    timeout: int
    memory_size: int
    environment: dict[str, str]
    # The execution role's ARN (None when the template gives none the engine can resolve).
    role_arn: str | None = None


@dataclass(frozen=True)
class StateMachineSpec:
    logical_id: str
    name: str
    arn: str
    type: str
    definition: str
    role_arn: str | None = None

    @property
    def definition_dict(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.definition)
        return loaded


@dataclass(frozen=True)
class RoleSpec:
    """An IAM role of the template with every identity policy attached to it, resolved."""

    logical_id: str
    arn: str
    documents: tuple[dict[str, Any], ...]
    # AWS managed policies by ARN (resolved against moto's copy of them by the evaluator).
    managed_policy_arns: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApiIntegration:
    """What API Gateway does for one method: the integration's type, URI and role."""

    method: str
    path: str
    type: str
    uri: str
    credentials: str | None
    request_templates: dict[str, str]


@dataclass(frozen=True)
class LocalTemplate:
    table: TableSpec
    functions: dict[str, FunctionSpec]
    state_machines: dict[str, StateMachineSpec]
    workflows: dict[str, StateMachineSpec]
    outputs: dict[str, Any]
    region: str
    account: str
    roles: dict[str, RoleSpec] = field(default_factory=dict)
    api_integrations: dict[tuple[str, str], ApiIntegration] = field(default_factory=dict)

    def role_by_arn(self, arn: str) -> RoleSpec | None:
        for role in self.roles.values():
            if role.arn == arn:
                return role
        return None

    def function_by_name(self, name: str) -> FunctionSpec:
        for function in self.functions.values():
            if function.name == name:
                return function
        raise KeyError(name)


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

    def table_arn(self) -> str:
        return f"arn:aws:dynamodb:{self.region}:{self.account}:table/{self.table_name}"

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


def _find_table(resources: Mapping[str, Any], outputs: Mapping[str, Any], table_output: str) -> str:
    output = outputs.get(table_output, {}).get("Value")
    if isinstance(output, dict) and isinstance(output.get("Ref"), str):
        return str(output["Ref"])
    tables = [lid for lid, r in resources.items() if r.get("Type") in TABLE_TYPES]
    if len(tables) != 1:
        raise TemplateError(f"expected output {table_output!r} or exactly one table, found {tables}")
    return tables[0]


def _table_spec(
    logical_id: str, resource: Mapping[str, Any], resolver: Resolver, table_name: str
) -> TableSpec:
    wanted = (
        "KeySchema",
        "AttributeDefinitions",
        "GlobalSecondaryIndexes",
        "LocalSecondaryIndexes",
        "BillingMode",
        "ProvisionedThroughput",
        "StreamSpecification",
        "TimeToLiveSpecification",
    )
    raw = resource.get("Properties", {})
    props = resolver.resolve({k: raw[k] for k in wanted if k in raw})
    ttl = props.get("TimeToLiveSpecification") or {}
    billing_mode = props.get("BillingMode")
    if billing_mode is None:
        # Table defaults to provisioned; TableV2 (GlobalTable) to on-demand.
        billing_mode = (
            "PAY_PER_REQUEST" if resource.get("Type") == "AWS::DynamoDB::GlobalTable" else "PROVISIONED"
        )
    return TableSpec(
        logical_id=logical_id,
        name=table_name,
        key_schema=props["KeySchema"],
        attribute_definitions=props["AttributeDefinitions"],
        global_secondary_indexes=props.get("GlobalSecondaryIndexes", []),
        local_secondary_indexes=props.get("LocalSecondaryIndexes", []),
        billing_mode=billing_mode,
        provisioned_throughput=props.get("ProvisionedThroughput"),
        stream_specification=props.get("StreamSpecification"),
        ttl_attribute=ttl.get("AttributeName") if ttl.get("Enabled") else None,
    )


_DYNAMIC_REFERENCE = re.compile(r"\{\{resolve:(secretsmanager|ssm-secure):[^}]*\}\}")


def _deploy_time_value(value: str) -> str:
    """A secret CloudFormation resolves at deploy time (`{{resolve:secretsmanager:...}}`)
    has no value locally: it is left empty, and the function uses its development
    default (the local stack holds no secrets)."""
    return _DYNAMIC_REFERENCE.sub("", value)


def _function_spec(logical_id: str, resource: Mapping[str, Any], resolver: Resolver) -> FunctionSpec:
    props = resource.get("Properties", {})
    handler = props.get("Handler")
    if not isinstance(handler, str):
        raise TemplateError(f"{logical_id} has no Handler string")
    variables = resolver.resolve(props.get("Environment", {}).get("Variables", {}))
    return FunctionSpec(
        logical_id=logical_id,
        name=resolver.function_name(logical_id),
        arn=resolver.function_arn(logical_id),
        handler=handler,
        runtime=str(props.get("Runtime", "python3.13")),
        timeout=int(resolver.resolve(props.get("Timeout", 3))),
        memory_size=int(resolver.resolve(props.get("MemorySize", 128))),
        environment={k: _deploy_time_value(str(v)) for k, v in variables.items()},
        role_arn=_role_arn(props.get("Role"), resolver),
    )


def _role_arn(value: Any, resolver: Resolver) -> str | None:
    if value is None:
        return None
    arn = resolver.resolve(value)
    return arn if isinstance(arn, str) else None


def _state_machine_spec(logical_id: str, resource: Mapping[str, Any], resolver: Resolver) -> StateMachineSpec:
    props = resource.get("Properties", {})
    if "DefinitionString" in props:
        definition = resolver.resolve(props["DefinitionString"])
    elif "Definition" in props:
        definition = json.dumps(resolver.resolve(props["Definition"]))
    else:
        raise TemplateError(f"{logical_id}: only inline definitions can run locally")
    if not isinstance(definition, str):
        raise TemplateError(f"{logical_id}: DefinitionString does not resolve to a string")
    substitutions = resolver.resolve(props.get("DefinitionSubstitutions", {}))
    for key, value in substitutions.items():
        definition = definition.replace("${" + key + "}", str(value))
    try:
        json.loads(definition)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{logical_id}: resolved definition is not JSON: {exc}") from exc
    return StateMachineSpec(
        logical_id=logical_id,
        name=resolver.state_machine_name(logical_id),
        arn=resolver.state_machine_arn(logical_id),
        type=str(props.get("StateMachineType", "STANDARD")),
        definition=definition,
        role_arn=_role_arn(props.get("RoleArn"), resolver),
    )


def _role_refs(value: Any) -> list[str]:
    """Logical ids of the roles a policy's `Roles` list names (`Ref`s to template roles)."""
    found = []
    for item in value or []:
        if isinstance(item, dict) and isinstance(item.get("Ref"), str):
            found.append(item["Ref"])
    return found


def _role_specs(resources: Mapping[str, Any], resolver: Resolver) -> dict[str, RoleSpec]:
    """Every role with its inline policies, the template's policies attached to it, and the
    ARNs of the managed policies it names (a template's own managed policies resolved)."""
    documents: dict[str, list[dict[str, Any]]] = {}
    managed: dict[str, list[str]] = {}
    own_managed: dict[str, dict[str, Any]] = {}
    for lid, resource in resources.items():
        if resource.get("Type") != ROLE_TYPE:
            continue
        props = resource.get("Properties", {})
        documents[lid] = [resolver.resolve(p["PolicyDocument"]) for p in props.get("Policies", [])]
        managed[lid] = []
        for arn in props.get("ManagedPolicyArns", []):
            if isinstance(arn, dict) and isinstance(arn.get("Ref"), str) and arn["Ref"] in resources:
                own_managed.setdefault(arn["Ref"], {}).setdefault("roles", []).append(lid)
            else:
                managed[lid].append(str(resolver.resolve(arn)))
    for lid, resource in resources.items():
        if resource.get("Type") not in POLICY_TYPES:
            continue
        props = resource.get("Properties", {})
        attached = set(_role_refs(props.get("Roles"))) | set(own_managed.get(lid, {}).get("roles", []))
        document = resolver.resolve(props["PolicyDocument"])
        for role in attached:
            if role in documents:
                documents[role].append(document)
    return {
        lid: RoleSpec(
            logical_id=lid,
            arn=resolver.role_arn(lid),
            documents=tuple(documents[lid]),
            managed_policy_arns=tuple(managed[lid]),
        )
        for lid in documents
    }


def _api_integrations(
    resources: Mapping[str, Any], resolver: Resolver
) -> dict[tuple[str, str], ApiIntegration]:
    """Each REST API method's integration, keyed by (method, resource path)."""

    def path_of(resource_ref: Any) -> str:
        if not (isinstance(resource_ref, dict) and isinstance(resource_ref.get("Ref"), str)):
            return "/"  # the root resource (`Fn::GetAtt RestApi.RootResourceId`)
        parts = []
        current = resource_ref
        while isinstance(current, dict) and isinstance(current.get("Ref"), str):
            resource = resources.get(current["Ref"], {})
            if resource.get("Type") != API_RESOURCE_TYPE:
                raise TemplateError(f"API method on unknown resource {current['Ref']!r}")
            parts.append(str(resource["Properties"]["PathPart"]))
            current = resource["Properties"].get("ParentId")
        return "/" + "/".join(reversed(parts))

    integrations: dict[tuple[str, str], ApiIntegration] = {}
    for resource in resources.values():
        if resource.get("Type") != API_METHOD_TYPE:
            continue
        props = resource.get("Properties", {})
        integration = props.get("Integration") or {}
        method = str(props.get("HttpMethod", "")).upper()
        path = path_of(props.get("ResourceId"))
        credentials = integration.get("Credentials")
        integrations[(method, path)] = ApiIntegration(
            method=method,
            path=path,
            type=str(integration.get("Type", "MOCK")),
            uri=str(resolver.resolve(integration["Uri"])) if "Uri" in integration else "",
            credentials=str(resolver.resolve(credentials)) if credentials is not None else None,
            request_templates={
                k: str(resolver.resolve(v)) for k, v in (integration.get("RequestTemplates") or {}).items()
            },
        )
    return integrations


def parse_template(
    template: Mapping[str, Any],
    *,
    region: str = names.LOCAL_REGION,
    account: str = names.LOCAL_ACCOUNT,
    table_name: str = names.LOCAL_TABLE_NAME,
    workflow_outputs: Mapping[str, str] | None = None,
    table_output: str = names.TABLE_OUTPUT,
) -> LocalTemplate:
    """Resolve a CloudFormation template (as a dict) for local execution."""
    resources: Mapping[str, Any] = template.get("Resources", {})
    outputs: Mapping[str, Any] = template.get("Outputs", {})
    parameters = {
        name: spec["Default"] for name, spec in template.get("Parameters", {}).items() if "Default" in spec
    }
    resolver = Resolver(
        resources,
        region=region,
        account=account,
        table_name=table_name,
        parameters=parameters,
    )
    table_id = _find_table(resources, outputs, table_output)
    table = _table_spec(table_id, resources[table_id], resolver, table_name)
    functions = {
        lid: _function_spec(lid, r, resolver)
        for lid, r in resources.items()
        if r.get("Type") == FUNCTION_TYPE and "Handler" in r.get("Properties", {})
    }
    state_machines = {
        lid: _state_machine_spec(lid, r, resolver)
        for lid, r in resources.items()
        if r.get("Type") == STATE_MACHINE_TYPE
    }
    resolved_outputs: dict[str, Any] = {}
    for key, output in outputs.items():
        try:
            resolved_outputs[key] = resolver.resolve(output.get("Value"))
        except TemplateError:
            continue  # outputs the engine never reads may use anything
    by_arn = {sm.arn: sm for sm in state_machines.values()}
    workflows: dict[str, StateMachineSpec] = {}
    for workflow, output_key in (workflow_outputs or names.WORKFLOW_OUTPUTS).items():
        arn = resolved_outputs.get(output_key)
        if arn is None:
            continue
        if arn not in by_arn:
            raise TemplateError(f"output {output_key} does not name a state machine: {arn}")
        workflows[workflow] = by_arn[arn]
    return LocalTemplate(
        table=table,
        functions=functions,
        state_machines=state_machines,
        workflows=workflows,
        outputs=resolved_outputs,
        region=region,
        account=account,
        roles=_role_specs(resources, resolver),
        api_integrations=_api_integrations(resources, resolver),
    )


def load_template(path: Path | None = None, **kwargs: Any) -> LocalTemplate:
    """Load and resolve ``cdk.out/EventRegistration.template.json`` (or ``path``)."""
    path = path or DEFAULT_TEMPLATE_PATH
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: synthesize the stack first (cdk synth)")
    with path.open(encoding="utf-8") as handle:
        document = json.load(handle)
    return parse_template(document, **kwargs)
