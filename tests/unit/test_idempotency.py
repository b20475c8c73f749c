"""Idempotent requests on moto: claims, replays, refusals, leases, expiry, release."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from registration import errors, idempotency
from registration.data import RegistrationStore
from registration.models import CaughtError, IdempotencyRecord, StoredResponse, scoped_key
from tests.fixtures.tables import moto_store

FP = idempotency.workflow_fingerprint("register", "e-1", "u-1")
OTHER_FP = idempotency.workflow_fingerprint("register", "e-1", "u-2")
# Who sends the keyed requests: a key is its caller's own (`scoped_key`).
CALLER = "u-1"
CREATED = StoredResponse(statusCode=201, body={"eventId": "e-1", "userId": "u-1", "status": "registered"})


@pytest.fixture
def store() -> Iterator[RegistrationStore]:
    with moto_store() as s:
        yield s


def _key() -> str:
    return f"k-{uuid.uuid4()}"


def _claim(
    key: str, fingerprint: str, request_id: str, *, now: int, lease: int, expires: int
) -> IdempotencyRecord:
    return IdempotencyRecord(
        key=key,
        fingerprint=fingerprint,
        status="IN_PROGRESS",
        requestId=request_id,
        createdAt="2026-01-01T00:00:00.000Z",
        leaseExpiresAt=now + lease,
        expiresAt=now + expires,
    )


def test_first_request_claims_then_its_answer_is_replayed(store: RegistrationStore) -> None:
    key = _key()
    assert idempotency.begin(store, key, CALLER, FP, "first") is None
    record = store.get_request(scoped_key(key, CALLER))
    assert record is not None and record.status == "IN_PROGRESS" and record.requestId == "first"
    assert (
        record.expiresAt - record.leaseExpiresAt == idempotency.RETENTION_SECONDS - idempotency.LEASE_SECONDS
    )

    idempotency.finish(store, scoped_key(key, CALLER), "first", CREATED)

    assert idempotency.begin(store, key, CALLER, FP, "second") == CREATED
    assert idempotency.begin(store, key, CALLER, FP, "third") == CREATED
    record = store.get_request(scoped_key(key, CALLER))
    assert record is not None and record.status == "COMPLETED" and record.requestId == "first"


def test_a_different_request_with_the_key_is_refused(store: RegistrationStore) -> None:
    key = _key()
    idempotency.begin(store, key, CALLER, FP, "first")
    with pytest.raises(errors.IdempotencyKeyReused):
        idempotency.begin(store, key, CALLER, OTHER_FP, "other")  # while in progress
    idempotency.finish(store, scoped_key(key, CALLER), "first", CREATED)
    with pytest.raises(errors.IdempotencyKeyReused):
        idempotency.begin(store, key, CALLER, OTHER_FP, "other")  # and once finished
    assert store.get_request(scoped_key(key, CALLER)).response == CREATED  # type: ignore[union-attr]


def test_the_same_request_while_the_first_runs_is_told_to_wait(store: RegistrationStore) -> None:
    key = _key()
    idempotency.begin(store, key, CALLER, FP, "first")
    with pytest.raises(errors.RequestInProgress):
        idempotency.begin(store, key, CALLER, FP, "second")
    assert store.get_request(scoped_key(key, CALLER)).requestId == "first"  # type: ignore[union-attr]


def test_a_retried_claim_of_the_same_request_is_its_own(store: RegistrationStore) -> None:
    """A task retried after its claim committed claims again instead of waiting on itself."""
    key = _key()
    assert idempotency.begin(store, key, CALLER, FP, "first") is None
    assert idempotency.begin(store, key, CALLER, FP, "first") is None


def test_an_unfinished_claim_can_be_taken_over_after_its_lease(store: RegistrationStore) -> None:
    key = _key()
    now = 1_800_000_000
    stale = _claim(key, FP, "crashed", now=now - 200, lease=idempotency.LEASE_SECONDS, expires=3600)
    assert store.claim_request(stale, now - 200) is None
    # Same request, lease over: taken over.
    retry = _claim(key, FP, "retry", now=now, lease=idempotency.LEASE_SECONDS, expires=3600)
    assert store.claim_request(retry, now) is None
    assert store.get_request(key).requestId == "retry"  # type: ignore[union-attr]
    # The crashed request's late answer no longer lands on the claim.
    assert not store.complete_request(key, "crashed", CREATED, "2026-01-01T00:00:00.000Z")
    # A different request is still refused, lease or not.
    other = _claim(key, OTHER_FP, "other", now=now + 1000, lease=idempotency.LEASE_SECONDS, expires=3600)
    held = store.claim_request(other, now + 1000)
    assert held is not None and held.requestId == "retry"


def test_an_expired_record_no_longer_holds_its_key(store: RegistrationStore) -> None:
    """TTL deletes lazily (up to days late): an expired record is treated as gone."""
    key = _key()
    now = 1_800_000_000
    old = _claim(key, FP, "old", now=now - 100_000, lease=90, expires=86_400)
    assert store.claim_request(old, now - 100_000) is None
    assert store.complete_request(key, "old", CREATED, "2026-01-01T00:00:00.000Z")
    fresh = _claim(key, OTHER_FP, "fresh", now=now, lease=90, expires=86_400)
    assert store.claim_request(fresh, now) is None
    record = store.get_request(key)
    assert record is not None and record.requestId == "fresh" and record.status == "IN_PROGRESS"


def test_a_failure_of_ours_releases_the_claim(store: RegistrationStore) -> None:
    key = _key()
    idempotency.begin(store, key, CALLER, FP, "first")
    idempotency.finish(
        store,
        scoped_key(key, CALLER),
        "first",
        StoredResponse(statusCode=503, body={"error": "TransientDatabaseError"}),
    )
    assert store.get_request(scoped_key(key, CALLER)) is None
    assert idempotency.begin(store, key, CALLER, FP, "retry") is None  # runs again


def test_release_only_removes_the_callers_unfinished_claim(store: RegistrationStore) -> None:
    key = _key()
    idempotency.begin(store, key, CALLER, FP, "first")
    assert not store.release_request(scoped_key(key, CALLER), "someone-else")
    idempotency.finish(store, scoped_key(key, CALLER), "first", CREATED)
    assert not store.release_request(scoped_key(key, CALLER), "first")  # finished: kept for replays
    assert store.get_request(scoped_key(key, CALLER)) is not None


def test_a_business_failure_is_stored_with_its_code_and_cause(store: RegistrationStore) -> None:
    key = _key()
    idempotency.claim_request(store, key, CALLER, "register", "e-1", "u-1", "first")
    response = idempotency.record_failure(
        store,
        scoped_key(key, CALLER),
        "first",
        "register",
        CaughtError(Error="EventFull", Cause="The event is full and has no waitlist"),
    )
    assert response.statusCode == 409
    assert response.document() == {"error": "EventFull", "message": "The event is full and has no waitlist"}

    replay = idempotency.claim_request(store, key, CALLER, "register", "e-1", "u-1", "second")
    assert replay.replay and replay.succeeded is False
    assert (replay.error, replay.cause) == ("EventFull", "The event is full and has no waitlist")


def test_a_success_is_replayed_as_the_workflow_output(store: RegistrationStore) -> None:
    key = _key()
    assert not idempotency.claim_request(store, key, CALLER, "unregister", "e-1", "u-1", "first").replay
    output = {"eventId": "e-1", "userId": "u-1", "status": "unregistered", "promoted": "u-9"}
    idempotency.finish(
        store, scoped_key(key, CALLER), "first", StoredResponse(statusCode=200, body=json.dumps(output))
    )

    replay = idempotency.claim_request(store, key, CALLER, "unregister", "e-1", "u-1", "second")
    assert (replay.replay, replay.succeeded, replay.output) == (True, True, output)
    with pytest.raises(errors.IdempotencyKeyReused):
        idempotency.claim_request(store, key, CALLER, "register", "e-1", "u-1", "third")


def test_the_same_key_from_another_caller_is_another_request(store: RegistrationStore) -> None:
    key = _key()
    assert idempotency.begin(store, key, CALLER, FP, "first") is None
    idempotency.finish(store, scoped_key(key, CALLER), "first", CREATED)
    # Not a replay of the first caller's answer, and not refused as a reuse either.
    assert idempotency.begin(store, key, "someone-else", OTHER_FP, "other") is None
    assert store.get_request(scoped_key(key, "someone-else")).requestId == "other"  # type: ignore[union-attr]
    assert idempotency.begin(store, key, CALLER, FP, "retry") == CREATED


def test_fingerprints_ignore_key_order_and_tell_requests_apart() -> None:
    assert idempotency.fingerprint("POST", "/events", {"a": 1, "b": [1, 2]}) == idempotency.fingerprint(
        "POST", "/events", {"b": [1, 2], "a": 1}
    )
    assert idempotency.fingerprint("POST", "/events", {"a": 1}) != idempotency.fingerprint(
        "POST", "/users", {"a": 1}
    )
    assert FP != OTHER_FP
    assert idempotency.workflow_fingerprint("register", "e", "u") != idempotency.workflow_fingerprint(
        "unregister", "e", "u"
    )
