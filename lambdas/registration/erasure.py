"""Erasing a user (`DELETE /users/{id}`): the API marks the user erased, which removes
their name and email at once, hides them from every read and refuses registering them,
and starts the erase workflow, a Standard execution that:

1. releases every seat (handed to the waitlist's head as a user leaving it would be) and
   every waitlist place they hold, a turn of `ReleaseUserRegistrations` at a time, each a
   domain event with `reason: user_erased`;
2. waits `settleSeconds` (longer than a register execution may run), so that a
   registration which read the user before the mark has committed or failed by then,
   and releases whatever such a late one left;
3. deletes the user's idempotency records and then the user item (`ForgetUser`): the id
   may be created again.

Every step is conditioned on what it finds, so a run that stops anywhere is resumed by
running again (redrive): it finds only what is left.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from datetime import datetime

from registration import domain_events, schedule, step_functions
from registration.data import RegistrationStore
from registration.data.dynamo import now_iso
from registration.errors import DecisionStale
from registration.models import ErasureInput, ErasureProgress
from registration.settings import Settings

WORKFLOW = "erase"
EXECUTION_PREFIX = f"{WORKFLOW}-"

# Events one turn looks at: each is one event's partition, released in its own
# transaction, so a turn of 25 stays well within the task's time.
EVENTS_PER_TURN = 25
# Idempotency records one `ForgetUser` deletes before it looks again.
RECORDS_PER_TURN = 100
# A release that lost the race for its event this many times fails the turn (the task's
# retry, then the run's redrive, take it from there).
RELEASE_ATTEMPTS = 8
RELEASE_BACKOFF_S = 0.01
RELEASE_BACKOFF_CAP_S = 0.5
# The late turns' request id: a release there is another change than the first turns'
# release of the same event, and must not be taken for it (`domain_events.event_id_for`).
LATE_SUFFIX = ":late"


def mark(store: RegistrationStore, user_id: str) -> str:
    """The user, erased from now on (or since their erasure began): when it began."""
    return store.mark_erasing(user_id, now_iso())


def execution_name(user_id: str, since: str) -> str:
    """`erase-<userId>-<since>`, the time in milliseconds, base 36: one run per erasure
    (a Standard execution's name is unique for 90 days, and the id may be erased again
    once created again), within the 80 characters a name may have."""
    millis = int(datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp() * 1000)
    return f"{EXECUTION_PREFIX}{user_id}-{_base36(millis)}"


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if number == 0:
            return text


def start(user_id: str, since: str, request_id: str) -> str:
    """Starts the erase workflow for the erasure that began at `since`, once: a second
    start (a retried or repeated DELETE) finds the first run and leaves it be. Its name."""
    settings = Settings.read()
    arn = settings.workflow_arns[WORKFLOW]
    client = step_functions.client_for(arn)
    name = execution_name(user_id, since)
    run = ErasureInput(
        userId=user_id, requestId=request_id, erasingSince=since, settleSeconds=settings.erasure_settle_s
    )
    with contextlib.suppress(client.exceptions.ExecutionAlreadyExists):
        client.start_execution(stateMachineArn=arn, name=name, input=json.dumps(run.model_dump(mode="json")))
    return name


def release_next(
    store: RegistrationStore, run: ErasureInput, limit: int = EVENTS_PER_TURN
) -> ErasureProgress:
    """One of the first turns: releases what the user holds at the first `limit` events listed."""
    return _turn(store, run.userId, run.requestId, limit)


def release_late(
    store: RegistrationStore, run: ErasureInput, limit: int = EVENTS_PER_TURN
) -> ErasureProgress:
    """One of the turns after the wait: releases what registrations in flight at the mark
    left, as changes of their own (another request id than the first turns')."""
    return _turn(store, run.userId, run.requestId + LATE_SUFFIX, limit)


def _turn(store: RegistrationStore, user_id: str, request_id: str, limit: int) -> ErasureProgress:
    event_ids = store.held_event_ids(user_id, limit)
    released = sum(_release(store, event_id, user_id, request_id) for event_id in event_ids)
    # A full page may hide more; a release may have been listed late by the index.
    return ErasureProgress(
        found=len(event_ids), released=released, more=released > 0 or len(event_ids) == limit
    )


def _release(store: RegistrationStore, event_id: str, user_id: str, request_id: str) -> bool:
    """Releases the user's seat or place at the event, as leaving would (a seat goes to the
    head of the waitlist while one may take it); False when there is none (any more)."""
    reason: domain_events.EndReason = domain_events.USER_ERASED
    for attempt in range(1, RELEASE_ATTEMPTS + 1):
        try:
            membership = store.get_membership(event_id, user_id)
            if membership is None:
                return False
            at = now_iso()
            if membership.status == "waitlisted" and membership.seq is not None:
                return store.leave_waitlist(event_id, user_id, membership.seq, request_id, at, reason=reason)
            event = store.get_event(event_id)
            head = store.waitlist_head(event_id) if schedule.seats_a_waiter(event, at) else None
            if head is not None:
                return store.hand_over_seat(event_id, user_id, head, request_id, at, reason=reason)
            return store.release_seat(event_id, user_id, request_id, at, reason=reason)
        except DecisionStale:
            if attempt == RELEASE_ATTEMPTS:
                raise
            time.sleep(random.uniform(0, min(RELEASE_BACKOFF_CAP_S, RELEASE_BACKOFF_S * 2**attempt)))
    raise AssertionError("unreachable")


def forget(store: RegistrationStore, run: ErasureInput) -> int:
    """Deletes the user's idempotency records, then the user item; the records deleted."""
    forgotten = 0
    while deleted := store.forget_requests(run.userId, RECORDS_PER_TURN):
        forgotten += deleted
    store.delete_erased_user(run.userId, run.erasingSince)
    return forgotten
