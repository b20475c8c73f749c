"""Reconciliation, property-based: whatever drift is injected into an event built by real
registrations, one run leaves it consistent, keeps every provable place in order, and a
second run changes nothing; a run's totals do not depend on how many executions it took."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registration import keys, reconciliation
from registration.data import RegistrationStore
from registration.models import NewEvent, NewUser
from registration.reconciliation_models import EventReconciliation, ReconciliationTotals
from tests.fixtures.drift import (
    assert_consistent,
    delete,
    membership,
    partition,
    put,
    queue,
    seats,
    set_fields,
    slot,
)
from tests.fixtures.registrations import register
from tests.fixtures.tables import moto_store, table_definition

RUN = reconciliation.Run("property-run", "2026-01-01T00:00:00.000Z")


@pytest.fixture(scope="module")
def tables() -> Iterator[RegistrationStore]:
    with moto_store("reconciliation-properties") as s:
        yield s


@contextmanager
def _fresh_table(tables: RegistrationStore) -> Iterator[RegistrationStore]:
    """A table per example: moto copies every table on each transaction, so a table that
    grew with every example would make each one slower than the last."""
    name = f"p-{uuid.uuid4().hex[:12]}"
    tables.client.create_table(**table_definition(name))
    try:
        yield RegistrationStore(name, tables.client)
    finally:
        tables.client.delete_table(TableName=name)


def _places_that_survive(store: RegistrationStore, event_id: str) -> list[str]:
    """Each queued user once, in the order of the place reconciliation keeps for them: the
    slot their membership points at when the pair is complete, else their earliest slot."""
    slots: dict[str, list[int]] = {}
    for item in store.iter_partition(event_id, keys.QUEUE_PREFIX):
        slots.setdefault(str(item["userId"]), []).append(int(item["seq"]))
    pointed = {
        str(i["userId"]): int(i["seq"]) for i in store.iter_partition(event_id, keys.WAITLISTED_PREFIX)
    }
    kept = {user: pointed[user] if pointed.get(user) in seqs else min(seqs) for user, seqs in slots.items()}
    return sorted(kept, key=kept.__getitem__)


counter_drift = st.fixed_dictionaries(
    {},
    optional={
        "registeredCount": st.integers(0, 9),
        "waitlistCount": st.integers(0, 9),
        "waitlistSeq": st.integers(0, 9),
        "capacity": st.integers(1, 3),  # seats added (fewer seats than people seated is not drift)
    },
)
item_drift = st.lists(
    st.one_of(
        st.tuples(st.just("drop_slot"), st.integers(1, 8)),
        st.tuples(st.just("drop_membership"), st.integers(0, 7)),
        st.tuples(st.just("orphan_slot"), st.integers(1, 12), st.integers(0, 9)),
        st.tuples(st.just("orphan_membership"), st.integers(0, 9), st.integers(1, 12)),
    ),
    max_size=5,
)


@given(capacity=st.integers(0, 3), arrivals=st.integers(0, 7), counters=counter_drift, items=item_drift)
def test_one_run_repairs_any_drift_and_a_second_changes_nothing(
    tables: RegistrationStore,
    capacity: int,
    arrivals: int,
    counters: dict[str, int],
    items: list[tuple[object, ...]],
) -> None:
    with _fresh_table(tables) as store:
        _check(store, capacity, arrivals, counters, items)


def _check(
    store: RegistrationStore,
    capacity: int,
    arrivals: int,
    counters: dict[str, int],
    items: list[tuple[object, ...]],
) -> None:
    event_id = f"e-{uuid.uuid4().hex[:10]}"
    store.create_event(NewEvent(eventId=event_id, title="Property", capacity=capacity, hasWaitlist=True))
    users = [f"{event_id}-u{n}" for n in range(10)]
    for user in users[:arrivals]:
        store.create_user(NewUser(userId=user, name="P"))
        register(store, event_id, user)
    seated_before = set(seats(store, event_id))

    for drift in items:
        kind = drift[0]
        if kind == "drop_slot":
            delete(store, keys.queue_key(event_id, int(drift[1])))  # type: ignore[call-overload]
        elif kind == "drop_membership":
            delete(store, keys.waitlisted_key(event_id, users[int(drift[1])]))  # type: ignore[call-overload]
        elif kind == "orphan_slot":
            put(store, slot(event_id, int(drift[1]), users[int(drift[2])]))  # type: ignore[call-overload]
        else:
            put(store, membership(event_id, users[int(drift[1])], int(drift[2])))  # type: ignore[call-overload]
    if counters:
        if "capacity" in counters:
            counters = {**counters, "capacity": capacity + counters["capacity"]}
        set_fields(store, event_id, **counters)
    waiting_after_drift = _places_that_survive(store, event_id)

    result = reconciliation.reconcile_event(store, event_id, RUN)

    assert result.outcome in ("clean", "repaired")
    assert_consistent(store, event_id)
    # Nobody loses a seat; the queue keeps its order (only promoted heads or places
    # that proved nothing leave it).
    now_seated = set(seats(store, event_id))
    assert seated_before <= now_seated
    final_queue = queue(store, event_id)
    assert [u for u in waiting_after_drift if u in final_queue] == [
        u for u in final_queue if u in waiting_after_drift
    ]
    promoted = now_seated - seated_before
    assert len(promoted) == result.promotions

    settled = partition(store, event_id)
    again = reconciliation.reconcile_event(store, event_id, reconciliation.Run("again", RUN.started_at))
    assert again.outcome == "clean"
    assert partition(store, event_id) == settled


event_results = st.builds(
    EventReconciliation,
    eventId=st.text("abcdef", min_size=1, max_size=3),
    outcome=st.sampled_from(["clean", "repaired", "busy", "missing", "failed"]),
    countRepairs=st.integers(0, 3),
    waitlistRepairs=st.integers(0, 3),
    promotions=st.integers(0, 3),
    overbooked=st.booleans(),
)


@given(pages=st.lists(st.lists(event_results, max_size=6), max_size=12), per_execution=st.integers(1, 4))
def test_totals_carried_from_execution_to_execution_are_the_totals_of_one(
    pages: list[list[EventReconciliation]], per_execution: int
) -> None:
    """A long run continues in fresh executions, its totals passed on in each one's input
    (JSON): what the last one records is what one execution tallying every page would."""
    straight = ReconciliationTotals()
    for page in pages:
        straight = reconciliation.tally(straight, page)

    carried = ReconciliationTotals()
    for number, page in enumerate(pages, start=1):
        carried = reconciliation.tally(carried, page)
        if number % per_execution == 0:  # the next execution starts with what this one had
            carried = ReconciliationTotals.model_validate(
                json.loads(json.dumps(carried.model_dump(mode="json")))
            )

    assert carried == straight
    assert carried.pages == len(pages)
    assert carried.events == sum(len(page) for page in pages)
