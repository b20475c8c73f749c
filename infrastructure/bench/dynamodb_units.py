"""What DynamoDB charges for a request, by AWS's published rules (not DynamoDB Local's figures).

DynamoDB Local reports a `ConsumedCapacity` that differs from AWS's (2.0 for a three-item
transaction), so the benchmark computes units itself from the items each request read
or wrote. The rules, from the DynamoDB Developer Guide:

* Item size (`CapacityUnitCalculations.html`): the sum of the UTF-8 lengths of the
  attribute names plus the sizes of the values. A string is its UTF-8 length; a number
  is 1 byte per two significant digits plus 1; binary is its raw length; a Boolean or
  null is 1; a list or map is 3 bytes plus, per element, 1 byte plus the element's size
  (a map element's name counts too); a set is the sum of its elements.
* Reads (`read-write-operations.html`): a strongly consistent read costs 1 read unit
  per 4 KB of item (rounded up per item for GetItem and BatchGetItem; over the sum of
  the items evaluated for Query), an eventually consistent read half that, a
  transactional read twice that. Reading an item that does not exist (or a Query that
  finds nothing) still costs the minimum, 1 unit (strong) or 0.5 (eventual).
* Writes: 1 write unit per KB (rounded up per item). PutItem and UpdateItem count the
  larger of the item before and after; DeleteItem the deleted item. A transactional
  write costs twice that, for every action of `TransactWriteItems` (a `ConditionCheck`
  is charged like a write of the checked item: its size rounded up, at least 1 KB,
  doubled).
* Global secondary indexes (`GSI.html`, "Provisioned throughput considerations"): a
  table write that adds an item to an index, or removes one from it, costs one index
  write of the index entry's size; one that changes the item's index key costs two
  (delete the old entry, put the new); one that changes other projected attributes
  costs one. Index writes are propagated outside the transaction and are charged at the
  standard rate.

On-demand tables are billed in request units that follow the same arithmetic (one
write request unit per KB written, one read request unit per 4 KB read strongly).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from typing import Any

KB = 1024
READ_BLOCK = 4 * KB
WRITE_BLOCK = KB
TRANSACTIONAL_FACTOR = 2

# DynamoDB JSON: {"S": "text"}, {"N": "12"}, {"M": {...}}, ...
AttributeValue = Mapping[str, Any]
Item = Mapping[str, AttributeValue]


def number_size(text: str) -> int:
    """Bytes a number takes: 1 per two significant digits (leading and trailing zeros trimmed), plus 1."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a DynamoDB number: {text!r}") from None
    digits = value.normalize().as_tuple().digits if value != 0 else (0,)
    return math.ceil(len(digits) / 2) + 1


def _binary_size(value: Any) -> int:
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    # Raw JSON carries base64 text; the size is that of the decoded bytes.
    import base64

    return len(base64.b64decode(value))


def value_size(value: AttributeValue) -> int:
    """Bytes of one attribute value (DynamoDB JSON), without its name."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode("utf-8"))
    if kind == "N":
        return number_size(str(inner))
    if kind == "B":
        return _binary_size(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(str(v).encode("utf-8")) for v in inner)
    if kind == "NS":
        return sum(number_size(str(v)) for v in inner)
    if kind == "BS":
        return sum(_binary_size(v) for v in inner)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + value_size(v) for k, v in inner.items())
    raise ValueError(f"unknown attribute type {kind!r}")


def item_size(item: Item | None) -> int:
    """Bytes of an item: attribute names plus values. An absent item is 0 bytes."""
    if not item:
        return 0
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in item.items())


def read_units(size: int, *, consistent: bool = True, transactional: bool = False) -> float:
    """Read units for one item (GetItem, one key of BatchGetItem) or one Query's items together."""
    blocks = max(1, math.ceil(size / READ_BLOCK))
    if transactional:
        return float(blocks * TRANSACTIONAL_FACTOR)
    return float(blocks) if consistent else blocks / 2


