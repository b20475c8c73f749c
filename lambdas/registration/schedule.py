"""When an event takes registrations: its window and its start.

Times are stored as UTC text of one form (`models.utc_instant`, `data.dynamo.now_iso`),
so they compare as text, here and in the writes' conditions.
"""

from __future__ import annotations

from registration.errors import EventCancelled, EventStarted, RegistrationClosed, RegistrationNotOpen
from registration.models import Event, EventState


def has_started(event: Event, now: str) -> bool:
    return event.startsAt is not None and now >= event.startsAt


def is_cancelled(event: Event) -> bool:
    return event.cancelledAt is not None


def free_seats(event: EventState, now: str) -> int:
    """Seats the waitlist's heads may take at `now`: none once the event is cancelled or
    has started (a seat freed then stays free), nor while it holds more seats than its
    (lowered) capacity."""
    if is_cancelled(event) or has_started(event, now):
        return 0
    return max(0, event.capacity - event.registeredCount)


def seats_a_waiter(event: EventState, now: str) -> bool:
    """A seat freed at `now` goes to the head of the waitlist (rather than staying free):
    someone waits, and the seat is within capacity of an event still taking people."""
    return (
        event.waitlistCount > 0
        and event.registeredCount <= event.capacity
        and not is_cancelled(event)
        and not has_started(event, now)
    )


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
