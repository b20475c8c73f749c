"""What the measured units mean on AWS: published prices and quotas (us-east-1), and the arithmetic.

Every figure carries its source. Prices change: update them here (and the date) when
AWS publishes new ones; the report prints what this module holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PRICES_CHECKED = "2026-11"
REGION = "us-east-1"


@dataclass(frozen=True)
class Source:
    title: str
    url: str


SFN_PRICING = Source("AWS Step Functions pricing", "https://aws.amazon.com/step-functions/pricing/")
LAMBDA_PRICING = Source("AWS Lambda pricing", "https://aws.amazon.com/lambda/pricing/")
DYNAMODB_PRICING = Source(
    "Amazon DynamoDB pricing for on-demand capacity", "https://aws.amazon.com/dynamodb/pricing/on-demand/"
)
DYNAMODB_PARTITIONS = Source(
    "DynamoDB Developer Guide: designing partition keys to distribute your workload",
    "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-design.html",
)
DYNAMODB_CAPACITY = Source(
    "DynamoDB Developer Guide: read and write operations (capacity unit consumption)",
    "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html",
)
DYNAMODB_ITEM_SIZES = Source(
    "DynamoDB Developer Guide: item sizes and formats",
    "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html",
)
DYNAMODB_TRANSACTIONS = Source(
    "DynamoDB Developer Guide: transactions, capacity management",
    "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html",
)
DYNAMODB_GSI = Source(
    "DynamoDB Developer Guide: global secondary indexes, provisioned throughput considerations",
    "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/GSI.html",
)
EVENTBRIDGE_PRICING = Source(
    "Amazon EventBridge pricing (event buses, Pipes)", "https://aws.amazon.com/eventbridge/pricing/"
)
SQS_PRICING = Source("Amazon SQS pricing", "https://aws.amazon.com/sqs/pricing/")
CLOUDWATCH_PRICING = Source("Amazon CloudWatch pricing (Logs)", "https://aws.amazon.com/cloudwatch/pricing/")
SFN_QUOTAS = Source(
    "Step Functions Developer Guide: service quotas",
    "https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html",
)
LAMBDA_QUOTAS = Source(
    "Lambda Developer Guide: quotas",
    "https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html",
)

# --- prices (us-east-1) -------------------------------------------------------------

# Step Functions Express: per request, plus duration x memory (billed in 64 MB chunks,
# duration rounded up to 100 ms). $0.00001667 per GB-second is the first tier
# ($0.06 per GB-hour, first 1,000 GB-hours a month); later tiers are cheaper.
EXPRESS_PER_REQUEST = 1.00 / 1_000_000
EXPRESS_PER_GB_SECOND = 0.06 / 3600
EXPRESS_MEMORY_CHUNK_MB = 64
EXPRESS_DURATION_STEP_MS = 100
# Memory used = 50 MB + definition size + execution data (the pricing page's formula);
# these workflows' definitions and payloads are a few KB, so one 64 MB chunk.
EXPRESS_BASE_MEMORY_MB = 50

# Lambda, x86_64: per request, plus GB-seconds (duration rounded up to 1 ms); first tier.
LAMBDA_PER_REQUEST = 0.20 / 1_000_000
LAMBDA_PER_GB_SECOND = 0.0000166667
LAMBDA_DURATION_STEP_MS = 1

# DynamoDB on-demand, Standard table class (after the November 2024 price reduction).
DYNAMODB_PER_WRITE_UNIT = 0.625 / 1_000_000
DYNAMODB_PER_READ_UNIT = 0.125 / 1_000_000

# Domain events. EventBridge Pipes: per request after filtering (a record the filter
# drops is free), each 64 KB chunk of a payload one request. The event bus: custom events
# put, each 64 KB chunk one event (the pipe's PutEvents to the bus are those). The bus's
# rule to the log group is free; CloudWatch Logs bills ingestion and storage (Standard
# class). DynamoDB Streams reads by a pipe are not billed per event (the pipe polls each
# shard whether or not anything changed), so they are not in the per-event figure.
PIPES_PER_REQUEST = 0.40 / 1_000_000
EVENTBRIDGE_PER_EVENT = 1.00 / 1_000_000
PAYLOAD_CHUNK_BYTES = 64 * 1024
LOGS_PER_GB_INGESTED = 0.50
LOGS_PER_GB_MONTH_STORED = 0.03
# The log group keeps a month (constructs/domain_events.py); stored data is compressed,
# which the storage figure ignores (an upper bound).
LOG_RETENTION_MONTHS = 1

# Webhooks (constructs/webhooks.py). SQS FIFO: per request, each 64 KB chunk of a
# payload one request; a batch call (up to 10 messages) is one request.
SQS_FIFO_PER_REQUEST = 0.50 / 1_000_000
# The pipe sends to the events queue in batches of this many; the fan-out function takes
# them in batches of as many, and its event source deletes each batch in one call.
WEBHOOK_EVENT_BATCH = 10
# What a function run costs besides its request: assumed durations at the functions'
# memory (a fan-out reads the subscriptions and sends; a delivery waits on its receiver).
FUNCTION_MEMORY_GB = 256 / 1024
FAN_OUT_DURATION_S = 0.05
DELIVERY_DURATION_S = 0.2
# A fan-out lists the subscriptions (one eventually consistent page of GSI1, up to 4 KB:
# half a read unit); a delivery reads its subscription strongly consistently (1 unit).
FAN_OUT_READ_UNITS = 0.5
DELIVERY_READ_UNITS = 1.0

# --- quotas ---------------------------------------------------------------------------

PARTITION_WRITE_UNITS_PER_S = 1000
PARTITION_READ_UNITS_PER_S = 3000
# StartExecution for Express workflows: token bucket of 6,000, refilled 6,000 per second,
# per account and Region (us-east-1). Synchronous Express calls are scaled on demand.
EXPRESS_START_RATE_PER_S = 6000
LAMBDA_DEFAULT_CONCURRENCY = 1000

PRICE_SOURCES: list[tuple[str, str, Source]] = [
    ("Step Functions Express requests", "$1.00 per million", SFN_PRICING),
    (
        "Step Functions Express duration",
        "$0.06 per GB-hour (= $0.00001667 per GB-second), first 1,000 GB-hours a month; "
        "64 MB chunks, 100 ms steps",
        SFN_PRICING,
    ),
    ("Lambda requests", "$0.20 per million", LAMBDA_PRICING),
    ("Lambda duration (x86_64)", "$0.0000166667 per GB-second, 1 ms steps", LAMBDA_PRICING),
    ("DynamoDB on-demand writes", "$0.625 per million write request units", DYNAMODB_PRICING),
    ("DynamoDB on-demand reads", "$0.125 per million read request units", DYNAMODB_PRICING),
    ("EventBridge Pipes", "$0.40 per million requests after filtering, 64 KB chunks", EVENTBRIDGE_PRICING),
    ("EventBridge custom events", "$1.00 per million events put, 64 KB chunks", EVENTBRIDGE_PRICING),
    ("CloudWatch Logs", "$0.50 per GB ingested, $0.03 per GB-month stored", CLOUDWATCH_PRICING),
    (
        "SQS FIFO requests",
        "$0.50 per million requests, 64 KB chunks (first million a month free)",
        SQS_PRICING,
    ),
]
QUOTA_SOURCES: list[tuple[str, str, Source]] = [
    (
        "Partition throughput",
        f"{PARTITION_WRITE_UNITS_PER_S:,} write units and {PARTITION_READ_UNITS_PER_S:,} read units per second",
        DYNAMODB_PARTITIONS,
    ),
    (
        "Express StartExecution rate",
        f"bucket {EXPRESS_START_RATE_PER_S:,}, refill {EXPRESS_START_RATE_PER_S:,} per second, per account and Region",
        SFN_QUOTAS,
    ),
    (
        "Lambda concurrency",
        f"{LAMBDA_DEFAULT_CONCURRENCY:,} concurrent executions per Region (default)",
        LAMBDA_QUOTAS,
    ),
]


@dataclass(frozen=True)
class Workload:
    """One operation as measured: what a million of them are made of."""

    read_units: float
    write_units: float  # table and index write units together
    executions: int  # Express executions (0 for a direct data-layer call)
    execution_ms: float  # one execution's duration
    lambda_invocations: int
    lambda_ms: float  # the invocations' durations added up
    lambda_memory_mb: int


@dataclass(frozen=True)
class CostPerMillion:
    express: float
    lambda_: float
    dynamodb_writes: float
    dynamodb_reads: float

    @property
    def total(self) -> float:
        return self.express + self.lambda_ + self.dynamodb_writes + self.dynamodb_reads


def express_billed_gb_seconds(duration_ms: float, payload_kb: float = 10) -> float:
    memory_mb = EXPRESS_BASE_MEMORY_MB + payload_kb / 1024
    chunks = max(1, math.ceil(memory_mb / EXPRESS_MEMORY_CHUNK_MB))
    steps = max(1, math.ceil(duration_ms / EXPRESS_DURATION_STEP_MS))
    return chunks * EXPRESS_MEMORY_CHUNK_MB / 1024 * steps * EXPRESS_DURATION_STEP_MS / 1000


def cost_per_million(work: Workload) -> CostPerMillion:
    million = 1_000_000
    express = work.executions * (
        EXPRESS_PER_REQUEST + express_billed_gb_seconds(work.execution_ms) * EXPRESS_PER_GB_SECOND
    )
    lambda_seconds = math.ceil(work.lambda_ms / LAMBDA_DURATION_STEP_MS) * LAMBDA_DURATION_STEP_MS / 1000
    lambda_ = work.lambda_invocations * LAMBDA_PER_REQUEST + (
        work.lambda_memory_mb / 1024 * lambda_seconds * LAMBDA_PER_GB_SECOND
    )
    return CostPerMillion(
        express=express * million,
        lambda_=lambda_ * million,
        dynamodb_writes=work.write_units * DYNAMODB_PER_WRITE_UNIT * million,
        dynamodb_reads=work.read_units * DYNAMODB_PER_READ_UNIT * million,
    )


@dataclass(frozen=True)
class EventCeiling:
    """Registrations per second one event can take, and what binds it."""

    per_second: float
    limit: str


def event_ceilings(
    *,
    event_partition_write_units: float,
    event_item_write_units: float,
    event_partition_read_units: float,
    shared_index_partition_write_units: float,
    executions: int = 1,
) -> list[EventCeiling]:
    """Each quota's ceiling for one event's registrations (the lowest binds)."""
    out = []
    if event_partition_write_units:
        out.append(
            EventCeiling(
                PARTITION_WRITE_UNITS_PER_S / event_partition_write_units,
                "write units on the event's partition key, all in one partition",
            )
        )
    if event_item_write_units:
        out.append(
            EventCeiling(
                PARTITION_WRITE_UNITS_PER_S / event_item_write_units,
                "write units on the event item alone (a partition split for heat cannot split one item)",
            )
        )
    if event_partition_read_units:
        out.append(
            EventCeiling(
                PARTITION_READ_UNITS_PER_S / event_partition_read_units,
                "read units on the event's partition key",
            )
        )
    if shared_index_partition_write_units:
        out.append(
            EventCeiling(
                PARTITION_WRITE_UNITS_PER_S / shared_index_partition_write_units,
                "GSI1 writes to the one `EVENTS` index partition every event's item is projected into "
                "(shared by all events)",
            )
        )
    if executions:
        out.append(EventCeiling(EXPRESS_START_RATE_PER_S / executions, "Express StartExecution rate quota"))
    return out


@dataclass(frozen=True)
class EventCostPerMillion:
    """A million domain events from the table's stream to the bus and its log group."""

    pipes: float
    event_bus: float
    logs: float

    @property
    def total(self) -> float:
        return self.pipes + self.event_bus + self.logs


