"""Counts what every DynamoDB request of one boto3 client costs (botocore event hooks).

The hooks see each request's parameters and its parsed response. Writes and queries
whose response does not show what they read also need the items themselves: the meter
reads them through a second, unhooked client (before and after a write), so the counted
client's own calls are exactly the ones the code under test made.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from infrastructure.bench.dynamodb_units import IndexSpec, Usage, key_of, touched_keys, usage_of
from infrastructure.local import iam
from registration import keys

WRITES = frozenset({"TransactWriteItems", "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"})
QUERIES = frozenset({"Query", "Scan"})
CONTEXT_KEY = "bench_meter"
TABLE_KEYS = ("PK", "SK")
GSI1 = IndexSpec(keys.GSI1, ("GSI1PK", "GSI1SK"), TABLE_KEYS)


@dataclass(frozen=True)
class CallRecord:
    operation: str
    usage: Usage
    failed: bool = False


class Meter:
    """Attach to a client; every request it makes while attached becomes a `CallRecord`."""

    def __init__(
        self,
        client: Any,
        observer: Any,
        *,
        table_keys: tuple[str, ...] = TABLE_KEYS,
        index: IndexSpec | None = GSI1,
    ) -> None:
        self.client = client
        self.observer = observer
        self.table_keys = table_keys
        self.index = index
        self.records: list[CallRecord] = []
        self._lock = threading.Lock()

    # --- hooks -----------------------------------------------------------------------

    # The side reads are the meter's own (its `observer` client), not the metered
    # handler's: they are made as nobody, outside the handler's IAM principal.

    def _before(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        operation = model.name
        entry: dict[str, Any] = {"operation": operation, "params": copy.deepcopy(params)}
        if operation in WRITES:
            with iam.acting_as(None):
                entry["before"] = self._images(operation, params)
        context[CONTEXT_KEY] = entry

    def _after(
        self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        entry = context.pop(CONTEXT_KEY, None)
        if entry is None:
            return
        operation, params = entry["operation"], entry["params"]
        failed = http_response.status_code >= 300
        with iam.acting_as(None):
            after = self._images(operation, params) if operation in WRITES else None
            evaluated = None
            if (
                operation in QUERIES
                and not failed
                and ("Select" in params or "ProjectionExpression" in params)
            ):
                evaluated = self._evaluated(operation, params)
        usage = usage_of(
            operation,
            params,
            parsed if not failed else {},
            before=entry.get("before"),
            after=after,
            evaluated=evaluated,
            table_keys=self.table_keys,
            index=self.index,
        )
        retries = int(parsed.get("ResponseMetadata", {}).get("RetryAttempts", 0))
        self._add(CallRecord(operation, Usage(round_trips=1 + retries) + usage, failed))

    def _after_error(self, context: dict[str, Any], model: Any, **_: Any) -> None:
        # No answer at all (connection refused, timeout): one round trip, nothing known to be spent.
        entry = context.pop(CONTEXT_KEY, None)
        if entry is not None:
            self._add(CallRecord(model.name, Usage(round_trips=1), failed=True))

    def _add(self, record: CallRecord) -> None:
        with self._lock:
            self.records.append(record)

    # --- side reads ------------------------------------------------------------------

    def _images(self, operation: str, params: dict[str, Any]) -> dict[tuple[Any, ...], Any]:
        wanted = touched_keys(operation, params, self.table_keys)
        table = _table_of(operation, params)
        images: dict[tuple[Any, ...], Any] = {key_of(k, self.table_keys): None for k in wanted}
        for start in range(0, len(wanted), 100):
            pending: list[dict[str, Any]] = wanted[start : start + 100]
            while pending:
                response = self.observer.batch_get_item(
                    RequestItems={table: {"Keys": pending, "ConsistentRead": True}}
                )
                for item in response.get("Responses", {}).get(table, []):
                    images[key_of(item, self.table_keys)] = item
                pending = response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
        return images

    def _evaluated(self, operation: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The items a COUNT or projected Query/Scan evaluated, read again in full."""
        again = {k: v for k, v in params.items() if k not in ("Select", "ProjectionExpression")}
        if "ExpressionAttributeNames" in again and "ProjectionExpression" in params:
            used = " ".join(str(again.get(k, "")) for k in ("KeyConditionExpression", "FilterExpression"))
            names = {k: v for k, v in again["ExpressionAttributeNames"].items() if k in used}
            if names:
                again["ExpressionAttributeNames"] = names
            else:
                again.pop("ExpressionAttributeNames")
        method = self.observer.query if operation == "Query" else self.observer.scan
        items: list[dict[str, Any]] = list(method(**again).get("Items", []))
        return items

    # --- use -------------------------------------------------------------------------

    def attach(self) -> None:
        events = self.client.meta.events
        events.register("before-parameter-build.dynamodb", self._before)
        events.register("after-call.dynamodb", self._after)
        events.register("after-call-error.dynamodb", self._after_error)

    def detach(self) -> None:
        events = self.client.meta.events
        events.unregister("before-parameter-build.dynamodb", self._before)
        events.unregister("after-call.dynamodb", self._after)
        events.unregister("after-call-error.dynamodb", self._after_error)

    @contextmanager
    def counting(self) -> Iterator[list[CallRecord]]:
        """Records of the calls made inside the block (the meter must be attached)."""
        with self._lock:
            start = len(self.records)
        taken: list[CallRecord] = []
        try:
            yield taken
        finally:
            with self._lock:
                taken.extend(self.records[start:])

    def __enter__(self) -> Meter:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


def total(records: list[CallRecord]) -> Usage:
    out = Usage()
    for record in records:
        out = out + record.usage
    return out


def calls_by_operation(records: list[CallRecord]) -> Counter[str]:
    return Counter(r.operation for r in records)


def _table_of(operation: str, params: dict[str, Any]) -> str:
    if operation == "TransactWriteItems":
        tables = {next(iter(a.values()))["TableName"] for a in params["TransactItems"]}
    elif operation == "BatchWriteItem":
        tables = set(params["RequestItems"])
    else:
        tables = {params["TableName"]}
    if len(tables) != 1:
        raise ValueError("the meter follows one table per request")
    return str(next(iter(tables)))
