"""`regctl events show`: an event's counters, the head of its waitlist, its last repair.

Read from the table through the data layer (strongly consistent reads of the event's
own partition, as the decisions make them), locally and on AWS alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from registration.data import RegistrationStore

WAITLIST_HEAD = 5
# Attributes of a repair record shown as the event's last repair.
RECORD_FIELDS = (
    "runId",
    "runStartedAt",
    "firstChangeAt",
    "lastChangeAt",
    "before",
    "after",
    "countRepairs",
    "waitlistRepairs",
    "promotions",
    "promoted",
    "overbooked",
    "actions",
)


class EventMissing(LookupError):
    """No such event."""


def event_report(
    store: RegistrationStore,
    event_id: str,
    *,
    last_run: Mapping[str, Any] | None = None,
    head: int = WAITLIST_HEAD,
) -> dict[str, Any]:
    """Counters, free seats, the first `head` waitlisted users, the last repair and run."""
    event = store.find_event(event_id)
    if event is None:
        raise EventMissing(f"Event {event_id} does not exist")
    waitlist = store.list_waitlist(event_id, limit=head).items if head > 0 else []
    records = store.reconciliation_records(event_id, limit=1)
    last_repair = {k: records[0][k] for k in RECORD_FIELDS if k in records[0]} if records else None
    return {
        "eventId": event.eventId,
        "title": event.title,
        "capacity": event.capacity,
        "hasWaitlist": event.hasWaitlist,
        "registeredCount": event.registeredCount,
        "freeSeats": max(0, event.capacity - event.registeredCount),
        "waitlistCount": event.waitlistCount,
        "waitlistSeq": event.waitlistSeq,
        "waitlistHead": [w.model_dump(mode="json", exclude={"eventId"}) for w in waitlist],
        "createdAt": event.model_dump(mode="json")["createdAt"],
        "lastRepair": last_repair,
        "lastReconciliation": dict(last_run) if last_run else None,
    }
