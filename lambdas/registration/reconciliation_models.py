"""The reconciliation workflow's models: what its tasks pass one another (pages of
events, one event's repairs, the run's totals) and what a run records.

Apart from `models.py` because only the reconciliation tasks and their tools use them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from registration.models import EventId, EventState, Record, Timestamp


class Counters(Record):
    """The event item's counters, as reconciliation reads and writes them."""

    registeredCount: int
    waitlistCount: int
    waitlistSeq: int

    @classmethod
    def of(cls, event: EventState) -> Counters:
        return cls(
            registeredCount=event.registeredCount,
            waitlistCount=event.waitlistCount,
            waitlistSeq=event.waitlistSeq,
        )


RepairKind = Literal[
    "remove_slot",
    "remove_membership",
    "restore_membership",
    "restore_slot",
    "repoint_membership",
]


class RepairAction(Record):
    """One change to a waitlist item, with the state it was decided on.

    - `remove_slot`: delete slot `seq` (still held by `userId`).
    - `remove_membership`: delete the user's membership (still at `seq`).
    - `restore_membership`: re-create the user's membership for slot `seq`.
    - `restore_slot`: re-create slot `seq` for the user's membership.
    - `repoint_membership`: the user's membership moves from `fromSeq` to slot `seq`.
    """

    kind: RepairKind
    userId: str
    seq: int
    fromSeq: int | None = None
    joinedAt: str | None = None
    reason: str


class ReconcileOptions(BaseModel):
    """What a reconciliation run may be started with (the schedule sends `{}`)."""

    model_config = ConfigDict(extra="ignore")

    pageSize: int = Field(default=50, ge=1, le=100, strict=True, description="Events per Map page")
    eventIds: list[EventId] | None = Field(
        default=None, max_length=100, description="Only these events (one page), e.g. from an operator"
    )


class EventsPage(Record):
    eventIds: list[str] = Field(default_factory=list)
    nextToken: str | None = None


class ListEventsPageInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    runId: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    options: ReconcileOptions = Field(default_factory=ReconcileOptions)
    page: EventsPage = Field(default_factory=EventsPage, description="The previous page ({} at first)")


class ReconcileEventInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    eventId: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    runId: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    startedAt: Timestamp


ReconcileOutcome = Literal["clean", "repaired", "busy", "missing", "failed"]


class EventReconciliation(Record):
    """What one run did to one event (the Map iteration's result)."""

    eventId: str
    outcome: ReconcileOutcome
    before: Counters | None = None
    after: Counters | None = None
    countRepairs: int = 0
    waitlistRepairs: int = 0
    promotions: int = 0
    overbooked: bool = False
    actions: list[RepairAction] = Field(default_factory=list, description="The first few waitlist repairs")
    cancelReleaseStarted: bool = Field(
        default=False,
        description=(
            "The event is cancelled yet still held seats or waitlist places, so its cancel run was "
            "started (a no-op when that run exists already)"
        ),
    )
    error: str | None = None

    @property
    def repairs(self) -> int:
        return self.countRepairs + self.waitlistRepairs + self.promotions


class ReconciliationTotals(Record):
    pages: int = 0
    events: int = 0
    clean: int = 0
    repaired: int = 0
    busy: int = 0
    missing: int = 0
    failed: int = 0
    countRepairs: int = 0
    waitlistRepairs: int = 0
    promotions: int = 0
    overbooked: int = 0
    repairedEventIds: list[str] = Field(default_factory=list)
    busyEventIds: list[str] = Field(default_factory=list)
    failedEventIds: list[str] = Field(default_factory=list)

    @property
    def repairs(self) -> int:
        return self.countRepairs + self.waitlistRepairs + self.promotions


class TallyInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    totals: ReconciliationTotals = Field(default_factory=ReconciliationTotals)
    results: list[EventReconciliation] = Field(default_factory=list)


class RecordRunInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    runId: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    startedAt: Timestamp
    totals: ReconciliationTotals = Field(default_factory=ReconciliationTotals)


class ReconciliationRun(ReconciliationTotals):
    """A run's summary: the execution's output, and a table item when it changed anything."""

    runId: str
    startedAt: Timestamp
    finishedAt: Timestamp
    recorded: bool = Field(description="True when the summary was also written to the table")
