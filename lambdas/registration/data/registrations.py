"""Seats and the waitlist: every change one transaction conditioned on what it decided on.

Decisions read the base table strongly consistently (see `memberships`); a lost race
on the same items is retried in the transaction itself, a stale decision is raised as
`DecisionStale` for the caller to decide again.
"""

from __future__ import annotations

from typing import Any

from registration import domain_events, keys
from registration.data.dynamo import Item
from registration.data.items import change_item, seat_item, waitlist_items
from registration.data.transactions import Transactions, TxItem, counters_condition, is_request
from registration.errors import AlreadyRegistered, AlreadyWaitlisted, DecisionStale, DomainError
from registration.models import Completion, EventState, WaitlistHead
from registration.reconciliation_models import Counters

# Conditions on the event item at `:at` (times compare as text: `registration.schedule`).
# Nobody takes a seat of a cancelled event, by registering or by promotion.
NOT_CANCELLED = "attribute_not_exists(cancelledAt)"
NOT_STARTED_AT = f"{NOT_CANCELLED} AND (attribute_not_exists(startsAt) OR startsAt > :at)"
# Registration is open: started, closed and not yet open all fail it.
OPEN_AT = (
    f"{NOT_STARTED_AT} AND (attribute_not_exists(registrationClosesAt) OR registrationClosesAt > :at) "
    "AND (attribute_not_exists(registrationOpensAt) OR registrationOpensAt <= :at)"
)