def event_cost_per_million(detail_bytes: float, logged_bytes: float) -> EventCostPerMillion:
    """`detail_bytes`: the payload the pipe puts; `logged_bytes`: the event as logged."""
    million = 1_000_000
    chunks = max(1, math.ceil(detail_bytes / PAYLOAD_CHUNK_BYTES))
    gigabytes = logged_bytes * million / 1024**3
    return EventCostPerMillion(
        pipes=chunks * PIPES_PER_REQUEST * million,
        event_bus=chunks * EVENTBRIDGE_PER_EVENT * million,
        logs=gigabytes * (LOGS_PER_GB_INGESTED + LOGS_PER_GB_MONTH_STORED * LOG_RETENTION_MONTHS),
    )


@dataclass(frozen=True)
class WebhookCostPerMillion:
    """A million domain events through the webhooks' path on AWS, each to
    `subscriptions` matching subscriptions: the second pipe, the two FIFO queues' requests,
    the fan-out and delivery functions, and their table reads."""

    subscriptions: int
    pipes: float
    sqs: float
    lambda_: float
    dynamodb: float

    @property
    def total(self) -> float:
        return self.pipes + self.sqs + self.lambda_ + self.dynamodb

    @property
    def per_million_deliveries(self) -> float:
        return self.total / self.subscriptions if self.subscriptions else 0.0


