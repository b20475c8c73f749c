"""AWS's capacity rules as the benchmark computes them, checked against the documentation's examples."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from infrastructure.bench.bulk_load import serialize
from infrastructure.bench.dynamodb_units import (
    IndexSpec,
    Usage,
    index_write_units,
    item_size,
    key_of,
    number_size,
    read_units,
    usage_of,
    value_size,
    write_units,
)
from infrastructure.bench.meter import Meter, total
from registration import keys
from registration.data import RegistrationStore
from registration.data.items import waitlist_items
from registration.models import NewEvent, NewUser
from tests.fixtures.tables import moto_store

GSI1 = IndexSpec("GSI1", ("GSI1PK", "GSI1SK"))
AT = "2026-01-01T00:00:00.000Z"


def s(text: str) -> dict[str, Any]:
    return {"S": text}


def n(text: str) -> dict[str, Any]:
    return {"N": text}


# --- item sizes ------------------------------------------------------------------------


def test_strings_count_utf8_bytes_of_name_and_value() -> None:
    assert item_size({"name": s("Ada")}) == 4 + 3
    assert item_size({"név": s("é")}) == 4 + 2  # "é" is two bytes in UTF-8


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 2),
        ("7", 2),
        ("12", 2),
        ("123", 3),
        ("100000", 2),  # trailing zeros trimmed: one significant digit
        ("100001", 4),
        ("-12.50", 3),  # 1, 2, 5: the sign and the trailing zero do not count
        ("0.0001", 2),  # leading zeros trimmed
        ("12345678901234567890", 11),
    ],
)
def test_numbers_take_one_byte_per_two_significant_digits_plus_one(text: str, size: int) -> None:
    assert number_size(text) == size


def test_binary_boolean_null_sets_lists_and_maps() -> None:
    assert value_size({"B": b"\x00\x01\x02"}) == 3
    assert value_size({"BOOL": True}) == 1
    assert value_size({"NULL": True}) == 1
    assert value_size({"SS": ["ab", "c"]}) == 3
    assert value_size({"NS": ["1", "123"]}) == 2 + 3
    # List/Map: 3 bytes, plus 1 per element; a map element's name counts.
    assert value_size({"L": []}) == 3
    assert value_size({"L": [s("ab"), n("1")]}) == 3 + (1 + 2) + (1 + 2)
    assert value_size({"M": {"k": s("v")}}) == 3 + 1 + 1 + 1
    assert item_size({"m": {"M": {}}}) == 1 + 3


def test_an_absent_item_is_empty() -> None:
    assert item_size(None) == 0
    assert item_size({}) == 0


# --- units -----------------------------------------------------------------------------


def test_reads_round_up_to_4_kb_and_eventual_reads_cost_half() -> None:
    assert read_units(3500) == 1  # the guide's example: a 3,500-byte item costs one 4 KB read
    assert read_units(4096) == 1
    assert read_units(4097) == 2
    assert read_units(8 * 1024, consistent=False) == 1  # 8 KB, eventually consistent
    assert read_units(8 * 1024, transactional=True) == 4  # 8 KB, transactional
    assert read_units(0) == 1  # reading nothing still costs the minimum
    assert read_units(0, consistent=False) == 0.5


def test_writes_round_up_to_1_kb_and_transactions_double() -> None:
    assert write_units(1) == 1
    assert write_units(1024) == 1
    assert write_units(1025) == 2
    assert write_units(3 * 1024) == 3  # the pricing page's example: a 3 KB write is three units
    assert write_units(3 * 1024, transactional=True) == 6  # and six in a transaction
    assert write_units(0, transactional=True) == 2


def _item_of(size: int, **extra: dict[str, Any]) -> dict[str, Any]:
    """An item of exactly `size` bytes (PK and SK included)."""
    base = {"PK": s("P"), "SK": s("S"), **extra}
    pad = size - item_size(base) - len("pad")
    assert pad >= 0
    return {**base, "pad": s("x" * pad)}


def test_batch_get_rounds_each_item_then_adds() -> None:
    # The guide's example: a 1.5 KB item and a 6.5 KB item are read as 4 KB + 8 KB = 3 units.
    small, large = _item_of(1536), _item_of(6656)
    large["SK"] = s("T")
    params = {
        "RequestItems": {
            "t": {
                "Keys": [{"PK": s("P"), "SK": s("S")}, {"PK": s("P"), "SK": s("T")}],
                "ConsistentRead": True,
            }
        }
    }
    response = {"Responses": {"t": [small, large]}}
    usage = usage_of("BatchGetItem", params, response)
    assert (usage.items_read, usage.read_units) == (2, 3)


def test_batch_get_of_a_missing_key_costs_the_minimum() -> None:
    params = {"RequestItems": {"t": {"Keys": [{"PK": s("P"), "SK": s("S")}], "ConsistentRead": True}}}
    assert usage_of("BatchGetItem", params, {"Responses": {"t": []}}).read_units == 1


def test_query_sums_the_items_then_rounds() -> None:
    items = [_item_of(1536), _item_of(1536)]  # 3 KB together: one unit, not two
    params = {
        "KeyConditionExpression": "PK = :pk",
        "ExpressionAttributeValues": {":pk": s("P")},
        "ConsistentRead": True,
    }
    usage = usage_of("Query", params, {"Items": items})
    assert (usage.items_read, usage.read_units) == (2, 1)
    empty = usage_of("Query", params, {"Items": []})
    assert (empty.items_read, empty.read_units) == (0, 1)
    assert empty.partition_reads == {"P": 1}


def test_get_item_eventually_consistent_costs_half() -> None:
    usage = usage_of("GetItem", {"Key": {"PK": s("P"), "SK": s("S")}}, {"Item": _item_of(100)})
    assert usage.read_units == 0.5


# --- global secondary index ------------------------------------------------------------------


def _indexed(**extra: dict[str, Any]) -> dict[str, Any]:
    return {"PK": s("EVENT#e"), "SK": s("REG#u"), "GSI1PK": s("USER#u"), "GSI1SK": s("EVENT#e"), **extra}


def test_index_writes() -> None:
    item = _indexed(n=n("1"))
    assert index_write_units(None, item, GSI1) == 1  # put into the index
    assert index_write_units(item, None, GSI1) == 1  # deleted from it
    assert index_write_units(item, dict(item), GSI1) == 0  # nothing changed
    assert index_write_units(item, {**item, "n": n("2")}, GSI1) == 1  # a projected attribute changed
    assert index_write_units(item, {**item, "GSI1PK": s("USER#v")}, GSI1) == 2  # the index key changed
    assert (
        index_write_units({"PK": s("P"), "SK": s("S")}, {"PK": s("P"), "SK": s("S"), "x": n("1")}, GSI1) == 0
    )


def test_keys_only_index_ignores_other_attributes() -> None:
    keys_only = IndexSpec("GSI1", ("GSI1PK", "GSI1SK"), projected=())
    item = _indexed(n=n("1"))
    assert index_write_units(item, {**item, "n": n("2")}, keys_only) == 0


# --- transactions ----------------------------------------------------------------------------


def test_transaction_items_cost_double_and_index_writes_single() -> None:
    event_key = {"PK": s("EVENT#e"), "SK": s("METADATA")}
    event_before = {**event_key, "GSI1PK": s("EVENTS"), "GSI1SK": s("EVENT#e"), "registeredCount": n("1")}
    event_after = {**event_before, "registeredCount": n("2")}
    seat = _indexed(entity=s("REGISTRATION"))
    user_key = {"PK": s("USER#u"), "SK": s("METADATA")}
    user = {**user_key, "name": s("Ada")}
    params = {
        "TransactItems": [
            {"Update": {"TableName": "t", "Key": event_key, "UpdateExpression": "..."}},
            {"Put": {"TableName": "t", "Item": seat}},
            {"ConditionCheck": {"TableName": "t", "Key": user_key}},
        ]
    }
    table_keys = ("PK", "SK")
    before = {
        key_of(event_key, table_keys): event_before,
        key_of(seat, table_keys): None,
        key_of(user, table_keys): user,
    }
    after = {
        key_of(event_key, table_keys): event_after,
        key_of(seat, table_keys): seat,
        key_of(user, table_keys): user,
    }
    usage = usage_of("TransactWriteItems", params, {}, before=before, after=after, index=GSI1)
    assert usage.items_written == 2  # the condition check writes nothing...
    assert usage.write_units == 3 * 2  # ...but is charged, like every item, twice
    assert usage.index_write_units == 2  # the event's entry changed, the seat's was added
    assert usage.partition_writes == {"EVENT#e": 4, "USER#u": 2}
    assert usage.item_writes["EVENT#e|METADATA"] == 2
    assert usage.index_partition_writes == {"EVENTS": 1, "USER#u": 1}


def test_usages_add_up() -> None:
    a = Usage(round_trips=1, read_units=1, partition_reads={"P": 1})
    b = Usage(round_trips=2, write_units=2, partition_reads={"P": 0.5, "Q": 1})
    both = a + b
    assert both.figures() == (3, 0, 0, 1, 2, 0)
    assert both.partition_reads == {"P": 1.5, "Q": 1}


# --- the meter, on moto --------------------------------------------------------------------------


@pytest.fixture
def metered() -> Iterator[tuple[RegistrationStore, Meter]]:
    with moto_store() as store:
        observer = boto3.client("dynamodb", region_name="us-east-1")
        with Meter(store.client, observer) as meter:
            yield store, meter


def test_meter_counts_what_taking_a_seat_costs(metered: tuple[RegistrationStore, Meter]) -> None:
    store, meter = metered
    store.create_user(NewUser(userId="u", name="Ada"))
    store.create_event(NewEvent(eventId="e", title="Event", capacity=2))
    with meter.counting() as records:
        user, event = store.get_user_and_event("u", "e")
        store.take_seat("e", "u", "r-1", AT)
    assert user is not None and event is not None
    usage = total(records)
    assert [r.operation for r in records] == ["BatchGetItem", "TransactWriteItems"]
    assert usage.round_trips == 2
    assert (usage.items_read, usage.read_units) == (2, 2)
    # Event update and seat put, each twice; the event's GSI1 entry changes, the seat's is added.
    assert (usage.items_written, usage.write_units, usage.index_write_units) == (2, 4, 2)
    assert usage.partition_writes == {keys.event_pk("e"): 4}
    assert usage.index_partition_writes == {keys.EVENTS: 1, keys.user_pk("u"): 1}


def test_meter_reads_what_a_count_query_evaluated(metered: tuple[RegistrationStore, Meter]) -> None:
    store, meter = metered
    store.create_event(NewEvent(eventId="e", title="Event", capacity=0, hasWaitlist=True))
    for seq, user in enumerate("abc", start=1):
        membership, slot = waitlist_items("e", user, seq, f"r-{user}", AT)
        for item in (membership, slot):
            store.client.put_item(TableName=store.table_name, Item=serialize(item))
    with meter.counting() as records:
        assert store.waitlist_position("e", 3) == 3
    usage = total(records)
    assert usage.items_read == 3  # Select=COUNT returns no items, but three were read
    assert usage.read_units == 1
