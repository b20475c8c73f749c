"""Read the synthesized CloudFormation template into what the local engine needs.

Each resource the engine reproduces (the table, the functions, the state machines, the
roles with their policies, the API's integrations, the user pool with its app client and
groups) becomes a spec of :mod:`infrastructure.local.template_specs`, its properties
resolved by :mod:`infrastructure.local.intrinsic_functions`; anything the engine cannot
reproduce raises, so a template change fails loudly instead of running a silently
different workflow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infrastructure import names
from infrastructure.local.intrinsic_functions import (
    EVENT_BUS_TYPE,
    FUNCTION_TYPE,
    PIPE_TYPE,
    QUEUE_TYPE,
    ROLE_TYPE,
    STATE_MACHINE_TYPE,
    TABLE_TYPES,
    Resolver,
    TemplateError,
)
from infrastructure.local.template_specs import (
    ApiIntegration,
    EventSourceMappingSpec,
    FunctionSpec,
    LocalTemplate,
    PipeSpec,
    QueueSpec,
    RoleSpec,
    StateMachineSpec,
    TableSpec,
    UserPoolClientSpec,
    UserPoolGroupSpec,
    UserPoolSpec,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE_PATH = REPO_ROOT / names.CDK_OUT_DIR / names.TEMPLATE_FILE

POLICY_TYPES = ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
API_METHOD_TYPE = "AWS::ApiGateway::Method"
API_RESOURCE_TYPE = "AWS::ApiGateway::Resource"
USER_POOL_TYPE = "AWS::Cognito::UserPool"
USER_POOL_CLIENT_TYPE = "AWS::Cognito::UserPoolClient"
USER_POOL_GROUP_TYPE = "AWS::Cognito::UserPoolGroup"
EVENT_SOURCE_MAPPING_TYPE = "AWS::Lambda::EventSourceMapping"
# The user pool's properties `cognito-idp.create_user_pool` takes under the same name.
USER_POOL_PROPERTIES = (
    "Policies",
    "AdminCreateUserConfig",
    "UsernameConfiguration",
    "UsernameAttributes",
    "AliasAttributes",
    "AutoVerifiedAttributes",
    "Schema",
    "AccountRecoverySetting",
)


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
            authorization=str(props.get("AuthorizationType", "NONE")),
        )
    return integrations


def _pool_of(
    logical_id: str, resource: Mapping[str, Any], resolver: Resolver, pools: Mapping[str, Any]
) -> None:
    """A client or a group must belong to the template's pool (a `Ref` to it)."""
    pool = resolver.resolve(resource.get("Properties", {}).get("UserPoolId"))
    if pool not in pools:
        raise TemplateError(f"{logical_id}: UserPoolId {pool!r} is not the template's user pool")


def _name(props: Mapping[str, Any], key: str, logical_id: str, resolver: Resolver) -> str:
    name = resolver.resolve(props[key]) if key in props else logical_id
    if not isinstance(name, str):
        raise TemplateError(f"{logical_id}.{key} does not resolve to a string")
    return name


def _user_pool_spec(resources: Mapping[str, Any], resolver: Resolver) -> UserPoolSpec | None:
    """The template's user pool with its app client and groups (None without a pool).

    One pool with one app client is what the engine reproduces: anything else raises."""
    pools = {lid: r for lid, r in resources.items() if r.get("Type") == USER_POOL_TYPE}
    of_type = {
        kind: {lid: r for lid, r in resources.items() if r.get("Type") == kind}
        for kind in (USER_POOL_CLIENT_TYPE, USER_POOL_GROUP_TYPE)
    }
    if not pools:
        if any(of_type.values()):
            raise TemplateError("the template has Cognito app clients or groups but no user pool")
        return None
    if len(pools) > 1:
        raise TemplateError(f"expected at most one user pool, found {sorted(pools)}")
    ((pool_id, pool),) = pools.items()
    for kind in of_type.values():
        for lid, resource in kind.items():
            _pool_of(lid, resource, resolver, pools)
    clients = list(of_type[USER_POOL_CLIENT_TYPE].items())
    if len(clients) != 1:
        raise TemplateError(f"expected one app client of {pool_id}, found {[lid for lid, _ in clients]}")
    ((client_id, client),) = clients
    client_props = client.get("Properties", {})
    groups = []
    for lid, group in of_type[USER_POOL_GROUP_TYPE].items():
        props = group.get("Properties", {})
        groups.append(
            UserPoolGroupSpec(
                logical_id=lid,
                name=_name(props, "GroupName", lid, resolver),
                description=resolver.resolve(props["Description"]) if "Description" in props else None,
                precedence=int(resolver.resolve(props["Precedence"])) if "Precedence" in props else None,
            )
        )
    pool_props = pool.get("Properties", {})
    return UserPoolSpec(
        logical_id=pool_id,
        name=_name(pool_props, "UserPoolName", pool_id, resolver),
        client=UserPoolClientSpec(
            logical_id=client_id,
            name=_name(client_props, "ClientName", client_id, resolver),
            explicit_auth_flows=tuple(resolver.resolve(client_props.get("ExplicitAuthFlows", []))),
            generate_secret=bool(resolver.resolve(client_props.get("GenerateSecret", False))),
        ),
        groups=tuple(sorted(groups, key=lambda g: g.name)),
        properties=resolver.resolve({k: pool_props[k] for k in USER_POOL_PROPERTIES if k in pool_props}),
    )


