"""The data layer's unit tests again, on DynamoDB Local.

DynamoDB Local is strict where moto is loose (reserved words, one action per item per
transaction, real CancellationReasons), so the same assertions mean more here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from infrastructure.local.dynamodb_local import DynamoDBLocal
from registration import keys
from registration.store import RegistrationStore
from tests.unit.test_store import (  # noqa: F401 - collected here with this module's `store`
    test_event_starts_empty_and_duplicate_refused,
    test_fill_free_seat_repairs_a_free_seat,
    test_generated_event_id,
    test_hand_over_seat_moves_the_head,
    test_join_waitlist_needs_the_snapshot_it_decided_on,
    test_join_waitlist_refused_without_waitlist,
    test_join_waitlist_refuses_registered_and_waitlisted,
    test_leave_waitlist_keeps_order,
    test_pagination_tokens,
    test_release_seat_only_while_nobody_waits,
    test_take_seat_refuses_when_full_or_someone_waits,
    test_take_seat_twice_is_already_registered_unless_same_request,
    test_unknown_user_and_event,
    test_user_round_trip_and_duplicate_refused,
    test_waitlist_positions_continue_across_pages,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def store(dynamodb_local: DynamoDBLocal) -> Iterator[RegistrationStore]:
    client = dynamodb_local.client()
    table = f"store-{uuid.uuid4().hex[:8]}"
    client.create_table(**keys.table_definition(table))
    try:
        yield RegistrationStore(table, client)
    finally:
        client.delete_table(TableName=table)
