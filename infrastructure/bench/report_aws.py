"""The report's AWS section: the measured units at published prices and quotas, per operation and per event."""

from __future__ import annotations

import math

from infrastructure.bench import aws_costs
from infrastructure.bench.aws_costs import CostPerMillion, Workload
from infrastructure.bench.report_format import money, num, table
from infrastructure.bench.results import OPERATIONS, Measure, Results
from registration import keys


def workload(results: Results, m: Measure) -> Workload:
    execution_ms, lambda_ms = results.median_durations(m.operation)
    return Workload(
        read_units=m.usage.read_units,
        write_units=m.usage.total_write_units,
        executions=1 if m.lambda_invocations else 0,
        execution_ms=execution_ms if m.lambda_invocations else 0.0,
        lambda_invocations=m.lambda_invocations,
        lambda_ms=lambda_ms,
        lambda_memory_mb=results.lambda_memory_mb,
    )


def costs_per_million(results: Results) -> dict[str, CostPerMillion]:
    return {op: aws_costs.cost_per_million(workload(results, results.largest(op))) for op in OPERATIONS}


def ceilings(m: Measure) -> list[aws_costs.EventCeiling]:
    usage = m.usage
    event_item = f"{m.event_pk}|{keys.METADATA}"
    return aws_costs.event_ceilings(
        event_partition_write_units=usage.partition_writes.get(m.event_pk, 0.0),
        event_item_write_units=usage.item_writes.get(event_item, 0.0),
        event_partition_read_units=usage.partition_reads.get(m.event_pk, 0.0),
        shared_index_partition_write_units=usage.index_partition_writes.get(keys.EVENTS, 0.0),
        executions=1 if m.lambda_invocations else 0,
    )


def _partition_range(m: Measure) -> tuple[float, float]:
    """Registrations/s under the partition write limit: event partition whole, event item alone."""
    limit = aws_costs.PARTITION_WRITE_UNITS_PER_S
    partition = m.usage.partition_writes.get(m.event_pk, 0.0)
    item = m.usage.item_writes.get(f"{m.event_pk}|{keys.METADATA}", 0.0)
    return (limit / partition if partition else math.inf, limit / item if item else math.inf)


def section(results: Results) -> list[str]:
    prices = costs_per_million(results)
    rows = []
    for op, label in OPERATIONS.items():
        m = results.largest(op)
        c = prices[op]
        rows.append(
            [
                label,
                money(c.express),
                money(c.lambda_),
                money(c.dynamodb_writes),
                money(c.dynamodb_reads),
                f"**{money(c.total)}**",
                "/".join(num(ms, 0) for ms in results.median_durations(op)) if m.lambda_invocations else "-",
            ]
        )
    register = results.largest("register_seat")
    limits = ceilings(register)
    binding = min(limits, key=lambda c: c.per_second)
    ceiling_rows = [
        [c.limit, num(c.per_second, 0) + (" **(binds)**" if c is binding else "")] for c in limits
    ]
    summary = []
    for op, what in (("register_seat", "into seats"), ("join_waitlist", "onto its waitlist")):
        low, high = _partition_range(results.largest(op))
        summary.append(f"about {num(low, 0)} registrations per second {what} ({num(high, 0)} at most)")
    sources = [
        f"- {what}: {figure}. [{src.title}]({src.url})" for what, figure, src in aws_costs.PRICE_SOURCES
    ]
    sources += [
        f"- {what}: {figure}. [{src.title}]({src.url})" for what, figure, src in aws_costs.QUOTA_SOURCES
    ]
    return [
        "## 3. What it means on AWS",
        "",
        f"Derived from the measured units at published {aws_costs.REGION} prices (checked "
        f"{aws_costs.PRICES_CHECKED}). Express duration and Lambda duration use the durations measured "
        f"here (the median run of all sizes; Express billed in 100 ms steps at 64 MB, Lambda at "
        f"{results.lambda_memory_mb} MB, the task functions' setting): on AWS the tasks' DynamoDB calls "
        "are faster than DynamoDB Local's, so these duration charges are an upper estimate. "
        "API Gateway, CloudWatch Logs (Express history at level ALL) and X-Ray are not included.",
        "",
        "Cost per million operations:",
        "",
        *table(
            [
                "operation",
                "Step Functions Express",
                "Lambda",
                "DynamoDB writes",
                "DynamoDB reads",
                "total",
                "median execution / Lambda ms",
            ],
            rows,
        ),
        "",
        "Registrations per second one event can take (register into a seat; each quota alone):",
        "",
        *table(["limit", "registrations/s"], ceiling_rows),
        "",
        f"So one event takes {summary[0]}, and {summary[1]}: the lower figure while the event's "
        "items share one partition, the higher once DynamoDB has split it for heat, which leaves "
        "the event item, written by every registration, as the limit. The Express start rate is "
        "an account-wide quota, far above either.",
        "",
        "Prices and quotas used:",
        "",
        *sources,
        "",
    ]