def write_units(size: int, *, transactional: bool = False) -> float:
    """Write units for writing (or deleting, or condition-checking) one item of `size` bytes."""
    blocks = max(1, math.ceil(size / WRITE_BLOCK))
    return float(blocks * (TRANSACTIONAL_FACTOR if transactional else 1))


@dataclass(frozen=True)
class IndexSpec:
    """A global secondary index: its key attributes and what it projects (None: ALL)."""

    name: str
    keys: tuple[str, ...]
    table_keys: tuple[str, ...] = ("PK", "SK")
    projected: Collection[str] | None = None

    def entry(self, item: Item | None) -> dict[str, AttributeValue] | None:
        """The item's entry in the index, or None when the item is not in the index (sparse)."""
        if not item or not all(k in item for k in self.keys):
            return None
        if self.projected is None:
            return dict(item)
        wanted = {*self.keys, *self.table_keys, *self.projected}
        return {k: v for k, v in item.items() if k in wanted}


def index_writes(before: Item | None, after: Item | None, index: IndexSpec) -> list[tuple[str, float]]:
    """The index writes a table write that turned `before` into `after` costs, as
    (index partition key value, write units)."""
    old, new = index.entry(before), index.entry(after)
    if old is None and new is None:
        return []
    if old is None:
        assert new is not None
        return [(_scalar(new[index.keys[0]]), write_units(item_size(new)))]
    if new is None:
        return [(_scalar(old[index.keys[0]]), write_units(item_size(old)))]
    if any(old[k] != new[k] for k in index.keys):
        return [
            (_scalar(old[index.keys[0]]), write_units(item_size(old))),
            (_scalar(new[index.keys[0]]), write_units(item_size(new))),
        ]
    if old == new:
        return []
    return [(_scalar(new[index.keys[0]]), write_units(max(item_size(old), item_size(new))))]


def index_write_units(before: Item | None, after: Item | None, index: IndexSpec) -> float:
    """Write units the index is charged for a table write that turned `before` into `after`."""
    return sum(units for _, units in index_writes(before, after, index))


def _scalar(value: AttributeValue) -> str:
    ((_kind, inner),) = value.items()
    return str(inner)


Spread = Mapping[str, float]


def _merge(a: Spread, b: Spread) -> dict[str, float]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + v
    return out


@dataclass(frozen=True)
class Usage:
    """What one or more DynamoDB requests cost.

    The spreads say where the units landed: `partition_reads` and `partition_writes` by
    the table's partition key value, `item_writes` by `PK|SK`, `index_partition_writes`
    by the index's partition key value (what the per-partition quotas apply to).
    """

    round_trips: int = 0
    items_read: int = 0
    items_written: int = 0
    read_units: float = 0.0
    write_units: float = 0.0
    index_write_units: float = 0.0
    partition_reads: Spread = field(default_factory=dict)
    partition_writes: Spread = field(default_factory=dict)
    item_writes: Spread = field(default_factory=dict)
    index_partition_writes: Spread = field(default_factory=dict)

    def __add__(self, other: Usage) -> Usage:
        values: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            values[f.name] = _merge(mine, theirs) if isinstance(mine, Mapping) else mine + theirs
        return Usage(**values)

    @property
    def total_write_units(self) -> float:
        return self.write_units + self.index_write_units

    def figures(self) -> tuple[int, int, int, float, float, float]:
        """The scalar figures (what must not grow with an event's size)."""
        return (
            self.round_trips,
            self.items_read,
            self.items_written,
            self.read_units,
            self.write_units,
            self.index_write_units,
        )


def key_of(item: Item, table_keys: tuple[str, ...]) -> tuple[Any, ...]:
    """A hashable identity for an item's primary key."""
    return tuple(_freeze(item[k]) for k in table_keys)


def _freeze(value: AttributeValue) -> tuple[str, Any]:
    ((kind, inner),) = value.items()
    return kind, inner if not isinstance(inner, bytearray) else bytes(inner)


Images = Mapping[tuple[Any, ...], Item | None]


