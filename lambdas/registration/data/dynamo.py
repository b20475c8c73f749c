"""The one place that holds the DynamoDB client: item codecs, error translation, reads.

Every aggregate's data access builds on `Table`; nothing outside this package imports
boto3 for the table.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from registration import keys
from registration.errors import TransientDatabaseError

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
# Backoff unit of the in-task retries (milliseconds, unlike a Step Functions Retry whose
# interval is whole seconds).
BACKOFF_S = 0.02

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def serialize(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in value.items()}


def deserialize(item: Mapping[str, Any]) -> Item:
    return {k: plain(_deserializer.deserialize(v)) for k, v in item.items()}


def plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def plain_deep(value: Any) -> Any:
    """Numbers inside maps and lists as int/float too (records nest their counters)."""
    if isinstance(value, dict):
        return {k: plain_deep(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_deep(v) for v in value]
    return plain(value)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def translated(operation: str) -> Iterator[None]:
    """AWS's answers that mean "try again later" as TransientDatabaseError; others as they are."""
    try:
        yield
    except ClientError as exc:
        if error_code(exc) in THROTTLING_CODES:
            raise TransientDatabaseError(f"DynamoDB is throttling {operation}: {error_code(exc)}") from exc
        if error_code(exc) in IN_PROGRESS_CODES:
            raise TransientDatabaseError(f"DynamoDB is still applying an earlier {operation}") from exc
        raise
    except (BotocoreConnectionError, HTTPClientError) as exc:
        # No answer after botocore's own retries (refused, reset, read timeout): the
        # call may or may not have been applied. The workflows retry it; a transaction
        # that did commit is recognised by its ClientRequestToken and applies nothing more.
        # The message is an answer's: no endpoint, no internal detail.
        raise TransientDatabaseError(f"DynamoDB did not answer {operation}; retry shortly") from exc


class Table:
    """One DynamoDB table: calls with AWS's errors translated into domain ones, and reads."""

    def __init__(self, table_name: str, client: Any | None = None) -> None:
        self.table_name = table_name
        self.client = client or new_client()

    def _call(self, operation: str, **kwargs: Any) -> Any:
        with translated(operation):
            return getattr(self.client, operation)(**kwargs)

    def _pages(self, **query: Any) -> Iterator[dict[str, Any]]:
        """Every page of a query on the table, by boto3's paginator."""
        with translated("query"):
            yield from self.client.get_paginator("query").paginate(TableName=self.table_name, **query)

    def _first(self, pk: str, prefix: str, limit: int, *, newest_first: bool = False) -> list[Item]:
        """The first `limit` items of a partition under a sort-key prefix, in key order
        (or its reverse), read strongly consistently: one query."""
        response = self._call(
            "query",
            TableName=self.table_name,
            KeyConditionExpression="PK = :pk AND begins_with(SK, :prefix)",
            ExpressionAttributeValues=serialize({":pk": pk, ":prefix": prefix}),
            ScanIndexForward=not newest_first,
            ConsistentRead=True,
            Limit=limit,
        )
        return [deserialize(item) for item in response.get("Items", [])]

    def ping(self) -> None:
        """One consistent read of a key no item has: raises when the table does not answer."""
        self._get(keys.HEALTH_PROBE_KEY)

    def _get(self, key: Mapping[str, str]) -> Item | None:
        response = self._call("get_item", TableName=self.table_name, Key=serialize(key), ConsistentRead=True)
        item = response.get("Item")
        return deserialize(item) if item else None

    def _batch_get(self, key_list: Sequence[Mapping[str, str]], by: str = "PK") -> dict[str, Item]:
        """Strongly consistent BatchGetItem; results indexed by `by` (PK or SK)."""
        pending: list[dict[str, Any]] = [serialize(k) for k in key_list]
        found: dict[str, Item] = {}
        for attempt in range(8):
            response = self._call(
                "batch_get_item",
                RequestItems={self.table_name: {"Keys": pending, "ConsistentRead": True}},
            )
            for raw in response.get("Responses", {}).get(self.table_name, []):
                item = deserialize(raw)
                found[item[by]] = item
            pending = response.get("UnprocessedKeys", {}).get(self.table_name, {}).get("Keys", [])
            if not pending:
                return found
            time.sleep(BACKOFF_S * (2**attempt) * random.random())
        raise TransientDatabaseError("DynamoDB left keys unprocessed after several attempts")


_client_lock = threading.Lock()


def new_client() -> Any:
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


def merge_patch_update(
    changes: Mapping[str, Any],
) -> tuple[list[str], list[str], dict[str, str], dict[str, Any]]:
    """A merge patch's fields as an update expression's parts: (SET clauses, REMOVE
    paths, attribute names, attribute values); a None value removes its field. Every
    field goes by an alias (`#f0`...): some are reserved words (`location`, `name`)."""
    sets: list[str] = []
    removes: list[str] = []
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    for number, (field, value) in enumerate(sorted(changes.items())):
        names[f"#f{number}"] = field
        if value is None:
            removes.append(f"#f{number}")
        else:
            values[f":f{number}"] = value
            sets.append(f"#f{number} = :f{number}")
    return sets, removes, names, values
