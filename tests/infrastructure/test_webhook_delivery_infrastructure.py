"""Webhook delivery in the synthesized template: the second pipe from the table's stream
into the events FIFO queue (its group and deduplication ids evaluated on a stream
record), both FIFO queues with their dead-letter queues, the event source mappings, each
role's grants as the template states them, and an alarm on every dead-letter queue."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infrastructure import names
from infrastructure.constructs import monitoring
from infrastructure.constructs import webhooks as webhook_construct
from infrastructure.constructs.webhooks import retry_span_seconds
from infrastructure.event_patterns import matches
from registration import keys
from registration.webhook_delivery import backoff_seconds
from tests.infrastructure.conftest import Synthesized
from tests.infrastructure.test_domain_events_infrastructure import (
    READ_STREAM,
    SEAT_WITH_EVENT,
    _alarm_on_queue,
    _get_att,
    _grants,
    _path,
    _queue_is_encrypted_and_wants_tls,
    _record,
    _role_statements,
)

pytestmark = pytest.mark.infrastructure


def _queue_ids(synthesized: Synthesized) -> dict[str, str]:
    """Queue name -> logical id (the FIFO queues are named)."""
    return {
        q["Properties"]["QueueName"]: lid
        for lid, q in synthesized.resources("AWS::SQS::Queue").items()
        if "QueueName" in q["Properties"]
    }


def _queue(synthesized: Synthesized, suffix: str, *, dead_letter: bool = False) -> str:
    return _queue_ids(synthesized)[names.webhook_queue_name(suffix, dead_letter=dead_letter)]


def _webhook_pipe(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    events = _queue(synthesized, names.WEBHOOK_EVENTS_QUEUE_SUFFIX)
    (found,) = [
        (lid, p["Properties"])
        for lid, p in synthesized.resources("AWS::Pipes::Pipe").items()
        if p["Properties"]["Target"] == {"Fn::GetAtt": [events, "Arn"]}
    ]
    return found


def _function_id(synthesized: Synthesized, function: str) -> str:
    handler = names.WEBHOOK_HANDLERS[function]
    (found,) = [
        lid
        for lid, f in synthesized.resources("AWS::Lambda::Function").items()
        if f["Properties"]["Handler"] == handler
    ]
    return found


def _mapping(synthesized: Synthesized, function: str) -> dict[str, Any]:
    function_id = _function_id(synthesized, function)
    (found,) = [
        m["Properties"]
        for m in synthesized.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    return found


def _role_of(synthesized: Synthesized, function: str) -> str:
    props = synthesized.raw["Resources"][_function_id(synthesized, function)]["Properties"]
    return _get_att(props["Role"], "Arn")


def _arn(logical_id: str) -> str:
    return json.dumps({"Fn::GetAtt": [logical_id, "Arn"]}, sort_keys=True)


# --- the pipe ------------------------------------------------------------------------------


def test_the_second_pipe_reads_the_tables_stream_into_the_events_fifo_queue(synthesized: Synthesized) -> None:
    ((table_id, _),) = synthesized.resources("AWS::DynamoDB::Table").items()
    assert len(synthesized.resources("AWS::Pipes::Pipe")) == 2  # a stream shard's two readers
    _, pipe = _webhook_pipe(synthesized)
    assert _get_att(pipe["Source"], "StreamArn") == table_id
    assert pipe["DesiredState"] == "RUNNING"
    stream = pipe["SourceParameters"]["DynamoDBStreamParameters"]
    assert stream["StartingPosition"] == "TRIM_HORIZON"
    assert 1 <= stream["BatchSize"] <= 10
    # The domain events' filter and input template, as the bus's pipe has them.
    (only,) = pipe["SourceParameters"]["FilterCriteria"]["Filters"]
    assert json.loads(only["Pattern"]) == names.DOMAIN_EVENT_FILTER
    assert pipe["TargetParameters"]["InputTemplate"] == names.DOMAIN_EVENT_INPUT_TEMPLATE


def test_the_pipe_groups_by_event_and_deduplicates_by_stream_record(synthesized: Synthesized) -> None:
    _, pipe = _webhook_pipe(synthesized)
    parameters = pipe["TargetParameters"]["SqsQueueParameters"]
    assert parameters == {
        "MessageGroupId": "$.dynamodb.NewImage.eventId.S",
        "MessageDeduplicationId": "$.eventID",
    }
    # Evaluated on a record the filter keeps: the event's id, and the record's own.
    seat = {**SEAT_WITH_EVENT, "eventId": "keynote"}
    record = _record("INSERT", seat)
    assert matches(json.loads(pipe["SourceParameters"]["FilterCriteria"]["Filters"][0]["Pattern"]), record)
    assert _path(record, parameters["MessageGroupId"]) == "keynote"
    assert _path(record, parameters["MessageDeduplicationId"]) == record["eventID"]


def test_the_pipes_role_reads_the_stream_and_sends_to_the_events_queue_only(synthesized: Synthesized) -> None:
    _, pipe = _webhook_pipe(synthesized)
    role_id = _get_att(pipe["RoleArn"], "Arn")
    trust = synthesized.raw["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "pipes.amazonaws.com"}]
    stream = json.dumps(pipe["Source"], sort_keys=True)
    target = json.dumps(pipe["Target"], sort_keys=True)
    dead_letters = json.dumps(
        pipe["SourceParameters"]["DynamoDBStreamParameters"]["DeadLetterConfig"]["Arn"], sort_keys=True
    )
    expected = {(a, stream) for a in READ_STREAM} | {
        ("sqs:SendMessage", target),
        ("sqs:SendMessage", dead_letters),
    }
    assert _grants(_role_statements(synthesized, role_id)) == expected


# --- the queues ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "max_receive_count"),
    [
        (names.WEBHOOK_EVENTS_QUEUE_SUFFIX, webhook_construct.FAN_OUT_MAX_RECEIVE_COUNT),
        (names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX, webhook_construct.DELIVERY_MAX_RECEIVE_COUNT),
    ],
)
def test_both_queues_are_fifo_with_a_fifo_dead_letter_queue(
    synthesized: Synthesized, suffix: str, max_receive_count: int
) -> None:
    queue_id = _queue(synthesized, suffix)
    dead_letter_id = _queue(synthesized, suffix, dead_letter=True)
    queue = synthesized.raw["Resources"][queue_id]["Properties"]
    dead_letter = synthesized.raw["Resources"][dead_letter_id]["Properties"]
    assert queue["FifoQueue"] is True and dead_letter["FifoQueue"] is True
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dead_letter_id, "Arn"]},
        "maxReceiveCount": max_receive_count,
    }
    for logical_id in (queue_id, dead_letter_id):
        _queue_is_encrypted_and_wants_tls(synthesized, logical_id)
    # A message may wait behind its group: the queue keeps it longer than its retries.
    assert queue["MessageRetentionPeriod"] > retry_span_seconds(webhook_construct.DELIVERY_MAX_RECEIVE_COUNT)


def test_the_deliveries_retries_span_about_a_day() -> None:
    count = webhook_construct.DELIVERY_MAX_RECEIVE_COUNT
    assert count == 30
    assert [backoff_seconds(n) for n in (1, 2, 3, 7, 8, 30)] == [30, 60, 120, 1920, 3600, 3600]
    assert retry_span_seconds(count) == 3810 + 23 * 3600 == 86_610
    assert retry_span_seconds(count - 1) < 24 * 3600 <= retry_span_seconds(count)


def test_each_queues_visibility_timeout_outlasts_its_function(synthesized: Synthesized) -> None:
    for function, suffix in (
        (names.WEBHOOK_FAN_OUT_FUNCTION_ID, names.WEBHOOK_EVENTS_QUEUE_SUFFIX),
        (names.WEBHOOK_DELIVERY_FUNCTION_ID, names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX),
    ):
        timeout = synthesized.raw["Resources"][_function_id(synthesized, function)]["Properties"]["Timeout"]
        queue = synthesized.raw["Resources"][_queue(synthesized, suffix)]["Properties"]
        assert queue["VisibilityTimeout"] >= timeout


# --- the event source mappings -------------------------------------------------------------


def test_the_functions_consume_their_queues_with_partial_batch_responses(synthesized: Synthesized) -> None:
    fan_out = _mapping(synthesized, names.WEBHOOK_FAN_OUT_FUNCTION_ID)
    delivery = _mapping(synthesized, names.WEBHOOK_DELIVERY_FUNCTION_ID)
    assert _get_att(fan_out["EventSourceArn"], "Arn") == _queue(
        synthesized, names.WEBHOOK_EVENTS_QUEUE_SUFFIX
    )
    assert _get_att(delivery["EventSourceArn"], "Arn") == _queue(
        synthesized, names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX
    )
    for mapping in (fan_out, delivery):
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping.get("Enabled", True) is True
    assert 1 <= fan_out["BatchSize"] <= 10
    assert delivery["BatchSize"] == 1
    # The fan-out sends to the queue the delivery function consumes.
    deliveries = _queue(synthesized, names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX)
    for function in names.WEBHOOK_HANDLERS:
        props = synthesized.raw["Resources"][_function_id(synthesized, function)]["Properties"]
        variables = props["Environment"]["Variables"]
        assert variables[names.ENV_WEBHOOK_DELIVERY_QUEUE_URL] == {"Ref": deliveries}
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert any("resolve:ssm" in json.dumps(layer) for layer in props["Layers"])


# --- the functions' roles --------------------------------------------------------------------


def _data_grants(synthesized: Synthesized, function: str) -> dict[tuple[str, str], Any]:
    """(action, resource) -> condition, for every statement but logs and X-Ray."""
    found: dict[tuple[str, str], Any] = {}
    for statement in _role_statements(synthesized, _role_of(synthesized, function)):
        assert statement["Effect"] == "Allow" and "NotAction" not in statement
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        for action in actions:
            if action.split(":")[0] in ("logs", "xray"):
                continue
            for resource in resources:
                found[(action, json.dumps(resource, sort_keys=True))] = statement.get("Condition")
    return found


CONSUME = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
}


def test_the_fan_out_queries_webhooks_on_the_index_and_sends_to_the_deliveries_queue(
    synthesized: Synthesized,
) -> None:
    ((table_id, _),) = synthesized.resources("AWS::DynamoDB::Table").items()
    grants = _data_grants(synthesized, names.WEBHOOK_FAN_OUT_FUNCTION_ID)
    index = json.dumps({"Fn::Join": ["", [{"Fn::GetAtt": [table_id, "Arn"]}, "/index/GSI1"]]}, sort_keys=True)
    events = _arn(_queue(synthesized, names.WEBHOOK_EVENTS_QUEUE_SUFFIX))
    deliveries = _arn(_queue(synthesized, names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX))
    assert set(grants) == {
        ("dynamodb:Query", index),
        ("sqs:SendMessage", deliveries),
        *((action, events) for action in CONSUME),
    }
    # Only the WEBHOOKS partition of the index: the listing of subscriptions.
    assert grants[("dynamodb:Query", index)] == {
        "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [keys.WEBHOOKS]}
    }


def test_the_delivery_reads_webhook_items_and_consumes_its_queue(synthesized: Synthesized) -> None:
    ((table_id, _),) = synthesized.resources("AWS::DynamoDB::Table").items()
    grants = _data_grants(synthesized, names.WEBHOOK_DELIVERY_FUNCTION_ID)
    table = _arn(table_id)
    deliveries = _arn(_queue(synthesized, names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX))
    assert set(grants) == {("dynamodb:GetItem", table), *((action, deliveries) for action in CONSUME)}
    assert grants[("dynamodb:GetItem", table)] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{keys.WEBHOOK_PREFIX}*"]}
    }
    assert all(grants[(action, deliveries)] is None for action in CONSUME)


# --- dead letters ------------------------------------------------------------------------------


def test_every_dead_letter_queue_of_the_webhooks_is_alarmed(synthesized: Synthesized) -> None:
    _, pipe = _webhook_pipe(synthesized)
    pipe_dead_letters = _get_att(
        pipe["SourceParameters"]["DynamoDBStreamParameters"]["DeadLetterConfig"]["Arn"], "Arn"
    )
    _queue_is_encrypted_and_wants_tls(synthesized, pipe_dead_letters)
    for queue_id in (
        pipe_dead_letters,
        _queue(synthesized, names.WEBHOOK_EVENTS_QUEUE_SUFFIX, dead_letter=True),
        _queue(synthesized, names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX, dead_letter=True),
    ):
        alarm = _alarm_on_queue(synthesized, queue_id)
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
        assert alarm["AlarmActions"] == [{"Ref": synthesized.output_ref(monitoring.ALARM_TOPIC_OUTPUT)}]
    assert synthesized.output_ref(names.WEBHOOK_DELIVERIES_DLQ_OUTPUT) == _queue(
        synthesized, names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX, dead_letter=True
    )


# --- the roles, evaluated (the twin's IAM evaluator over the template's documents) -----------


def _evaluated(synthesized: Synthesized, function: str) -> tuple[Any, Any]:
    from infrastructure.local.iam_policies import Request, RolePolicy
    from infrastructure.local.template import parse_template

    local = parse_template(synthesized.raw)
    role = local.roles[_role_of(synthesized, function)]
    policy = RolePolicy(role, role.documents)

    def allows(action: str, resource: str, *leading: str) -> bool:
        context = {"dynamodb:leadingkeys": leading} if leading else {}
        return policy.allows(Request(action, resource, context))

    return allows, local


def _local_arns(local: Any) -> dict[str, str]:
    prefix = f"arn:aws:sqs:{local.region}:{local.account}:{names.STACK_NAME}-"
    table = f"arn:aws:dynamodb:{local.region}:{local.account}:table/{local.table.name}"
    return {
        "table": table,
        "index": f"{table}/index/GSI1",
        "events": f"{prefix}{names.WEBHOOK_EVENTS_QUEUE_SUFFIX}.fifo",
        "deliveries": f"{prefix}{names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX}.fifo",
        "deliveries_dlq": f"{prefix}{names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX}-dlq.fifo",
    }


def test_the_fan_out_role_allows_the_listing_and_the_sends_and_nothing_near_them(
    synthesized: Synthesized,
) -> None:
    allows, local = _evaluated(synthesized, names.WEBHOOK_FAN_OUT_FUNCTION_ID)
    arn = _local_arns(local)
    assert allows("dynamodb:Query", arn["index"], keys.WEBHOOKS)
    assert not allows("dynamodb:Query", arn["index"], "EVENTS")
    assert not allows("dynamodb:Query", arn["table"], keys.WEBHOOKS)
    assert not allows("dynamodb:GetItem", arn["table"], keys.webhook_pk("w1"))
    assert allows("sqs:SendMessage", arn["deliveries"])
    assert not allows("sqs:SendMessage", arn["events"])
    assert not allows("sqs:SendMessage", arn["deliveries_dlq"])
    assert allows("sqs:ReceiveMessage", arn["events"]) and allows("sqs:DeleteMessage", arn["events"])
    assert not allows("sqs:ReceiveMessage", arn["deliveries"])


def test_the_delivery_role_reads_subscriptions_and_consumes_its_queue_only(synthesized: Synthesized) -> None:
    allows, local = _evaluated(synthesized, names.WEBHOOK_DELIVERY_FUNCTION_ID)
    arn = _local_arns(local)
    assert allows("dynamodb:GetItem", arn["table"], keys.webhook_pk("w1"))
    assert not allows("dynamodb:GetItem", arn["table"], "EVENT#keynote")
    assert not allows("dynamodb:GetItem", arn["table"], "USER#grace")
    assert not allows("dynamodb:Query", arn["table"], keys.webhook_pk("w1"))
    assert not allows("dynamodb:PutItem", arn["table"], keys.webhook_pk("w1"))
    for action in ("sqs:ChangeMessageVisibility", "sqs:ReceiveMessage", "sqs:DeleteMessage"):
        assert allows(action, arn["deliveries"])
        assert not allows(action, arn["events"])
    assert not allows("sqs:SendMessage", arn["deliveries"])


def test_the_twin_reads_the_pipe_the_queues_and_the_event_sources_it_runs(synthesized: Synthesized) -> None:
    from infrastructure.local.template import parse_template

    webhook_pipe, _ = _webhook_pipe(synthesized)
    local = parse_template(synthesized.raw)
    queues = {q.arn: q for q in local.queues.values()}
    pipe = local.pipes[webhook_pipe]
    events = queues[pipe.target_arn]
    assert events.fifo and events.name.endswith("-webhook-events.fifo")
    assert (pipe.message_group_id, pipe.message_deduplication_id) == (
        names.WEBHOOK_EVENTS_GROUP_ID_PATH,
        names.WEBHOOK_EVENTS_DEDUPLICATION_ID_PATH,
    )
    # Each FIFO queue with its redrive policy, each consumed by its function.
    by_function = {m.function_name: m for m in local.event_source_mappings.values()}
    handlers = {f.name: f.handler for f in local.functions.values()}
    consumed = {handlers[name]: queues[m.source_arn] for name, m in by_function.items()}
    fan_out = consumed[names.WEBHOOK_HANDLERS[names.WEBHOOK_FAN_OUT_FUNCTION_ID]]
    delivery = consumed[names.WEBHOOK_HANDLERS[names.WEBHOOK_DELIVERY_FUNCTION_ID]]
    assert fan_out is events
    assert delivery.fifo and delivery.max_receive_count == webhook_construct.DELIVERY_MAX_RECEIVE_COUNT
    assert queues[str(delivery.dead_letter_arn)].fifo
    assert all(m.report_batch_item_failures for m in by_function.values())
