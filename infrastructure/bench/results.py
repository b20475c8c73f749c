"""What the benchmark measures: its operations, settings and results, which the run fills
and the report renders."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from infrastructure.bench.dynamodb_units import Usage
from infrastructure.bench.load import LoadResult

COMMAND = "make bench"

# A measured capacity change adds this many seats to a full event with a longer waitlist.
PROMOTED_BY_A_RAISE = 10
# A measured erasure is of a user with this many seats, each with someone waiting for it.
ERASED_REGISTRATIONS = 10
# The operations, in report order: key -> label.
OPERATIONS: dict[str, str] = {
    "register_seat": "register into a seat",
    "register_floor": "floor: one conditioned transaction",
    "register_seat_keyed": "register into a seat, with Idempotency-Key",
    "register_replay": "replay of that request (same key)",
    "join_waitlist": "join the waitlist",
    "unregister_promote": "unregister, head of waitlist promoted",
    "unregister_release": "unregister, no waitlist",
    "leave_waitlist": "leave the waitlist",
    "raise_capacity": f"capacity +{PROMOTED_BY_A_RAISE} (PATCH), {PROMOTED_BY_A_RAISE} heads promoted",
}
# Run by the API function, not a workflow.
NOT_WORKFLOWS = ("register_floor", "raise_capacity")
WORKFLOW_OPERATIONS = [k for k in OPERATIONS if k not in NOT_WORKFLOWS]
MAX_REGISTER_ROUND_TRIPS = 3
MAX_REGISTER_INVOCATIONS = 4


@dataclass(frozen=True)
class CancelRun:
    """One cancellation of an event of `size` registrants: the cancel workflow's run, its
    children included (their DynamoDB calls are metered; their transitions and invocations,
    one each a group, are counted from the groups: the local interpreter keeps no history of
    a Distributed Map's children)."""

    size: int
    seconds: float
    usage: Usage
    groups: int
    transitions: int
    invocations: int


@dataclass(frozen=True)
class ErasureRun:
    """One erasure of a user holding a seat at each of `registrations` events, each with
    someone waiting for it (so every release is a hand-over): the mark, then the erase
    workflow's whole run, its wait for registrations in flight left out (it costs one
    transition, and 30 s on AWS)."""

    registrations: int
    seconds: float
    usage: Usage
    transitions: int
    invocations: int


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...]
    concurrency: tuple[int, ...]
    seconds: float
    repeats: int
    user_pool: int
    small: bool
    # Registrations whose domain events are timed to the bus's consumer, one at a time.
    events_measured: int = 100

    @classmethod
    def full(cls) -> Settings:
        return cls(
            sizes=(10, 1_000, 100_000),
            concurrency=(1, 8, 32),
            seconds=10.0,
            repeats=3,
            user_pool=8000,
            small=False,
        )

    @classmethod
    def reduced(cls) -> Settings:
        return cls(
            sizes=(10, 100),
            concurrency=(2,),
            seconds=1.5,
            repeats=2,
            user_pool=600,
            small=True,
            events_measured=20,
        )


@dataclass
class Measure:
    """One operation at one event size."""

    operation: str
    size: int
    usage: Usage
    calls: Counter[str]
    event_pk: str
    lambda_invocations: int = 0
    state_transitions: int = 0
    execution_ms: float = 0.0
    lambda_ms: float = 0.0
    # Every repeat's (execution ms, Lambda ms): durations vary from run to run, counts do not.
    durations: list[tuple[float, float]] = field(default_factory=list)
    repeats_identical: bool = True


@dataclass
class Results:
    settings: Settings
    machine: str
    started: datetime
    costs: list[Measure] = field(default_factory=list)
    cancels: list[CancelRun] = field(default_factory=list)
    erasures: list[ErasureRun] = field(default_factory=list)
    loads: list[LoadResult] = field(default_factory=list)
    memory_peaks: dict[str, int] = field(default_factory=dict)
    memory_peak_total: int = 0
    lambda_memory_mb: int = 0
    load_average: float | None = None
    load_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    # Domain events: ms from each registration's answer to its event reaching a consumer
    # of the local bus; the sizes (bytes) of the detail and of the event as logged.
    event_delivery_ms: list[float] = field(default_factory=list)
    # ms from each registration's answer to its webhook at a subscribed local receiver.
    webhook_delivery_ms: list[float] = field(default_factory=list)
    event_detail_bytes: int = 0
    event_logged_bytes: int = 0

    def median_durations(self, operation: str) -> tuple[float, float]:
        """The median run's (execution ms, Lambda ms) over every size and repeat of an operation."""
        runs = sorted(d for m in self.costs if m.operation == operation for d in m.durations)
        return runs[len(runs) // 2] if runs else (0.0, 0.0)

    def measure(self, operation: str, size: int) -> Measure:
        for m in self.costs:
            if m.operation == operation and m.size == size:
                return m
        raise KeyError((operation, size))

    def largest(self, operation: str) -> Measure:
        """The operation at the largest event size measured."""
        return max((m for m in self.costs if m.operation == operation), key=lambda m: m.size)

    def flat(self, operation: str) -> bool:
        """The operation's figures are the same at every event size."""
        rows = [m for m in self.costs if m.operation == operation]
        return all(m.repeats_identical for m in rows) and len({figures(m) for m in rows}) == 1

    def flat_everywhere(self) -> bool:
        return all(self.flat(op) for op in OPERATIONS)

    def register_within_targets(self) -> bool:
        rows = [m for m in self.costs if m.operation == "register_seat"]
        return bool(rows) and all(
            m.usage.round_trips <= MAX_REGISTER_ROUND_TRIPS
            and m.lambda_invocations <= MAX_REGISTER_INVOCATIONS
            for m in rows
        )


def figures(m: Measure) -> tuple[Any, ...]:
    return (*m.usage.figures(), tuple(sorted(m.calls.items())), m.lambda_invocations, m.state_transitions)
