"""Reconciliation's writes and records.

Repairs are transactions conditioned on the counters the repair was decided on
(`registeredCount`, `waitlistCount` and `waitlistSeq` all equal to what was seen) and on
every item they touch still being as it was seen. Every live seat or waitlist change
moves at least one of those counters in the same transaction, so a repair and a live
change never both commit on the same view; the loser of the race reads again
(DecisionStale).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from registration import domain_events, keys
from registration.data.dynamo import Item, plain_deep, serialize
from registration.data.items import waitlist_items
from registration.data.pages import check_limit
from registration.data.registrations import Registrations
from registration.data.transactions import TxItem, counters_condition
from registration.models import WaitlistHead
from registration.reconciliation_models import Counters, ReconciliationRun, RepairAction

# One transaction holds at most 100 items: the counters, the record, and up to three
# items per repair action (the change and the checks on the items it relies on).
MAX_TRANSACTION_ITEMS = 100
MAX_REPAIR_ACTIONS = 32
# A record keeps the first actions of each transaction; the counts are always complete.
MAX_RECORDED_ACTIONS = 20


@dataclass(frozen=True)
class ReconciliationRecord:
    """What one transaction adds to a run's repair record for an event."""

    runId: str
    runStartedAt: str
    now: str
    expiresAt: int
    actions: Sequence[RepairAction] = ()
    promoted: Sequence[str] = ()
    countRepairs: int = 0
    waitlistRepairs: int = 0
    overbooked: bool = False


class Repairs(Registrations):
    def apply_repair(
        self,
        event_id: str,
        seen: Counters,
        after: Counters,
        actions: Sequence[RepairAction],
        record: ReconciliationRecord,
    ) -> bool:
        """Sets the counters to `after` and applies `actions`, in one transaction, only if the
        counters are still `seen` and every item is as the repair saw it. Also records
        the change in the run's repair record for this event."""
        if len(actions) > MAX_REPAIR_ACTIONS:
            raise ValueError(f"at most {MAX_REPAIR_ACTIONS} repair actions per transaction")
        unchanged = seen == after
        counters: dict[str, Any]
        if unchanged:
            counters = {"ConditionCheck": {"Key": keys.event_key(event_id), **counters_condition(seen)}}
        else:
            condition = counters_condition(seen)
            counters = {
                "Update": {
                    "Key": keys.event_key(event_id),
                    "UpdateExpression": "SET registeredCount = :reg, waitlistCount = :wl, waitlistSeq = :seq",
                    "ConditionExpression": condition["ConditionExpression"],
                    "ExpressionAttributeValues": {
                        **condition["ExpressionAttributeValues"],
                        ":reg": after.registeredCount,
                        ":wl": after.waitlistCount,
                        ":seq": after.waitlistSeq,
                    },
                }
            }
        items = [TxItem(counters)]
        for action in actions:
            items.extend(TxItem(a) for a in repair_items(event_id, action, record.runId, record.now))
        items.append(TxItem(record_update(event_id, record, before=seen, after=after)))
        if len(items) > MAX_TRANSACTION_ITEMS:  # pragma: no cover - MAX_REPAIR_ACTIONS keeps it below
            raise ValueError(f"a repair transaction of {len(items)} items")
        return self._transact(items, record.runId)

    def promote_waitlist_head(
        self,
        event_id: str,
        head: WaitlistHead,
        seen: Counters,
        request_id: str,
        at: str,
        record: ReconciliationRecord,
    ) -> bool:
        """Moves the head of the waitlist into a free seat, only if the counters are still
        exactly `seen`, and records the promotion."""
        after = Counters(
            registeredCount=seen.registeredCount + 1,
            waitlistCount=seen.waitlistCount - 1,
            waitlistSeq=seen.waitlistSeq,
        )
        return self._transact(
            [
                *self._promotion_items(event_id, head, request_id, at, domain_events.BY_RECONCILIATION),
                self._fill_seat_update(event_id, seen, at),
                TxItem(record_update(event_id, record, before=seen, after=after)),
            ],
            request_id,
        )

    def put_reconciliation_run(self, run: ReconciliationRun, expires_at: int) -> None:
        """The run's summary (written only by runs that changed something)."""
        item = {
            **keys.reconciliation_run_key(run.startedAt, run.runId),
            "entity": "RECONCILIATION_RUN",
            **run.model_dump(mode="json"),
            "expiresAt": expires_at,
        }
        self._call("put_item", TableName=self.table_name, Item=serialize(item))

    def reconciliation_records(self, event_id: str, limit: int = 25) -> list[Item]:
        """An event's repair records, newest first."""
        items = self._first(
            keys.event_pk(event_id), keys.RECONCILED_PREFIX, check_limit(limit), newest_first=True
        )
        return [plain_deep(item) for item in items]


