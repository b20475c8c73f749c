"""Reconciliation's rules on moto: each drift repaired exactly, a clean event left alone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from registration import keys, reconciliation, repair_plan
from registration.data import RegistrationStore
from registration.models import NewEvent
from registration.reconciliation import Run
from registration.reconciliation_models import Counters, EventReconciliation, ReconciliationTotals
from tests.fixtures.drift import (
    assert_consistent,
    counters,
    delete,
    dump,
    membership,
    put,
    queue,
    run_summaries,
    seats,
    set_fields,
    slot,
)
from tests.fixtures.registrations import register_new_users
from tests.fixtures.tables import moto_store

RUN = Run("run-1", "2026-01-01T00:00:00.000Z")


@pytest.fixture
def store() -> Iterator[RegistrationStore]:
    with moto_store() as s:
        yield s


# --- helpers ---------------------------------------------------------------------------


def _event(store: RegistrationStore, capacity: int, waitlist: bool = True, event_id: str = "e") -> str:
    return store.create_event(
        NewEvent(eventId=event_id, title="Reconciled", capacity=capacity, hasWaitlist=waitlist)
    ).eventId


def _reconcile(store: RegistrationStore, event_id: str = "e") -> EventReconciliation:
    return reconciliation.reconcile_event(store, event_id, RUN)


def _record(store: RegistrationStore, event_id: str = "e") -> dict[str, Any]:
    (record,) = store.reconciliation_records(event_id)
    return record


# --- a consistent event ------------------------------------------------------------------


def test_a_consistent_event_is_left_untouched(store: RegistrationStore) -> None:
    _event(store, capacity=2)
    register_new_users(store, "e", "a", "b", "c", "d")
    before = dump(store)
    result = _reconcile(store)
    assert result.outcome == "clean"
    assert (result.before, result.after, result.repairs) == (None, None, 0)
    assert dump(store) == before


def test_an_unknown_event_is_missing(store: RegistrationStore) -> None:
    assert _reconcile(store, "nothing").outcome == "missing"


# --- counters ------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", [0, 1, 7])
def test_a_wrong_registered_count_is_set_to_the_number_of_seats(store: RegistrationStore, wrong: int) -> None:
    _event(store, capacity=3)
    register_new_users(store, "e", "a", "b")
    set_fields(store, "e", registeredCount=wrong)
    result = _reconcile(store)
    assert result.outcome == "repaired"
    assert result.before == Counters(registeredCount=wrong, waitlistCount=0, waitlistSeq=0)
    assert result.after == Counters(registeredCount=2, waitlistCount=0, waitlistSeq=0)
    assert (result.countRepairs, result.waitlistRepairs, result.promotions) == (1, 0, 0)
    assert counters(store, "e") == (2, 0, 0)
    record = _record(store)
    assert record["before"] == {"registeredCount": wrong, "waitlistCount": 0, "waitlistSeq": 0}
    assert record["after"] == {"registeredCount": 2, "waitlistCount": 0, "waitlistSeq": 0}
    assert (record["runId"], record["countRepairs"], record["promotions"]) == ("run-1", 1, 0)
    assert record["expiresAt"] == RUN.expires_at
    assert_consistent(store, "e")


def test_an_orphaned_waitlist_counter_is_cleared(store: RegistrationStore) -> None:
    _event(store, capacity=1)
    register_new_users(store, "e", "a")
    set_fields(store, "e", waitlistCount=3)
    result = _reconcile(store)
    assert result.after == Counters(registeredCount=1, waitlistCount=0, waitlistSeq=0)
    assert result.countRepairs == 1
    assert_consistent(store, "e")


def test_a_sequence_behind_the_queue_is_raised(store: RegistrationStore) -> None:
    _event(store, capacity=1)
    register_new_users(store, "e", "a", "b", "c")
    set_fields(store, "e", waitlistSeq=1)
    result = _reconcile(store)
    assert result.after == Counters(registeredCount=1, waitlistCount=2, waitlistSeq=2)
    # The next arrival lands behind everyone again.
    register_new_users(store, "e", "d")
    assert queue(store, "e") == ["b", "c", "d"]
    assert_consistent(store, "e")


def test_overbooking_is_counted_truthfully_and_flagged(store: RegistrationStore) -> None:
    _event(store, capacity=2)
    register_new_users(store, "e", "a", "b")
    set_fields(store, "e", capacity=1, registeredCount=1)
    result = _reconcile(store)
    assert result.overbooked
    assert result.after is not None and result.after.registeredCount == 2
    assert seats(store, "e") == ["a", "b"]  # nobody is evicted
    assert _record(store)["overbooked"] is True


# --- promotions ----------------------------------------------------------------------------


def test_free_seats_go_to_the_head_of_the_waitlist_in_order(store: RegistrationStore) -> None:
    _event(store, capacity=1)
    register_new_users(store, "e", "a", "b", "c", "d")
    set_fields(store, "e", capacity=3)  # two seats appear while three people wait
    result = _reconcile(store)
    assert result.outcome == "repaired"
    assert result.promotions == 2
    assert result.before == Counters(registeredCount=1, waitlistCount=3, waitlistSeq=3)
    assert result.after == Counters(registeredCount=3, waitlistCount=1, waitlistSeq=3)
    assert seats(store, "e") == ["a", "b", "c"]
    assert queue(store, "e") == ["d"]
    record = _record(store)
    assert record["promoted"] == ["b", "c"]
    assert record["promotions"] == 2
    assert record["before"] == {"registeredCount": 1, "waitlistCount": 3, "waitlistSeq": 3}
    assert record["after"] == {"registeredCount": 3, "waitlistCount": 1, "waitlistSeq": 3}
    assert_consistent(store, "e")


def test_a_repaired_count_that_frees_a_seat_promotes(store: RegistrationStore) -> None:
    _event(store, capacity=2)
    register_new_users(store, "e", "a")
    set_fields(store, "e", registeredCount=2)  # looks full: the next registrant waits
    register_new_users(store, "e", "b")
    assert queue(store, "e") == ["b"]
    result = _reconcile(store)
    assert (result.countRepairs, result.promotions) == (1, 1)
    assert result.after == Counters(registeredCount=2, waitlistCount=0, waitlistSeq=1)
    assert seats(store, "e") == ["a", "b"]
    assert_consistent(store, "e")


# --- waitlist halves -----------------------------------------------------------------------


def test_a_slot_without_its_membership_gets_it_back(store: RegistrationStore) -> None:
    _event(store, capacity=1)
    register_new_users(store, "e", "a", "b", "c")
    delete(store, keys.waitlisted_key("e", "b"))
    result = _reconcile(store)
    assert result.waitlistRepairs == 1
    (action,) = result.actions
    assert (action.kind, action.userId, action.seq) == ("restore_membership", "b", 1)
    held = store.get_membership("e", "b")
    assert held is not None and (held.status, held.seq) == ("waitlisted", 1)
    assert queue(store, "e") == ["b", "c"]  # b keeps their place
    assert counters(store, "e") == (1, 2, 2)
    assert_consistent(store, "e")


def test_a_membership_without_its_slot_gets_its_place_back(store: RegistrationStore) -> None:
    _event(store, capacity=1)
    register_new_users(store, "e", "a", "b", "c")
    delete(store, keys.queue_key("e", 1))
    set_fields(store, "e", waitlistCount=1)
    result = _reconcile(store)
    (action,) = result.actions
    assert (action.kind, action.userId, action.seq) == ("restore_slot", "b", 1)
    assert result.after == Counters(registeredCount=1, waitlistCount=2, waitlistSeq=2)
    assert queue(store, "e") == ["b", "c"]
    assert_consistent(store, "e")


def test_a_membership_whose_place_is_taken_is_removed(store: RegistrationStore) -> None:
    _event(store, capacity=1)
    register_new_users(store, "e", "a", "b")
    put(store, membership("e", "x", 1))  # claims b's place
    result = _reconcile(store)
    (action,) = result.actions
    assert (action.kind, action.userId, action.seq) == ("remove_membership", "x", 1)
    assert store.get_membership("e", "x") is None
    assert queue(store, "e") == ["b"]
    assert result.countRepairs == 0  # the counters were right all along
    assert_consistent(store, "e")


def test_two_memberships_claiming_one_free_place_give_it_to_one(store: RegistrationStore) -> None:
    _event(store, capacity=0)
    put(store, membership("e", "x", 1))
    put(store, membership("e", "y", 1))
    result = _reconcile(store)
    assert {(a.kind, a.userId) for a in result.actions} == {("restore_slot", "x"), ("remove_membership", "y")}
    assert queue(store, "e") == ["x"]
    assert_consistent(store, "e")


def test_a_membership_pointing_elsewhere_is_repointed_to_its_slot(store: RegistrationStore) -> None:
    _event(store, capacity=1)
    register_new_users(store, "e", "a", "b", "c")
    put(store, membership("e", "b", 9))
    result = _reconcile(store)
    (action,) = result.actions
    assert (action.kind, action.seq, action.fromSeq) == ("repoint_membership", 1, 9)
    held = store.get_membership("e", "b")
    assert held is not None and held.seq == 1
    assert result.after == Counters(registeredCount=1, waitlistCount=2, waitlistSeq=9)
    assert_consistent(store, "e")


def test_a_duplicate_place_is_removed_and_the_first_kept(store: RegistrationStore) -> None:
    _event(store, capacity=1)
    register_new_users(store, "e", "a", "b", "c")
    put(store, slot("e", 3, "b"))
    set_fields(store, "e", waitlistSeq=3)
    result = _reconcile(store)
    (action,) = result.actions
    assert (action.kind, action.userId, action.seq) == ("remove_slot", "b", 3)
    assert queue(store, "e") == ["b", "c"]
    assert result.countRepairs == 0
    assert_consistent(store, "e")


def test_a_seat_holder_loses_their_waitlist_place(store: RegistrationStore) -> None:
    _event(store, capacity=1)
    register_new_users(store, "e", "a", "b")
    put(store, slot("e", 2, "a"))
    put(store, membership("e", "a", 2))
    set_fields(store, "e", waitlistCount=2, waitlistSeq=2)
    result = _reconcile(store)
    assert {(a.kind, a.userId, a.seq) for a in result.actions} == {
        ("remove_membership", "a", 2),
        ("remove_slot", "a", 2),
    }
    assert result.after == Counters(registeredCount=1, waitlistCount=1, waitlistSeq=2)
    assert seats(store, "e") == ["a"]
    assert queue(store, "e") == ["b"]
    assert_consistent(store, "e")


def test_many_orphans_take_several_transactions(store: RegistrationStore) -> None:
    _event(store, capacity=0)
    for seq in range(1, 71):
        put(store, slot("e", seq, f"u{seq:03d}"))
    result = _reconcile(store)
    assert result.waitlistRepairs == 70
    assert result.after == Counters(registeredCount=0, waitlistCount=70, waitlistSeq=70)
    assert queue(store, "e")[:3] == ["u001", "u002", "u003"]
    assert _record(store)["waitlistRepairs"] == 70
    assert_consistent(store, "e")


def test_chunks_never_split_a_users_group() -> None:
    pair = repair_plan.Group(actions=(_action("remove_membership"), _action("remove_slot")), entries_delta=-1)
    single = repair_plan.Group(actions=(_action("remove_slot"),), entries_delta=0)
    packed = repair_plan.chunks([single, pair, single], limit=2)
    assert [[len(g.actions) for g in chunk] for chunk in packed] == [[1], [2], [1]]


def _action(kind: str) -> Any:
    from registration.reconciliation_models import RepairAction

    return RepairAction.model_validate({"kind": kind, "userId": "u", "seq": 1, "reason": "test"})


# --- races ---------------------------------------------------------------------------------


def test_a_live_registration_between_recount_and_repair_cancels_the_repair(
    store: RegistrationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _event(store, capacity=3)
    register_new_users(store, "e", "a")
    set_fields(store, "e", registeredCount=0)
    original = reconciliation.survey
    calls = 0

    def survey_then_register(s: RegistrationStore, event_id: str) -> repair_plan.Survey:
        nonlocal calls
        calls += 1
        found = original(s, event_id)
        if calls == 2:  # after the confirming recount, before the repair
            register_new_users(store, "e", "b")
        return found

    monkeypatch.setattr(reconciliation, "survey", survey_then_register)
    result = _reconcile(store)
    # The first repair lost (the counters moved); the second saw both seats.
    assert result.after == Counters(registeredCount=2, waitlistCount=0, waitlistSeq=0)
    assert counters(store, "e") == (2, 0, 0)
    assert calls >= 4
    assert_consistent(store, "e")


def test_an_event_that_never_holds_still_is_left_busy(
    store: RegistrationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _event(store, capacity=3)
    set_fields(store, "e", registeredCount=2)
    original = reconciliation.survey

    def survey_and_move(s: RegistrationStore, event_id: str) -> repair_plan.Survey:
        found = original(s, event_id)
        set_fields(store, "e", waitlistSeq=s.get_event(event_id).waitlistSeq + 1)
        return found

    monkeypatch.setattr(reconciliation, "survey", survey_and_move)
    monkeypatch.setattr(reconciliation, "BACKOFF_S", 0.0)
    result = reconciliation.reconcile_event(store, "e", RUN, max_attempts=3)
    assert result.outcome == "busy"
    assert result.repairs == 0
    assert store.get_event("e").registeredCount == 2  # nothing written


def test_a_second_run_finds_nothing_to_do(store: RegistrationStore) -> None:
    _event(store, capacity=1)
    register_new_users(store, "e", "a", "b", "c")
    set_fields(store, "e", registeredCount=0, waitlistCount=5)
    assert _reconcile(store).outcome == "repaired"
    settled = dump(store)
    again = reconciliation.reconcile_event(store, "e", Run("run-2", "2026-01-01T00:15:00.000Z"))
    assert again.outcome == "clean"
    assert dump(store) == settled


# --- pages and summaries -------------------------------------------------------------------


def test_pages_cover_every_event_once(store: RegistrationStore) -> None:
    for n in range(7):
        _event(store, capacity=1, event_id=f"e{n}")
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        ids, token = reconciliation.list_events_page(store, 3, token, None)
        seen.extend(ids)
        pages += 1
        if token is None:
            break
    assert sorted(seen) == [f"e{n}" for n in range(7)]
    assert pages >= 3


def test_an_operators_list_is_one_page() -> None:
    ids, token = reconciliation.list_events_page(None, 50, None, ["b", "a", "b"])  # type: ignore[arg-type]
    assert (ids, token) == (["b", "a"], None)


def test_tally_adds_a_page_of_results() -> None:
    results = [
        EventReconciliation(eventId="a", outcome="clean"),
        EventReconciliation(eventId="b", outcome="repaired", countRepairs=1, promotions=2),
        EventReconciliation(eventId="c", outcome="failed", error="Boom"),
        EventReconciliation(eventId="d", outcome="busy", waitlistRepairs=1),
    ]
    totals = reconciliation.tally(ReconciliationTotals(), results)
    assert (totals.pages, totals.events, totals.clean, totals.repaired, totals.failed, totals.busy) == (
        1,
        4,
        1,
        1,
        1,
        1,
    )
    assert (totals.countRepairs, totals.waitlistRepairs, totals.promotions, totals.repairs) == (1, 1, 2, 4)
    assert totals.repairedEventIds == ["b", "d"]
    assert totals.failedEventIds == ["c"]
    assert reconciliation.tally(totals, []).pages == 2


def test_only_a_run_that_changed_something_is_written(store: RegistrationStore) -> None:
    clean = reconciliation.record_run(store, RUN, ReconciliationTotals(events=3, clean=3))
    assert not clean.recorded
    assert run_summaries(store, limit=1) == []
    changed = reconciliation.record_run(
        store, RUN, ReconciliationTotals(events=3, repaired=1, countRepairs=1, repairedEventIds=["e"])
    )
    assert changed.recorded
    (item,) = run_summaries(store, limit=1)
    assert (item["runId"], item["repairedEventIds"], item["expiresAt"]) == ("run-1", ["e"], RUN.expires_at)


def test_timestamps_are_normalized() -> None:
    assert reconciliation.normalize_timestamp("2026-01-01T00:00:00Z") == "2026-01-01T00:00:00.000Z"
    assert (
        reconciliation.normalize_timestamp("2026-01-01T01:00:00.123456+01:00") == "2026-01-01T00:00:00.123Z"
    )


# --- the task handlers ---------------------------------------------------------------------


def test_the_reconcile_task_emits_repairs_and_logs_before_and_after(monkeypatch: pytest.MonkeyPatch) -> None:
    from handlers import reconcile_event
    from infrastructure.local.lambda_seam import LambdaContext, LocalFunction

    emitted: dict[str, float] = {}
    add_metric = reconcile_event.metrics.add_metric

    def record(name: str, unit: Any, value: float, **kwargs: Any) -> None:
        emitted[name] = emitted.get(name, 0) + value
        add_metric(name=name, unit=unit, value=value, **kwargs)

    warnings: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(reconcile_event.metrics, "add_metric", record)
    monkeypatch.setattr(
        reconcile_event.logger, "warning", lambda message, extra=None, **_: warnings.append((message, extra))
    )
    table = f"handler-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TABLE_NAME", table)
    with moto_store(table) as store:
        _event(store, capacity=2)
        register_new_users(store, "e", "a")
        set_fields(store, "e", registeredCount=2)
        context = LambdaContext(LocalFunction("ReconcileEvent", "handlers.reconcile_event.handler"), "req-1")
        output = reconcile_event.handler(
            {"eventId": "e", "runId": "run-9", "startedAt": "2026-01-01T00:00:00Z"}, context
        )
    assert output["outcome"] == "repaired"
    assert output["after"] == {"registeredCount": 1, "waitlistCount": 0, "waitlistSeq": 0}
    assert emitted["ReconciliationRepairs"] == 1
    assert emitted["ReconciliationCountRepairs"] == 1
    assert emitted["ReconciliationEventsRepaired"] == 1
    assert emitted["ReconciliationPromotions"] == 0
    assert reconcile_event.logger.get_correlation_id() == "run-9"
    ((message, details),) = warnings
    assert message == "reconciliation repaired drift"
    assert details["eventId"] == "e"
    assert details["before"] == {"registeredCount": 2, "waitlistCount": 0, "waitlistSeq": 0}
    assert details["after"] == {"registeredCount": 1, "waitlistCount": 0, "waitlistSeq": 0}


def test_seats_kept_above_a_lowered_capacity_are_not_overbooking(store: RegistrationStore) -> None:
    _event(store, capacity=3)
    register_new_users(store, "e", "a", "b", "c")
    store.change_event(store.get_event("e"), {"capacity": 1}, [], "lower", "2026-01-01T00:00:00.000Z")
    result = _reconcile(store)
    assert not result.overbooked
    # Beyond the seats it kept, it is.
    set_fields(store, "e", capacity=0)
    assert _reconcile(store).overbooked
