"""Reconciliation: recount an event from the base table, repair what drifted, promote.

What is repaired, per event (the survey and the plan are `repair_plan.py`):

* `registeredCount` := the number of seat items; `waitlistCount` := the number of
  complete waitlist entries (a slot and a membership that point at each other);
  `waitlistSeq` := at least the highest sequence any waitlist item carries (so a new
  entry always lands behind every existing one).
* Half-entries of the waitlist. The slot (`QUEUE#seq`) is the queue: it holds the
  place. The membership (`WAITLISTED#user`) answers "is this user waitlisted". Rules,
  per user (nobody else's place ever moves; nobody gets a place they cannot prove):

  - the user holds a seat: every slot and membership of theirs is removed (a seat
    outranks a place in the queue; promoting them would fail forever);
  - a complete entry exists: any other slot of theirs is a duplicate and is removed;
  - slots but no matching membership: the earliest slot is kept and the membership is
    re-created for it (or re-pointed to it), the other slots are removed;
  - a membership but no slot: the slot is re-created at the membership's sequence when
    that place is free; when another user's entry holds it, the membership is removed
    (it proves no place).

* A free seat while anyone waits, before the event starts: the head is promoted, one
  transaction per seat, until the event is full or nobody waits. Never into a cancelled
  event: its seats are being released, not filled.
* A cancelled event that still holds seats or waitlist places once it is recounted: its
  cancel run is started. The API starts that run right after marking the event cancelled;
  this is the safety net for an API that stopped in between. The run's name is the
  event's, so when the run exists (running, ended or failed, which its own alarm reports)
  the start changes nothing.

Why it cannot race a live registration: each repair is one transaction conditioned on
the three counters being exactly what was read before the recount, and on each item it
touches being as it was read. Every live seat or waitlist change moves a counter in the
same transaction, so if anything commits between the read and the repair, the repair is
cancelled and the event is read again (a bounded number of times; then it is left for
the next run as "busy"). Because every live change moves a counter and its items by the
same amount, "counter minus truth" is invariant under live traffic: setting the counter
to the recount is right whenever the counters are unchanged at commit.

The one blind spot of counter conditions is a seat taken and another released between
the reads (`registeredCount` goes up and back down). The waitlist cannot do that
(`waitlistSeq` only grows and a waitlist can only shrink without it), but the seat count
can. So a drift is acted on only after a second recount finds the very same seat keys
(a digest) and the same waitlist with the counters unchanged throughout; a torn count
would have to repeat itself exactly across both passes.

Nothing is written for an event that is consistent: a run on a consistent table changes
nothing. What a run changes is recorded per event and run (`RECONCILED#...`, with the
counters before and after, the waitlist repairs and the promoted users).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from registration import cancellation, schedule
from registration.data import RegistrationStore
from registration.data.dynamo import now_iso
from registration.data.repairs import ReconciliationRecord
from registration.errors import DecisionStale
from registration.models import EventState, WaitlistHead
from registration.reconciliation_models import (
    Counters,
    EventReconciliation,
    ReconciliationRun,
    ReconciliationTotals,
    RepairAction,
)
from registration.repair_plan import Plan, chunks, plan_repair, survey

# Reads-and-repairs of one event before it is left for the next run.
MAX_ATTEMPTS = 8
BACKOFF_S = 0.02
MAX_BACKOFF_S = 0.5
# Promotions per event per run (each is a transaction; the next run continues).
MAX_PROMOTIONS = 1000
# Repair records and run summaries expire (TTL) after this long.
RECORD_RETENTION_DAYS = 90
# How many event ids and repair actions a summary or a result lists (counts are complete).
MAX_LISTED = 100
MAX_ACTIONS_IN_RESULT = 20

# Metric names (CloudWatch alarms refer to REPAIRS_METRIC: keep it in step with the CDK app).
REPAIRS_METRIC = "ReconciliationRepairs"
REPAIR_KIND_METRICS = {
    "countRepairs": "ReconciliationCountRepairs",
    "waitlistRepairs": "ReconciliationWaitlistRepairs",
    "promotions": "ReconciliationPromotions",
}
OUTCOME_METRICS = {
    "clean": "ReconciliationEventsClean",
    "repaired": "ReconciliationEventsRepaired",
    "busy": "ReconciliationEventsBusy",
    "missing": "ReconciliationEventsMissing",
}
OVERBOOKED_METRIC = "ReconciliationOverbooked"


@dataclass(frozen=True)
class Run:
    """The run a reconciliation belongs to (the Step Functions execution)."""

    run_id: str
    started_at: str

    @property
    def expires_at(self) -> int:
        started = datetime.fromisoformat(self.started_at.replace("Z", "+00:00"))
        return int((started + timedelta(days=RECORD_RETENTION_DAYS)).timestamp())

    @property
    def request_id(self) -> str:
        return f"reconcile:{self.run_id}"


def normalize_timestamp(value: str | None) -> str:
    """An ISO 8601 timestamp as the table stores them (UTC, milliseconds, `Z`)."""
    if not value:
        return now_iso()
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- repairing -----------------------------------------------------------------------


@dataclass
class _Progress:
    before: Counters | None = None
    after: Counters | None = None
    count_repairs: int = 0
    waitlist_repairs: int = 0
    promoted: list[str] = field(default_factory=list)
    overbooked: bool = False
    actions: list[RepairAction] = field(default_factory=list)
    cancel_release_started: bool = False

    def changed(self, before: Counters, after: Counters) -> None:
        self.before = self.before or before
        self.after = after

    def result(self, event_id: str, outcome: str) -> EventReconciliation:
        changed = self.count_repairs or self.waitlist_repairs or self.promoted
        if outcome == "clean" and changed:
            outcome = "repaired"
        return EventReconciliation.model_validate(
            {
                "eventId": event_id,
                "outcome": outcome,
                "before": self.before,
                "after": self.after,
                "countRepairs": self.count_repairs,
                "waitlistRepairs": self.waitlist_repairs,
                "promotions": len(self.promoted),
                "overbooked": self.overbooked,
                "actions": self.actions[:MAX_ACTIONS_IN_RESULT],
                "cancelReleaseStarted": self.cancel_release_started,
            }
        )


def reconcile_event(
    store: RegistrationStore,
    event_id: str,
    run: Run,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    max_promotions: int = MAX_PROMOTIONS,
) -> EventReconciliation:
    """Recount, repair and promote one event; returns what changed."""
    progress = _Progress()
    lost = 0  # reads or transactions that lost a race with other writers
    steps = 0  # every pass, bounded even when each one makes progress
    while lost < max_attempts and steps < 4 * max_attempts:
        steps += 1
        if lost:
            _backoff(lost)
        event = store.find_event(event_id)
        if event is None:
            return progress.result(event_id, "missing")
        seen = Counters.of(event)
        found = survey(store, event_id)
        if _counters(store, event_id) != seen:
            lost += 1  # changed while counting: the recount may be torn
            continue
        plan = plan_repair(event, found)
        progress.overbooked = plan.overbooked

        if not plan.empty:
            # Confirm before writing: the same items again, counters still unchanged.
            again = survey(store, event_id)
            if (
                _counters(store, event_id) != seen
                or not again.same_items(found)
                or not _apply(store, event_id, plan, run, progress)
            ):
                lost += 1
            continue  # recount: verifies the repair and decides on promotions

        if _may_promote(event, seen):
            promoted = _promote(store, event, run, progress, max_promotions - len(progress.promoted))
            if promoted is None:
                lost += 1
            elif len(progress.promoted) >= max_promotions:
                return progress.result(event_id, "busy")
            continue  # recount once more: the queue may have changed meanwhile
        _release_if_cancelled(event, seen, run, progress)
        return progress.result(event_id, "clean")
    return progress.result(event_id, "busy")


def _may_promote(event: EventState, seen: Counters) -> bool:
    """A seat is free while someone waits, and promoting into the event is still allowed.
    Without the last part a cancelled or started event with a free seat would be recounted
    until it counted as busy, with nothing to do."""
    return (
        seen.registeredCount < event.capacity
        and seen.waitlistCount > 0
        and not schedule.is_cancelled(event)
        and not schedule.has_started(event, now_iso())
    )


def _release_if_cancelled(event: EventState, seen: Counters, run: Run, progress: _Progress) -> None:
    """Starts the cancel run of a cancelled event that still holds anything. `seen` is the
    recount a whole pass confirmed, so what it holds is real, not drift."""
    if not schedule.is_cancelled(event) or (seen.registeredCount == 0 and seen.waitlistCount == 0):
        return
    cancellation.start_release(event.eventId, run.request_id)
    progress.cancel_release_started = True


def _counters(store: RegistrationStore, event_id: str) -> Counters | None:
    event = store.find_event(event_id)
    return Counters.of(event) if event else None


def _backoff(lost: int) -> None:
    time.sleep(min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (lost - 1)) * (0.5 + random.random()))


def _apply(store: RegistrationStore, event_id: str, plan: Plan, run: Run, progress: _Progress) -> bool:
    """The plan's transactions in order; False when one lost a race (the rest is redone
    after a fresh read). Every committed transaction leaves the counters true."""
    current = plan.seen
    entries = plan.entries
    packed = chunks(plan.groups) or [[]]
    for number, chunk in enumerate(packed):
        actions = [a for g in chunk for a in g.actions]
        entries += sum(g.entries_delta for g in chunk)
        target = Counters(
            registeredCount=plan.after.registeredCount,
            waitlistCount=entries,
            waitlistSeq=plan.after.waitlistSeq,
        )
        count_repairs = plan.count_repairs if number == 0 else 0
        now = now_iso()
        record = ReconciliationRecord(
            runId=run.run_id,
            runStartedAt=run.started_at,
            now=now,
            expiresAt=run.expires_at,
            actions=actions,
            countRepairs=count_repairs,
            waitlistRepairs=len(actions),
            overbooked=plan.overbooked,
        )
        try:
            store.apply_repair(event_id, current, target, actions, record)
        except DecisionStale:
            return False
        progress.changed(current, target)
        progress.count_repairs += count_repairs
        progress.waitlist_repairs += len(actions)
        progress.actions.extend(actions)
        current = target
    return True


def _promote(
    store: RegistrationStore, event: EventState, run: Run, progress: _Progress, limit: int
) -> int | None:
    """Promotes heads while a seat is free, until the event starts (a seat freed after
    that stays free); the number promoted, or None after a lost race."""
    seen = Counters.of(event)
    promoted = 0
    while (
        seen.waitlistCount > 0
        and promoted < limit
        and schedule.free_seats(event.model_copy(update=seen.model_dump()), now_iso()) > 0
    ):
        head = store.waitlist_head(event.eventId)
        if head is None:
            return None  # the counter says someone waits but no slot exists: recount
        if not _promote_one(store, event.eventId, head, seen, run, progress):
            return None
        seen = Counters(
            registeredCount=seen.registeredCount + 1,
            waitlistCount=seen.waitlistCount - 1,
            waitlistSeq=seen.waitlistSeq,
        )
        promoted += 1
    return promoted


def _promote_one(
    store: RegistrationStore, event_id: str, head: WaitlistHead, seen: Counters, run: Run, progress: _Progress
) -> bool:
    now = now_iso()
    record = ReconciliationRecord(
        runId=run.run_id,
        runStartedAt=run.started_at,
        now=now,
        expiresAt=run.expires_at,
        promoted=[head.userId],
    )
    try:
        store.promote_waitlist_head(event_id, head, seen, run.request_id, now, record)
    except DecisionStale:
        return False
    after = Counters(
        registeredCount=seen.registeredCount + 1,
        waitlistCount=seen.waitlistCount - 1,
        waitlistSeq=seen.waitlistSeq,
    )
    progress.changed(seen, after)
    progress.promoted.append(head.userId)
    return True


# --- summarizing ---------------------------------------------------------------------


def tally(totals: ReconciliationTotals, results: Iterable[EventReconciliation]) -> ReconciliationTotals:
    """Adds one page of per-event results to the run's totals."""
    out = totals.model_copy(deep=True)
    out.pages += 1
    for result in results:
        out.events += 1
        if result.outcome == "clean":
            out.clean += 1
        elif result.outcome == "repaired":
            out.repaired += 1
            _listed(out.repairedEventIds, result.eventId)
        elif result.outcome == "busy":
            out.busy += 1
            _listed(out.busyEventIds, result.eventId)
        elif result.outcome == "missing":
            out.missing += 1
        else:
            out.failed += 1
            _listed(out.failedEventIds, result.eventId)
        if result.outcome == "busy" and result.repairs:
            # Partly repaired before it got busy: it changed, so it is listed as repaired too.
            _listed(out.repairedEventIds, result.eventId)
        out.countRepairs += result.countRepairs
        out.waitlistRepairs += result.waitlistRepairs
        out.promotions += result.promotions
        out.overbooked += int(result.overbooked)
    return out


def _listed(ids: list[str], event_id: str) -> None:
    if len(ids) < MAX_LISTED:
        ids.append(event_id)


def record_run(store: RegistrationStore, run: Run, totals: ReconciliationTotals) -> ReconciliationRun:
    """The run's summary; written to the table only when the run changed something."""
    changed = totals.repairs > 0
    summary = ReconciliationRun.model_validate(
        {
            **totals.model_dump(),
            "runId": run.run_id,
            "startedAt": run.started_at,
            "finishedAt": now_iso(),
            "recorded": changed,
        }
    )
    if changed:
        store.put_reconciliation_run(summary, run.expires_at)
    return summary


# --- paging ----------------------------------------------------------------------------


def list_events_page(
    store: RegistrationStore, page_size: int, next_token: str | None, event_ids: list[str] | None
) -> tuple[list[str], str | None]:
    """The next page of event ids to reconcile: the operator's list (one page), or GSI1."""
    if event_ids is not None:
        return list(dict.fromkeys(event_ids)), None
    page = store.list_event_ids(limit=page_size, next_token=next_token)
    return page.items, page.nextToken
