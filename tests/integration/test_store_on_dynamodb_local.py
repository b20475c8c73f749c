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
from tests.unit.test_idempotency import (  # noqa: F401 - collected here with this module's `store`
    test_a_business_failure_is_stored_with_its_code_and_cause,
    test_a_different_request_with_the_key_is_refused,
    test_a_failure_of_ours_releases_the_claim,
    test_a_retried_claim_of_the_same_request_is_its_own,
    test_a_success_is_replayed_as_the_workflow_output,
    test_an_expired_record_no_longer_holds_its_key,
    test_an_unfinished_claim_can_be_taken_over_after_its_lease,
    test_first_request_claims_then_its_answer_is_replayed,
    test_release_only_removes_the_callers_unfinished_claim,
    test_the_same_request_while_the_first_runs_is_told_to_wait,
)
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
