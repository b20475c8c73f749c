"""Listings a page at a time, and the opaque tokens that resume them.

A `nextToken` is opaque and tamper-evident: base64url(JSON payload) "." base64url(HMAC-
SHA256 of the payload). The payload names the listing and its scope (the event or user
it lists), the last key read and, for the waitlist, how many entries came before; the
page size is not bound (a token resumes after a key, whatever the next page's size).
The key is derived from PAGE_TOKEN_SECRET, a secret every function of the stack shares
(on AWS, CloudFormation resolves it from a generated Secrets Manager secret at deploy
time); a process without it (tests, the local stack) uses a fixed development secret.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from registration import keys
from registration.data.dynamo import Item, Table, deserialize, serialize
from registration.errors import ValidationError
from registration.settings import Settings

MAX_PAGE = 100
INVALID_TOKEN_MESSAGE = "nextToken is not a token this listing returned"
_TOKEN_KEY_CONTEXT = b"registration/page-token/v1\0"

# Which listing a token resumes: a token of one is refused by every other.
LISTING_USERS = "users"
LISTING_EVENTS = "events"
LISTING_USER_REGISTRATIONS = "user-registrations"
LISTING_REGISTRATIONS = "registrations"
LISTING_WAITLIST = "waitlist"
LISTING_EVENT_IDS = "event-ids"
LISTING_WEBHOOKS = "webhooks"


@functools.lru_cache(maxsize=4)
def _derived_key(secret: str) -> bytes:
    return hashlib.sha256(_TOKEN_KEY_CONTEXT + secret.encode("utf-8")).digest()


def _token_key() -> bytes:
    return _derived_key(Settings.read().page_token_secret)


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
    document = {"l": listing, "s": scope, "k": deserialize(last_key), **extra}
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
    return serialize(start), {k: v for k, v in document.items() if k not in ("l", "s", "k")}


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(
            f"limit must be between 1 and {MAX_PAGE}",
            fields=[{"field": "limit", "message": f"must be between 1 and {MAX_PAGE}"}],
        )
    return limit


class Listings(Table):
    """One page of GSI1 or of an event's partition, resumed by a token."""

    def _query_gsi(
        self,
        listing: str,
        partition: str,
        limit: int,
        next_token: str | None,
        projection: str | None = None,
        sort_between: tuple[str, str] | None = None,
    ) -> tuple[list[Item], str | None]:
        """One page of a GSI1 partition (within a range of its sort keys, when given: a
        token resumes the same range only)."""
        scope = partition if sort_between is None else f"{partition}|{sort_between[0]}|{sort_between[1]}"
        start, _ = decode_token(next_token, listing, scope, partition)
        kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
        if projection:
            kwargs["ProjectionExpression"] = projection
        condition, values = "GSI1PK = :pk", {":pk": partition}
        if sort_between is not None:
            condition = f"{condition} AND GSI1SK BETWEEN :low AND :high"
            values = {**values, ":low": sort_between[0], ":high": sort_between[1]}
        response = self._call(
            "query",
            TableName=self.table_name,
            IndexName=keys.GSI1,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=serialize(values),
            Limit=check_limit(limit),
            **kwargs,
        )
        items = [deserialize(i) for i in response.get("Items", [])]
        return items, encode_token(response.get("LastEvaluatedKey"), listing, scope)

    def _query_partition(
        self, listing: str, event_id: str, prefix: str, limit: int, next_token: str | None
    ) -> tuple[list[Item], str | None, int]:
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
            ExpressionAttributeValues=serialize({":pk": partition, ":prefix": prefix}),
            ConsistentRead=True,
            Limit=check_limit(limit),
            **kwargs,
        )
        last = response.get("LastEvaluatedKey")
        items = [deserialize(i) for i in response.get("Items", [])]
        return items, encode_token(last, listing, partition, o=offset + len(items)), offset
