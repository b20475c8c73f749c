"""An organizer's changes to an event (`PATCH /events/{id}`): its fields and, when seats
are added, the waitlist heads moved into them, in one transaction per batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from registration import domain_events, keys
from registration.data.dynamo import merge_patch_update
from registration.data.registrations import NOT_STARTED_AT, Registrations
from registration.data.transactions import TxItem, counters_condition
from registration.models import EventState, WaitlistHead
from registration.reconciliation_models import Counters

# Three items a promotion (slot, membership, seat) and one for the event: 33 fit in
# TransactWriteItems' 100; 32 keeps a margin.
PROMOTIONS_PER_TRANSACTION = 32


class EventChanges(Registrations):
    def change_event(
        self,
        seen: EventState,
        changes: Mapping[str, Any],
        heads: Sequence[WaitlistHead],
        request_id: str,
        at: str,
    ) -> bool:
        """Applies `changes` (field -> value, None removes it) to the event as `seen`, a
        new version, and seats `heads` (the first of the waitlist, for seats the change
        adds), only while the event is still exactly `seen`: its version, and, when its
        seats or its waitlist change, its counters (so that the heads are still the heads
        and the free seats still free); a stale one is `DecisionStale`. False when this request had already applied it."""
        sets, removes, names, values = merge_patch_update(changes)
        names["#version"], values[":next"] = "version", seen.version + 1
        sets.append("#version = :next")
        if "startsAt" in changes:
            values[":listing"] = keys.event_listing_sk(seen.eventId, changes["startsAt"])
            sets.append("GSI1SK = :listing")
        capacity = changes.get("capacity", seen.capacity)
        if "capacity" in changes:
            values[":kept"] = max(0, seen.registeredCount + len(heads) - capacity)
            sets.append("keptOverCapacity = :kept")
        if heads:
            values[":moved"] = len(heads)
            sets += ["registeredCount = registeredCount + :moved", "waitlistCount = waitlistCount - :moved"]

        if seen.version == 1:
            # Events created before edits existed carry no version: theirs is 1.
            condition = (
                "attribute_exists(PK) AND (attribute_not_exists(#version) OR #version = :seen_version)"
            )
        else:
            condition = "attribute_exists(PK) AND #version = :seen_version"
        values[":seen_version"] = seen.version
        if {"capacity", "hasWaitlist"} & set(changes) or heads:
            exact = counters_condition(Counters.of(seen))
            condition = (
                f"{condition} AND {exact['ConditionExpression'].removeprefix('attribute_exists(PK) AND ')}"
            )
            values.update(exact["ExpressionAttributeValues"])
        if heads:
            condition, values[":at"] = f"{condition} AND {NOT_STARTED_AT}", at

        update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        items = [
            TxItem(
                {
                    "Update": {
                        "Key": keys.event_key(seen.eventId),
                        "UpdateExpression": update,
                        "ConditionExpression": condition,
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                    }
                }
            )
        ]
        for head in heads:
            items += self._promotion_items(seen.eventId, head, request_id, at, domain_events.BY_CAPACITY)
        return self._transact(items, request_id)

    def promote_into_free_seats(
        self, seen: EventState, heads: Sequence[WaitlistHead], request_id: str, at: str
    ) -> bool:
        """Seats `heads`, the first of the waitlist, while the event is exactly `seen`
        (its counters), has a free seat for each of them and has not started."""
        if seen.registeredCount + len(heads) > seen.capacity:
            raise ValueError(
                f"{len(heads)} promotions into {seen.capacity - seen.registeredCount} free seats"
            )
        exact = counters_condition(Counters.of(seen))
        # Conditions compare, they do not add: the seats are free at exactly this capacity.
        condition = f"{exact['ConditionExpression']} AND #capacity = :capacity AND {NOT_STARTED_AT}"
        items = [
            TxItem(
                {
                    "Update": {
                        "Key": keys.event_key(seen.eventId),
                        "UpdateExpression": (
                            "SET registeredCount = registeredCount + :moved, waitlistCount = waitlistCount - :moved"
                        ),
                        "ConditionExpression": condition,
                        "ExpressionAttributeNames": {"#capacity": "capacity"},
                        "ExpressionAttributeValues": {
                            **exact["ExpressionAttributeValues"],
                            ":moved": len(heads),
                            ":capacity": seen.capacity,
                            ":at": at,
                        },
                    }
                }
            )
        ]
        for head in heads:
            items += self._promotion_items(seen.eventId, head, request_id, at, domain_events.BY_CAPACITY)
        return self._transact(items, request_id)