class _Tally:
    """Accumulates one request's usage and where it landed."""

    def __init__(self, table_keys: tuple[str, ...], index: IndexSpec | None) -> None:
        self.table_keys = table_keys
        self.index = index
        self.items_read = 0
        self.items_written = 0
        self.read_units = 0.0
        self.write_units = 0.0
        self.index_write_units = 0.0
        self.partition_reads: dict[str, float] = {}
        self.partition_writes: dict[str, float] = {}
        self.item_writes: dict[str, float] = {}
        self.index_partition_writes: dict[str, float] = {}

    def read(self, key: Mapping[str, Any], units: float, found: int) -> None:
        self.items_read += found
        self.read_units += units
        partition = _scalar(key[self.table_keys[0]])
        self.partition_reads[partition] = self.partition_reads.get(partition, 0.0) + units

    def write(self, key: Mapping[str, Any], units: float, *, counts_as_written: bool = True) -> None:
        self.items_written += counts_as_written
        self.write_units += units
        partition = _scalar(key[self.table_keys[0]])
        self.partition_writes[partition] = self.partition_writes.get(partition, 0.0) + units
        item = "|".join(_scalar(key[k]) for k in self.table_keys)
        self.item_writes[item] = self.item_writes.get(item, 0.0) + units

    def index_write(self, before: Item | None, after: Item | None) -> None:
        if self.index is None:
            return
        for partition, units in index_writes(before, after, self.index):
            self.index_write_units += units
            self.index_partition_writes[partition] = self.index_partition_writes.get(partition, 0.0) + units

    def usage(self) -> Usage:
        return Usage(
            items_read=self.items_read,
            items_written=self.items_written,
            read_units=self.read_units,
            write_units=self.write_units,
            index_write_units=self.index_write_units,
            partition_reads=self.partition_reads,
            partition_writes=self.partition_writes,
            item_writes=self.item_writes,
            index_partition_writes=self.index_partition_writes,
        )


def usage_of(
    operation: str,
    params: Mapping[str, Any],
    response: Mapping[str, Any],
    *,
    before: Images | None = None,
    after: Images | None = None,
    evaluated: Sequence[Item] | None = None,
    table_keys: tuple[str, ...] = ("PK", "SK"),
    index: IndexSpec | None = None,
) -> Usage:
    """The capacity one request used.

    `before` and `after` are the images of the items a write touches (by primary key,
    None when absent), read around the request; `evaluated` is what a Query or Scan
    read when its response does not show it (`Select=COUNT`, a projection). Round trips
    are not counted here (see `Usage.round_trips`).
    """
    before, after = before or {}, after or {}
    tally = _Tally(table_keys, index)
    reads = _READS.get(operation)
    if reads is not None:
        reads(tally, params, response, evaluated)
    transactional = operation == "TransactWriteItems"
    for kind, key, item in _writes(operation, params):
        identity = key_of(key, table_keys)
        old, new = before.get(identity), after.get(identity)
        tally.write(
            key,
            write_units(_written_size(kind, old, new, item), transactional=transactional),
            counts_as_written=kind != "ConditionCheck",
        )
        tally.index_write(old, new)
    # Anything else (DescribeTable, ...) is a control-plane call and costs no capacity.
    return tally.usage()


def _get_item(tally: _Tally, params: Mapping[str, Any], response: Mapping[str, Any], _: Any) -> None:
    item = response.get("Item")
    units = read_units(item_size(item), consistent=bool(params.get("ConsistentRead")))
    tally.read(params["Key"], units, 1 if item else 0)


