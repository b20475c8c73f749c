"""The items the writes put, as plain values (not DynamoDB JSON).

The benchmark's bulk loader and the repairs build their items with the same functions,
so what they load is what a registration writes.
"""

from __future__ import annotations

from registration import keys
from registration.data.dynamo import Item
from registration.models import EventState, User


def event_item(state: EventState) -> Item:
    """The item `create_event` puts for `state`."""
    return {
        **keys.event_key(state.eventId),
        "entity": "EVENT",
        "GSI1PK": keys.EVENTS,
        "GSI1SK": keys.event_pk(state.eventId),
        **state.model_dump(exclude_none=True),
    }


def user_item(user: User) -> Item:
    """The item `create_user` puts for `user`."""
    return {
        **keys.user_key(user.userId),
        "entity": "USER",
        "GSI1PK": keys.USERS,
        "GSI1SK": keys.user_pk(user.userId),
        **user.model_dump(),
    }


def seat_item(event_id: str, user_id: str, request_id: str, at: str) -> Item:
    """The seat item `take_seat` puts."""
    return {
        **keys.seat_key(event_id, user_id),
        "entity": "REGISTRATION",
        "GSI1PK": keys.user_pk(user_id),
        "GSI1SK": keys.event_pk(event_id),
        "eventId": event_id,
        "userId": user_id,
        "registeredAt": at,
        "requestId": request_id,
    }


def waitlist_items(event_id: str, user_id: str, seq: int, request_id: str, at: str) -> tuple[Item, Item]:
    """The membership and FIFO slot items `join_waitlist` puts for sequence `seq`."""
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
