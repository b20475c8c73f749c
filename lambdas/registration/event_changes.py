"""Changing an event (`PATCH /events/{id}`): a JSON merge patch of its own fields, guarded
by its version (`If-Match`), and the seats it adds given to the waitlist's heads.

Raising `capacity` moves heads into the new seats in FIFO order, the first batch in the
change's own transaction, the next ones each a transaction conditioned on the counters
(`registration.promoted`, reason `capacity`), until the seats or the waitlist run out or
the event has started. Lowering it evicts nobody: the seats above it are kept (the event
records how many, for reconciliation), and nobody is seated again until the count is
below capacity. Turning the waitlist off is refused while anyone is on it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from registration import schedule
from registration.data import RegistrationStore
from registration.data.dynamo import now_iso
from registration.data.event_changes import PROMOTIONS_PER_TRANSACTION
from registration.errors import (
    ContentionLimitExceeded,
    DecisionStale,
    EventCancelled,
    PreconditionFailed,
    ValidationError,
    WaitlistNotEmpty,
)
from registration.models import SCHEDULE_FIELDS, EventPatch, EventState, schedule_problems
from registration.service import MAX_DECISIONS, redecide_backoff

# One request seats at most this many (32 transactions, well within the API function's
# time); a longer waitlist behind more new seats is seated by the next reconciliation.
MAX_PROMOTIONS_PER_CHANGE = 1024
IF_MATCH_HEADER = "If-Match"
_ENTITY_TAG = re.compile(r'^(W/)?"([^"]*)"$')


@dataclass
class ChangeOutcome:
    event: EventState
    promoted: list[str] = field(default_factory=list)


def entity_tag(event: EventState) -> str:
    """The event's ETag: its version, a strong tag."""
    return f'"{event.version}"'


def versions_matching(if_match: str | None) -> set[int] | None:
    """The versions an `If-Match` header accepts (RFC 9110: a list of entity tags, or
    `*`); None when any current version does (no header, or `*`). A weak tag never
    matches (If-Match compares strongly); a header that is no list of tags is a 422."""
    if if_match is None or not if_match.strip() or if_match.strip() == "*":
        return None
    versions: set[int] = set()
    for part in if_match.split(","):
        found = _ENTITY_TAG.match(part.strip())
        if found is None:
            message = 'must be "*" or entity tags such as "3", as the ETag header gives them'
            problem = {"field": IF_MATCH_HEADER, "message": message, "type": "value_error"}
            raise ValidationError(f"Invalid input: {IF_MATCH_HEADER}: {message}", fields=[problem])
        weak, tag = found.groups()
        if not weak and tag.isdigit():
            versions.add(int(tag))
    return versions


def change_event(
    store: RegistrationStore,
    event_id: str,
    patch: EventPatch,
    expected: set[int] | None,
    request_id: str,
) -> ChangeOutcome:
    """Applies `patch` to the event while its version is one of `expected` (any, None),
    re-deciding on a fresh read whenever a registration or another change got there first."""
    requested = patch.changes()
    for attempt in range(1, MAX_DECISIONS + 1):
        time.sleep(redecide_backoff(attempt))
        event = store.get_event(event_id)
        if expected is not None and event.version not in expected:
            raise PreconditionFailed(
                f"Event {event_id} is at version {event.version}, not the one "
                f"{IF_MATCH_HEADER} names; read it again"
            )
        if schedule.is_cancelled(event):
            raise EventCancelled(f"Event {event_id} was cancelled at {event.cancelledAt}")
        changes = {name: value for name, value in requested.items() if getattr(event, name) != value}
        if not changes:
            return ChangeOutcome(event)  # nothing new: the same version
        changed = event.model_copy(update=changes)
        _check(changed, event)
        at = now_iso()
        heads = []
        if schedule.free_seats(changed, at) and event.waitlistCount > 0:
            wanted = min(schedule.free_seats(changed, at), event.waitlistCount, PROMOTIONS_PER_TRANSACTION)
            heads = store.waitlist_heads(event_id, wanted)
        try:
            store.change_event(event, changes, heads, request_id, at)
        except DecisionStale:
            continue
        promoted = [head.userId for head in heads]
        promoted += _fill_free_seats(store, event_id, request_id, MAX_PROMOTIONS_PER_CHANGE - len(promoted))
        return ChangeOutcome(store.get_event(event_id), promoted)
    raise ContentionLimitExceeded(f"Gave up after {MAX_DECISIONS} concurrent changes to the event; try again")


def _check(changed: EventState, current: EventState) -> None:
    problems = schedule_problems(changed.model_dump(include=set(SCHEDULE_FIELDS)))
    if problems:
        detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise ValidationError(f"Invalid input: {detail}", fields=problems)
    if current.hasWaitlist and not changed.hasWaitlist and current.waitlistCount > 0:
        raise WaitlistNotEmpty(
            f"Event {current.eventId} has {current.waitlistCount} on its waitlist; "
            "it can be turned off once nobody waits"
        )


def _fill_free_seats(store: RegistrationStore, event_id: str, request_id: str, limit: int) -> list[str]:
    """Seats heads while seats are free and people wait, a batch a transaction, at most
    `limit`; the users seated."""
    promoted: list[str] = []
    lost = 0
    while len(promoted) < limit and lost < MAX_DECISIONS:
        event = store.get_event(event_id)
        at = now_iso()
        wanted = min(
            schedule.free_seats(event, at),
            event.waitlistCount,
            PROMOTIONS_PER_TRANSACTION,
            limit - len(promoted),
        )
        if wanted <= 0:
            break
        heads = store.waitlist_heads(event_id, wanted)
        if not heads:
            break  # the counter says someone waits but no slot is there: reconciliation's to repair
        try:
            store.promote_into_free_seats(event, heads, request_id, at)
        except DecisionStale:
            lost += 1
            time.sleep(redecide_backoff(lost + 1))
            continue
        promoted += [head.userId for head in heads]
    return promoted