def _batch_get_item(tally: _Tally, params: Mapping[str, Any], response: Mapping[str, Any], _: Any) -> None:
    found = response.get("Responses", {})
    unprocessed = response.get("UnprocessedKeys", {})
    table_keys = tally.table_keys
    for table, request in params.get("RequestItems", {}).items():
        consistent = bool(request.get("ConsistentRead"))
        by_key: dict[tuple[Any, ...], Item] = {key_of(i, table_keys): i for i in found.get(table, [])}
        skipped = {key_of(k, table_keys) for k in unprocessed.get(table, {}).get("Keys", [])}
        for key in request.get("Keys", []):
            identity = key_of(key, table_keys)
            if identity in skipped:
                continue
            item = by_key.get(identity)
            # A key that finds nothing still costs the minimum.
            tally.read(key, read_units(item_size(item), consistent=consistent), 1 if item else 0)


def _query_or_scan(
    tally: _Tally, params: Mapping[str, Any], response: Mapping[str, Any], evaluated: Sequence[Item] | None
) -> None:
    read: list[Item] = list(evaluated) if evaluated is not None else list(response.get("Items", []))
    units = read_units(sum(item_size(i) for i in read), consistent=bool(params.get("ConsistentRead")))
    partition_key = tally.table_keys[0]
    if read:
        # One Query reads one partition key; a Scan's units are spread by item.
        share = units / len(read)
        for one in read:
            tally.read(one, share, 1)
    elif "KeyConditionExpression" in params:
        tally.read({partition_key: _queried_partition(params, partition_key)}, units, 0)
    else:
        tally.read({partition_key: {"S": "?"}}, units, 0)


def _transact_get_items(
    tally: _Tally, params: Mapping[str, Any], response: Mapping[str, Any], _: Any
) -> None:
    for request, result in zip(params.get("TransactItems", []), response.get("Responses", []), strict=False):
        item = result.get("Item")
        tally.read(request["Get"]["Key"], read_units(item_size(item), transactional=True), 1 if item else 0)


_READS = {
    "GetItem": _get_item,
    "BatchGetItem": _batch_get_item,
    "Query": _query_or_scan,
    "Scan": _query_or_scan,
    "TransactGetItems": _transact_get_items,
}


def _writes(operation: str, params: Mapping[str, Any]) -> Iterator[tuple[str, Item, Item | None]]:
    """(kind, key, item put) of each item a write request touches (nothing for a read)."""
    if operation == "TransactWriteItems":
        for action in params.get("TransactItems", []):
            ((kind, body),) = action.items()
            yield kind, (body["Item"] if kind == "Put" else body["Key"]), body.get("Item")
    elif operation == "PutItem":
        yield "Put", params["Item"], params["Item"]
    elif operation in ("UpdateItem", "DeleteItem"):
        yield operation.removesuffix("Item"), params["Key"], None
    elif operation == "BatchWriteItem":
        for requests in params.get("RequestItems", {}).values():
            for request in requests:
                ((kind, body),) = request.items()
                put = kind == "PutRequest"
                yield ("Put" if put else "Delete"), (body["Item"] if put else body["Key"]), body.get("Item")


def _written_size(kind: str, old: Item | None, new: Item | None, put: Item | None) -> int:
    """The size a write is charged for: the larger of the item before and after; a delete
    or a condition check, the item as it was."""
    if kind == "Put":
        return max(item_size(old), item_size(put))
    if kind == "Update":
        return max(item_size(old), item_size(new))
    return item_size(old)


def _queried_partition(params: Mapping[str, Any], partition_key: str) -> AttributeValue:
    """The partition key value a Query names in `<key> = :value` (aliases resolved)."""
    names = {alias: name for alias, name in params.get("ExpressionAttributeNames", {}).items()}
    condition = str(params.get("KeyConditionExpression", ""))
    for match in re.finditer(r"([#\w]+)\s*=\s*(:\w+)", condition):
        if names.get(match.group(1), match.group(1)) == partition_key:
            value: AttributeValue = params.get("ExpressionAttributeValues", {}).get(
                match.group(2), {"S": "?"}
            )
            return value
    return {"S": "?"}


def touched_keys(
    operation: str, params: Mapping[str, Any], table_keys: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Primary keys (DynamoDB JSON) of the items a write request touches."""
    return [{k: key[k] for k in table_keys} for _, key, _ in _writes(operation, params)]