def _pipe_specs(resources: Mapping[str, Any], resolver: Resolver) -> dict[str, PipeSpec]:
    """The pipes from the table's stream; a pipe from anything else is not reproduced locally."""
    pipes: dict[str, PipeSpec] = {}
    stream_arn = resolver.get_att(next(iter(_tables(resources))), "StreamArn") if _tables(resources) else None
    for lid, resource in resources.items():
        if resource.get("Type") != PIPE_TYPE:
            continue
        props = resolver.resolve(resource.get("Properties", {}))
        if props.get("Source") != stream_arn:
            raise TemplateError(
                f"{lid}: only a pipe from the table's stream runs locally, not {props.get('Source')!r}"
            )
        source = props.get("SourceParameters", {})
        stream = source.get("DynamoDBStreamParameters", {})
        target = props.get("TargetParameters", {})
        bus = target.get("EventBridgeEventBusParameters", {})
        queue = target.get("SqsQueueParameters", {})
        filters = source.get("FilterCriteria", {}).get("Filters", [])
        pipes[lid] = PipeSpec(
            logical_id=lid,
            name=str(props.get("Name") or lid),
            role_arn=str(props["RoleArn"]),
            source_arn=str(props["Source"]),
            target_arn=str(props["Target"]),
            patterns=tuple(json.loads(f["Pattern"]) for f in filters if "Pattern" in f),
            input_template=target.get("InputTemplate"),
            detail_type=bus.get("DetailType"),
            event_source=bus.get("Source"),
            batch_size=int(stream.get("BatchSize", 100)),
            starting_position=str(stream.get("StartingPosition", "LATEST")),
            maximum_retry_attempts=int(stream.get("MaximumRetryAttempts", -1)),
            dead_letter_arn=stream.get("DeadLetterConfig", {}).get("Arn"),
            message_group_id=queue.get("MessageGroupId"),
            message_deduplication_id=queue.get("MessageDeduplicationId"),
        )
    return pipes


def _queue_specs(resources: Mapping[str, Any], resolver: Resolver) -> dict[str, QueueSpec]:
    queues: dict[str, QueueSpec] = {}
    for lid, resource in resources.items():
        if resource.get("Type") != QUEUE_TYPE:
            continue
        props = resolver.resolve(resource.get("Properties", {}))
        redrive = props.get("RedrivePolicy") or {}
        if isinstance(redrive, str):
            redrive = json.loads(redrive)
        queues[lid] = QueueSpec(
            logical_id=lid,
            name=resolver.queue_name(lid),
            arn=resolver.queue_arn(lid),
            url=resolver.queue_url(lid),
            fifo=bool(props.get("FifoQueue", False)),
            content_based_deduplication=bool(props.get("ContentBasedDeduplication", False)),
            visibility_timeout_s=int(props.get("VisibilityTimeout", 30)),
            retention_s=int(props.get("MessageRetentionPeriod", 4 * 24 * 3600)),
            dead_letter_arn=redrive.get("deadLetterTargetArn"),
            max_receive_count=int(redrive["maxReceiveCount"]) if "maxReceiveCount" in redrive else None,
        )
    return queues


def _event_source_mappings(
    resources: Mapping[str, Any], resolver: Resolver
) -> dict[str, EventSourceMappingSpec]:
    """The functions' event sources that are queues (a stream or a broker is not run locally)."""
    mappings: dict[str, EventSourceMappingSpec] = {}
    for lid, resource in resources.items():
        if resource.get("Type") != EVENT_SOURCE_MAPPING_TYPE:
            continue
        raw = resource.get("Properties", {})
        source = raw.get("EventSourceArn")
        if not isinstance(source, dict) or resolver.type_of_reference(source) != QUEUE_TYPE:
            raise TemplateError(
                f"{lid}: only an event source that is one of the template's queues runs locally"
            )
        props = resolver.resolve(raw)
        mappings[lid] = EventSourceMappingSpec(
            logical_id=lid,
            function_name=str(props["FunctionName"]).rsplit(":function:", 1)[-1],
            source_arn=str(props["EventSourceArn"]),
            batch_size=int(props.get("BatchSize", 10)),
            report_batch_item_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
            enabled=bool(props.get("Enabled", True)),
        )
    return mappings


def _tables(resources: Mapping[str, Any]) -> list[str]:
    return [lid for lid, r in resources.items() if r.get("Type") in TABLE_TYPES]


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
        user_pool=_user_pool_spec(resources, resolver),
        event_buses={
            lid: resolver.event_bus_name(lid)
            for lid, r in resources.items()
            if r.get("Type") == EVENT_BUS_TYPE
        },
        pipes=_pipe_specs(resources, resolver),
        queues=_queue_specs(resources, resolver),
        event_source_mappings=_event_source_mappings(resources, resolver),
    )


def load_template(path: Path | None = None, **kwargs: Any) -> LocalTemplate:
    """Load and resolve ``cdk.out/EventRegistration.template.json`` (or ``path``)."""
    path = path or DEFAULT_TEMPLATE_PATH
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: synthesize the stack first (cdk synth)")
    with path.open(encoding="utf-8") as handle:
        document = json.load(handle)
    return parse_template(document, **kwargs)
