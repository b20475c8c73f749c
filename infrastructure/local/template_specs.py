"""What the template resolver makes of the synthesized template: one spec per resource.

The engine, the IAM enforcement, the local API and the tools read these; they are apart
from :mod:`infrastructure.local.template` (which reads the CloudFormation document into
them) so that what only reads a resolved template does not depend on how it is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


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
    # The method's AuthorizationType: COGNITO_USER_POOLS asks for a user pool's ID token.
    authorization: str = "NONE"

    @property
    def needs_token(self) -> bool:
        return self.authorization == COGNITO_AUTHORIZATION


COGNITO_AUTHORIZATION = "COGNITO_USER_POOLS"


@dataclass(frozen=True)
class UserPoolClientSpec:
    """An app client of the user pool (``AWS::Cognito::UserPoolClient``)."""

    logical_id: str
    name: str
    explicit_auth_flows: tuple[str, ...] = ()
    generate_secret: bool = False


@dataclass(frozen=True)
class UserPoolGroupSpec:
    """A group of the user pool (``AWS::Cognito::UserPoolGroup``)."""

    logical_id: str
    name: str
    description: str | None = None
    precedence: int | None = None


@dataclass(frozen=True)
class UserPoolSpec:
    """The Cognito user pool (``AWS::Cognito::UserPool``) with its app client and groups.

    ``properties``: the pool's resolved properties that ``cognito-idp.create_user_pool``
    takes under the same names (the password policy, who may create users, ...).
    """

    logical_id: str
    name: str
    client: UserPoolClientSpec
    groups: tuple[UserPoolGroupSpec, ...] = ()
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def group_names(self) -> frozenset[str]:
        return frozenset(group.name for group in self.groups)


@dataclass(frozen=True)
class PipeSpec:
    """An EventBridge pipe (``AWS::Pipes::Pipe``) from the table's stream to an event bus
    or an SQS queue.

    ``source_arn`` and ``target_arn`` are the template's names of the stream and the
    target (what the pipe's role policy grants on); ``patterns`` its filter criteria (a
    record passes when one matches, or when there are none); ``input_template`` shapes
    the event's detail (a message's body); ``detail_type`` and ``event_source`` are the
    bus parameters, ``message_group_id`` and ``message_deduplication_id`` a FIFO queue's,
    each either text or a dynamic JSON path (``$.``...) into the record.
    """

    logical_id: str
    name: str
    role_arn: str
    source_arn: str
    target_arn: str
    patterns: tuple[dict[str, Any], ...] = ()
    input_template: str | None = None
    detail_type: str | None = None
    event_source: str | None = None
    batch_size: int = 100
    starting_position: str = "LATEST"
    maximum_retry_attempts: int = -1
    dead_letter_arn: str | None = None
    message_group_id: str | None = None
    message_deduplication_id: str | None = None


@dataclass(frozen=True)
class QueueSpec:
    """An SQS queue (``AWS::SQS::Queue``): its names and the attributes the twin obeys.

    ``max_receive_count`` and ``dead_letter_arn`` are its redrive policy (a message
    received that many times goes to that queue at its next receive)."""

    logical_id: str
    name: str
    arn: str
    url: str
    fifo: bool = False
    content_based_deduplication: bool = False
    visibility_timeout_s: int = 30
    retention_s: int = 4 * 24 * 3600
    dead_letter_arn: str | None = None
    max_receive_count: int | None = None


@dataclass(frozen=True)
class EventSourceMappingSpec:
    """A Lambda event source mapping (``AWS::Lambda::EventSourceMapping``) from a queue."""

    logical_id: str
    function_name: str
    source_arn: str
    batch_size: int = 10
    report_batch_item_failures: bool = False
    enabled: bool = True


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
    # The user pool, when the template creates one (None: no sign-in to reproduce).
    user_pool: UserPoolSpec | None = None
    # The event buses (logical id -> name) and the pipes that feed them.
    event_buses: dict[str, str] = field(default_factory=dict)
    pipes: dict[str, PipeSpec] = field(default_factory=dict)
    # The SQS queues (logical id -> spec) and the functions' event sources among them.
    queues: dict[str, QueueSpec] = field(default_factory=dict)
    event_source_mappings: dict[str, EventSourceMappingSpec] = field(default_factory=dict)

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
