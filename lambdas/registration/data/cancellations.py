"""Cancelling an event: the mark that stops every new seat, then each seat and waitlist
place released, one conditioned transaction each, with its `registration.unregistered`
(reason `event_cancelled`)."""

from __future__ import annotations

from botocore.exceptions import ClientError

from registration import domain_events, keys
from registration.data.dynamo import deserialize, error_code, serialize
from registration.data.registrations import Registrations, _change
from registration.data.transactions import TxItem
from registration.errors import DecisionStale, EventNotFound
from registration.models import CancellationEntry, EventState


class Cancellations(Registrations):
    def mark_cancelled(self, event_id: str, at: str) -> EventState:
        """The event, cancelled at `at` (or when it already was): nothing takes a seat of
        it from then on (every seat-taking write is conditioned on it), and its version
        moves, so an organizer's pending change of it is stale."""
        try:
            response = self._call(
                "update_item",
                TableName=self.table_name,
                Key=serialize(keys.event_key(event_id)),
                UpdateExpression=(
                    "SET #status = :cancelled, cancelledAt = :at, "
                    "#version = if_not_exists(#version, :one) + :one"
                ),
                ConditionExpression="attribute_exists(PK) AND attribute_not_exists(cancelledAt)",
                ExpressionAttributeNames={"#status": "status", "#version": "version"},
                ExpressionAttributeValues=serialize({":cancelled": "cancelled", ":at": at, ":one": 1}),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            found = self._get(keys.event_key(event_id))
            if found is None:
                raise EventNotFound(f"Event {event_id} does not exist") from None
            before: EventState = EventState.model_validate(found)  # cancelled before
            return before
        cancelled: EventState = EventState.model_validate(deserialize(response["Attributes"]))
        return cancelled

    def remaining_registrations(self, event_id: str, limit: int) -> list[CancellationEntry]:
        """The first `limit` seats, then waitlist places, the event still holds."""
        pk = keys.event_pk(event_id)
        seats = self._first(pk, keys.REG_PREFIX, limit)
        entries = [CancellationEntry(userId=str(s["userId"]), kind="seat") for s in seats]
        if len(entries) < limit:
            places = self._first(pk, keys.WAITLISTED_PREFIX, limit - len(entries))
            entries += [
                CancellationEntry(userId=str(p["userId"]), kind="waitlisted", seq=int(p["seq"]))
                for p in places
            ]
        return entries

    def release_for_cancellation(
        self, event_id: str, entry: CancellationEntry, request_id: str, at: str
    ) -> bool:
        """Releases one seat or place of a cancelled event; False when it was gone already
        (its user left meanwhile, or this release committed before)."""
        ended = domain_events.domain_event(
            domain_events.UNREGISTERED,
            event_id,
            request_id,
            at,
            entry.userId,
            reason=domain_events.EVENT_CANCELLED,
        )
        if entry.kind == "seat":
            removals = [
                TxItem(
                    {
                        "Delete": {
                            "Key": keys.seat_key(event_id, entry.userId),
                            "ConditionExpression": "attribute_exists(PK)",
                        }
                    }
                )
            ]
            counter = "registeredCount"
        else:
            removals = [
                TxItem(
                    {
                        "Delete": {
                            "Key": keys.waitlisted_key(event_id, entry.userId),
                            "ConditionExpression": "attribute_exists(PK) AND seq = :seq",
                            "ExpressionAttributeValues": {":seq": entry.seq},
                        }
                    }
                ),
                TxItem(
                    {
                        "Delete": {
                            "Key": keys.queue_key(event_id, entry.seq or 0),
                            "ConditionExpression": "attribute_exists(PK) AND userId = :user",
                            "ExpressionAttributeValues": {":user": entry.userId},
                        }
                    }
                ),
            ]
            counter = "waitlistCount"
        count = TxItem(
            {
                "Update": {
                    "Key": keys.event_key(event_id),
                    "UpdateExpression": f"SET {counter} = {counter} - :one",
                    "ConditionExpression": f"{counter} > :zero AND attribute_exists(cancelledAt)",
                    "ExpressionAttributeValues": {":one": 1, ":zero": 0},
                }
            }
        )
        try:
            return self._transact([*removals, count, _change(ended)], request_id)
        except DecisionStale:
            key = keys.seat_key if entry.kind == "seat" else keys.waitlisted_key
            if self._get(key(event_id, entry.userId)) is None:
                return False
            raise
