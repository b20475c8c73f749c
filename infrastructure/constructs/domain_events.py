"""Domain events on AWS: the table's stream, through an EventBridge pipe, onto a bus.

A committed change that causes a domain event puts an item carrying it (the JSON text
under `registration.domain_events.DETAIL_ATTRIBUTE`, the type under `TYPE_ATTRIBUTE`), so
exactly the INSERT stream records whose new image has that text are domain events. The
pipe (an L1 `AWS::Pipes::Pipe`: no alpha package, no custom resource) keeps those with
one filter (`names.DOMAIN_EVENT_FILTER`) and puts each on the project's bus:

* the detail is the item's text whole: `InputTemplate` is the one placeholder
  `<$.dynamodb.NewImage.domainEvent.S>`. A placeholder that names a string inserts the
  string's content unquoted (the guide's "JSON Path" example, `<$.attributes.SenderId>`;
  quotes go around a string placeholder only inside a JSON template), so the detail is
  the event's JSON object itself;
* `Source` is `EVENT_SOURCE`; `DetailType` is the dynamic path
  `$.dynamodb.NewImage.domainEventType.S`. Target parameters take a JSON path as their
  whole value on every string, non-enum field except `LogStreamName`, the bus's
  `EndpointId` and the HTTP header parameters; for a bus target the guide names
  `Source` and `DetailType` as dynamic. A dynamic path reads the source record, not the
  transformed input, which is what this path names.
  (docs.aws.amazon.com/eventbridge/latest/userguide/eb-pipes-event-target.html,
  "Dynamic path parameters" and "EventBridge event bus target specifics";
  .../eb-pipes-input-transformation.html)

A batch the bus refuses is retried a few times, bisected down to the failing record, then
given up on: its details go to the pipe's dead-letter queue (alarmed), while the stream
keeps the records for 24 hours. The pipe's role may read this stream, put to this bus and
send to that queue, nothing else.

A rule on the bus copies every event of `EVENT_SOURCE` to a log group operators follow
(`regctl events tail --aws`). EventBridge writes to a log group under the log group's
resource policy (not a role): the construct writes that policy itself
(`AWS::Logs::ResourcePolicy`), for events.amazonaws.com and this rule only, instead of
the CDK target's custom-resource Lambda. An account holds at most 10 such policies per
region. Events the rule cannot deliver go to their own dead-letter queue (alarmed).
"""

from __future__ import annotations

import json

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_pipes as pipes
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infrastructure import names

# What the pipe's role may do on the stream (EventBridge Pipes' documented set for a
# DynamoDB stream source).
STREAM_READ_ACTIONS = (
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
)
# The stream keeps records for 24 hours: start at its oldest, so that nothing written
# before the pipe first ran is lost.
STARTING_POSITION = "TRIM_HORIZON"
# A PutEvents call takes at most 10 entries.
BATCH_SIZE = 10
# A record the bus refuses blocks its shard while retried: give up after a few tries.
MAXIMUM_RETRY_ATTEMPTS = 3
# 14 days (SQS's most): time to look at what was given up on and replay it.
DEAD_LETTER_RETENTION = Duration.days(14)
LOG_RETENTION = logs.RetentionDays.ONE_MONTH
# The rule's target retries for up to an hour, then dead-letters the event.
LOG_TARGET_RETRY_ATTEMPTS = 8
LOG_TARGET_MAX_EVENT_AGE_S = 3600
ALARM_PERIOD = Duration.minutes(5)
LOG_TARGET_ID = "DomainEventsLog"


def event_bus_name(scope: Construct) -> str:
    """`<stack name>-domain-events`: unique per stack."""
    return f"{Stack.of(scope).stack_name}-{names.EVENT_BUS_SUFFIX}"


def event_log_group_name(scope: Construct) -> str:
    """`/aws/events/<stack name>-domain-events`."""
    return f"{names.EVENT_LOG_GROUP_PREFIX}{event_bus_name(scope)}"


