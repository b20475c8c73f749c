"""Webhook delivery on AWS: a second pipe from the table's stream to an SQS FIFO queue, a
fan-out function, a deliveries FIFO queue and a delivery function.

Why a queue and not the bus: EventBridge does not keep the order of the events it
delivers, while a webhook receiver wants one event's changes in commit order (a
promotion after the unregistration that caused it). A FIFO queue fed from the stream
does keep it, per message group: the pipe gives each message the group of its event
(`MessageGroupId` = the dynamic path `names.WEBHOOK_EVENTS_GROUP_ID_PATH`, the carrying
item's `eventId`: every item that carries a domain event has one) and the stream
record's id as its deduplication id (`names.WEBHOOK_EVENTS_DEDUPLICATION_ID_PATH`: a
record the pipe sends twice, within SQS's five minutes, is kept once). Both are string
fields of the SQS target parameters, which take a dynamic JSON path as their whole value
(every string, non-enum field of a target's parameters but the CloudWatch Logs
`LogStreamName`, the bus's `EndpointId` and the HTTP header parameters; a path reads the
source record, not the transformed input: eb-pipes-event-target.html, "Dynamic path
parameters"). The pipe uses the domain events' filter and input template
(`names.DOMAIN_EVENT_FILTER`, `names.DOMAIN_EVENT_INPUT_TEMPLATE`), so a message's body
is the domain event's detail JSON. A DynamoDB stream shard serves at most two readers at
once: these are the two, the domain events' pipe and this one.

The fan-out function (SQS event source, partial batch responses) sends, for each
message, one message per matching subscription to the deliveries queue, in the group
`{webhookId}#{eventId}` with the deduplication id `{webhookId}#{id}`; at a failure it
stops that group and reports its message and the group's later ones as failed
(`registration.webhook_fanout`). The delivery function (batch size 1) reads the
subscription (gone: the message is done, nothing sent), POSTs the signed message, and
on a failure sets the message's visibility timeout to its backoff (`BACKOFF_*`,
`registration.webhook_delivery`) and reports it. Until it comes back, the later messages
of its group wait behind it: SQS FIFO hands out no message of a group while one of them
is in flight, which is what keeps a subscription's events of one event in order (other
subscriptions, and other events, go on). After `DELIVERY_MAX_RECEIVE_COUNT` attempts the
queue moves the message to its dead-letter queue (about 24 hours of retries, see there).

Every queue is FIFO (but the pipe's own dead-letter queue, which a stream source wants
standard), encrypted with SQS-managed keys and refuses plain HTTP; every dead-letter
queue is alarmed (the stack's monitoring gives the alarms its actions). Each role may do
what its user does and nothing else: the pipe reads this stream and sends to the events
queue (and its dead-letter queue); the fan-out function queries the `WEBHOOKS` partition
of GSI1 and sends to the deliveries queue; the delivery function reads `WEBHOOK#` items
and consumes its queue (receive, delete, change visibility: what the event source needs).
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_pipes as pipes
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infrastructure import names
from infrastructure.constructs.domain_events import (
    ALARM_PERIOD,
    DEAD_LETTER_RETENTION,
    stream_pipe,
)
from infrastructure.constructs.table import GSI1_NAME
from infrastructure.constructs.task_functions import (
    ASSET_EXCLUDES,
    LAMBDA_ASSET_DIR,
    leading_keys_condition,
    python_function,
)
from registration import keys, webhooks
from registration.webhook_delivery import BACKOFF_BASE_S, BACKOFF_CAP_S, backoff_seconds

# A SendMessageBatch takes 10 entries; the pipe sends its batch to the queue that way.
PIPE_BATCH_SIZE = 10
PIPE_DLQ_CONSTRUCT_ID = "PipeDeadLetterQueue"
PIPE_DLQ_ALARM_CONSTRUCT_ID = "PipeDeadLetterAlarm"

# The functions: a fan-out sends a few messages, a delivery waits at most
# DELIVERY_TIMEOUT_S for its receiver; both have room for a cold start and a slow read.
FUNCTION_TIMEOUT = Duration.seconds(30)
if FUNCTION_TIMEOUT.to_seconds() < 2 * webhooks.DELIVERY_TIMEOUT_S:
    raise ValueError("the delivery function must outlast its receiver's timeout")
# Lambda wants a queue's visibility timeout at least its function's timeout; six times
# leaves room for the event source's own retries of a throttled invocation.
QUEUE_VISIBILITY_TIMEOUT = Duration.seconds(6 * int(FUNCTION_TIMEOUT.to_seconds()))
# Messages may wait long behind a failing one of their group: keep them SQS's most.
QUEUE_RETENTION = Duration.days(14)
FAN_OUT_BATCH_SIZE = 10
DELIVERY_BATCH_SIZE = 1
# A fan-out fails only when SQS refuses a send: a few tries, then its dead-letter queue.
FAN_OUT_MAX_RECEIVE_COUNT = 5


def retry_span_seconds(max_receive_count: int) -> int:
    """From a delivery's first attempt until its queue dead-letters it: the waits after each
    of its `max_receive_count` failed attempts (the attempts' own time left out)."""
    return sum(backoff_seconds(n) for n in range(1, max_receive_count + 1))


# A delivery's attempts: after attempt n fails, the message waits
# min(30 s * 2^(n-1), 1 h) (`registration.webhook_delivery.backoff_seconds`):
# 30 + 60 + ... + 1920 = 3810 s over the first 7 waits, then 1 h each. The queue moves the
# message to its dead-letter queue when it would be received a 31st time, i.e. after the
# 30th failed attempt's wait: 3810 + 23 x 3600 = 86,610 s, 24 h 03 min after the first
# attempt (the 30th attempt itself at 23 h 03 min). 29 would give up at 23 h 03 min.
DELIVERY_MAX_RECEIVE_COUNT = 30
RETRY_SPAN_S = retry_span_seconds(DELIVERY_MAX_RECEIVE_COUNT)
if not 24 * 3600 <= RETRY_SPAN_S < 25 * 3600:
    raise ValueError(f"the deliveries' retries span {RETRY_SPAN_S} s, not about a day")
BACKOFF_TEXT = f"{BACKOFF_BASE_S} s doubling to {BACKOFF_CAP_S // 60} min"

# What each function may do on the table.
FAN_OUT_TABLE_ACTIONS = ("dynamodb:Query",)  # GSI1, the WEBHOOKS partition
DELIVERY_TABLE_ACTIONS = ("dynamodb:GetItem",)  # WEBHOOK# items
WEBHOOK_LEADING_KEYS = [f"{keys.WEBHOOK_PREFIX}*"]
WEBHOOK_LISTING_KEYS = [keys.WEBHOOKS]


def queue_name(scope: Construct, suffix: str, *, dead_letter: bool = False) -> str:
    """`<stack name>-<suffix>[-dlq].fifo`, the stack's own name."""
    return names.webhook_queue_name(suffix, dead_letter=dead_letter, stack_name=Stack.of(scope).stack_name)


class Webhooks(Construct):
    """The webhook pipe, its two FIFO queues with their dead-letter queues, the fan-out
    and delivery functions, and the dead-letter alarms."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        table: dynamodb.ITable,
        powertools_layer: lambda_.ILayerVersion,
    ) -> None:
        super().__init__(scope, construct_id)
        stream_arn = table.table_stream_arn
        if stream_arn is None:
            raise ValueError(f"{table.node.path} has no stream: the webhooks' pipe reads it")
        # Queues ---------------------------------------------------------------------------
        self.events_dead_letter_queue = _fifo_queue(
            self,
            names.WEBHOOK_EVENTS_DLQ_CONSTRUCT_ID,
            queue_name(self, names.WEBHOOK_EVENTS_QUEUE_SUFFIX, dead_letter=True),
            retention=DEAD_LETTER_RETENTION,
        )
        self.events_queue = _fifo_queue(
            self,
            names.WEBHOOK_EVENTS_QUEUE_CONSTRUCT_ID,
            queue_name(self, names.WEBHOOK_EVENTS_QUEUE_SUFFIX),
            dead_letter=sqs.DeadLetterQueue(
                queue=self.events_dead_letter_queue, max_receive_count=FAN_OUT_MAX_RECEIVE_COUNT
            ),
        )
        self.deliveries_dead_letter_queue = _fifo_queue(
            self,
            names.WEBHOOK_DELIVERIES_DLQ_CONSTRUCT_ID,
            queue_name(self, names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX, dead_letter=True),
            retention=DEAD_LETTER_RETENTION,
        )
        self.deliveries_queue = _fifo_queue(
            self,
            names.WEBHOOK_DELIVERIES_QUEUE_CONSTRUCT_ID,
            queue_name(self, names.WEBHOOK_DELIVERIES_QUEUE_SUFFIX),
            dead_letter=sqs.DeadLetterQueue(
                queue=self.deliveries_dead_letter_queue, max_receive_count=DELIVERY_MAX_RECEIVE_COUNT
            ),
        )
        # A DynamoDB stream source dead-letters to a standard queue.
        self.pipe_dead_letter_queue = sqs.Queue(
            self,
            PIPE_DLQ_CONSTRUCT_ID,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
        )

        # The pipe -------------------------------------------------------------------------
        self.pipe_role, self.pipe = stream_pipe(
            self,
            pipe_id=names.WEBHOOK_PIPE_CONSTRUCT_ID,
            role_id=names.WEBHOOK_PIPE_ROLE_CONSTRUCT_ID,
            stream_arn=stream_arn,
            dead_letter_queue=self.pipe_dead_letter_queue,
            batch_size=PIPE_BATCH_SIZE,
            target_arn=self.events_queue.queue_arn,
            target_grant=iam.PolicyStatement(
                actions=["sqs:SendMessage"], resources=[self.events_queue.queue_arn]
            ),
            target_parameters=pipes.CfnPipe.PipeTargetParametersProperty(
                input_template=names.DOMAIN_EVENT_INPUT_TEMPLATE,
                sqs_queue_parameters=pipes.CfnPipe.PipeTargetSqsQueueParametersProperty(
                    message_group_id=names.WEBHOOK_EVENTS_GROUP_ID_PATH,
                    message_deduplication_id=names.WEBHOOK_EVENTS_DEDUPLICATION_ID_PATH,
                ),
            ),
            description="Sends the table's domain events to the webhook events FIFO queue, grouped by event",
            role_description="Lets the webhooks' pipe read the table's stream and send to the events queue",
        )

        # The functions --------------------------------------------------------------------
        code = lambda_.Code.from_asset(str(LAMBDA_ASSET_DIR), exclude=ASSET_EXCLUDES)
        self.fan_out_function = python_function(
            self,
            names.WEBHOOK_FAN_OUT_FUNCTION_ID,
            names.WEBHOOK_HANDLERS[names.WEBHOOK_FAN_OUT_FUNCTION_ID],
            code=code,
            layer=powertools_layer,
            statements=[
                iam.PolicyStatement(
                    actions=list(FAN_OUT_TABLE_ACTIONS),
                    resources=[f"{table.table_arn}/index/{GSI1_NAME}"],
                    conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": WEBHOOK_LISTING_KEYS}},
                ),
                iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[self.deliveries_queue.queue_arn]),
            ],
            table=table,
            role_description="Runs the webhook fan-out (subscriptions read, deliveries sent)",
            description="Webhook fan-out: one delivery message per matching subscription",
            timeout=FUNCTION_TIMEOUT,
        )
        self.delivery_function = python_function(
            self,
            names.WEBHOOK_DELIVERY_FUNCTION_ID,
            names.WEBHOOK_HANDLERS[names.WEBHOOK_DELIVERY_FUNCTION_ID],
            code=code,
            layer=powertools_layer,
            statements=[
                iam.PolicyStatement(
                    actions=list(DELIVERY_TABLE_ACTIONS),
                    resources=[table.table_arn],
                    conditions=leading_keys_condition(WEBHOOK_LEADING_KEYS),
                )
            ],
            table=table,
            role_description="Runs the webhook delivery (a subscription read, its message POSTed)",
            description="Webhook delivery: one message, signed, to its subscription's URL",
            timeout=FUNCTION_TIMEOUT,
        )
        for function in (self.fan_out_function, self.delivery_function):
            function.add_environment(names.ENV_WEBHOOK_DELIVERY_QUEUE_URL, self.deliveries_queue.queue_url)
        self.fan_out_function.add_event_source(
            event_sources.SqsEventSource(
                self.events_queue, batch_size=FAN_OUT_BATCH_SIZE, report_batch_item_failures=True
            )
        )
        self.delivery_function.add_event_source(
            event_sources.SqsEventSource(
                self.deliveries_queue, batch_size=DELIVERY_BATCH_SIZE, report_batch_item_failures=True
            )
        )

        # Alarms (the stack's monitoring gives them its actions) -----------------------------
        self.pipe_dead_letter_alarm = _dead_letter_alarm(
            self,
            PIPE_DLQ_ALARM_CONSTRUCT_ID,
            self.pipe_dead_letter_queue,
            "The webhooks' pipe gave up on stream records (the events queue refused them): "
            "their batches are in the pipe's dead-letter queue; the stream keeps the records 24 hours",
        )
        self.events_dead_letter_alarm = _dead_letter_alarm(
            self,
            names.WEBHOOK_EVENTS_DLQ_ALARM_CONSTRUCT_ID,
            self.events_dead_letter_queue,
            f"Domain events the webhook fan-out failed on {FAN_OUT_MAX_RECEIVE_COUNT} times are in "
            "its dead-letter queue: no subscription got them",
        )
        self.deliveries_dead_letter_alarm = _dead_letter_alarm(
            self,
            names.WEBHOOK_DELIVERIES_DLQ_ALARM_CONSTRUCT_ID,
            self.deliveries_dead_letter_queue,
            f"Webhook messages their receivers refused for a day ({DELIVERY_MAX_RECEIVE_COUNT} "
            f"attempts, {BACKOFF_TEXT}) are in the deliveries' dead-letter queue",
        )

    @property
    def alarms(self) -> list[cloudwatch.Alarm]:
        return [self.pipe_dead_letter_alarm, self.events_dead_letter_alarm, self.deliveries_dead_letter_alarm]

    @property
    def functions(self) -> dict[str, lambda_.IFunction]:
        return {
            names.WEBHOOK_FAN_OUT_FUNCTION_ID: self.fan_out_function,
            names.WEBHOOK_DELIVERY_FUNCTION_ID: self.delivery_function,
        }


def _fifo_queue(
    scope: Construct,
    construct_id: str,
    name: str,
    *,
    dead_letter: sqs.DeadLetterQueue | None = None,
    retention: Duration = QUEUE_RETENTION,
) -> sqs.Queue:
    return sqs.Queue(
        scope,
        construct_id,
        queue_name=name,
        fifo=True,
        # The senders give each message its deduplication id.
        content_based_deduplication=False,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=retention,
        visibility_timeout=QUEUE_VISIBILITY_TIMEOUT,
        dead_letter_queue=dead_letter,
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
