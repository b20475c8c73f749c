"""The data layer: the only module that talks to DynamoDB.

Every change to seats or the waitlist is one TransactWriteItems whose conditions keep the
invariants under any interleaving; a cancelled transaction is translated into a domain
outcome from its CancellationReasons (never from message text). Decisions read the base
table strongly consistently; GSI1 serves listings only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

from registration import keys
from registration.errors import (
    AlreadyRegistered,
    AlreadyWaitlisted,
    DecisionStale,
    DomainError,
    EventAlreadyExists,
    EventNotFound,
    TransientDatabaseError,
    UserAlreadyExists,
    UserNotFound,
    ValidationError,
)
from registration.models import (
    Event,
    EventState,
    Membership,
    NewEvent,
    NewUser,
    Page,
    Registration,
    User,
    UserRegistration,
    WaitlistEntry,
    WaitlistHead,
)

T = TypeVar("T")
Item = dict[str, Any]

THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
# In-task retries of a transaction that lost a race on the same items (milliseconds,
# unlike a Step Functions Retry whose interval is whole seconds).
CONFLICT_RETRIES = 4
CONFLICT_BACKOFF_S = 0.02
MAX_PAGE = 100

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def transaction_token(*parts: str) -> str:
    """A ClientRequestToken (at most 36 characters) derived from what identifies a write.

    A retried task sends the same token, so DynamoDB applies the transaction once.
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(parts)))


def _ser(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in value.items()}


def _deser(item: Mapping[str, Any]) -> Item:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


# --- pagination tokens -----------------------------------------------------------------