def webhook_cost_per_million(detail_bytes: float, subscriptions: int = 1) -> WebhookCostPerMillion:
    """Per event: the pipe's request, its share of a SendMessageBatch, of the fan-out's
    receive and delete and of its invocation and subscription listing; per delivery: the
    fan-out's SendMessage, the delivery's receive and delete (batch size 1), its invocation
    and its read of the subscription. A failed attempt adds a ChangeMessageVisibility,
    a receive and an invocation (left out: the figure is for receivers that answer). Lambda's
    pollers' empty receives are a fixed cost a month, not per event, and are left out too."""
    million = 1_000_000
    chunks = max(1, math.ceil(detail_bytes / PAYLOAD_CHUNK_BYTES))
    batch_share = 1 / WEBHOOK_EVENT_BATCH
    # The delivery message is the detail wrapped with its subscription's id.
    delivery_chunks = max(1, math.ceil((detail_bytes + 64) / PAYLOAD_CHUNK_BYTES))
    sqs_requests = chunks * batch_share * 3 + subscriptions * (delivery_chunks + 2)
    invocations = batch_share + subscriptions
    gb_seconds = FUNCTION_MEMORY_GB * (batch_share * FAN_OUT_DURATION_S + subscriptions * DELIVERY_DURATION_S)
    read_units = batch_share * FAN_OUT_READ_UNITS + subscriptions * DELIVERY_READ_UNITS
    return WebhookCostPerMillion(
        subscriptions=subscriptions,
        pipes=chunks * PIPES_PER_REQUEST * million,
        sqs=sqs_requests * SQS_FIFO_PER_REQUEST * million,
        lambda_=(invocations * LAMBDA_PER_REQUEST + gb_seconds * LAMBDA_PER_GB_SECOND) * million,
        dynamodb=read_units * DYNAMODB_PER_READ_UNIT * million,
    )
