"""The data layer's unit tests again, on DynamoDB Local.

DynamoDB Local is strict where moto is loose (reserved words, one action per item per
transaction, real CancellationReasons), so the same assertions mean more here. It also
keeps ClientRequestTokens as DynamoDB does (10 minutes, account-wide) and answers a token
sent again with other parameters with IdempotentParameterMismatchException, which moto
never does.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from infrastructure.local.dynamodb_local import DynamoDBLocal
from registration import errors, service
from registration.access import Caller
from registration.data import RegistrationStore, transactions
from registration.models import NewEvent, NewUser, RegisterResult, RegisterState
from tests.fixtures.tables import table_definition
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
    test_a_retry_that_read_its_items_again_recognises_its_own_commit,
    test_event_starts_empty_and_duplicate_refused,
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
    test_the_same_transaction_from_another_request_is_applied_again,
    test_unknown_user_and_event,
    test_user_round_trip_and_duplicate_refused,
    test_waitlist_positions_continue_across_pages,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def store(dynamodb_local: DynamoDBLocal) -> Iterator[RegistrationStore]:
    client = dynamodb_local.client()
    table = f"store-{uuid.uuid4().hex[:8]}"
    client.create_table(**table_definition(table))
    try:
        yield RegistrationStore(table, client)
    finally:
        client.delete_table(TableName=table)


AT = "2026-01-01T00:00:00.000Z"


def _event_with_one_seat_taken(store: RegistrationStore, users: str) -> None:
    for u in users:
        store.create_user(NewUser(userId=u, name=f"User {u}"))
    store.create_event(NewEvent(eventId="e", title="Event", capacity=1, hasWaitlist=True))
    store.take_seat("e", users[0], f"r-{users[0]}", AT)


def test_a_token_sent_again_with_other_parameters_is_decided_again(
    store: RegistrationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB refuses a token it applied within 10 minutes when the parameters differ;
    that means "what this write relied on changed": decide again, never a 500."""
    one_token = str(uuid.uuid4())  # DynamoDB Local keeps tokens account-wide: this test's own
    monkeypatch.setattr(transactions, "transaction_token", lambda scope, items: one_token)
    _event_with_one_seat_taken(store, "ab")  # a's seat is written with that token
    with pytest.raises(errors.DecisionStale):
        store.join_waitlist(store.get_event("e"), "b", "r-b", AT)
    assert store.get_membership("e", "b") is None
    assert store.get_event("e").waitlistCount == 0


def test_two_tries_of_one_join_that_read_the_tail_again_answer_alike(
    store: RegistrationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task retried while its first try still runs (a Step Functions task timeout does not
    stop the Lambda). Both tries find the tail they decided on taken, read the event again
    and write; the second writes after the first committed, so with other items (a later
    snapshot and time). It recognises the first try's commit instead of failing."""
    _event_with_one_seat_taken(store, "abc")
    state = RegisterState(
        eventId="e", userId="c", caller=Caller(userId="c"), requestId="r-c", event=store.get_event("e")
    )
    state = state.model_copy(update={"decision": service.check_capacity(store, state)})
    store.join_waitlist(store.get_event("e"), "b", "r-b", AT)  # b takes the tail c decided on

    second_is_waiting, first_is_done = threading.Event(), threading.Event()

    def backoff(retry: int, attempt: int = 1) -> float:
        # The first try writes again only once the second has lost the tail too; the
        # second only once the first has committed.
        if threading.current_thread().name == "first":
            assert second_is_waiting.wait(30)
        else:
            second_is_waiting.set()
            assert first_is_done.wait(30)
        return 0.0

    monkeypatch.setattr(service, "tail_backoff", backoff)
    answers: dict[str, object] = {}

    def run() -> None:
        name = threading.current_thread().name
        try:
            answers[name] = service.write_registration(store, state)
        except Exception as exc:  # the answer under test
            answers[name] = exc
        finally:
            if name == "first":
                first_is_done.set()

    tries = [threading.Thread(target=run, name=name) for name in ("first", "second")]
    for t in tries:
        t.start()
    for t in tries:
        t.join(60)

    expected = RegisterResult(eventId="e", userId="c", status="waitlisted", position=2)
    assert answers == {"first": expected, "second": expected}
    assert [w.userId for w in store.list_waitlist("e").items] == ["b", "c"]
    event = store.get_event("e")
    assert (event.waitlistCount, event.waitlistSeq) == (2, 2)