def domain_event_source(batch_size: int, dead_letter_arn: str) -> pipes.CfnPipe.PipeSourceParametersProperty:
    """How a pipe reads the table's stream: from its oldest record, keeping exactly the
    domain events (`names.DOMAIN_EVENT_FILTER`), bounded retries, a dead-letter queue."""
    return pipes.CfnPipe.PipeSourceParametersProperty(
        dynamo_db_stream_parameters=pipes.CfnPipe.PipeSourceDynamoDBStreamParametersProperty(
            starting_position=STARTING_POSITION,
            batch_size=batch_size,
            maximum_retry_attempts=MAXIMUM_RETRY_ATTEMPTS,
            # A refused batch is halved until the record at fault is alone.
            on_partial_batch_item_failure="AUTOMATIC_BISECT",
            dead_letter_config=pipes.CfnPipe.DeadLetterConfigProperty(arn=dead_letter_arn),
        ),
        filter_criteria=pipes.CfnPipe.FilterCriteriaProperty(
            filters=[pipes.CfnPipe.FilterProperty(pattern=json.dumps(names.DOMAIN_EVENT_FILTER))]
        ),
    )


def stream_pipe(
    scope: Construct,
    *,
    pipe_id: str,
    role_id: str,
    stream_arn: str,
    dead_letter_queue: sqs.IQueue,
    batch_size: int,
    target_arn: str,
    target_grant: iam.PolicyStatement,
    target_parameters: pipes.CfnPipe.PipeTargetParametersProperty,
    description: str,
    role_description: str,
) -> tuple[iam.Role, pipes.CfnPipe]:
    """A pipe from the table's stream that keeps the domain events (`domain_event_source`),
    with its own role: read that stream, `target_grant` on the target, send to its
    dead-letter queue (SQS-managed encryption: no KMS permission), nothing else."""
    role = iam.Role(
        scope,
        role_id,
        assumed_by=iam.ServicePrincipal(
            "pipes.amazonaws.com",
            conditions={"StringEquals": {"aws:SourceAccount": Stack.of(scope).account}},
        ),
        description=role_description,
    )
    role.add_to_policy(iam.PolicyStatement(actions=list(STREAM_READ_ACTIONS), resources=[stream_arn]))
    role.add_to_policy(target_grant)
    role.add_to_policy(
        iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[dead_letter_queue.queue_arn])
    )
    pipe = pipes.CfnPipe(
        scope,
        pipe_id,
        description=description,
        role_arn=role.role_arn,
        source=stream_arn,
        source_parameters=domain_event_source(batch_size, dead_letter_queue.queue_arn),
        target=target_arn,
        target_parameters=target_parameters,
        desired_state="RUNNING",
    )
    # The role's policy exists before the pipe starts reading (else its first reads fail).
    pipe.node.add_dependency(role)
    return role, pipe


