"""Bulk-loaded items are the items the data layer writes (no drift), and a seeded event adds up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infrastructure.bench.bulk_load import load_event, load_users
from registration import domain_events, keys
from registration.data import RegistrationStore
from registration.data.items import seat_item, user_item, waitlist_items
from registration.models import NewEvent, NewUser
from tests.fixtures.tables import moto_store

AT = "2026-01-01T00:00:00.000Z"


@pytest.fixture
def store() -> Iterator[RegistrationStore]:
    with moto_store() as s:
        yield s


def _stored(store: RegistrationStore, key: dict[str, str]) -> dict[str, Any]:
    item = store._get(key)
    assert item is not None
    return item


def _without_domain_event(item: dict[str, Any]) -> dict[str, Any]:
    """A loaded item is the written one without its domain event (a seeded event is not news)."""
    assert (
        item.pop(domain_events.TYPE_ATTRIBUTE)
        == domain_events.parse(item.pop(domain_events.DETAIL_ATTRIBUTE)).type
    )
    return item


def test_user_item_is_what_create_user_writes(store: RegistrationStore) -> None:
    user = store.create_user(NewUser(userId="ada", name="Ada"))
    assert user_item(user) == _stored(store, keys.user_key("ada"))


def test_seat_item_is_what_take_seat_writes(store: RegistrationStore) -> None:
    store.create_event(NewEvent(eventId="e", title="Event", capacity=1))
    store.take_seat("e", "ada", "request-1", AT)
    assert seat_item("e", "ada", "request-1", AT) == _without_domain_event(
        _stored(store, keys.seat_key("e", "ada"))
    )


def test_waitlist_items_are_what_join_waitlist_writes(store: RegistrationStore) -> None:
    store.create_event(NewEvent(eventId="e", title="Event", capacity=0, hasWaitlist=True))
    store.join_waitlist(store.get_event("e"), "ada", "request-1", AT)
    membership, slot = waitlist_items("e", "ada", 1, "request-1", AT)
    assert membership == _without_domain_event(_stored(store, keys.waitlisted_key("e", "ada")))
    assert slot == _stored(store, keys.queue_key("e", 1))


def test_a_seeded_event_reads_like_one_filled_through_the_data_layer(store: RegistrationStore) -> None:
    seeded = load_event(
        store, "e", capacity=30, seated=30, waitlisted=40, has_waitlist=True, show_progress=False
    )
    event = store.get_event("e")
    assert (event.registeredCount, event.waitlistCount, event.waitlistSeq) == (30, 40, 40)
    assert len(list(store.iter_partition("e", keys.REG_PREFIX))) == 30
    assert [i["userId"] for i in store.iter_partition("e", keys.QUEUE_PREFIX)] == list(seeded.waitlisted)
    assert store.waitlist_head("e").userId == seeded.waitlisted[0]  # type: ignore[union-attr]
    membership = store.get_membership("e", seeded.waitlisted[5])
    assert membership is not None and membership.seq == 6
    # The next person joins behind everyone seeded.
    load_users(store, ["late"], show_progress=False)
    store.join_waitlist(event, "late", "request-late", AT)
    assert store.waitlist_position("e", 41) == 41


def test_seeding_refuses_impossible_events(store: RegistrationStore) -> None:
    with pytest.raises(ValueError):
        load_event(store, "e", capacity=1, seated=2, show_progress=False)
    with pytest.raises(ValueError):
        load_event(store, "f", capacity=1, seated=0, waitlisted=1, show_progress=False)
