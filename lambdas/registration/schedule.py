"""When an event takes registrations: its window and its start.

Times are stored as UTC text of one form (`models.utc_instant`, `data.dynamo.now_iso`),
so they compare as text, here and in the writes' conditions.
"""

from __future__ import annotations

from registration.errors import EventCancelled, EventStarted, RegistrationClosed, RegistrationNotOpen
from registration.models import Event


def has_started(event: Event, now: str) -> bool:
    return event.startsAt is not None and now >= event.startsAt


def is_cancelled(event: Event) -> bool:
    return event.cancelledAt is not None


def require_open(event: Event, now: str) -> None:
    """Registering (a seat or a waitlist place) is allowed at `now`; otherwise the
    refusal that says why: a cancellation first, then the start (it outlasts every window)."""
    if is_cancelled(event):
        raise EventCancelled(f"Event {event.eventId} was cancelled at {event.cancelledAt}")
    if has_started(event, now):
        raise EventStarted(f"Event {event.eventId} started at {event.startsAt}")
    if event.registrationClosesAt is not None and now >= event.registrationClosesAt:
        raise RegistrationClosed(
            f"Registration for event {event.eventId} closed at {event.registrationClosesAt}"
        )
    if event.registrationOpensAt is not None and now < event.registrationOpensAt:
        raise RegistrationNotOpen(
            f"Registration for event {event.eventId} opens at {event.registrationOpensAt}"
        )
