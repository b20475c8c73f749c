"""Domain events: what each committed change tells the world, and how an item carries it.

Every transaction that changes who holds a seat or a place in a waitlist (and every event
creation) puts, in the same transaction, exactly one item per domain event it causes that
carries the event whole: the JSON text of its detail under DETAIL_ATTRIBUTE and its type
under TYPE_ATTRIBUTE. Where the change already puts a new item (a seat, a waitlist
membership, the event itself) that item carries it; where it only deletes (a user leaving
a seat or the waitlist), it puts a short-lived change item (`keys.change_key`). So one
INSERT stream record is one domain event, understood without a read, and a removal or a
counter update is never one.

On AWS an EventBridge pipe filters the table's stream on exactly that and puts the detail
on the project's bus with `detail-type` = the type; locally the twin runs the same pipe
definition from the synthesized template.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

# The item attributes a domain event travels in (the stream filter and the pipe's input
# template read these two and nothing else).
DETAIL_ATTRIBUTE = "domainEvent"
TYPE_ATTRIBUTE = "domainEventType"
# The events' `source` on the bus.
EVENT_SOURCE = "event-registration"

EVENT_CREATED: Final = "event.created"
REGISTERED: Final = "registration.registered"
WAITLISTED: Final = "registration.waitlisted"
PROMOTED: Final = "registration.promoted"
UNREGISTERED: Final = "registration.unregistered"
LEFT_WAITLIST: Final = "registration.left_waitlist"
EVENT_TYPES = (EVENT_CREATED, REGISTERED, WAITLISTED, PROMOTED, UNREGISTERED, LEFT_WAITLIST)

# Why the head of a waitlist got a seat.
BY_UNREGISTRATION: Final = "unregistration"
BY_RECONCILIATION: Final = "reconciliation"
BY_CAPACITY: Final = "capacity"
PromotionReason = Literal["unregistration", "reconciliation", "capacity"]
# Why a registration ended without its user leaving: the event was cancelled, or the
# user's account was erased.
EVENT_CANCELLED: Final = "event_cancelled"
USER_ERASED: Final = "user_erased"
EndReason = Literal["event_cancelled", "user_erased"]
Reason = PromotionReason | EndReason

EventType = Literal[
    "event.created",
    "registration.registered",
    "registration.waitlisted",
    "registration.promoted",
    "registration.unregistered",
    "registration.left_waitlist",
]


class DomainEvent(BaseModel):
    """One domain event. `id` is stable for the change (a retried transaction carries the
    same one), so a consumer that sees it twice knows it is the same event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    type: EventType
    eventId: str
    userId: str | None = None
    occurredAt: str
    requestId: str
    # registration.waitlisted: the place joined (1 = the head).
    position: Annotated[int, Field(ge=1)] | None = None
    # registration.promoted: the place the user was promoted from, and why;
    # registration.unregistered and registration.left_waitlist: why, when the user did not
    # leave themselves (the event was cancelled, the user erased).
    fromPosition: Annotated[int, Field(ge=1)] | None = None
    reason: Reason | None = None

    def attributes(self) -> dict[str, str]:
        """What the item carrying this event adds to its attributes."""
        return {DETAIL_ATTRIBUTE: self.text(), TYPE_ATTRIBUTE: self.type}

    def text(self) -> str:
        return json.dumps(self.model_dump(exclude_none=True), separators=(",", ":"), sort_keys=True)


def event_id_for(request_id: str, event_type: str, event_id: str, user_id: str | None) -> str:
    """A change's id: a digest of what caused it, so every retry of one transaction writes
    the same one, and two changes never share one (a request changes one user once)."""
    digest = hashlib.sha256(f"{request_id}|{event_type}|{event_id}|{user_id or ''}".encode())
    return digest.hexdigest()[:32]


def domain_event(
    event_type: EventType,
    event_id: str,
    request_id: str,
    at: str,
    user_id: str | None = None,
    **data: Any,
) -> DomainEvent:
    return DomainEvent(
        id=event_id_for(request_id, event_type, event_id, user_id),
        type=event_type,
        eventId=event_id,
        userId=user_id,
        occurredAt=at,
        requestId=request_id,
        **data,
    )


def parse(text: str) -> DomainEvent:
    return DomainEvent.model_validate_json(text)
