"""Domain events in the synthesized template: the table's stream, the pipe from it to the
bus (its filter evaluated on stream records, its templates on a record, its role's
statements evaluated), the rule that logs the bus's events, the dead-letter alarms, and
no function or custom resource added for any of it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from boto3.dynamodb.types import TypeSerializer

from infrastructure import names
from infrastructure.constructs import monitoring
from infrastructure.event_patterns import matches
from registration import domain_events
from tests.infrastructure.conftest import Synthesized

pytestmark = pytest.mark.infrastructure

# What EventBridge Pipes documents a DynamoDB stream source needs (eb-pipes-permissions).
READ_STREAM = {
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
}
SERIALIZER = TypeSerializer()


# --- the template, read ----------------------------------------------------------------


def _one(synthesized: Synthesized, resource_type: str) -> tuple[str, dict[str, Any]]:
    (found,) = synthesized.resources(resource_type).items()
    return found


def _get_att(value: Any, attribute: str) -> str:
    """The logical id `value` (`{"Fn::GetAtt": [id, attribute]}`) names."""
    assert isinstance(value, dict) and set(value) == {"Fn::GetAtt"}, value
    logical_id, got = value["Fn::GetAtt"]
    assert got == attribute, value
    return str(logical_id)


def _ref(value: Any) -> str:
    assert isinstance(value, dict) and set(value) == {"Ref"}, value
    return str(value["Ref"])


def _pipe_id(synthesized: Synthesized) -> str:
    """The pipe into the bus (the other one feeds the webhooks' queue)."""
    bus_id, _ = _one(synthesized, "AWS::Events::EventBus")
    (found,) = [
        lid
        for lid, pipe in synthesized.resources("AWS::Pipes::Pipe").items()
        if pipe["Properties"]["Target"] == {"Fn::GetAtt": [bus_id, "Arn"]}
    ]
    return found


def _pipe(synthesized: Synthesized) -> dict[str, Any]:
    props: dict[str, Any] = synthesized.raw["Resources"][_pipe_id(synthesized)]["Properties"]
    return props


def _dead_letter_queue_id(synthesized: Synthesized) -> str:
    stream = _pipe(synthesized)["SourceParameters"]["DynamoDBStreamParameters"]
    return _get_att(stream["DeadLetterConfig"]["Arn"], "Arn")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- stream records --------------------------------------------------------------------


def _image(item: dict[str, Any]) -> dict[str, Any]:
    return {name: SERIALIZER.serialize(value) for name, value in item.items()}


def _record(event_name: str, new: dict[str, Any] | None, old: dict[str, Any] | None = None) -> dict[str, Any]:
    """A DynamoDB stream record as the pipe receives it (view type NEW_AND_OLD_IMAGES)."""
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": 1735689600,
        "Keys": _image({"PK": "EVENT#keynote", "SK": "SEAT#grace"}),
        "SequenceNumber": "100000000000000000001",
        "SizeBytes": 200,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        dynamodb["NewImage"] = _image(new)
    if old is not None:
        dynamodb["OldImage"] = _image(old)
    return {
        "eventID": "1",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": names.LOCAL_REGION,
        "dynamodb": dynamodb,
        "eventSourceARN": f"arn:aws:dynamodb:{names.LOCAL_REGION}:{names.LOCAL_ACCOUNT}:table/t/stream/x",
    }


PROMOTION = domain_events.domain_event(
    domain_events.PROMOTED,
    "keynote",
    "req-1",
    "2025-01-01T00:00:00Z",
    user_id="grace",
    fromPosition=1,
    reason=domain_events.BY_UNREGISTRATION,
)
SEAT = {"PK": "EVENT#keynote", "SK": "SEAT#grace", "registeredAt": "2025-01-01T00:00:00Z"}
SEAT_WITH_EVENT = {**SEAT, **PROMOTION.attributes()}
COUNTERS = {"PK": "EVENT#keynote", "SK": "META", "registeredCount": 1}


def _path(record: dict[str, Any], path: str) -> Any:
    """A dotted JSON path (`$.a.b`, what the pipe's parameters use) into `record`."""
    assert re.fullmatch(r"\$(\.[A-Za-z0-9_-]+)+", path), path
    value: Any = record
    for key in path.split(".")[1:]:
        value = value[key]
    return value


# --- the stream ------------------------------------------------------------------------


def test_the_table_streams_new_and_old_images(synthesized: Synthesized) -> None:
    _, table = _one(synthesized, "AWS::DynamoDB::Table")
    assert table["Properties"]["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}


def test_the_pipe_reads_the_tables_stream_into_the_bus(synthesized: Synthesized) -> None:
    table_id, _ = _one(synthesized, "AWS::DynamoDB::Table")
    bus_id, bus = _one(synthesized, "AWS::Events::EventBus")
    pipe = _pipe(synthesized)
    assert _get_att(pipe["Source"], "StreamArn") == table_id
    assert _get_att(pipe["Target"], "Arn") == bus_id
    assert pipe["DesiredState"] == "RUNNING"
    stream = pipe["SourceParameters"]["DynamoDBStreamParameters"]
    assert stream["StartingPosition"] == "TRIM_HORIZON"
    assert 1 <= stream["BatchSize"] <= 10  # a PutEvents call takes 10 entries
    assert 0 <= stream["MaximumRetryAttempts"] <= 10
    # The bus and its outputs.
    assert bus["Properties"]["Name"] == f"{names.STACK_NAME}-{names.EVENT_BUS_SUFFIX}"
    assert synthesized.output_ref(names.EVENT_BUS_NAME_OUTPUT) == bus_id
    assert _get_att(synthesized.raw["Outputs"][names.EVENT_BUS_ARN_OUTPUT]["Value"], "Arn") == bus_id


def test_the_filter_keeps_exactly_the_inserts_that_carry_a_domain_event(synthesized: Synthesized) -> None:
    (only,) = _pipe(synthesized)["SourceParameters"]["FilterCriteria"]["Filters"]
    pattern = json.loads(only["Pattern"])
    assert pattern == names.DOMAIN_EVENT_FILTER

    assert matches(pattern, _record("INSERT", SEAT_WITH_EVENT))
    # A change item (a removal's event) is an INSERT too.
    change = {"PK": "EVENT#keynote", "SK": "CHANGE#1", "expiresAt": 1, **PROMOTION.attributes()}
    assert matches(pattern, _record("INSERT", change))

    assert not matches(pattern, _record("INSERT", SEAT))
    assert not matches(pattern, _record("MODIFY", SEAT_WITH_EVENT, old=SEAT_WITH_EVENT))
    assert not matches(pattern, _record("MODIFY", {**COUNTERS, "registeredCount": 2}, old=COUNTERS))
    assert not matches(pattern, _record("REMOVE", None, old=SEAT_WITH_EVENT))
    # The text must be a string attribute.
    not_text = {**SEAT, domain_events.DETAIL_ATTRIBUTE: 1}
    assert not matches(pattern, _record("INSERT", not_text))


def test_the_detail_is_the_items_event_and_the_detail_type_its_type(synthesized: Synthesized) -> None:
    target = _pipe(synthesized)["TargetParameters"]
    bus = target["EventBridgeEventBusParameters"]
    assert bus["Source"] == domain_events.EVENT_SOURCE
    record = _record("INSERT", SEAT_WITH_EVENT)

    # The template is one placeholder: the string it names, inserted as it is.
    placeholder = re.fullmatch(r"<(\$[^<>]+)>", target["InputTemplate"])
    assert placeholder, target["InputTemplate"]
    detail = json.loads(_path(record, placeholder.group(1)))
    assert domain_events.parse(json.dumps(detail)) == PROMOTION

    # The detail type is a dynamic path into the record (not into the detail).
    detail_type = _path(record, bus["DetailType"])
    assert detail_type == PROMOTION.type and detail_type in domain_events.EVENT_TYPES
    assert len(detail_type) <= 128  # DetailType's limit


# --- the pipe's role ---------------------------------------------------------------------


def _role_statements(synthesized: Synthesized, role_id: str) -> Iterator[dict[str, Any]]:
    role = synthesized.raw["Resources"][role_id]["Properties"]
    assert not role.get("ManagedPolicyArns"), role
    for policy in role.get("Policies", []):
        yield from policy["PolicyDocument"]["Statement"]
    for resource in synthesized.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in resource["Properties"].get("Roles", []):
            yield from resource["Properties"]["PolicyDocument"]["Statement"]


def _grants(statements: Iterator[dict[str, Any]]) -> set[tuple[str, str]]:
    """(action, resource) pairs allowed, each resource as its JSON (intrinsics included)."""
    found = set()
    for statement in statements:
        assert (
            statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        )
        for action in _as_list(statement["Action"]):
            for resource in _as_list(statement["Resource"]):
                found.add((action, json.dumps(resource, sort_keys=True)))
    return found


def test_the_pipes_role_reads_that_stream_puts_to_that_bus_and_dead_letters_to_its_queue(
    synthesized: Synthesized,
) -> None:
    pipe = _pipe(synthesized)
    role_id = _get_att(pipe["RoleArn"], "Arn")
    trust = synthesized.raw["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "pipes.amazonaws.com"}]
    assert trust[0]["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}

    stream = json.dumps(pipe["Source"], sort_keys=True)
    bus = json.dumps(pipe["Target"], sort_keys=True)
    queue = json.dumps(
        pipe["SourceParameters"]["DynamoDBStreamParameters"]["DeadLetterConfig"]["Arn"], sort_keys=True
    )
    expected = {(a, stream) for a in READ_STREAM} | {("events:PutEvents", bus), ("sqs:SendMessage", queue)}
    assert _grants(_role_statements(synthesized, role_id)) == expected
    # Nobody else may use this role: no other resource names it.
    users = [
        lid
        for lid, r in synthesized.raw["Resources"].items()
        if lid != role_id and {"Fn::GetAtt": [role_id, "Arn"]} in _values(r.get("Properties", {}))
    ]
    assert users == [_pipe_id(synthesized)]


def _values(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for inner in value.values():
            yield from _values(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _values(inner)


# --- dead letters ----------------------------------------------------------------------


def _queue_is_encrypted_and_wants_tls(synthesized: Synthesized, queue_id: str) -> None:
    queue = synthesized.raw["Resources"][queue_id]["Properties"]
    assert queue.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue, queue
    policies = [
        r["Properties"]
        for r in synthesized.resources("AWS::SQS::QueuePolicy").values()
        if {"Ref": queue_id} in r["Properties"]["Queues"]
    ]
    (policy,) = policies
    assert {
        "Action": "sqs:*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Resource": {"Fn::GetAtt": [queue_id, "Arn"]},
    } in policy["PolicyDocument"]["Statement"]


def _alarm_on_queue(synthesized: Synthesized, queue_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        r["Properties"]
        for r in synthesized.resources("AWS::CloudWatch::Alarm").values()
        if r["Properties"].get("Namespace") == "AWS/SQS"
        and r["Properties"].get("Dimensions")
        == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    ]
    assert len(found) == 1, found
    return found[0]


def test_the_pipes_dead_letter_queue_is_encrypted_and_alarmed_like_the_rest(synthesized: Synthesized) -> None:
    queue_id = _dead_letter_queue_id(synthesized)
    _queue_is_encrypted_and_wants_tls(synthesized, queue_id)
    alarm = _alarm_on_queue(synthesized, queue_id)
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert alarm["TreatMissingData"] == "notBreaching"
    # The same action as every other alarm: the monitoring's topic.
    assert alarm["AlarmActions"] == [{"Ref": synthesized.output_ref(monitoring.ALARM_TOPIC_OUTPUT)}]


# --- the log of the bus's events -------------------------------------------------------


def _resolve_policy_text(value: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A `Fn::Join` policy text parsed, each intrinsic replaced by a marker; the markers."""
    separator, parts = value["Fn::Join"]
    markers: dict[str, Any] = {}
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        else:
            marker = f"@{len(markers)}@"
            markers[marker] = part
            texts.append(marker)
    return json.loads(separator.join(texts)), markers


def test_the_rule_copies_the_buss_events_to_the_log_group(synthesized: Synthesized) -> None:
    bus_id, _ = _one(synthesized, "AWS::Events::EventBus")
    _, rule = _one(synthesized, "AWS::Events::Rule")
    log_group_id = synthesized.output_ref(names.EVENT_LOG_GROUP_OUTPUT)
    log_group = synthesized.raw["Resources"][log_group_id]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"]["LogGroupName"].startswith(names.EVENT_LOG_GROUP_PREFIX)
    assert log_group["Properties"]["RetentionInDays"] > 0

    props = rule["Properties"]
    assert _ref(props["EventBusName"]) == bus_id
    assert props.get("State", "ENABLED") == "ENABLED"
    on_the_bus = {
        "source": domain_events.EVENT_SOURCE,
        "detail-type": PROMOTION.type,
        "detail": json.loads(PROMOTION.text()),
    }
    assert matches(props["EventPattern"], on_the_bus)
    assert not matches(props["EventPattern"], {**on_the_bus, "source": "aws.s3"})

    (target,) = props["Targets"]
    assert "RoleArn" not in target  # a log group target is written under its resource policy
    _, parts = target["Arn"]["Fn::Join"]
    assert parts[-2:] == [":log-group:", {"Ref": log_group_id}], parts
    _queue_is_encrypted_and_wants_tls(synthesized, _get_att(target["DeadLetterConfig"]["Arn"], "Arn"))
    _alarm_on_queue(synthesized, _get_att(target["DeadLetterConfig"]["Arn"], "Arn"))


def test_the_log_groups_resource_policy_lets_this_rule_write_it(synthesized: Synthesized) -> None:
    rule_id, _ = _one(synthesized, "AWS::Events::Rule")
    log_group_id = synthesized.output_ref(names.EVENT_LOG_GROUP_OUTPUT)
    _, policy = _one(synthesized, "AWS::Logs::ResourcePolicy")
    document, markers = _resolve_policy_text(policy["Properties"]["PolicyDocument"])
    (statement,) = document["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert set(_as_list(statement["Action"])) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert markers[statement["Resource"]] == {"Fn::GetAtt": [log_group_id, "Arn"]}
    (source_arn,) = statement["Condition"]["ArnEquals"].values()
    assert markers[source_arn] == {"Fn::GetAtt": [rule_id, "Arn"]}


# --- nothing that runs code -------------------------------------------------------------


def test_no_function_or_custom_resource_serves_the_domain_events(synthesized: Synthesized) -> None:
    # The webhooks' functions consume their own queues, not the bus.
    handlers = {
        *names.TASK_HANDLERS.values(),
        *names.RECONCILE_HANDLERS.values(),
        *names.CANCEL_HANDLERS.values(),
        *names.ERASE_HANDLERS.values(),
        names.API_HANDLER,
        *names.WEBHOOK_HANDLERS.values(),
    }
    functions = synthesized.resources("AWS::Lambda::Function")
    assert sorted(f["Properties"]["Handler"] for f in functions.values()) == sorted(handlers)
    custom = [
        lid
        for lid, r in synthesized.raw["Resources"].items()
        if r["Type"].startswith("Custom::") or r["Type"] == "AWS::CloudFormation::CustomResource"
    ]
    assert custom == []
