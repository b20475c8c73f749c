"""cdk-nag: the findings this stack accepts, each with its reason.

The infrastructure tests run cdk-nag's AwsSolutions and Serverless packs on the app
(`Validations.of(app).add_plugins(...)`) and require zero unacknowledged findings. The
acknowledgements are made here, by what a resource is rather than by its path, so a
new resource of a known kind is covered by the same reasoning and anything else
surfaces as a finding. A wildcard in a policy is acknowledged only when every action
that carries it is on the list below (X-Ray and log delivery accept no narrower
resource); any other wildcard stays a finding.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_pipes as pipes
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import IConstruct

from infrastructure import names

# Actions whose IAM resource can only be "*" (they name no resource of their own).
WILDCARD_ONLY_ACTIONS = frozenset(
    {
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        # CloudWatch Logs delivery for Step Functions (vended logs): AWS documents "*".
        "logs:CreateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:DescribeLogGroups",
        "logs:DescribeResourcePolicies",
        "logs:GetLogDelivery",
        "logs:ListLogDeliveries",
        "logs:PutResourcePolicy",
        "logs:UpdateLogDelivery",
    }
)

RUNTIME_REASON = (
    "Pinned to python3.13 on purpose: the Powertools public layer and the tested "
    "dependency set are built for it; move with the layer, not ahead of it."
)
DLQ_REASON = (
    "Invoked synchronously only (by Step Functions tasks and API Gateway); a dead-letter "
    "queue applies to asynchronous invocations. Failures surface as workflow errors "
    "(Catch, Retry, execution history) and HTTP statuses instead."
)
OPEN_ROUTE_REASON = (
    "The unauthenticated health check that load balancers and monitors call: it answers "
    "whether the service works and reads nothing of users or events; every other method "
    "has the user pool's Cognito authorizer."
)
WAF_REASON = (
    "No WAF web ACL in this stack: stage throttling and request validation are the "
    "baseline; a web ACL is an account-level decision (cost, managed rule sets)."
)
CLOUDWATCH_ROLE_REASON = (
    "API Gateway's account-level CloudWatch role: AWS prescribes the managed policy "
    "AmazonAPIGatewayPushToCloudWatchLogs for it; access logging needs it."
)
WILDCARD_REASON = (
    "X-Ray tracing and CloudWatch Logs delivery actions accept only Resource '*' "
    "(checked: no other action in this policy carries the wildcard)."
)
QUALIFIED_INVOKE_REASON = (
    "lambda:InvokeFunction on the function and its qualified ARNs (versions, aliases) of "
    "that same function only, as Step Functions' LambdaInvoke grants it."
)
MAP_CHILDREN_REASON = (
    "A Distributed Map's child executions and map runs are named by Step Functions under "
    "its state machine's own name: describing, stopping and redriving them needs that "
    "prefix, which names this one state machine's executions only (CDK's DistributedMapPolicy)."
)
MAP_CHILD_ACTIONS = frozenset({"states:DescribeExecution", "states:StopExecution", "states:RedriveExecution"})
MAP_POLICY_ID = "DistributedMapPolicy"
STANDARD_LOGS_REASON = (
    "A Standard workflow: Step Functions keeps every execution's full history (90 days, "
    "console, redrive); its tasks log structured lines with the run id."
)

PAGE_TOKEN_SECRET_REASON = (
    "Signs pagination tokens only (they expire with the listing they resume); a new value "
    "comes with a deploy, and in-flight page tokens are then refused with a 422."
)

MFA_REASON = (
    "The user pool this stack creates is for development and workshops (username and "
    "password, users created by admins); a real deployment brings its own pool, with its "
    "own MFA policy, as context (userPoolId, userPoolClientId)."
)
PLUS_TIER_REASON = (
    "The created pool is on the Lite feature plan: Plus (threat protection, compromised "
    "credentials) is billed per active user, out of place for a development pool; a real "
    "deployment brings its own pool as context, on the plan it chooses."
)
DEAD_LETTER_QUEUE_REASON = (
    "A dead-letter queue itself: the pipe's or an EventBridge rule target's (cdk-nag "
    "recognises only a queue's redrive target as one). What lands here is kept 14 days "
    "and alarmed; a dead-letter queue of its own would only move it once more."
)

QUEUE_CONSUMER_DLQ_REASON = (
    "Invoked synchronously by its SQS event source mapping; a function's dead-letter queue "
    "applies to asynchronous invocations only. A message that keeps failing goes to its "
    "queue's redrive dead-letter queue (alarmed) instead."
)
REDRIVE_DEAD_LETTER_QUEUE_REASON = (
    "The redrive dead-letter queue of another queue: what its source queue gave up on "
    "lands here, kept 14 days and alarmed; a redrive policy of its own would only move it once more."
)
SQS_EVENT_SOURCE_REASON = (
    "An SQS event source: Lambda takes no on-failure destination for one (that is for "
    "stream and Kafka sources); the source queue's redrive policy sends a message that "
    "keeps failing to its dead-letter queue, which is alarmed."
)


@dataclass(frozen=True)
class Acknowledged:
    path: str
    rule: str
    reason: str


def _ack(construct: IConstruct, rule: str, reason: str, made: list[Acknowledged]) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))
    made.append(Acknowledged(construct.node.path, rule, reason))


def _statements(stack: Stack, policy: iam.CfnPolicy) -> Iterator[dict[str, Any]]:
    document = stack.resolve(policy.policy_document)
    statements = document.get("Statement", []) if isinstance(document, dict) else []
    yield from (s for s in statements if isinstance(s, dict))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _owner_id(policy: iam.CfnPolicy) -> str:
    """The id of the construct a policy resource belongs to (`iam.Policy`'s `Resource`)."""
    owner = policy.node.scope
    return owner.node.id if owner is not None else ""


def _as_nag_text(resource: Any) -> str:
    """A resource as cdk-nag names it in a finding: a `Fn::Join`'s parts joined, pseudo
    parameters as `<AWS::Region>`, other tokens as their compact JSON."""
    if not isinstance(resource, dict) or "Fn::Join" not in resource:
        return str(resource)
    separator, parts = resource["Fn::Join"]
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and str(part.get("Ref", "")).startswith("AWS::"):
            texts.append(f"<{part['Ref']}>")
        else:
            texts.append(json.dumps(part, separators=(",", ":")))
    return str(separator).join(texts)


def _qualified_function(resource: Any) -> str | None:
    """`<LogicalId>` when `resource` is `{"Fn::Join": ["", [GetAtt(LogicalId.Arn), ":*"]]}`."""
    if not isinstance(resource, dict) or "Fn::Join" not in resource:
        return None
    separator, parts = resource["Fn::Join"]
    if separator != "" or len(parts) != 2 or parts[1] != ":*":
        return None
    target = parts[0].get("Fn::GetAtt") if isinstance(parts[0], dict) else None
    if not target or target[1] != "Arn":
        return None
    return str(target[0])


def _policy_findings(stack: Stack, policy: iam.CfnPolicy) -> list[tuple[str, str]]:
    """The wildcard findings of `policy` that may be acknowledged.

    cdk-nag reports one finding per wildcard resource per policy (not per statement):
    "*" is acknowledged only when every statement that names it is wildcard-only.
    """
    found: dict[str, str] = {}
    star_actions: set[str] = set()
    for statement in _statements(stack, policy):
        actions = set(_as_list(statement.get("Action", [])))
        for resource in _as_list(statement.get("Resource", [])):
            if resource == "*":
                star_actions |= actions
            function = _qualified_function(resource)
            if function and actions == {"lambda:InvokeFunction"}:
                found[f"AwsSolutions-IAM5[Resource::<{function}.Arn>:*]"] = QUALIFIED_INVOKE_REASON
            if actions <= MAP_CHILD_ACTIONS and _owner_id(policy) == MAP_POLICY_ID:
                found[f"AwsSolutions-IAM5[Resource::{_as_nag_text(resource)}]"] = MAP_CHILDREN_REASON
    if star_actions and star_actions <= WILDCARD_ONLY_ACTIONS:
        found["AwsSolutions-IAM5[Resource::*]"] = WILDCARD_REASON
    return sorted(found.items())


def _is_open_route(method: apigateway.CfnMethod) -> bool:
    """Whether `method` is unauthenticated on purpose: one of `names.OPEN_ROUTES`, with no
    authorization. A method without authorization on any other route stays a finding."""
    owner = method.node.scope
    if not isinstance(owner, apigateway.Method) or method.authorization_type != "NONE":
        return False
    return (owner.http_method, owner.resource.path) in names.OPEN_ROUTES


def _dead_letter_arns(value: Any) -> Iterator[Any]:
    """Every `deadLetterConfig.arn` in a resolved property (any depth)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "deadLetterConfig" and isinstance(inner, dict) and "arn" in inner:
                yield inner["arn"]
            else:
                yield from _dead_letter_arns(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _dead_letter_arns(inner)


def _dead_letter_queues(stack: Stack) -> set[str]:
    """Logical ids of the queues a pipe's source or a rule's target dead-letters to."""
    configs: list[Any] = []
    for construct in stack.node.find_all():
        if isinstance(construct, pipes.CfnPipe):
            configs.append(stack.resolve(construct.source_parameters))
        elif isinstance(construct, events.CfnRule):
            configs.append(stack.resolve(construct.targets))
    return {
        str(arn["Fn::GetAtt"][0])
        for arn in _dead_letter_arns(configs)
        if isinstance(arn, dict) and "Fn::GetAtt" in arn and arn["Fn::GetAtt"][1] == "Arn"
    }


def _get_att_id(value: Any) -> str | None:
    """`<LogicalId>` when `value` is `{"Fn::GetAtt": [LogicalId, "Arn"]}`."""
    if (
        isinstance(value, dict)
        and isinstance(value.get("Fn::GetAtt"), list)
        and value["Fn::GetAtt"][1] == "Arn"
    ):
        return str(value["Fn::GetAtt"][0])
    return None


def _redrive_targets(stack: Stack) -> set[str]:
    """Logical ids of the queues another queue's redrive policy dead-letters to."""
    found = set()
    for construct in stack.node.find_all():
        if isinstance(construct, sqs.CfnQueue) and construct.redrive_policy is not None:
            policy = stack.resolve(construct.redrive_policy)
            target = _get_att_id(policy.get("deadLetterTargetArn")) if isinstance(policy, dict) else None
            if target:
                found.add(target)
    return found


def _redriven_queue_sources(stack: Stack) -> dict[str, str]:
    """SQS event source mapping logical id -> the function it invokes (`Ref`), for each
    mapping whose queue is in the stack and has a redrive policy."""
    redriven = {
        stack.get_logical_id(c)
        for c in stack.node.find_all()
        if isinstance(c, sqs.CfnQueue) and c.redrive_policy is not None
    }
    found = {}
    for construct in stack.node.find_all():
        if isinstance(construct, lambda_.CfnEventSourceMapping):
            queue = _get_att_id(stack.resolve(construct.event_source_arn))
            function = stack.resolve(construct.function_name)
            if queue in redriven and isinstance(function, dict) and "Ref" in function:
                found[stack.get_logical_id(construct)] = str(function["Ref"])
    return found


def acknowledge_findings(stack: Stack) -> list[Acknowledged]:
    """Acknowledges the accepted findings on `stack`; returns what was acknowledged."""
    made: list[Acknowledged] = []
    dead_letter_queues = _dead_letter_queues(stack)
    redrive_targets = _redrive_targets(stack)
    queue_sources = _redriven_queue_sources(stack)
    queue_consumers = set(queue_sources.values())
    for construct in stack.node.find_all():
        if isinstance(construct, lambda_.CfnFunction):
            _ack(construct, "AwsSolutions-L1", RUNTIME_REASON, made)
            _ack(construct, "Serverless-LambdaLatestVersion", RUNTIME_REASON, made)
            consumer = stack.get_logical_id(construct) in queue_consumers
            _ack(
                construct, "Serverless-LambdaDLQ", QUEUE_CONSUMER_DLQ_REASON if consumer else DLQ_REASON, made
            )
        elif isinstance(construct, lambda_.CfnEventSourceMapping) and (
            stack.get_logical_id(construct) in queue_sources
        ):
            _ack(construct, "Serverless-LambdaEventSourceMappingDestination", SQS_EVENT_SOURCE_REASON, made)
        elif isinstance(construct, sqs.CfnQueue) and stack.get_logical_id(construct) in redrive_targets:
            _ack(construct, "Serverless-SQSRedrivePolicy", REDRIVE_DEAD_LETTER_QUEUE_REASON, made)
        elif isinstance(construct, apigateway.CfnMethod) and _is_open_route(construct):
            _ack(construct, "AwsSolutions-APIG4", OPEN_ROUTE_REASON, made)
            _ack(construct, "AwsSolutions-COG4", OPEN_ROUTE_REASON, made)
        elif isinstance(construct, apigateway.CfnStage):
            _ack(construct, "AwsSolutions-APIG3", WAF_REASON, made)
        elif isinstance(construct, iam.CfnRole) and construct.node.path.endswith("/CloudWatchRole/Resource"):
            rule = (
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]"
            )
            _ack(construct, rule, CLOUDWATCH_ROLE_REASON, made)
        elif isinstance(construct, iam.CfnPolicy):
            for rule, reason in _policy_findings(stack, construct):
                _ack(construct, rule, reason, made)
        elif isinstance(construct, cognito.CfnUserPool):
            _ack(construct, "AwsSolutions-COG2", MFA_REASON, made)
            _ack(construct, "AwsSolutions-COG8", PLUS_TIER_REASON, made)
        elif isinstance(construct, sqs.CfnQueue) and stack.get_logical_id(construct) in dead_letter_queues:
            _ack(construct, "AwsSolutions-SQS3", DEAD_LETTER_QUEUE_REASON, made)
            _ack(construct, "Serverless-SQSRedrivePolicy", DEAD_LETTER_QUEUE_REASON, made)
        elif isinstance(construct, secretsmanager.CfnSecret):
            _ack(construct, "AwsSolutions-SMG4", PAGE_TOKEN_SECRET_REASON, made)
        elif (
            isinstance(construct, sfn.CfnStateMachine)
            and construct.state_machine_type == sfn.StateMachineType.STANDARD.value
        ):
            _ack(construct, "AwsSolutions-SF1", STANDARD_LOGS_REASON, made)
    return made