def encode_token(last_key: Mapping[str, Any] | None, **extra: Any) -> str | None:
    if not last_key:
        return None
    payload = {"k": _deser(last_key), **extra}
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str | None, partition: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Returns (ExclusiveStartKey, extra fields); a token from elsewhere is a 422."""
    if not token:
        return None, {}
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        start = payload["k"]
        if not isinstance(start, dict) or partition not in (start.get("PK"), start.get("GSI1PK")):
            raise ValueError("token belongs to another listing")
        return _ser(start), {k: v for k, v in payload.items() if k != "k"}
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationError(
            "nextToken is not a token this listing returned",
            fields=[{"field": "nextToken", "message": "invalid pagination token"}],
        ) from None


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(
            f"limit must be between 1 and {MAX_PAGE}",
            fields=[{"field": "limit", "message": f"must be between 1 and {MAX_PAGE}"}],
        )
    return limit


# --- transactions ----------------------------------------------------------------------


@dataclass
class TxItem:
    """One action of a transaction plus what a failed condition on it means."""

    action: dict[str, Any]
    on_condition_failed: Callable[[Item | None], DomainError | None] = field(
        default=lambda _old: DecisionStale("The event changed since the decision")
    )


@dataclass
class Cancelled:
    reasons: list[dict[str, Any]]

    def codes(self) -> list[str]:
        return [r.get("Code", "None") for r in self.reasons]


class RegistrationStore:
    """Users, events, seats and the waitlist over one DynamoDB table."""

    def __init__(self, table_name: str, client: Any | None = None) -> None:
        self.table_name = table_name
        self.client = client or _new_client()

    # --- users -----------------------------------------------------------------------

    def create_user(self, new: NewUser) -> User:
        user = User(userId=new.userId, name=new.name, createdAt=now_iso())
        item = {
            **keys.user_key(user.userId),
            "entity": "USER",
            "GSI1PK": keys.USERS,
            "GSI1SK": keys.user_pk(user.userId),
            **user.model_dump(),
        }
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item=_ser(item),
                ConditionExpression="attribute_not_exists(PK)",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                raise UserAlreadyExists(f"User {new.userId} already exists") from None
            raise
        return user

    def get_user(self, user_id: str) -> User:
        item = self._get(keys.user_key(user_id))
        if item is None:
            raise UserNotFound(f"User {user_id} does not exist")
        return User.model_validate(item)

    def list_users(self, limit: int = 25, next_token: str | None = None) -> Page[User]:
        items, token = self._query_gsi(keys.USERS, limit, next_token)
        return Page[User](items=[User.model_validate(i) for i in items], nextToken=token)

    # --- events ----------------------------------------------------------------------

    def create_event(self, new: NewEvent) -> Event:
        event_id = new.eventId or uuid.uuid4().hex
        state = EventState(
            eventId=event_id,
            title=new.title,
            capacity=new.capacity,
            hasWaitlist=new.hasWaitlist,
            registeredCount=0,
            waitlistCount=0,
            waitlistSeq=0,
            createdAt=now_iso(),
        )
        item = {
            **keys.event_key(event_id),
            "entity": "EVENT",
            "GSI1PK": keys.EVENTS,
            "GSI1SK": keys.event_pk(event_id),
            **state.model_dump(),
        }
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item=_ser(item),
                ConditionExpression="attribute_not_exists(PK)",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                raise EventAlreadyExists(f"Event {event_id} already exists") from None
            raise
        return state.public()

    def get_event(self, event_id: str) -> EventState:
        item = self._get(keys.event_key(event_id))
        if item is None:
            raise EventNotFound(f"Event {event_id} does not exist")
        return EventState.model_validate(item)

    def list_events(self, limit: int = 25, next_token: str | None = None) -> Page[Event]:
        items, token = self._query_gsi(keys.EVENTS, limit, next_token)
        return Page[Event](items=[Event.model_validate(i) for i in items], nextToken=token)

    def get_user_and_event(self, user_id: str, event_id: str) -> tuple[User | None, EventState | None]:
        """Both in one strongly consistent round trip."""
        found = self._batch_get([keys.user_key(user_id), keys.event_key(event_id)])
        user = found.get(keys.user_pk(user_id))
        event = found.get(keys.event_pk(event_id))
        return (
            User.model_validate(user) if user else None,
            EventState.model_validate(event) if event else None,
        )

    # --- memberships -----------------------------------------------------------------

    def get_membership(self, event_id: str, user_id: str) -> Membership | None:
        """The user's seat or waitlist place at the event, read strongly consistently."""
        seat, waitlisted = keys.seat_key(event_id, user_id), keys.waitlisted_key(event_id, user_id)
        found = self._batch_get([seat, waitlisted], by="SK")
        if item := found.get(seat["SK"]):
            return _membership(item, "registered")
        if item := found.get(waitlisted["SK"]):
            return _membership(item, "waitlisted")
        return None

    def waitlist_head(self, event_id: str) -> WaitlistHead | None:
        """The first waitlist slot: one strongly consistent Limit=1 query."""
        response = self._call(
            "query",
            TableName=self.table_name,
            KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
            ExpressionAttributeValues=_ser({":pk": keys.event_pk(event_id), ":prefix": keys.QUEUE_PREFIX}),
            ConsistentRead=True,
            Limit=1,
        )
        items = response.get("Items", [])
        if not items:
            return None
        return WaitlistHead.model_validate(_deser(items[0]))

    def waitlist_position(self, event_id: str, seq: int) -> int:
        """1-based place of the slot `seq`: counts the slots up to it (listing path only)."""
        count = 0
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {}
            if start:
                kwargs["ExclusiveStartKey"] = start
            response = self._call(
                "query",
                TableName=self.table_name,
                KeyConditionExpression="PK = :pk AND SK BETWEEN :low AND :high",
                ExpressionAttributeValues=_ser(
                    {
                        ":pk": keys.event_pk(event_id),
                        ":low": keys.QUEUE_PREFIX,
                        ":high": keys.queue_sk(seq),
                    }
                ),
                Select="COUNT",
                ConsistentRead=True,
                **kwargs,
            )
            count += int(response.get("Count", 0))
            start = response.get("LastEvaluatedKey")
            if not start:
                return count

    # --- seat and waitlist transactions ----------------------------------------------

    def take_seat(self, event_id: str, user_id: str, request_id: str, at: str, token: str) -> bool:
        """Registers the user into a free seat. Returns False when this request already did."""
        mine = _is_request(request_id)
        return self._transact(
            [
                TxItem(
                    {
                        "Update": {
                            "Key": keys.event_key(event_id),
                            "UpdateExpression": "SET registeredCount = registeredCount + :one",
                            "ConditionExpression": (
                                "attribute_exists(PK) AND registeredCount < #capacity "
                                "AND waitlistCount = :zero"
                            ),
                            "ExpressionAttributeNames": {"#capacity": "capacity"},
                            "ExpressionAttributeValues": {":one": 1, ":zero": 0},
                        }
                    }
                ),
                TxItem(
                    {
                        "Put": {
                            "Item": self._seat_item(event_id, user_id, request_id, at),
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
            token,
        )

    def join_waitlist(self, event: EventState, user_id: str, request_id: str, at: str, token: str) -> bool:
        """Appends the user to the waitlist's tail, behind every existing slot.

        The event update is conditioned on the sequence and count the decision saw, so
        the new place is exactly `waitlistCount + 1` of that snapshot.
        """
        event_id, seq = event.eventId, event.waitlistSeq + 1
        mine = _is_request(request_id)
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
                                "AND (registeredCount >= #capacity OR waitlistCount > :zero)"
                            ),
                            "ExpressionAttributeNames": {"#capacity": "capacity"},
                            "ExpressionAttributeValues": {
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
                            "Item": {
                                **keys.waitlisted_key(event_id, user_id),
                                "entity": "WAITLISTED",
                                "GSI1PK": keys.user_pk(user_id),
                                "GSI1SK": keys.event_pk(event_id),
                                "eventId": event_id,
                                "userId": user_id,
                                "seq": seq,
                                "joinedAt": at,
                                "requestId": request_id,
                            },
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
                            "Item": {
                                **keys.queue_key(event_id, seq),
                                "entity": "WAITLIST_SLOT",
                                "eventId": event_id,
                                "userId": user_id,
                                "seq": seq,
                                "joinedAt": at,
                            },
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
            token,
        )

    def release_seat(self, event_id: str, user_id: str, token: str) -> bool:
        """Frees the user's seat; only while nobody waits (otherwise the seat is handed over)."""
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
                            "ConditionExpression": "registeredCount > :zero AND waitlistCount = :zero",
                            "ExpressionAttributeValues": {":one": 1, ":zero": 0},
                        }
                    }
                ),
            ],
            token,
        )

    def leave_waitlist(self, event_id: str, user_id: str, seq: int, token: str) -> bool:
        """Removes the user's slot; everyone else keeps their order."""
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
                TxItem(
                    {
                        "Update": {
                            "Key": keys.event_key(event_id),
                            "UpdateExpression": "SET waitlistCount = waitlistCount - :one",
                            "ConditionExpression": "waitlistCount > :zero",
                            "ExpressionAttributeValues": {":one": 1, ":zero": 0},
                        }
                    }
                ),
            ],
            token,
        )

    def hand_over_seat(
        self, event_id: str, user_id: str, head: WaitlistHead, request_id: str, at: str, token: str
    ) -> bool:
        """The leaving user's seat goes to the head of the waitlist, in one transaction.

        The slot's sequence only grows, so "the slot still exists" means "it is still the head".
        """
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
                *self._promotion_items(event_id, head, request_id, at),
                TxItem(
                    {
                        "Update": {
                            "Key": keys.event_key(event_id),
                            "UpdateExpression": "SET waitlistCount = waitlistCount - :one",
                            "ConditionExpression": "waitlistCount > :zero",
                            "ExpressionAttributeValues": {":one": 1, ":zero": 0},
                        }
                    }
                ),
            ],
            token,
        )

    def fill_free_seat(self, event_id: str, head: WaitlistHead, request_id: str, at: str, token: str) -> bool:
        """Moves the head of the waitlist into a seat that is free (repair path)."""
        return self._transact(
            [
                *self._promotion_items(event_id, head, request_id, at),
                TxItem(
                    {
                        "Update": {
                            "Key": keys.event_key(event_id),
                            "UpdateExpression": (
                                "SET registeredCount = registeredCount + :one, "
                                "waitlistCount = waitlistCount - :one"
                            ),
                            "ConditionExpression": "registeredCount < #capacity AND waitlistCount > :zero",
                            "ExpressionAttributeNames": {"#capacity": "capacity"},
                            "ExpressionAttributeValues": {":one": 1, ":zero": 0},
                        }
                    }
                ),
            ],
            token,
        )

    def _promotion_items(self, event_id: str, head: WaitlistHead, request_id: str, at: str) -> list[TxItem]:
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
                            **self._seat_item(event_id, head.userId, request_id, at),
                            "promotedFromSeq": head.seq,
                        },
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                }
            ),
        ]

    @staticmethod
    def _seat_item(event_id: str, user_id: str, request_id: str, at: str) -> Item:
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

    # --- listings --------------------------------------------------------------------

    def list_registrations(
        self, event_id: str, limit: int = 25, next_token: str | None = None
    ) -> Page[Registration]:
        items, token, _ = self._query_partition(event_id, keys.REG_PREFIX, limit, next_token)
        return Page[Registration](items=[Registration.model_validate(i) for i in items], nextToken=token)

    def list_waitlist(
        self, event_id: str, limit: int = 25, next_token: str | None = None
    ) -> Page[WaitlistEntry]:
        """FIFO; positions continue across pages (the token carries how many came before)."""
        items, token, before = self._query_partition(event_id, keys.QUEUE_PREFIX, limit, next_token)
        entries = [
            WaitlistEntry(eventId=event_id, userId=i["userId"], position=before + n, joinedAt=i["joinedAt"])
            for n, i in enumerate(items, start=1)
        ]
        return Page[WaitlistEntry](items=entries, nextToken=token)

    def list_user_registrations(
        self, user_id: str, limit: int = 25, next_token: str | None = None
    ) -> Page[UserRegistration]:
        """Seats and waitlist places from GSI1 (eventually consistent), positions from the base table."""
        items, token = self._query_gsi(keys.user_pk(user_id), limit, next_token)
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
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            response = self._call(
                "query",
                TableName=self.table_name,
                KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
                ExpressionAttributeValues=_ser({":pk": keys.event_pk(event_id), ":prefix": prefix}),
                ConsistentRead=True,
                **kwargs,
            )
            for item in response.get("Items", []):
                yield _deser(item)
            start = response.get("LastEvaluatedKey")
            if not start:
                return

    # --- plumbing --------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            if _code(exc) in THROTTLING_CODES:
                raise TransientDatabaseError(f"DynamoDB is throttling {operation}: {_code(exc)}") from exc
            raise

    def _get(self, key: Mapping[str, str]) -> Item | None:
        response = self._call("get_item", TableName=self.table_name, Key=_ser(key), ConsistentRead=True)
        item = response.get("Item")
        return _deser(item) if item else None

    def _batch_get(self, key_list: Sequence[Mapping[str, str]], by: str = "PK") -> dict[str, Item]:
        """Strongly consistent BatchGetItem; results indexed by `by` (PK or SK)."""
        pending: list[dict[str, Any]] = [_ser(k) for k in key_list]
        found: dict[str, Item] = {}
        for attempt in range(8):
            response = self._call(
                "batch_get_item",
                RequestItems={self.table_name: {"Keys": pending, "ConsistentRead": True}},
            )
            for raw in response.get("Responses", {}).get(self.table_name, []):
                item = _deser(raw)
                found[item[by]] = item
            pending = response.get("UnprocessedKeys", {}).get(self.table_name, {}).get("Keys", [])
            if not pending:
                return found
            time.sleep(CONFLICT_BACKOFF_S * (2**attempt) * random.random())
        raise TransientDatabaseError("DynamoDB left keys unprocessed after several attempts")

    def _query_gsi(self, partition: str, limit: int, next_token: str | None) -> tuple[list[Item], str | None]:
        start, _ = decode_token(next_token, partition)
        kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
        response = self._call(
            "query",
            TableName=self.table_name,
            IndexName=keys.GSI1,
            KeyConditionExpression="GSI1PK = :pk",
            ExpressionAttributeValues=_ser({":pk": partition}),
            Limit=_check_limit(limit),
            **kwargs,
        )
        return [_deser(i) for i in response.get("Items", [])], encode_token(response.get("LastEvaluatedKey"))

    def _query_partition(
        self, event_id: str, prefix: str, limit: int, next_token: str | None
    ) -> tuple[list[Item], str | None, int]:
        self.get_event(event_id)  # 404 for an unknown event, even on an empty listing
        partition = keys.event_pk(event_id)
        start, extra = decode_token(next_token, partition)
        offset = int(extra.get("o", 0))
        kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
        response = self._call(
            "query",
            TableName=self.table_name,
            KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
            ExpressionAttributeValues=_ser({":pk": partition, ":prefix": prefix}),
            ConsistentRead=True,
            Limit=_check_limit(limit),
            **kwargs,
        )
        last = response.get("LastEvaluatedKey")
        items = [_deser(i) for i in response.get("Items", [])]
        return items, encode_token(last, o=offset + len(items)) if last else None, offset

    def _transact(self, items: list[TxItem], token: str) -> bool:
        """Runs one transaction; True when applied, False when this request had already applied it.

        Conflicts with concurrent transactions are retried here with millisecond backoff;
        a failed condition becomes the domain outcome its TxItem names.
        """
        actions = []
        for tx in items:
            ((kind, body),) = tx.action.items()
            body = dict(body, TableName=self.table_name)
            if "Item" in body:
                body["Item"] = _ser(body["Item"])
            if "Key" in body:
                body["Key"] = _ser(body["Key"])
            if "ExpressionAttributeValues" in body:
                body["ExpressionAttributeValues"] = _ser(body["ExpressionAttributeValues"])
            body["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
            actions.append({kind: body})

        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self._call("transact_write_items", TransactItems=actions, ClientRequestToken=token)
                return True
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                cancelled = Cancelled(exc.response.get("CancellationReasons", []))
            outcome = self._interpret(items, cancelled)
            if outcome == "applied":
                return False
            if outcome == "conflict" and attempt < CONFLICT_RETRIES:
                time.sleep(CONFLICT_BACKOFF_S * (2**attempt) * (0.5 + random.random()))
                continue
            if outcome == "conflict":
                raise DecisionStale("The event kept changing; deciding again")
            if outcome == "throttled":
                raise TransientDatabaseError("DynamoDB throttled the transaction")
            raise AssertionError("unreachable")
        raise AssertionError("unreachable")

    @staticmethod
    def _interpret(items: list[TxItem], cancelled: Cancelled) -> str:
        """Turns CancellationReasons (in action order) into an outcome or a raised domain error."""
        failures: list[DomainError] = []
        recognised = False
        codes = cancelled.codes()
        for tx, reason in zip(items, cancelled.reasons, strict=False):
            if reason.get("Code") != "ConditionalCheckFailed":
                continue
            old = _deser(reason["Item"]) if reason.get("Item") else None
            error = tx.on_condition_failed(old)
            if error is None:
                recognised = True
            else:
                failures.append(error)
        # A business outcome (AlreadyRegistered...) outranks "the event changed".
        business = [f for f in failures if not isinstance(f, DecisionStale)]
        if business:
            raise business[0]
        if recognised and not failures:
            return "applied"
        if failures:
            raise failures[0]
        if any(c in ("ThrottlingError", "ProvisionedThroughputExceeded") for c in codes):
            return "throttled"
        return "conflict"


def _membership(item: Item, status: str) -> Membership:
    return Membership(
        eventId=item["eventId"],
        userId=item["userId"],
        status=status,  # type: ignore[arg-type]
        since=item.get("registeredAt") or item.get("joinedAt") or "",
        requestId=item.get("requestId"),
        seq=item.get("seq"),
    )


def _is_request(request_id: str) -> Callable[[Item | None], bool]:
    return lambda old: bool(old) and old.get("requestId") == request_id  # type: ignore[union-attr]


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


_client_lock = threading.Lock()


def _new_client() -> Any:
    # boto3's default session is not thread-safe; endpoint comes from AWS_ENDPOINT_URL_DYNAMODB.
    with _client_lock:
        return boto3.session.Session().client(
            "dynamodb",
            config=Config(
                retries={"mode": "standard", "max_attempts": 4},
                connect_timeout=3,
                read_timeout=10,
                max_pool_connections=64,
            ),
        )


_stores: dict[tuple[str, str, str], RegistrationStore] = {}


def get_store() -> RegistrationStore:
    """The process's store for the configured table and endpoint (cached across invocations)."""
    table = os.environ.get("TABLE_NAME", "")
    if not table:
        raise RuntimeError("TABLE_NAME is not set")
    key = (
        table,
        os.environ.get("AWS_ENDPOINT_URL_DYNAMODB", ""),
        os.environ.get("AWS_DEFAULT_REGION", ""),
    )
    store = _stores.get(key)
    if store is None:
        store = _stores.setdefault(key, RegistrationStore(table))
    return store
