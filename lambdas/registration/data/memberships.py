"""Reads of an event's seats and waitlist: one person's place, the head, the listings."""

from __future__ import annotations

from collections.abc import Iterator

from registration import keys
from registration.data.dynamo import Item, deserialize, serialize
from registration.data.pages import (
    LISTING_REGISTRATIONS,
    LISTING_USER_REGISTRATIONS,
    LISTING_WAITLIST,
    Listings,
)
from registration.errors import EventNotFound, NotRegistered
from registration.models import (
    Membership,
    Page,
    Registration,
    RegistrationView,
    UserRegistration,
    WaitlistEntry,
    WaitlistHead,
)


class Memberships(Listings):
    def get_membership(self, event_id: str, user_id: str) -> Membership | None:
        """The user's seat or waitlist place at the event, read strongly consistently."""
        seat, waitlisted = keys.seat_key(event_id, user_id), keys.waitlisted_key(event_id, user_id)
        found = self._batch_get([seat, waitlisted], by="SK")
        if item := found.get(seat["SK"]):
            return _membership(item, "registered")
        if item := found.get(waitlisted["SK"]):
            return _membership(item, "waitlisted")
        return None

    def get_registration(self, event_id: str, user_id: str) -> RegistrationView:
        """Where the user stands at the event (a waitlist place with its position);
        `NotRegistered`, or `EventNotFound` for an event that does not exist."""
        membership = self.get_membership(event_id, user_id)
        if membership is None:
            self._event_exists(event_id)
            raise NotRegistered(f"User {user_id} is not registered for event {event_id}")
        position = None
        if membership.status == "waitlisted" and membership.seq is not None:
            position = self.waitlist_position(event_id, membership.seq)
        return RegistrationView(
            eventId=event_id,
            userId=user_id,
            status=membership.status,
            since=membership.since,
            position=position,
        )

    def waitlist_head(self, event_id: str) -> WaitlistHead | None:
        """The first waitlist slot: one strongly consistent Limit=1 query."""
        items = self._first(keys.event_pk(event_id), keys.QUEUE_PREFIX, 1)
        return WaitlistHead.model_validate(items[0]) if items else None

    def waitlist_heads(self, event_id: str, count: int) -> list[WaitlistHead]:
        """The first `count` waitlist slots, in order (strongly consistent)."""
        items = self._first(keys.event_pk(event_id), keys.QUEUE_PREFIX, count)
        return [WaitlistHead.model_validate(item) for item in items]

    def waitlist_position(self, event_id: str, seq: int) -> int:
        """1-based place of the slot `seq`: counts the slots up to it (listing path only)."""
        pages = self._pages(
            KeyConditionExpression="PK = :pk AND SK BETWEEN :low AND :high",
            ExpressionAttributeValues=serialize(
                {":pk": keys.event_pk(event_id), ":low": keys.QUEUE_PREFIX, ":high": keys.queue_sk(seq)}
            ),
            Select="COUNT",
            ConsistentRead=True,
        )
        return sum(int(page.get("Count", 0)) for page in pages)

    def list_registrations(
        self, event_id: str, limit: int = 25, next_token: str | None = None
    ) -> Page[Registration]:
        self._event_exists(event_id)
        items, token, _ = self._query_partition(
            LISTING_REGISTRATIONS, event_id, keys.REG_PREFIX, limit, next_token
        )
        return Page[Registration](items=[Registration.model_validate(i) for i in items], nextToken=token)

    def list_waitlist(
        self, event_id: str, limit: int = 25, next_token: str | None = None
    ) -> Page[WaitlistEntry]:
        """FIFO; positions continue across pages (the token carries how many came before)."""
        self._event_exists(event_id)
        items, token, before = self._query_partition(
            LISTING_WAITLIST, event_id, keys.QUEUE_PREFIX, limit, next_token
        )
        entries = [
            WaitlistEntry(eventId=event_id, userId=i["userId"], position=before + n, joinedAt=i["joinedAt"])
            for n, i in enumerate(items, start=1)
        ]
        return Page[WaitlistEntry](items=entries, nextToken=token)

    def list_user_registrations(
        self, user_id: str, limit: int = 25, next_token: str | None = None
    ) -> Page[UserRegistration]:
        """Seats and waitlist places from GSI1 (eventually consistent), positions from the base table."""
        items, token = self._query_gsi(LISTING_USER_REGISTRATIONS, keys.user_pk(user_id), limit, next_token)
        out: list[UserRegistration] = []
        for item in items:
            if item.get("entity") == "REGISTRATION":
                out.append(UserRegistration(eventId=item["eventId"], status="registered"))
            elif item.get("entity") == "WAITLISTED":
                position = self.waitlist_position(item["eventId"], int(item["seq"]))
                out.append(UserRegistration(eventId=item["eventId"], status="waitlisted", position=position))
        return Page[UserRegistration](items=out, nextToken=token)

    def iter_partition(self, event_id: str, prefix: str) -> Iterator[Item]:
        """Every item of an event under a sort-key prefix (reconciliation and tests)."""
        for page in self._pages(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
            ExpressionAttributeValues=serialize({":pk": keys.event_pk(event_id), ":prefix": prefix}),
            ConsistentRead=True,
        ):
            yield from (deserialize(item) for item in page.get("Items", []))

    def iter_sort_keys(self, event_id: str, prefix: str) -> Iterator[str]:
        """The sort keys of an event's items under a prefix, in order (keys only, so a
        large event costs pages of keys, not of items)."""
        for page in self._pages(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
            ExpressionAttributeValues=serialize({":pk": keys.event_pk(event_id), ":prefix": prefix}),
            ProjectionExpression="SK",
            ConsistentRead=True,
        ):
            yield from (str(item["SK"]["S"]) for item in page.get("Items", []))

    def _event_exists(self, event_id: str) -> None:
        """404 for an unknown event, even on an empty listing."""
        if self._get(keys.event_key(event_id)) is None:
            raise EventNotFound(f"Event {event_id} does not exist")


def _membership(item: Item, status: str) -> Membership:
    return Membership(
        eventId=item["eventId"],
        userId=item["userId"],
        status=status,  # type: ignore[arg-type]
        since=item.get("registeredAt") or item.get("joinedAt") or "",
        requestId=item.get("requestId"),
        seq=item.get("seq"),
    )
