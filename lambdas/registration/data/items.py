"""The items the writes put, as plain values (not DynamoDB JSON).

The benchmark's bulk loader and the repairs build their items with the same functions,
so what they load is what a registration writes.
"""

from __future__ import annotations

from datetime import datetime

from registration import keys
from registration.data.dynamo import Item
from registration.domain_events import DomainEvent
from registration.models import EventState, User


def _carrying(change: DomainEvent | None) -> dict[str, str]:
    """The attributes that make an item's INSERT a domain event (none for a bulk load or a repair)."""
    return change.attributes() if change is not None else {}


def event_item(state: EventState, change: DomainEvent | None = None) -> Item:
    """The item `create_event` puts for `state`, carrying its `event.created`."""
    return {
        **keys.event_key(state.eventId),
        "entity": "EVENT",
        "GSI1PK": keys.EVENTS,
        "GSI1SK": keys.event_listing_sk(state.eventId, state.startsAt),
        **state.model_dump(exclude_none=True),
        **_carrying(change),
    }


def change_item(change: DomainEvent) -> Item:
    """The short-lived item that carries the domain event of a change that only deletes."""
    expires = int(datetime.fromisoformat(change.occurredAt).timestamp()) + keys.CHANGE_RETENTION_S
    return {
        **keys.change_key(change.eventId, change.id),
        "entity": "CHANGE",
        "eventId": change.eventId,
        "requestId": change.requestId,
        "expiresAt": expires,
        **change.attributes(),
    }


def user_item(user: User) -> Item:
    """The item `create_user` puts for `user`."""
    return {
        **keys.user_key(user.userId),
        "entity": "USER",
        "GSI1PK": keys.USERS,
        "GSI1SK": keys.user_pk(user.userId),
        **user.model_dump(exclude_none=True),
    }


def seat_item(
    event_id: str, user_id: str, request_id: str, at: str, change: DomainEvent | None = None
) -> Item:
    """The seat item `take_seat` (or a promotion) puts, carrying its domain event."""
    return {
        **keys.seat_key(event_id, user_id),
        "entity": "REGISTRATION",
        "GSI1PK": keys.user_pk(user_id),
        "GSI1SK": keys.event_pk(event_id),
        "eventId": event_id,
        "userId": user_id,
        "registeredAt": at,
        "requestId": request_id,
        **_carrying(change),
    }


def waitlist_items(
    event_id: str, user_id: str, seq: int, request_id: str, at: str, change: DomainEvent | None = None
) -> tuple[Item, Item]:
    """The membership and FIFO slot items `join_waitlist` puts for sequence `seq`; the
    membership carries the `registration.waitlisted`."""
    membership = {
        **keys.waitlisted_key(event_id, user_id),
        "entity": "WAITLISTED",
        "GSI1PK": keys.user_pk(user_id),
        "GSI1SK": keys.event_pk(event_id),
        "eventId": event_id,
        "userId": user_id,
        "seq": seq,
        "joinedAt": at,
        "requestId": request_id,
        **_carrying(change),
    }
    slot = {
        **keys.queue_key(event_id, seq),
        "entity": "WAITLIST_SLOT",
        "eventId": event_id,
        "userId": user_id,
        "seq": seq,
        "joinedAt": at,
    }
    return membership, slot