class DomainEvents(Construct):
    """The bus, the pipe from the table's stream to it, and the log of its events."""

    def __init__(self, scope: Construct, construct_id: str, *, table: dynamodb.ITable) -> None:
        super().__init__(scope, construct_id)
        stream_arn = table.table_stream_arn
        if stream_arn is None:
            raise ValueError(f"{table.node.path} has no stream: the domain events' pipe reads it")
        stack = Stack.of(self)

        self.bus = events.EventBus(self, names.EVENT_BUS_CONSTRUCT_ID, event_bus_name=event_bus_name(self))

        # The pipe --------------------------------------------------------------------
        self.pipe_dead_letter_queue = _dead_letter_queue(self, names.EVENT_PIPE_DLQ_CONSTRUCT_ID)
        self.pipe_role, self.pipe = stream_pipe(
            self,
            pipe_id=names.EVENT_PIPE_CONSTRUCT_ID,
            role_id=names.EVENT_PIPE_ROLE_CONSTRUCT_ID,
            stream_arn=stream_arn,
            dead_letter_queue=self.pipe_dead_letter_queue,
            batch_size=BATCH_SIZE,
            target_arn=self.bus.event_bus_arn,
            target_grant=iam.PolicyStatement(
                actions=["events:PutEvents"], resources=[self.bus.event_bus_arn]
            ),
            target_parameters=pipes.CfnPipe.PipeTargetParametersProperty(
                input_template=names.DOMAIN_EVENT_INPUT_TEMPLATE,
                event_bridge_event_bus_parameters=pipes.CfnPipe.PipeTargetEventBridgeEventBusParametersProperty(
                    source=names.EVENT_SOURCE,
                    detail_type=names.DOMAIN_EVENT_DETAIL_TYPE_PATH,
                ),
            ),
            description="Puts the table's domain events on the bus",
            role_description="Lets the domain events' pipe read the table's stream and put to the bus",
        )

        # The log of the bus's events ----------------------------------------------------
        self.log_group = logs.LogGroup(
            self,
            names.EVENT_LOG_GROUP_CONSTRUCT_ID,
            log_group_name=event_log_group_name(self),
            retention=LOG_RETENTION,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.log_dead_letter_queue = _dead_letter_queue(self, names.EVENT_LOG_RULE_DLQ_CONSTRUCT_ID)
        self.log_rule = events.CfnRule(
            self,
            names.EVENT_LOG_RULE_CONSTRUCT_ID,
            description="Copies every domain event to the log group operators follow",
            event_bus_name=self.bus.event_bus_name,
            event_pattern=names.DOMAIN_EVENT_LOG_PATTERN,
            state="ENABLED",
            targets=[
                events.CfnRule.TargetProperty(
                    id=LOG_TARGET_ID,
                    # A log group target is named without the `:*` of the log group's Arn.
                    arn=stack.format_arn(
                        service="logs",
                        resource="log-group",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        resource_name=self.log_group.log_group_name,
                    ),
                    retry_policy=events.CfnRule.RetryPolicyProperty(
                        maximum_retry_attempts=LOG_TARGET_RETRY_ATTEMPTS,
                        maximum_event_age_in_seconds=LOG_TARGET_MAX_EVENT_AGE_S,
                    ),
                    dead_letter_config=events.CfnRule.DeadLetterConfigProperty(
                        arn=self.log_dead_letter_queue.queue_arn
                    ),
                )
            ],
        )
        from_this_rule = {"ArnEquals": {"aws:SourceArn": self.log_rule.attr_arn}}
        self.log_group_policy = logs.ResourcePolicy(
            self,
            names.EVENT_LOG_POLICY_CONSTRUCT_ID,
            policy_statements=[
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("events.amazonaws.com")],
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[self.log_group.log_group_arn],
                    conditions=from_this_rule,
                )
            ],
        )
        self.log_dead_letter_queue.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[self.log_dead_letter_queue.queue_arn],
                conditions=from_this_rule,
            )
        )

        # Alarms (the stack's monitoring gives them its actions) ---------------------------
        self.pipe_dead_letter_alarm = _dead_letter_alarm(
            self,
            names.EVENT_PIPE_DLQ_ALARM_CONSTRUCT_ID,
            self.pipe_dead_letter_queue,
            "The domain events' pipe gave up on stream records (the bus refused them): "
            "their batches are in the pipe's dead-letter queue; the stream keeps the records 24 hours",
        )
        self.log_dead_letter_alarm = _dead_letter_alarm(
            self,
            names.EVENT_LOG_RULE_DLQ_ALARM_CONSTRUCT_ID,
            self.log_dead_letter_queue,
            "Domain events could not be written to their log group (they are on the bus, "
            "and in the rule's dead-letter queue)",
        )

    @property
    def alarms(self) -> list[cloudwatch.Alarm]:
        return [self.pipe_dead_letter_alarm, self.log_dead_letter_alarm]


def _dead_letter_queue(scope: Construct, construct_id: str) -> sqs.Queue:
    return sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=DEAD_LETTER_RETENTION,
    )


def _dead_letter_alarm(
    scope: Construct, construct_id: str, queue: sqs.IQueue, description: str
) -> cloudwatch.Alarm:
    return cloudwatch.Alarm(
        scope,
        construct_id,
        alarm_description=description,
        metric=queue.metric_approximate_number_of_messages_visible(
            period=ALARM_PERIOD, statistic=cloudwatch.Stats.MAXIMUM
        ),
        threshold=0,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=1,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
