"""The data layer on moto: conditions, translations of cancelled transactions, listings."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from registration import errors, settings
from registration.data import RegistrationStore, pages
from registration.data.transactions import transaction_token
from registration.models import NewEvent, NewUser, WaitlistHead
from tests.fixtures.tables import moto_store

AT = "2026-01-01T00:00:00.000Z"
LATER = "2026-01-01T00:00:01.000Z"


@pytest.fixture
def store() -> Iterator[RegistrationStore]:
    with moto_store() as s:
        yield s


def _seed(store: RegistrationStore, capacity: int = 1, waitlist: bool = True, users: str = "abc") -> None:
    for u in users:
        store.create_user(NewUser(userId=u, name=f"User {u}"))
    store.create_event(NewEvent(eventId="e", title="Event", capacity=capacity, hasWaitlist=waitlist))


def test_user_round_trip_and_duplicate_refused(store: RegistrationStore) -> None:
    created = store.create_user(NewUser(userId="u-1", name="Ada"))
    assert store.get_user("u-1") == created
    with pytest.raises(errors.UserAlreadyExists):
        store.create_user(NewUser(userId="u-1", name="Someone else"))
    assert store.get_user("u-1").name == "Ada"


def test_unknown_user_and_event(store: RegistrationStore) -> None:
    with pytest.raises(errors.UserNotFound):
        store.get_user("nobody")
    with pytest.raises(errors.EventNotFound):
        store.get_event("nothing")
    with pytest.raises(errors.EventNotFound):
        store.list_registrations("nothing")


def test_event_starts_empty_and_duplicate_refused(store: RegistrationStore) -> None:
    event = store.create_event(NewEvent(eventId="e", title="T", capacity=3))
    assert (event.registeredCount, event.waitlistCount, event.hasWaitlist) == (0, 0, False)
    with pytest.raises(errors.EventAlreadyExists):
        store.create_event(NewEvent(eventId="e", title="Other", capacity=9))
    assert store.get_event("e").capacity == 3


def test_generated_event_id(store: RegistrationStore) -> None:
    event = store.create_event(NewEvent(title="No id", capacity=1))
    assert len(event.eventId) == 32
    assert store.get_event(event.eventId).title == "No id"


def test_take_seat_refuses_when_full_or_someone_waits(store: RegistrationStore) -> None:
    _seed(store, capacity=1)
    assert store.take_seat("e", "a", "r1", AT)
    # Full: the event condition fails, which means "decide again", not a user-facing error.
    with pytest.raises(errors.DecisionStale):
        store.take_seat("e", "b", "r2", AT)
    event = store.get_event("e")
    assert event.registeredCount == 1
    assert store.get_membership("e", "b") is None


def test_take_seat_twice_is_already_registered_unless_same_request(store: RegistrationStore) -> None:
    _seed(store, capacity=5)
    store.take_seat("e", "a", "r1", AT)
    # The same request retried (a task that crashed after committing): the identical
    # transaction is answered by its token where DynamoDB keeps tokens and recognised by
    # its conditions where not; a retry that sends other items (decided again, later) is
    # recognised by the seat carrying its request id.
    store.take_seat("e", "a", "r1", AT)
    assert store.take_seat("e", "a", "r1", LATER) is False
    with pytest.raises(errors.AlreadyRegistered):
        store.take_seat("e", "a", "r2", AT)
    assert store.get_event("e").registeredCount == 1


def test_join_waitlist_needs_the_snapshot_it_decided_on(store: RegistrationStore) -> None:
    _seed(store, capacity=0)
    snapshot = store.get_event("e")
    assert store.join_waitlist(snapshot, "a", "r1", AT)
    # A second join from the same (now stale) snapshot must not reuse the slot.
    with pytest.raises(errors.DecisionStale):
        store.join_waitlist(snapshot, "b", "r2", AT)
    store.join_waitlist(store.get_event("e"), "b", "r2", AT)
    event = store.get_event("e")
    assert (event.waitlistCount, event.waitlistSeq) == (2, 2)
    assert [w.userId for w in store.list_waitlist("e").items] == ["a", "b"]
    assert store.waitlist_head("e") == WaitlistHead(userId="a", seq=1)


def test_join_waitlist_refuses_registered_and_waitlisted(store: RegistrationStore) -> None:
    _seed(store, capacity=1)
    store.take_seat("e", "a", "r1", AT)
    with pytest.raises(errors.AlreadyRegistered):
        store.join_waitlist(store.get_event("e"), "a", "r2", AT)
    store.join_waitlist(store.get_event("e"), "b", "r3", AT)
    with pytest.raises(errors.AlreadyWaitlisted):
        store.join_waitlist(store.get_event("e"), "b", "r4", AT)
    event = store.get_event("e")
    assert (event.registeredCount, event.waitlistCount) == (1, 1)


def test_join_waitlist_refused_without_waitlist(store: RegistrationStore) -> None:
    _seed(store, capacity=0, waitlist=False)
    with pytest.raises(errors.DecisionStale):
        store.join_waitlist(store.get_event("e"), "a", "r1", AT)
    assert store.get_event("e").waitlistCount == 0


def test_hand_over_seat_moves_the_head(store: RegistrationStore) -> None:
    _seed(store, capacity=2, users="abcx")
    store.take_seat("e", "a", "r1", AT)
    store.take_seat("e", "x", "r1x", AT)
    store.join_waitlist(store.get_event("e"), "b", "r2", AT)
    store.join_waitlist(store.get_event("e"), "c", "r3", AT)
    head = store.waitlist_head("e")
    assert head is not None
    store.hand_over_seat("e", "a", head, "r4", AT)
    event = store.get_event("e")
    assert (event.registeredCount, event.waitlistCount) == (2, 1)
    assert sorted(r.userId for r in store.list_registrations("e").items) == ["b", "x"]
    assert [(w.userId, w.position) for w in store.list_waitlist("e").items] == [("c", 1)]
    # A stale head (already promoted) cannot be promoted twice.
    with pytest.raises(errors.DecisionStale):
        store.hand_over_seat("e", "x", head, "r5", AT)
    assert store.get_membership("e", "x") is not None


def test_leave_waitlist_keeps_order(store: RegistrationStore) -> None:
    _seed(store, capacity=0, users="abcd")
    for n, u in enumerate("abcd"):
        store.join_waitlist(store.get_event("e"), u, f"r{n}", AT)
    membership = store.get_membership("e", "b")
    assert membership is not None and membership.seq == 2
    store.leave_waitlist("e", "b", 2, "r-leave", AT)
    assert [(w.userId, w.position) for w in store.list_waitlist("e").items] == [("a", 1), ("c", 2), ("d", 3)]
    assert store.get_event("e").waitlistCount == 3
    assert store.list_user_registrations("d").items[0].position == 3


def test_release_seat_only_while_nobody_waits(store: RegistrationStore) -> None:
    _seed(store, capacity=1)
    store.take_seat("e", "a", "r1", AT)
    store.join_waitlist(store.get_event("e"), "b", "r2", AT)
    with pytest.raises(errors.DecisionStale):
        store.release_seat("e", "a", "r-out", AT)
    assert store.get_event("e").registeredCount == 1


def test_pagination_tokens(store: RegistrationStore) -> None:
    for n in range(5):
        store.create_user(NewUser(userId=f"u{n}", name="x"))
    seen, token = [], None
    while True:
        page = store.list_users(limit=2, next_token=token)
        seen += [u.userId for u in page.items]
        token = page.nextToken
        if not token:
            break
    assert sorted(seen) == [f"u{n}" for n in range(5)]
    with pytest.raises(errors.ValidationError):
        store.list_users(next_token="not-a-token")
    with pytest.raises(errors.ValidationError):
        store.list_users(limit=0)
    # A token from another listing is refused rather than silently followed.
    store.create_event(NewEvent(eventId="e", title="T", capacity=1))
    other = store.list_users(limit=1).nextToken
    with pytest.raises(errors.ValidationError):
        store.list_registrations("e", next_token=other)


def _refused_token(call: Any) -> None:
    with pytest.raises(errors.ValidationError) as refused:
        call()
    assert refused.value.message == pages.INVALID_TOKEN_MESSAGE
    assert [f["field"] for f in refused.value.fields] == ["nextToken"]


def _resigned(token: str, change: dict[str, Any], secret: str | None = None) -> str:
    """`token` with fields of its payload changed and a valid-looking MAC kept or remade."""
    payload, _, mac = token.partition(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    document.update(change)
    raw = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    changed = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    if secret is None:
        return f"{changed}.{mac}"
    key = hashlib.sha256(pages._TOKEN_KEY_CONTEXT + secret.encode()).digest()
    signature = base64.urlsafe_b64encode(hmac.new(key, changed.encode(), hashlib.sha256).digest())
    return f"{changed}.{signature.decode().rstrip('=')}"


def test_a_token_of_another_listing_of_the_same_event_is_refused(store: RegistrationStore) -> None:
    _seed(store, capacity=2, users="abcde")
    for n, u in enumerate("ab"):
        store.take_seat("e", u, f"s{n}", AT)
    for n, u in enumerate("cde"):
        store.join_waitlist(store.get_event("e"), u, f"w{n}", AT)
    registrations = store.list_registrations("e", limit=1).nextToken
    waitlist = store.list_waitlist("e", limit=1).nextToken
    assert registrations and waitlist
    _refused_token(lambda: store.list_registrations("e", next_token=waitlist))
    _refused_token(lambda: store.list_waitlist("e", next_token=registrations))
    # Each still resumes its own listing.
    assert [r.userId for r in store.list_registrations("e", next_token=registrations).items] == ["b"]
    assert [w.position for w in store.list_waitlist("e", next_token=waitlist).items] == [2, 3]


def test_a_token_of_another_event_or_user_is_refused(store: RegistrationStore) -> None:
    _seed(store, capacity=0, users="abc")
    store.create_event(NewEvent(eventId="f", title="Other", capacity=0, hasWaitlist=True))
    for event_id in ("e", "f"):
        for n, u in enumerate("abc"):
            store.join_waitlist(store.get_event(event_id), u, f"{event_id}{n}", AT)
    token = store.list_waitlist("e", limit=1).nextToken
    _refused_token(lambda: store.list_waitlist("f", next_token=token))
    mine = store.list_user_registrations("a", limit=1).nextToken
    assert mine
    _refused_token(lambda: store.list_user_registrations("b", next_token=mine))
    _refused_token(lambda: store.list_events(next_token=mine))
    events = store.list_event_ids(limit=1).nextToken
    _refused_token(lambda: store.list_events(next_token=events))


def test_a_changed_or_forged_token_is_refused(
    store: RegistrationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(store, capacity=0, users="abc")
    for n, u in enumerate("abc"):
        store.join_waitlist(store.get_event("e"), u, f"w{n}", AT)
    token = store.list_waitlist("e", limit=1).nextToken
    assert token
    for change in ({"o": 1e300}, {"o": -5}, {"o": 0}, {"s": "EVENT#f"}, {"l": "registrations"}):
        _refused_token(lambda change=change: store.list_waitlist("e", next_token=_resigned(token, change)))
    # A token signed with another secret (what a caller could forge) is refused too.
    forged = _resigned(token, {"o": 7}, secret="guessed")
    _refused_token(lambda: store.list_waitlist("e", next_token=forged))
    for garbage in (token + "x", token.partition(".")[0], "." + token, "é.é", "a.b.c"):
        _refused_token(lambda garbage=garbage: store.list_waitlist("e", next_token=garbage))
    # Every function that shares the secret accepts the token; another secret does not.
    monkeypatch.setenv(settings.PAGE_TOKEN_SECRET, "stack-secret")
    shared = store.list_waitlist("e", limit=1).nextToken
    assert shared and shared != token
    assert [w.position for w in store.list_waitlist("e", limit=1, next_token=shared).items] == [2]
    _refused_token(lambda: store.list_waitlist("e", next_token=token))
    # Even a token signed with the right key holds nothing but what the listing wrote.
    resigned = _resigned(shared, {"o": 1e300}, secret="stack-secret")
    _refused_token(lambda: store.list_waitlist("e", next_token=resigned))


def test_waitlist_positions_continue_across_pages(store: RegistrationStore) -> None:
    _seed(store, capacity=0, users="abcde")
    for n, u in enumerate("abcde"):
        store.join_waitlist(store.get_event("e"), u, f"r{n}", AT)
    first = store.list_waitlist("e", limit=2)
    second = store.list_waitlist("e", limit=2, next_token=first.nextToken)
    assert [(w.userId, w.position) for w in first.items + second.items] == [
        ("a", 1),
        ("b", 2),
        ("c", 3),
        ("d", 4),
    ]


# --- translation of CancellationReasons, with a client that answers as DynamoDB does ----


class _CancellingClient:
    """Raises TransactionCanceledException with scripted reasons, then succeeds."""

    def __init__(self, *scripted: list[dict[str, Any]]) -> None:
        self.scripted = list(scripted)
        self.calls = 0

    def transact_write_items(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        if self.scripted:
            reasons = self.scripted.pop(0)
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                    "CancellationReasons": reasons,
                },
                "TransactWriteItems",
            )
        return {}


def _seat_attempt(client: _CancellingClient) -> bool:
    return RegistrationStore("t", client).take_seat("e", "a", "r1", AT)


def test_conflicts_are_retried_in_task_then_reported_stale() -> None:
    conflict = [{"Code": "TransactionConflict"}, {"Code": "None"}]
    client = _CancellingClient(conflict, conflict)
    assert _seat_attempt(client) is True
    assert client.calls == 3

    always = _CancellingClient(*[conflict] * 20)
    with pytest.raises(errors.DecisionStale):
        _seat_attempt(always)


def test_business_outcome_outranks_stale_event() -> None:
    old_seat = {"requestId": {"S": "someone-else"}, "PK": {"S": "EVENT#e"}}
    client = _CancellingClient(
        [{"Code": "ConditionalCheckFailed"}, {"Code": "ConditionalCheckFailed", "Item": old_seat}]
    )
    with pytest.raises(errors.AlreadyRegistered):
        _seat_attempt(client)


def test_own_earlier_commit_is_recognised() -> None:
    mine = {"requestId": {"S": "r1"}, "PK": {"S": "EVENT#e"}}
    client = _CancellingClient([{"Code": "None"}, {"Code": "ConditionalCheckFailed", "Item": mine}])
    assert _seat_attempt(client) is False


def test_throttled_transaction_is_transient() -> None:
    client = _CancellingClient([{"Code": "ThrottlingError"}, {"Code": "None"}])
    with pytest.raises(errors.TransientDatabaseError):
        _seat_attempt(client)


# --- the transaction token ------------------------------------------------------------


class _RecordingClient:
    """Accepts every transaction and keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def transact_write_items(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(copy.deepcopy(kwargs))
        return {}


def _each_value_changed(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Copies of `value` with exactly one key or leaf changed, each with where."""
    if isinstance(value, dict):
        for key, inner in value.items():
            renamed = {(f"{k}x" if k == key else k): v for k, v in value.items()}
            yield f"{path}/{key} (renamed)", renamed
            for where, changed in _each_value_changed(inner, f"{path}/{key}"):
                yield where, {**value, key: changed}
    elif isinstance(value, list):
        for n, inner in enumerate(value):
            for where, changed in _each_value_changed(inner, f"{path}[{n}]"):
                yield where, [*value[:n], changed, *value[n + 1 :]]
    elif isinstance(value, bool):
        yield path, not value
    else:
        yield path, f"{value}x"


def test_the_token_changes_exactly_when_what_the_transaction_sends_changes() -> None:
    client = _RecordingClient()
    store = RegistrationStore("t", client)
    store.take_seat("e", "a", "r1", AT)
    store.take_seat("e", "a", "r1", AT)  # a retry sending the same transaction
    store.take_seat("e", "a", "r1", LATER)  # a retry that was decided again: another seat item
    store.take_seat("e", "b", "r1", AT)
    store.release_seat("e", "a", "r2", AT)
    store.release_seat("e", "a", "r3", AT)  # the same release, from another request
    tokens = [call["ClientRequestToken"] for call in client.sent]
    assert all(1 <= len(token) <= 36 for token in tokens)  # DynamoDB's bounds
    assert tokens[0] == tokens[1]
    assert len(set(tokens)) == len(tokens) - 1
    # What the two releases send differs only in the item that records the change, which
    # names its request; the token's scope would keep them apart even without it.
    differing = [
        (a, b)
        for a, b in zip(client.sent[4]["TransactItems"], client.sent[5]["TransactItems"], strict=True)
        if a != b
    ]
    assert [a["Put"]["Item"]["entity"] for a, _ in differing] == [{"S": "CHANGE"}]

    # Every part of what DynamoDB compares counts: any one key or value changed, in any
    # action, gives another token; the same parameters in another key order do not.
    sent = client.sent[0]["TransactItems"]
    assert transaction_token("r1", sent) == tokens[0]
    changes = list(_each_value_changed(sent))
    assert len(changes) > 20
    for where, changed in changes:
        assert transaction_token("r1", changed) != tokens[0], where
    assert transaction_token("r1", sent[::-1]) != tokens[0]
    reordered = [{kind: dict(reversed(body.items())) for kind, body in action.items()} for action in sent]
    assert transaction_token("r1", reordered) == tokens[0]


def test_a_token_reused_with_other_parameters_is_a_stale_decision() -> None:
    class MismatchingClient:
        def transact_write_items(self, **_: Any) -> dict[str, Any]:
            raise ClientError(
                {"Error": {"Code": "IdempotentParameterMismatchException", "Message": ""}},
                "TransactWriteItems",
            )

    with pytest.raises(errors.DecisionStale):
        RegistrationStore("t", MismatchingClient()).take_seat("e", "a", "r1", AT)


def test_a_retry_that_read_its_items_again_recognises_its_own_commit(store: RegistrationStore) -> None:
    _seed(store, capacity=1, users="abcx")
    store.take_seat("e", "a", "r1", AT)
    store.join_waitlist(store.get_event("e"), "b", "r2", AT)
    store.join_waitlist(store.get_event("e"), "c", "r3", AT)
    # c's join again, from a snapshot read after it committed (so another slot) and later.
    assert store.join_waitlist(store.get_event("e"), "c", "r3", LATER) is False
    # a leaves and b gets the seat; the hand-over again, later.
    head = store.waitlist_head("e")
    assert head is not None and head.userId == "b"
    store.hand_over_seat("e", "a", head, "r4", AT)
    assert store.hand_over_seat("e", "a", head, "r4", LATER) is False
    # Written once each.
    event = store.get_event("e")
    assert (event.registeredCount, event.waitlistCount, event.waitlistSeq) == (1, 1, 2)
    assert [r.userId for r in store.list_registrations("e").items] == ["b"]
    assert [(w.userId, w.position) for w in store.list_waitlist("e").items] == [("c", 1)]


def test_the_same_transaction_from_another_request_is_applied_again(store: RegistrationStore) -> None:
    """Leaving, coming back and leaving again sends the same release twice, from two
    requests: both are applied (DynamoDB keeps a token for 10 minutes)."""
    _seed(store, capacity=1)
    for n in range(2):
        store.take_seat("e", "a", f"join-{n}", AT)
        assert store.release_seat("e", "a", f"leave-{n}", AT) is True
        assert store.get_membership("e", "a") is None
        assert store.get_event("e").registeredCount == 0


# --- capacity changes --------------------------------------------------------------------


def _change(store: RegistrationStore, **fields: Any) -> None:
    seen = store.get_event("e")
    store.change_event(seen, fields, [], f"change-{uuid.uuid4().hex}", AT)


def test_a_seat_above_a_lowered_capacity_is_released_not_handed_over(store: RegistrationStore) -> None:
    _seed(store, capacity=2, users="abc")
    store.take_seat("e", "a", "r1", AT)
    store.take_seat("e", "b", "r2", AT)
    store.join_waitlist(store.get_event("e"), "c", "r3", AT)
    _change(store, capacity=1)
    head = store.waitlist_head("e")
    assert head is not None and store.get_event("e").keptOverCapacity == 1

    with pytest.raises(errors.DecisionStale):  # 2 seats of 1: the one freed is not free
        store.hand_over_seat("e", "a", head, "r4", AT)
    store.release_seat("e", "a", "r5", AT)

    event = store.get_event("e")
    assert (event.registeredCount, event.waitlistCount) == (1, 1)
    with pytest.raises(errors.DecisionStale):  # within capacity again: now it is handed over
        store.release_seat("e", "b", "r6", AT)
    store.hand_over_seat("e", "b", head, "r7", AT)
    assert [r.userId for r in store.list_registrations("e").items] == ["c"]


def test_a_change_decided_on_other_counters_or_version_is_stale(store: RegistrationStore) -> None:
    _seed(store, capacity=1, users="ab")
    seen = store.get_event("e")
    store.take_seat("e", "a", "r1", AT)

    with pytest.raises(errors.DecisionStale):  # the counters moved: the seats are not what it saw
        store.change_event(seen, {"capacity": 3}, [], "c1", AT)
    store.change_event(seen, {"title": "Renamed"}, [], "c2", AT)  # a title needs the version only
    with pytest.raises(errors.DecisionStale):  # the version moved
        store.change_event(seen, {"title": "Again"}, [], "c3", AT)
    event = store.get_event("e")
    assert (event.title, event.capacity, event.version) == ("Renamed", 1, 2)


def test_promotions_into_free_seats_need_exactly_those_seats(store: RegistrationStore) -> None:
    _seed(store, capacity=0, users="abc")
    for n, user in enumerate("abc"):
        store.join_waitlist(store.get_event("e"), user, f"r{n}", AT)
    seen = store.get_event("e")
    heads = store.waitlist_heads("e", 2)
    with pytest.raises(ValueError):
        store.promote_into_free_seats(seen, heads, "p0", AT)

    store.change_event(seen, {"capacity": 2}, heads, "p1", AT)

    event = store.get_event("e")
    assert (event.capacity, event.registeredCount, event.waitlistCount) == (2, 2, 1)
    assert [w.userId for w in store.list_waitlist("e").items] == ["c"]


# --- cancelling ------------------------------------------------------------------------


def test_a_cancelled_event_seats_nobody_and_each_release_happens_once(store: RegistrationStore) -> None:
    from registration.models import CancellationEntry

    _seed(store, capacity=1, users="abc")
    store.take_seat("e", "a", "r1", AT)
    store.join_waitlist(store.get_event("e"), "b", "r2", AT)
    head = store.waitlist_head("e")
    assert head is not None

    cancelled = store.mark_cancelled("e", AT)
    again = store.mark_cancelled("e", "2031-01-01T00:00:00.000Z")

    assert (cancelled.status, cancelled.cancelledAt, cancelled.version) == ("cancelled", AT, 2)
    assert (again.cancelledAt, again.version) == (AT, 2)  # the first cancellation stands
    with pytest.raises(errors.DecisionStale):  # no hand-over into a cancelled event
        store.hand_over_seat("e", "a", head, "r3", AT)
    entries = store.remaining_registrations("e", 10)
    assert entries == [
        CancellationEntry(userId="a", kind="seat"),
        CancellationEntry(userId="b", kind="waitlisted", seq=1),
    ]
    assert [store.release_for_cancellation("e", entry, "cancel-r", AT) for entry in entries] == [True, True]
    # A retry of the same release is DynamoDB's to answer (the same token); a later one finds nothing.
    assert [store.release_for_cancellation("e", entry, "cancel-r", AT) for entry in entries] == [True, True]
    later = "2031-01-01T00:00:00.000Z"
    assert [store.release_for_cancellation("e", entry, "cancel-r", later) for entry in entries] == [
        False,
        False,
    ]
    event = store.get_event("e")
    assert (event.registeredCount, event.waitlistCount) == (0, 0)
    assert store.remaining_registrations("e", 10) == []
    with pytest.raises(errors.DecisionStale):  # nobody takes a seat of it either
        store.take_seat("e", "c", "r4", AT)
    with pytest.raises(errors.EventNotFound):
        store.mark_cancelled("nowhere", AT)


def test_a_release_is_refused_while_the_event_is_not_cancelled(store: RegistrationStore) -> None:
    from registration.models import CancellationEntry

    _seed(store, capacity=1, users="a")
    store.take_seat("e", "a", "r1", AT)

    with pytest.raises(errors.DecisionStale):
        store.release_for_cancellation("e", CancellationEntry(userId="a", kind="seat"), "cancel-r", AT)
    assert store.get_event("e").registeredCount == 1


def test_a_release_that_loses_the_race_for_the_counter_tries_again(
    store: RegistrationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from registration import cancellation

    _seed(store, capacity=1, users="a")
    store.take_seat("e", "a", "r1", AT)
    store.mark_cancelled("e", AT)
    real = store.release_for_cancellation
    lost = iter([True, True])

    def contended(*args: Any, **kwargs: Any) -> bool:
        if next(lost, False):
            raise errors.DecisionStale("another release updated the counter first")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "release_for_cancellation", contended)
    monkeypatch.setattr(cancellation, "RELEASE_BACKOFF_S", 0.0)

    entries = store.remaining_registrations("e", 10)
    assert cancellation.release_group(store, "e", entries, "cancel-r") == (1, 0)
    assert store.get_event("e").registeredCount == 0
