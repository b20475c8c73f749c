"""Events: their items, counters included, and their listing."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from botocore.exceptions import ClientError

from registration import domain_events, keys
from registration.data.dynamo import error_code, now_iso, serialize
from registration.data.items import event_item
from registration.data.pages import (
    LISTING_EVENT_IDS,
    LISTING_EVENTS,
    Listings,
)
from registration.data.transactions import Transactions
from registration.data.users import is_present
from registration.errors import EventAlreadyExists, EventNotFound
from registration.models import Completion, Event, EventState, NewEvent, Page, User


class Events(Transactions, Listings):
    def create_event(
        self,
        new: NewEvent,
        answer: Callable[[Event], Completion | None] | None = None,
        *,
        organizer_id: str | None = None,
        request_id: str | None = None,
    ) -> Event:
        """`answer` gives the completion of a keyed request, stored with the event in one
        transaction; `organizer_id` is the user who creates it (the API's caller), and
        `request_id` the request (its `event.created` names both)."""
        event_id = new.eventId or uuid.uuid4().hex
        state = EventState(
            **new.model_dump(exclude={"eventId"}),
            eventId=event_id,
            registeredCount=0,
            waitlistCount=0,
            waitlistSeq=0,
            createdAt=now_iso(),
            organizerId=organizer_id,
        )
        completion = answer(state.public()) if answer else None
        created = domain_events.domain_event(
            domain_events.EVENT_CREATED,
            event_id,
            completion.requestId if completion else request_id or uuid.uuid4().hex,
            state.createdAt,
            organizer_id,
        )
        item = event_item(state, created)
        if completion is not None:
            self._create(item, completion, EventAlreadyExists(f"Event {event_id} already exists"))
            return state.public()
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item=serialize(item),
                ConditionExpression="attribute_not_exists(PK)",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise EventAlreadyExists(f"Event {event_id} already exists") from None
            raise
        return state.public()

    def get_event(self, event_id: str) -> EventState:
        item = self._get(keys.event_key(event_id))
        if item is None:
            raise EventNotFound(f"Event {event_id} does not exist")
        return EventState.model_validate(item)

    def find_event(self, event_id: str) -> EventState | None:
        """The event, read strongly consistently; None when it does not exist."""
        item = self._get(keys.event_key(event_id))
        return EventState.model_validate(item) if item else None

    def list_events(
        self, limit: int = 25, next_token: str | None = None, starts_from: str | None = None
    ) -> Page[Event]:
        """Events with a start by start time, then the others by id; with `starts_from`
        (UTC text), only those starting then or later."""
        between = None if starts_from is None else (f"{keys.STARTS_PREFIX}{starts_from}", keys.STARTS_END)
        items, token = self._query_gsi(LISTING_EVENTS, keys.EVENTS, limit, next_token, sort_between=between)
        return Page[Event](items=[Event.model_validate(i) for i in items], nextToken=token)

    def list_event_ids(self, limit: int = 50, next_token: str | None = None) -> Page[str]:
        """One page of event ids from GSI1 (eventually consistent: a brand-new event may be
        missed by this page and is seen by the next run)."""
        items, token = self._query_gsi(
            LISTING_EVENT_IDS, keys.EVENTS, limit, next_token, projection="eventId"
        )
        ids = [str(i["eventId"]) for i in items if "eventId" in i]
        return Page[str](items=ids, nextToken=token)

    def get_user_and_event(self, user_id: str, event_id: str) -> tuple[User | None, EventState | None]:
        """Both in one strongly consistent round trip."""
        found = self._batch_get([keys.user_key(user_id), keys.event_key(event_id)])
        user = found.get(keys.user_pk(user_id))
        event = found.get(keys.event_pk(event_id))
        return (
            User.model_validate(user) if is_present(user) else None,
            EventState.model_validate(event) if event else None,
        )