class Registrations(Transactions):
    def take_seat(
        self, event_id: str, user_id: str, request_id: str, at: str, completion: Completion | None = None
    ) -> bool:
        """Registers the user into a free seat. Returns False when this request already did."""
        mine = is_request(request_id)
        return self._transact(
            [
                TxItem(
                    {
                        "Update": {
                            "Key": keys.event_key(event_id),
                            "UpdateExpression": "SET registeredCount = registeredCount + :one",
                            "ConditionExpression": (
                                "attribute_exists(PK) AND registeredCount < #capacity "
                                f"AND waitlistCount = :zero AND {OPEN_AT}"
                            ),
                            "ExpressionAttributeNames": {"#capacity": "capacity"},
                            "ExpressionAttributeValues": {":one": 1, ":zero": 0, ":at": at},
                        }
                    }
                ),
                TxItem(
                    {
                        "Put": {
                            "Item": seat_item(
                                event_id,
                                user_id,
                                request_id,
                                at,
                                domain_events.domain_event(
                                    domain_events.REGISTERED, event_id, request_id, at, user_id
                                ),
                            ),
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                    lambda old: (
                        None
                        if mine(old)
                        else AlreadyRegistered(f"User {user_id} is already registered for event {event_id}")
                    ),
                ),
            ],
            request_id,
            completion,
        )

    def join_waitlist(
        self, event: EventState, user_id: str, request_id: str, at: str, completion: Completion | None = None
    ) -> bool:
        """Appends the user to the waitlist's tail, behind every existing slot.

        The event update is conditioned on the sequence and count the decision saw, so
        the new place is exactly `waitlistCount + 1` of that snapshot.
        """
        event_id, seq = event.eventId, event.waitlistSeq + 1
        joined = domain_events.domain_event(
            domain_events.WAITLISTED, event_id, request_id, at, user_id, position=event.waitlistCount + 1
        )
        membership, slot = waitlist_items(event_id, user_id, seq, request_id, at, joined)
        mine = is_request(request_id)
        return self._transact(
            [
                TxItem(
                    {
                        "Update": {
                            "Key": keys.event_key(event_id),
                            "UpdateExpression": "SET waitlistCount = waitlistCount + :one, waitlistSeq = :seq",
                            "ConditionExpression": (
                                "hasWaitlist = :true AND waitlistSeq = :seen_seq "
                                "AND waitlistCount = :seen_count "
                                "AND (registeredCount >= #capacity OR waitlistCount > :zero) "
                                f"AND {OPEN_AT}"
                            ),
                            "ExpressionAttributeNames": {"#capacity": "capacity"},
                            "ExpressionAttributeValues": {
                                ":at": at,
                                ":one": 1,
                                ":zero": 0,
                                ":true": True,
                                ":seq": seq,
                                ":seen_seq": event.waitlistSeq,
                                ":seen_count": event.waitlistCount,
                            },
                        }
                    }
                ),
                TxItem(
                    {
                        "Put": {
                            "Item": membership,
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                    lambda old: (
                        None
                        if mine(old)
                        else AlreadyWaitlisted(
                            f"User {user_id} is already on the waitlist of event {event_id}"
                        )
                    ),
                ),
                TxItem(
                    {
                        "Put": {
                            "Item": slot,
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    }
                ),
                TxItem(
                    {
                        "ConditionCheck": {
                            "Key": keys.seat_key(event_id, user_id),
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                    lambda _old: AlreadyRegistered(
                        f"User {user_id} is already registered for event {event_id}"
                    ),
                ),
            ],
            request_id,
            completion,
        )

    def release_seat(
        self,
        event_id: str,
        user_id: str,
        request_id: str,
        at: str,
        completion: Completion | None = None,
        *,
        reason: domain_events.EndReason | None = None,
    ) -> bool:
        """Frees the user's seat; only while nobody waits (otherwise the seat is handed
        over), or the event has started, or holds more seats than its capacity. `reason`
        says why, when the user did not leave themselves."""
        left = domain_events.domain_event(
            domain_events.UNREGISTERED, event_id, request_id, at, user_id, reason=reason
        )
        return self._transact(
            [
                TxItem(
                    {
                        "Delete": {
                            "Key": keys.seat_key(event_id, user_id),
                            "ConditionExpression": "attribute_exists(PK)",
                        }
                    }
                ),
                TxItem(
                    {
                        "Update": {
                            "Key": keys.event_key(event_id),
                            "UpdateExpression": "SET registeredCount = registeredCount - :one",
                            # While anyone waits the seat is handed over, unless the
                            # event has started or is cancelled, or the seat was above
                            # a lowered capacity (then nobody is promoted).
                            "ConditionExpression": (
                                "registeredCount > :zero AND (waitlistCount = :zero OR startsAt <= :at "
                                "OR registeredCount > #capacity OR attribute_exists(cancelledAt))"
                            ),
                            "ExpressionAttributeNames": {"#capacity": "capacity"},
                            "ExpressionAttributeValues": {":one": 1, ":zero": 0, ":at": at},
                        }
                    }
                ),
                _change(left),
            ],
            request_id,
            completion,
        )

    def leave_waitlist(
        self,
        event_id: str,
        user_id: str,
        seq: int,
        request_id: str,
        at: str,
        completion: Completion | None = None,
        *,
        reason: domain_events.EndReason | None = None,
    ) -> bool:
        """Removes the user's slot; everyone else keeps their order."""
        left = domain_events.domain_event(
            domain_events.LEFT_WAITLIST, event_id, request_id, at, user_id, reason=reason
        )
        return self._transact(
            [
                TxItem(
                    {
                        "Delete": {
                            "Key": keys.waitlisted_key(event_id, user_id),
                            "ConditionExpression": "attribute_exists(PK) AND seq = :seq",
                            "ExpressionAttributeValues": {":seq": seq},
                        }
                    }
                ),
                TxItem(
                    {
                        "Delete": {
                            "Key": keys.queue_key(event_id, seq),
                            "ConditionExpression": "attribute_exists(PK) AND userId = :user",
                            "ExpressionAttributeValues": {":user": user_id},
                        }
                    }
                ),
                _one_waiter_fewer(event_id),
                _change(left),
            ],
            request_id,
            completion,
        )

    def hand_over_seat(
        self,
        event_id: str,
        user_id: str,
        head: WaitlistHead,
        request_id: str,
        at: str,
        completion: Completion | None = None,
        *,
        reason: domain_events.EndReason | None = None,
    ) -> bool:
        """The leaving user's seat goes to the head of the waitlist, in one transaction.

        The slot's sequence only grows, so "the slot still exists" means "it is still the head".
        The head's new seat carries the request id: a retry of a hand-over that had
        committed (its answer lost) recognises it there and answers as the first try did.
        """
        left = domain_events.domain_event(
            domain_events.UNREGISTERED, event_id, request_id, at, user_id, reason=reason
        )
        return self._transact(
            [
                TxItem(
                    {
                        "Delete": {
                            "Key": keys.seat_key(event_id, user_id),
                            "ConditionExpression": "attribute_exists(PK)",
                        }
                    }
                ),
                _change(left),
                *self._promotion_items(
                    event_id,
                    head,
                    request_id,
                    at,
                    domain_events.BY_UNREGISTRATION,
                    recognise_own_commit=True,
                ),
                _one_waiter_fewer(event_id, promoted_at=at),
            ],
            request_id,
            completion,
        )

    def _fill_seat_update(self, event_id: str, seen: Counters, at: str) -> TxItem:
        """One seat more and one waiter fewer while a seat is free and someone waits and
        the event has not started at `at`, and only while the counters are exactly
        `seen` (reconciliation's promotion)."""
        seen_condition = counters_condition(seen)
        condition = (
            f"{seen_condition['ConditionExpression']} AND registeredCount < #capacity "
            f"AND waitlistCount > :zero AND {NOT_STARTED_AT}"
        )
        values: dict[str, Any] = {
            ":one": 1,
            ":zero": 0,
            ":at": at,
            **seen_condition["ExpressionAttributeValues"],
        }
        return TxItem(
            {
                "Update": {
                    "Key": keys.event_key(event_id),
                    "UpdateExpression": (
                        "SET registeredCount = registeredCount + :one, waitlistCount = waitlistCount - :one"
                    ),
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": {"#capacity": "capacity"},
                    "ExpressionAttributeValues": values,
                }
            }
        )

    def _promotion_items(
        self,
        event_id: str,
        head: WaitlistHead,
        request_id: str,
        at: str,
        reason: domain_events.PromotionReason,
        *,
        recognise_own_commit: bool = False,
    ) -> list[TxItem]:
        """Removes the head's slot and membership and gives the head a seat carrying
        `request_id` (recognised as this request's own earlier commit when asked) and its
        `registration.promoted` (from the head of the waitlist, for `reason`)."""
        mine = is_request(request_id)
        promoted = domain_events.domain_event(
            domain_events.PROMOTED, event_id, request_id, at, head.userId, fromPosition=1, reason=reason
        )

        def seat_taken(old: Item | None) -> DomainError | None:
            if recognise_own_commit and mine(old):
                return None
            return DecisionStale("The event changed since the decision")

        return [
            TxItem(
                {
                    "Delete": {
                        "Key": keys.queue_key(event_id, head.seq),
                        "ConditionExpression": "attribute_exists(PK) AND userId = :user",
                        "ExpressionAttributeValues": {":user": head.userId},
                    }
                }
            ),
            TxItem(
                {
                    "Delete": {
                        "Key": keys.waitlisted_key(event_id, head.userId),
                        "ConditionExpression": "attribute_exists(PK) AND seq = :seq",
                        "ExpressionAttributeValues": {":seq": head.seq},
                    }
                }
            ),
            TxItem(
                {
                    "Put": {
                        "Item": {
                            **seat_item(event_id, head.userId, request_id, at, promoted),
                            "promotedFromSeq": head.seq,
                        },
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                },
                seat_taken,
            ),
        ]


def _change(change: domain_events.DomainEvent) -> TxItem:
    """Puts the item that carries a deleting change's domain event. Only this request puts
    it (its key holds the change's id), so finding it means this request committed."""
    mine = is_request(change.requestId)
    return TxItem(
        {"Put": {"Item": change_item(change), "ConditionExpression": "attribute_not_exists(PK)"}},
        lambda old: None if mine(old) else DecisionStale("The change was recorded by another request"),
    )


def _one_waiter_fewer(event_id: str, *, promoted_at: str | None = None) -> TxItem:
    """The event's waitlist count, one lower (somebody left it or, `promoted_at` a time,
    took a freed seat: only while the event has not started then, and the seat freed is
    within capacity)."""
    condition = "waitlistCount > :zero"
    values: dict[str, Any] = {":one": 1, ":zero": 0}
    update: dict[str, Any] = {
        "Key": keys.event_key(event_id),
        "UpdateExpression": "SET waitlistCount = waitlistCount - :one",
    }
    if promoted_at is not None:
        condition = f"{condition} AND registeredCount <= #capacity AND {NOT_STARTED_AT}"
        values[":at"] = promoted_at
        update["ExpressionAttributeNames"] = {"#capacity": "capacity"}
    return TxItem(
        {"Update": {**update, "ConditionExpression": condition, "ExpressionAttributeValues": values}}
    )