def repair_items(event_id: str, action: RepairAction, run_id: str, at: str) -> list[dict[str, Any]]:
    user, seq = action.userId, action.seq
    slot_is_users = {
        "ConditionExpression": "attribute_exists(PK) AND userId = :user",
        "ExpressionAttributeValues": {":user": user},
    }
    no_seat = {
        "ConditionCheck": {
            "Key": keys.seat_key(event_id, user),
            "ConditionExpression": "attribute_not_exists(PK)",
        }
    }
    if action.kind == "remove_slot":
        return [{"Delete": {"Key": keys.queue_key(event_id, seq), **slot_is_users}}]
    if action.kind == "remove_membership":
        return [
            {
                "Delete": {
                    "Key": keys.waitlisted_key(event_id, user),
                    "ConditionExpression": "attribute_exists(PK) AND seq = :seq",
                    "ExpressionAttributeValues": {":seq": seq},
                }
            }
        ]
    if action.kind == "repoint_membership":
        return [
            {
                "Update": {
                    "Key": keys.waitlisted_key(event_id, user),
                    "UpdateExpression": "SET seq = :seq",
                    "ConditionExpression": "attribute_exists(PK) AND seq = :from",
                    "ExpressionAttributeValues": {":seq": seq, ":from": action.fromSeq},
                }
            },
            {"ConditionCheck": {"Key": keys.queue_key(event_id, seq), **slot_is_users}},
            no_seat,
        ]
    membership, slot = waitlist_items(event_id, user, seq, f"reconcile:{run_id}", action.joinedAt or at)
    if action.kind == "restore_membership":
        return [
            {"Put": {"Item": membership, "ConditionExpression": "attribute_not_exists(PK)"}},
            {"ConditionCheck": {"Key": keys.queue_key(event_id, seq), **slot_is_users}},
            no_seat,
        ]
    if action.kind == "restore_slot":
        return [
            {"Put": {"Item": slot, "ConditionExpression": "attribute_not_exists(PK)"}},
            {
                "ConditionCheck": {
                    "Key": keys.waitlisted_key(event_id, user),
                    "ConditionExpression": "attribute_exists(PK) AND seq = :seq",
                    "ExpressionAttributeValues": {":seq": seq},
                }
            },
            no_seat,
        ]
    raise ValueError(f"unknown repair action {action.kind}")


def record_update(
    event_id: str, record: ReconciliationRecord, *, before: Counters, after: Counters
) -> dict[str, Any]:
    """Creates or extends the run's repair record for the event (one item per run and event)."""
    names = {
        "#entity": "entity",
        "#eventId": "eventId",
        "#runId": "runId",
        "#runStartedAt": "runStartedAt",
        "#firstAt": "firstChangeAt",
        "#lastAt": "lastChangeAt",
        "#before": "before",
        "#after": "after",
        "#actions": "actions",
        "#promoted": "promoted",
        "#countRepairs": "countRepairs",
        "#waitlistRepairs": "waitlistRepairs",
        "#promotions": "promotions",
        "#overbooked": "overbooked",
        "#expiresAt": "expiresAt",
    }
    values = {
        ":entity": "RECONCILIATION",
        ":eventId": event_id,
        ":runId": record.runId,
        ":runStartedAt": record.runStartedAt,
        ":now": record.now,
        ":before": before.model_dump(),
        ":after": after.model_dump(),
        ":actions": [a.model_dump(exclude_none=True) for a in record.actions[:MAX_RECORDED_ACTIONS]],
        ":promoted": list(record.promoted),
        ":empty": [],
        ":countRepairs": record.countRepairs,
        ":waitlistRepairs": record.waitlistRepairs,
        ":promotions": len(record.promoted),
        ":overbooked": record.overbooked,
        ":expiresAt": record.expiresAt,
    }
    return {
        "Update": {
            "Key": keys.reconciliation_record_key(event_id, record.runStartedAt, record.runId),
            "UpdateExpression": (
                "SET #entity = :entity, #eventId = :eventId, #runId = :runId, "
                "#runStartedAt = :runStartedAt, #firstAt = if_not_exists(#firstAt, :now), "
                "#lastAt = :now, #before = if_not_exists(#before, :before), #after = :after, "
                "#actions = list_append(if_not_exists(#actions, :empty), :actions), "
                "#promoted = list_append(if_not_exists(#promoted, :empty), :promoted), "
                "#overbooked = :overbooked, #expiresAt = :expiresAt "
                "ADD #countRepairs :countRepairs, #waitlistRepairs :waitlistRepairs, "
                "#promotions :promotions"
            ),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }
