"""The data layer: the only module that talks to DynamoDB.

Every change to seats or the waitlist is one TransactWriteItems whose conditions keep the
invariants under any interleaving; a cancelled transaction is translated into a domain
outcome from its CancellationReasons (never from message text). Decisions read the base
table strongly consistently; GSI1 serves listings only.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
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
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from registration import keys
from registration.errors import (
    AlreadyRegistered,
    AlreadyWaitlisted,
    DecisionStale,
    DomainError,
    EventAlreadyExists,
    EventNotFound,
    RequestInProgress,
    TransientDatabaseError,
    UserAlreadyExists,
    UserNotFound,
    ValidationError,
)
from registration.models import (
    Completion,
    Counters,
    Event,
    EventState,
    IdempotencyRecord,
    Membership,
    NewEvent,
    NewUser,
    Page,
    ReconciliationRun,
    Registration,
    RepairAction,
    StoredResponse,
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
# A retry overtook its first try: the same ClientRequestToken is still being applied.
IN_PROGRESS_CODES = frozenset({"TransactionInProgressException"})
# The token was used within 10 minutes for a transaction with other parameters: what this
# one relied on has changed since, so the decision is taken again.
TOKEN_REUSED_CODE = "IdempotentParameterMismatchException"
# In-task retries of a transaction that lost a race on the same items (milliseconds,
# unlike a Step Functions Retry whose interval is whole seconds).
CONFLICT_RETRIES = 4
CONFLICT_BACKOFF_S = 0.02
MAX_PAGE = 100

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def _ser(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in value.items()}


def _deser(item: Mapping[str, Any]) -> Item:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


# --- pagination tokens -----------------------------------------------------------------
#
# A `nextToken` is opaque and tamper-evident: base64url(JSON payload) "." base64url(HMAC-
# SHA256 of the payload). The payload names the listing and its scope (the event or user
# it lists), the last key read and, for the waitlist, how many entries came before; the
# page size is not bound (a token resumes after a key, whatever the next page's size).
# The key is derived from PAGE_TOKEN_SECRET, a secret every function of the stack shares
# (on AWS, CloudFormation resolves it from a generated Secrets Manager secret at deploy
# time); a process without it (tests, the local stack) uses a fixed development secret.

PAGE_TOKEN_SECRET_VARIABLE = "PAGE_TOKEN_SECRET"
DEVELOPMENT_PAGE_TOKEN_SECRET = "local-development-page-token-secret"
INVALID_TOKEN_MESSAGE = "nextToken is not a token this listing returned"
_TOKEN_KEY_CONTEXT = b"registration/page-token/v1\0"


@functools.lru_cache(maxsize=4)
def _derived_key(secret: str) -> bytes:
    return hashlib.sha256(_TOKEN_KEY_CONTEXT + secret.encode("utf-8")).digest()


# Which listing a token resumes: a token of one is refused by every other.
LISTING_USERS = "users"
LISTING_EVENTS = "events"
LISTING_USER_REGISTRATIONS = "user-registrations"
LISTING_REGISTRATIONS = "registrations"
LISTING_WAITLIST = "waitlist"
LISTING_EVENT_IDS = "event-ids"
LISTING_RECONCILIATIONS = "reconciliations"


def _token_key() -> bytes:
    return _derived_key(os.environ.get(PAGE_TOKEN_SECRET_VARIABLE) or DEVELOPMENT_PAGE_TOKEN_SECRET)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode("ascii"))


def _mac(payload: str) -> str:
    return _b64(hmac.new(_token_key(), payload.encode("ascii"), hashlib.sha256).digest())


def encode_token(last_key: Mapping[str, Any] | None, listing: str, scope: str, **extra: Any) -> str | None:
    """The signed token that resumes `listing` of `scope` after `last_key` (None at the end)."""
    if not last_key:
        return None
    document = {"l": listing, "s": scope, "k": _deser(last_key), **extra}
    payload = _b64(json.dumps(document, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_mac(payload)}"


def invalid_token() -> ValidationError:
    return ValidationError(
        INVALID_TOKEN_MESSAGE,
        fields=[{"field": "nextToken", "message": INVALID_TOKEN_MESSAGE, "type": "invalid_token"}],
    )


def decode_token(
    token: str | None, listing: str, scope: str, partition: str
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(ExclusiveStartKey, extra fields) of a token `encode_token` made for this listing
    and scope; anything else (altered, forged, from another listing) is a 422."""
    if not token:
        return None, {}
    payload, _, mac = token.partition(".")
    try:
        if not payload or not hmac.compare_digest(mac.encode("ascii"), _mac(payload).encode("ascii")):
            raise invalid_token()
        document = json.loads(_unb64(payload))
    except (ValueError, UnicodeError, binascii.Error):
        raise invalid_token() from None
    start = document.get("k") if isinstance(document, dict) else None
    if (
        document.get("l") != listing
        or document.get("s") != scope
        or not isinstance(start, dict)
        or not all(isinstance(v, str) for v in start.values())
        or partition not in (start.get("PK"), start.get("GSI1PK"))
    ):
        raise invalid_token()
    return _ser(start), {k: v for k, v in document.items() if k not in ("l", "s", "k")}


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


class RegistrationStore:
    """Users, events, seats and the waitlist over one DynamoDB table."""

    def __init__(self, table_name: str, client: Any | None = None) -> None:
        self.table_name = table_name
        self.client = client or _new_client()

    # --- users -----------------------------------------------------------------------

    def create_user(self, new: NewUser, answer: Callable[[User], Completion | None] | None = None) -> User:
        """`answer` gives the completion of a keyed request, stored with the user in one transaction."""
        user = User(userId=new.userId, name=new.name, createdAt=now_iso())
        item = self.user_item(user)
        completion = answer(user) if answer else None
        if completion is not None:
            self._create(item, completion, UserAlreadyExists(f"User {new.userId} already exists"))
            return user
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
        items, token = self._query_gsi(LISTING_USERS, keys.USERS, limit, next_token)
        return Page[User](items=[User.model_validate(i) for i in items], nextToken=token)

    # --- events ----------------------------------------------------------------------

    def create_event(
        self, new: NewEvent, answer: Callable[[Event], Completion | None] | None = None
    ) -> Event:
        """`answer` gives the completion of a keyed request, stored with the event in one transaction."""
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
        completion = answer(state.public()) if answer else None
        if completion is not None:
            self._create(
                self.event_item(state), completion, EventAlreadyExists(f"Event {event_id} already exists")
            )
            return state.public()
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item=_ser(self.event_item(state)),
                ConditionExpression="attribute_not_exists(PK)",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                raise EventAlreadyExists(f"Event {event_id} already exists") from None
            raise
        return state.public()

    def _create(self, item: Item, completion: Completion, exists: DomainError) -> None:
        put = {"Put": {"Item": item, "ConditionExpression": "attribute_not_exists(PK)"}}
        self._transact([TxItem(put, lambda _old: exists)], completion.requestId, completion)

    def get_event(self, event_id: str) -> EventState:
        item = self._get(keys.event_key(event_id))
        if item is None:
            raise EventNotFound(f"Event {event_id} does not exist")
        return EventState.model_validate(item)

    def list_events(self, limit: int = 25, next_token: str | None = None) -> Page[Event]:
        items, token = self._query_gsi(LISTING_EVENTS, keys.EVENTS, limit, next_token)
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

    def take_seat(
        self, event_id: str, user_id: str, request_id: str, at: str, completion: Completion | None = None
    ) -> bool:
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
        membership, slot = self.waitlist_items(event_id, user_id, seq, request_id, at)
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
        self, event_id: str, user_id: str, request_id: str, completion: Completion | None = None
    ) -> bool:
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
            request_id,
            completion,
        )

    def leave_waitlist(
        self, event_id: str, user_id: str, seq: int, request_id: str, completion: Completion | None = None
    ) -> bool:
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
    ) -> bool:
        """The leaving user's seat goes to the head of the waitlist, in one transaction.

        The slot's sequence only grows, so "the slot still exists" means "it is still the head".
        The head's new seat carries the request id: a retry of a hand-over that had
        committed (its answer lost) recognises it there and answers as the first try did.
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
                *self._promotion_items(event_id, head, request_id, at, recognise_own_commit=True),
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
            request_id,
            completion,
        )

    def fill_free_seat(self, event_id: str, head: WaitlistHead, request_id: str, at: str) -> bool:
        """Moves the head of the waitlist into a seat that is free (repair path)."""
        return self._transact(
            [*self._promotion_items(event_id, head, request_id, at), self._fill_seat_update(event_id)],
            request_id,
        )

    def _fill_seat_update(self, event_id: str, seen: Counters | None = None) -> TxItem:
        """One seat more and one waiter fewer while a seat is free and someone waits (and,
        given `seen`, only while the counters are exactly that)."""
        condition = "registeredCount < #capacity AND waitlistCount > :zero"
        values: dict[str, Any] = {":one": 1, ":zero": 0}
        if seen is not None:
            seen_condition = _counters_condition(seen)
            condition = f"{seen_condition['ConditionExpression']} AND {condition}"
            values.update(seen_condition["ExpressionAttributeValues"])
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
        *,
        recognise_own_commit: bool = False,
    ) -> list[TxItem]:
        """Removes the head's slot and membership and gives the head a seat carrying
        `request_id` (recognised as this request's own earlier commit when asked)."""
        mine = _is_request(request_id)

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
                            **self._seat_item(event_id, head.userId, request_id, at),
                            "promotedFromSeq": head.seq,
                        },
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                },
                seat_taken,
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

    # --- item builders ---------------------------------------------------------------
    #
    # The items the writes above put (plain values, not DynamoDB JSON); the bulk loader
    # of the benchmark builds its items with the same functions.

    @staticmethod
    def event_item(state: EventState) -> Item:
        """The item `create_event` puts for `state`."""
        return {
            **keys.event_key(state.eventId),
            "entity": "EVENT",
            "GSI1PK": keys.EVENTS,
            "GSI1SK": keys.event_pk(state.eventId),
            **state.model_dump(),
        }

    @staticmethod
    def user_item(user: User) -> Item:
        """The item `create_user` puts for `user`."""
        return {
            **keys.user_key(user.userId),
            "entity": "USER",
            "GSI1PK": keys.USERS,
            "GSI1SK": keys.user_pk(user.userId),
            **user.model_dump(),
        }

    def seat_item(self, event_id: str, user_id: str, request_id: str, at: str) -> Item:
        """The seat item `take_seat` puts."""
        return self._seat_item(event_id, user_id, request_id, at)

    @staticmethod
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

    # --- listings --------------------------------------------------------------------

    def list_registrations(
        self, event_id: str, limit: int = 25, next_token: str | None = None
    ) -> Page[Registration]:
        items, token, _ = self._query_partition(
            LISTING_REGISTRATIONS, event_id, keys.REG_PREFIX, limit, next_token
        )
        return Page[Registration](items=[Registration.model_validate(i) for i in items], nextToken=token)

    def list_waitlist(
        self, event_id: str, limit: int = 25, next_token: str | None = None
    ) -> Page[WaitlistEntry]:
        """FIFO; positions continue across pages (the token carries how many came before)."""
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
            if _code(exc) in IN_PROGRESS_CODES:
                raise TransientDatabaseError(f"DynamoDB is still applying an earlier {operation}") from exc
            raise
        except (BotocoreConnectionError, HTTPClientError) as exc:
            # No answer after botocore's own retries (refused, reset, read timeout): the
            # call may or may not have been applied. The workflows retry it; a transaction
            # that did commit is recognised by its ClientRequestToken and applies nothing more.
            # The message is an answer's: no endpoint, no internal detail.
            raise TransientDatabaseError(f"DynamoDB did not answer {operation}; retry shortly") from exc

    def ping(self) -> None:
        """One consistent read of a key no item has: raises when the table does not answer."""
        self._get(keys.HEALTH_PROBE_KEY)

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

    def _query_gsi(
        self, listing: str, partition: str, limit: int, next_token: str | None
    ) -> tuple[list[Item], str | None]:
        start, _ = decode_token(next_token, listing, partition, partition)
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
        items = [_deser(i) for i in response.get("Items", [])]
        return items, encode_token(response.get("LastEvaluatedKey"), listing, partition)

    def _query_partition(
        self, listing: str, event_id: str, prefix: str, limit: int, next_token: str | None
    ) -> tuple[list[Item], str | None, int]:
        self.get_event(event_id)  # 404 for an unknown event, even on an empty listing
        partition = keys.event_pk(event_id)
        start, extra = decode_token(next_token, listing, partition, partition)
        offset = extra.get("o", 0)
        if start is not None and (type(offset) is not int or offset < 0):
            raise invalid_token()
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
        return items, encode_token(last, listing, partition, o=offset + len(items)), offset

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
            items = [self._completion_item(completion), *items]
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
        token = transaction_token(scope, actions)

        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self._call("transact_write_items", TransactItems=actions, ClientRequestToken=token)
                return True
            except ClientError as exc:
                if _code(exc) == TOKEN_REUSED_CODE:
                    # Only a transaction with other contents had this token (a digest of
                    # the contents): whatever it was, this one was not applied.
                    raise DecisionStale("The transaction's token was used for another write") from None
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
    def _completion_item(completion: Completion) -> TxItem:
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

    # --- reconciliation ----------------------------------------------------------------
    #
    # Repairs are transactions conditioned on the counters the repair was decided on
    # (`registeredCount`, `waitlistCount` and `waitlistSeq` all equal to what was seen)
    # and on every item they touch still being as it was seen. Every live seat or
    # waitlist change moves at least one of those counters in the same transaction, so
    # a repair and a live change never both commit on the same view; the loser of the
    # race reads again (DecisionStale).

    def find_event(self, event_id: str) -> EventState | None:
        """The event, read strongly consistently; None when it does not exist."""
        item = self._get(keys.event_key(event_id))
        return EventState.model_validate(item) if item else None

    def list_event_ids(self, limit: int = 50, next_token: str | None = None) -> Page[str]:
        """One page of event ids from GSI1 (eventually consistent: a brand-new event may be
        missed by this page and is seen by the next run)."""
        start, _ = decode_token(next_token, LISTING_EVENT_IDS, keys.EVENTS, keys.EVENTS)
        kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
        response = self._call(
            "query",
            TableName=self.table_name,
            IndexName=keys.GSI1,
            KeyConditionExpression="GSI1PK = :pk",
            ExpressionAttributeValues=_ser({":pk": keys.EVENTS}),
            ProjectionExpression="eventId",
            Limit=_check_limit(limit),
            **kwargs,
        )
        ids = [str(_deser(i)["eventId"]) for i in response.get("Items", []) if "eventId" in i]
        token = encode_token(response.get("LastEvaluatedKey"), LISTING_EVENT_IDS, keys.EVENTS)
        return Page[str](items=ids, nextToken=token)

    def iter_sort_keys(self, event_id: str, prefix: str) -> Iterator[str]:
        """The sort keys of an event's items under a prefix, in order (keys only, so a
        large event costs pages of keys, not of items)."""
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            response = self._call(
                "query",
                TableName=self.table_name,
                KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
                ExpressionAttributeValues=_ser({":pk": keys.event_pk(event_id), ":prefix": prefix}),
                ProjectionExpression="SK",
                ConsistentRead=True,
                **kwargs,
            )
            for item in response.get("Items", []):
                yield str(item["SK"]["S"])
            start = response.get("LastEvaluatedKey")
            if not start:
                return

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
            counters = {"ConditionCheck": {"Key": keys.event_key(event_id), **_counters_condition(seen)}}
        else:
            condition = _counters_condition(seen)
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
            items.extend(TxItem(a) for a in self._repair_items(event_id, action, record.runId, record.now))
        items.append(TxItem(self._record_update(event_id, record, before=seen, after=after)))
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
        """Moves the head of the waitlist into a free seat (as `fill_free_seat`), only if the
        counters are still exactly `seen`, and records the promotion."""
        after = Counters(
            registeredCount=seen.registeredCount + 1,
            waitlistCount=seen.waitlistCount - 1,
            waitlistSeq=seen.waitlistSeq,
        )
        return self._transact(
            [
                *self._promotion_items(event_id, head, request_id, at),
                self._fill_seat_update(event_id, seen),
                TxItem(self._record_update(event_id, record, before=seen, after=after)),
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
        self._call("put_item", TableName=self.table_name, Item=_ser(item))

    def latest_reconciliation_runs(self, limit: int = 1) -> list[Item]:
        """The newest run summaries (runs that changed something), newest first."""
        response = self._call(
            "query",
            TableName=self.table_name,
            KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
            ExpressionAttributeValues=_ser({":pk": keys.RECONCILIATION_RUNS_PK, ":prefix": keys.RUN_PREFIX}),
            ScanIndexForward=False,
            ConsistentRead=True,
            Limit=_check_limit(limit),
        )
        return [_plain_deep(_deser(i)) for i in response.get("Items", [])]

    def reconciliation_records(self, event_id: str, limit: int = 25) -> list[Item]:
        """An event's repair records, newest first."""
        response = self._call(
            "query",
            TableName=self.table_name,
            KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
            ExpressionAttributeValues=_ser(
                {":pk": keys.event_pk(event_id), ":prefix": keys.RECONCILED_PREFIX}
            ),
            ScanIndexForward=False,
            ConsistentRead=True,
            Limit=_check_limit(limit),
        )
        return [_plain_deep(_deser(i)) for i in response.get("Items", [])]

    def list_reconciliation_records(self, limit: int = 25, next_token: str | None = None) -> Page[Item]:
        """Repair records of every event, oldest first, from GSI1 (listings only)."""
        items, token = self._query_gsi(LISTING_RECONCILIATIONS, keys.RECONCILIATIONS, limit, next_token)
        return Page[Item](items=[_plain_deep(i) for i in items], nextToken=token)

    def _repair_items(
        self, event_id: str, action: RepairAction, run_id: str, at: str
    ) -> list[dict[str, Any]]:
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
        joined_at = action.joinedAt or at
        if action.kind == "restore_membership":
            membership = {
                **keys.waitlisted_key(event_id, user),
                "entity": "WAITLISTED",
                "GSI1PK": keys.user_pk(user),
                "GSI1SK": keys.event_pk(event_id),
                "eventId": event_id,
                "userId": user,
                "seq": seq,
                "joinedAt": joined_at,
                "requestId": f"reconcile:{run_id}",
            }
            return [
                {"Put": {"Item": membership, "ConditionExpression": "attribute_not_exists(PK)"}},
                {"ConditionCheck": {"Key": keys.queue_key(event_id, seq), **slot_is_users}},
                no_seat,
            ]
        if action.kind == "restore_slot":
            slot = {
                **keys.queue_key(event_id, seq),
                "entity": "WAITLIST_SLOT",
                "eventId": event_id,
                "userId": user,
                "seq": seq,
                "joinedAt": joined_at,
            }
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

    @staticmethod
    def _record_update(
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
            "#gpk": "GSI1PK",
            "#gsk": "GSI1SK",
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
            ":gpk": keys.RECONCILIATIONS,
            ":gsk": f"{record.runStartedAt}#{event_id}",
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
                    "#overbooked = :overbooked, #gpk = :gpk, #gsk = :gsk, #expiresAt = :expiresAt "
                    "ADD #countRepairs :countRepairs, #waitlistRepairs :waitlistRepairs, "
                    "#promotions :promotions"
                ),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    # --- idempotent requests -----------------------------------------------------------

    def claim_request(self, claim: IdempotencyRecord, now: int) -> IdempotencyRecord | None:
        """Write `claim` (IN_PROGRESS) unless a live record holds its key; None when written.

        A record is dead once `expiresAt` has passed (TTL deletes lazily), and an
        unfinished one may be taken over after its lease by the same request (same
        fingerprint). The request that wrote a claim may write it again (a retried task).
        Otherwise the record that holds the key is returned, read in the same call.
        """
        item = {
            **keys.idempotency_key(claim.key),
            "entity": "IDEMPOTENCY",
            **claim.model_dump(exclude_none=True),
        }
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item=_ser(item),
                ConditionExpression=(
                    "attribute_not_exists(PK) OR expiresAt < :now OR requestId = :requestId "
                    "OR (#status = :inProgress AND leaseExpiresAt < :now AND fingerprint = :fingerprint)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=_ser(
                    {
                        ":now": now,
                        ":requestId": claim.requestId,
                        ":inProgress": "IN_PROGRESS",
                        ":fingerprint": claim.fingerprint,
                    }
                ),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            held = exc.response.get("Item") or self._call(
                "get_item",
                TableName=self.table_name,
                Key=_ser(keys.idempotency_key(claim.key)),
                ConsistentRead=True,
            ).get("Item")
            if not held:  # pragma: no cover - deleted between the write and the read: try again
                return self.claim_request(claim, now)
            return IdempotencyRecord.model_validate(_plain_deep(_deser(held)))
        return None

    def complete_request(self, key: str, request_id: str, response: StoredResponse, at: str) -> bool:
        """Store the answer of the request that holds the claim; False if another took it over."""
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=_ser(keys.idempotency_key(key)),
                UpdateExpression="SET #status = :completed, #response = :response, completedAt = :at",
                ConditionExpression="requestId = :requestId",
                ExpressionAttributeNames={"#status": "status", "#response": "response"},
                ExpressionAttributeValues=_ser(
                    {
                        ":completed": "COMPLETED",
                        ":response": response.model_dump(exclude_none=True),
                        ":at": at,
                        ":requestId": request_id,
                    }
                ),
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release_request(self, key: str, request_id: str) -> bool:
        """Forget an unfinished claim so that a retry runs the request again."""
        try:
            self._call(
                "delete_item",
                TableName=self.table_name,
                Key=_ser(keys.idempotency_key(key)),
                ConditionExpression="requestId = :requestId AND #status = :inProgress",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=_ser({":requestId": request_id, ":inProgress": "IN_PROGRESS"}),
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def get_request(self, key: str) -> IdempotencyRecord | None:
        item = self._get(keys.idempotency_key(key))
        return IdempotencyRecord.model_validate(_plain_deep(item)) if item else None


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


# --- reconciliation helpers ------------------------------------------------------------

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


def _plain_deep(value: Any) -> Any:
    """Numbers inside maps and lists as int/float too (records nest their counters)."""
    if isinstance(value, dict):
        return {k: _plain_deep(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_deep(v) for v in value]
    return _plain(value)


def _counters_condition(seen: Counters) -> dict[str, Any]:
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
