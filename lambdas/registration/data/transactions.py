"""Transactions: each change is one TransactWriteItems whose conditions keep the invariants
under any interleaving; a cancelled one is translated into a domain outcome from its
CancellationReasons (never from message text)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from registration import keys
from registration.data.dynamo import BACKOFF_S, Item, Table, deserialize, error_code, now_iso, serialize
from registration.errors import DecisionStale, DomainError, RequestInProgress, TransientDatabaseError
from registration.models import Completion
from registration.reconciliation_models import Counters

# The token was used within 10 minutes for a transaction with other parameters: what this
# one relied on has changed since, so the decision is taken again.
TOKEN_REUSED_CODE = "IdempotentParameterMismatchException"
# In-task retries of a transaction that lost a race on the same items.
CONFLICT_RETRIES = 4


def transaction_token(scope: str, transact_items: Sequence[Mapping[str, Any]]) -> str:
    """The ClientRequestToken (at most 36 characters) of a transaction: a digest of the
    request it belongs to (`scope`) and of everything it sends (every action, with its
    table, key, item, conditions, names and values, in order).

    DynamoDB applies a token once for 10 minutes, account-wide, and answers the same token
    with other parameters with IdempotentParameterMismatchException. Derived from the
    content, a retry that sends the same transaction gets the first try's answer and
    writes nothing more, and a retry that read its items again (another snapshot, head or
    time) sends another token and is decided by its conditions. The scope keeps apart two
    requests that send identical transactions (a user leaving, coming back and leaving
    again within 10 minutes): each must be applied.
    """
    document = json.dumps(
        {"scope": scope, "TransactItems": list(transact_items)},
        sort_keys=True,
        separators=(",", ":"),
        default=_json_bytes,
    )
    return hashlib.sha256(document.encode()).hexdigest()[:36]


def _json_bytes(value: Any) -> str:
    """Binary attribute values (bytes, or boto3's Binary) as base64 text in a digest."""
    raw = getattr(value, "value", value)
    if isinstance(raw, bytes | bytearray):
        return base64.b64encode(bytes(raw)).decode()
    raise TypeError(f"cannot digest {type(value).__name__}")


@dataclass
class TxItem:
    """One action of a transaction plus what a failed condition on it means.

    `on_condition_failed` gets the item as it is (or None) and returns the domain error
    that failure means, or None when the item shows that this very request already
    committed this transaction (an item only it writes, carrying its request id): the
    other failures are then the effects of that commit, and the transaction counts as
    applied.
    """

    action: dict[str, Any]
    on_condition_failed: Callable[[Item | None], DomainError | None] = field(
        default=lambda _old: DecisionStale("The event changed since the decision")
    )


@dataclass
class Cancelled:
    reasons: list[dict[str, Any]]

    def codes(self) -> list[str]:
        return [r.get("Code", "None") for r in self.reasons]


def is_request(request_id: str) -> Callable[[Item | None], bool]:
    return lambda old: bool(old) and old.get("requestId") == request_id  # type: ignore[union-attr]


def counters_condition(seen: Counters) -> dict[str, Any]:
    return {
        "ConditionExpression": (
            "attribute_exists(PK) AND registeredCount = :seen_reg "
            "AND waitlistCount = :seen_wl AND waitlistSeq = :seen_seq"
        ),
        "ExpressionAttributeValues": {
            ":seen_reg": seen.registeredCount,
            ":seen_wl": seen.waitlistCount,
            ":seen_seq": seen.waitlistSeq,
        },
    }


class Transactions(Table):
    """Runs transactions for a request, keyed requests' answers included."""

    def _transact(self, items: list[TxItem], scope: str, completion: Completion | None = None) -> bool:
        """Runs one transaction for request `scope`; True when applied (by this call, or by an
        identical earlier one whose token DynamoDB still holds), False when a failed
        condition showed that this request had already applied it.

        With a `completion`, the transaction also stores a keyed request's answer on its
        claim, and runs only while the claim is this request's and in progress.

        Conflicts with concurrent transactions are retried here with millisecond backoff;
        a failed condition becomes the domain outcome its TxItem names.
        """
        if completion is not None:
            # First: a claim that is not ours any more outranks every other outcome.
            items = [completion_item(completion), *items]
        actions = []
        for tx in items:
            ((kind, body),) = tx.action.items()
            body = dict(body, TableName=self.table_name)
            if "Item" in body:
                body["Item"] = serialize(body["Item"])
            if "Key" in body:
                body["Key"] = serialize(body["Key"])
            if "ExpressionAttributeValues" in body:
                body["ExpressionAttributeValues"] = serialize(body["ExpressionAttributeValues"])
            body["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
            actions.append({kind: body})
        token = transaction_token(scope, actions)

        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self._call("transact_write_items", TransactItems=actions, ClientRequestToken=token)
                return True
            except ClientError as exc:
                if error_code(exc) == TOKEN_REUSED_CODE:
                    # Only a transaction with other contents had this token (a digest of
                    # the contents): whatever it was, this one was not applied.
                    raise DecisionStale("The transaction's token was used for another write") from None
                if error_code(exc) != "TransactionCanceledException":
                    raise
                cancelled = Cancelled(exc.response.get("CancellationReasons", []))
            outcome = interpret(items, cancelled)
            if outcome == "applied":
                return False
            if outcome == "conflict" and attempt < CONFLICT_RETRIES:
                time.sleep(BACKOFF_S * (2**attempt) * (0.5 + random.random()))
                continue
            if outcome == "conflict":
                raise DecisionStale("The event kept changing; deciding again")
            if outcome == "throttled":
                raise TransientDatabaseError("DynamoDB throttled the transaction")
            raise AssertionError("unreachable")
        raise AssertionError("unreachable")

    def _create(self, item: Item, completion: Completion, exists: DomainError) -> None:
        """Puts a new item and stores a keyed request's answer, in one transaction."""
        put = {"Put": {"Item": item, "ConditionExpression": "attribute_not_exists(PK)"}}
        self._transact([TxItem(put, lambda _old: exists)], completion.requestId, completion)


def completion_item(completion: Completion) -> TxItem:
    key, request_id = completion.key, completion.requestId

    def claim_failed(old: Item | None) -> DomainError | None:
        if old and old.get("requestId") == request_id and old.get("status") == "COMPLETED":
            return None  # this request's own earlier commit
        return RequestInProgress(
            f"Another request with Idempotency-Key {key} holds it now; retry to get its answer"
        )

    return TxItem(
        {
            "Update": {
                "Key": keys.idempotency_key(key),
                "UpdateExpression": "SET #status = :completed, #response = :response, completedAt = :at",
                "ConditionExpression": "#status = :inProgress AND requestId = :requestId",
                "ExpressionAttributeNames": {"#status": "status", "#response": "response"},
                "ExpressionAttributeValues": {
                    ":completed": "COMPLETED",
                    ":inProgress": "IN_PROGRESS",
                    ":response": completion.response.model_dump(exclude_none=True),
                    ":at": now_iso(),
                    ":requestId": request_id,
                },
            }
        },
        claim_failed,
    )


def interpret(items: list[TxItem], cancelled: Cancelled) -> str:
    """Turns CancellationReasons (in action order) into an outcome or a raised domain error."""
    failures: list[DomainError] = []
    recognised = False
    codes = cancelled.codes()
    for tx, reason in zip(items, cancelled.reasons, strict=False):
        if reason.get("Code") != "ConditionalCheckFailed":
            continue
        old = deserialize(reason["Item"]) if reason.get("Item") else None
        error = tx.on_condition_failed(old)
        if error is None:
            recognised = True
        else:
            failures.append(error)
    # This request's own commit explains every other failure (the seat it freed, the
    # counter it moved): answer as the first try would have.
    if recognised:
        return "applied"
    # A business outcome (AlreadyRegistered...) outranks "the event changed".
    business = [f for f in failures if not isinstance(f, DecisionStale)]
    if business:
        raise business[0]
    if failures:
        raise failures[0]
    if any(c in ("ThrottlingError", "ProvisionedThroughputExceeded") for c in codes):
        return "throttled"
    return "conflict"
