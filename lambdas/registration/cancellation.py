"""Cancelling an event (`POST /events/{id}/cancel`): the API marks it cancelled, which
stops every new seat at once, and starts the cancel workflow, a Standard execution that
releases what the event still holds: `NextCancellationBatch` reads the next entries (seats
first, then waitlist places) in groups, a Distributed Map releases each group in a child
execution (`ReleaseRegistrations`), and the loop ends when nothing is left. Every release
is its own conditioned transaction, so a run that stops anywhere is resumed by running
again (redrive, or a new execution): it finds only what is left.
"""

from __future__ import annotations

import contextlib
import json
import random
import time

from registration import step_functions
from registration.data import RegistrationStore
from registration.data.dynamo import now_iso
from registration.errors import DecisionStale
from registration.models import CancellationBatches, CancellationEntry, EventState
from registration.settings import Settings

WORKFLOW = "cancel"
EXECUTION_PREFIX = f"{WORKFLOW}-"

# Entries one `NextCancellationBatch` reads: its answer (the Map's items) stays far below
# Step Functions' 256 KiB payload, about 60 bytes an entry.
ENTRIES_PER_BATCH = 1000
# Entries one child execution releases (one Lambda invocation, a transaction each).
ENTRIES_PER_GROUP = 25
# A release that lost the race for the event's counter this many times fails its group
# (the task's retry, then the run's redrive, take it from there).
RELEASE_ATTEMPTS = 8
RELEASE_BACKOFF_S = 0.01
RELEASE_BACKOFF_CAP_S = 0.5


def cancel(store: RegistrationStore, event_id: str) -> EventState:
    """The event, cancelled now (or when it was)."""
    return store.mark_cancelled(event_id, now_iso())


def execution_name(event_id: str) -> str:
    """One run per event (a Standard execution's name is unique): `cancel-<eventId>`."""
    return f"{EXECUTION_PREFIX}{event_id}"


def start_release(event_id: str, request_id: str) -> str:
    """Starts the cancel workflow for the event, once: a second start (a retried or
    repeated cancel) finds the first run and leaves it be. Its execution's name."""
    arn = Settings.read().workflow_arns[WORKFLOW]
    client = step_functions.client_for(arn)
    name = execution_name(event_id)
    # Started before, by the first cancel of this event: that run releases the seats.
    with contextlib.suppress(client.exceptions.ExecutionAlreadyExists):
        client.start_execution(
            stateMachineArn=arn, name=name, input=json.dumps({"eventId": event_id, "requestId": request_id})
        )
    return name


def next_batch(store: RegistrationStore, event_id: str, size: int = ENTRIES_PER_BATCH) -> CancellationBatches:
    entries = store.remaining_registrations(event_id, size)
    groups = [entries[n : n + ENTRIES_PER_GROUP] for n in range(0, len(entries), ENTRIES_PER_GROUP)]
    return CancellationBatches(groups=groups, entries=len(entries))


def release_group(
    store: RegistrationStore, event_id: str, entries: list[CancellationEntry], request_id: str
) -> tuple[int, int]:
    """(released, already gone) of `entries`."""
    released = gone = 0
    for entry in entries:
        if _release(store, event_id, entry, request_id):
            released += 1
        else:
            gone += 1
    return released, gone


def _release(store: RegistrationStore, event_id: str, entry: CancellationEntry, request_id: str) -> bool:
    """Every release updates the event's counter, which the other groups and the users
    leaving at the same moment update too: a release that keeps losing that race (its
    transaction's own retries spent) waits a little and tries again, on a fresh time."""
    for attempt in range(1, RELEASE_ATTEMPTS + 1):
        try:
            return store.release_for_cancellation(event_id, entry, request_id, now_iso())
        except DecisionStale:
            if attempt == RELEASE_ATTEMPTS:
                raise
            time.sleep(random.uniform(0, min(RELEASE_BACKOFF_CAP_S, RELEASE_BACKOFF_S * 2**attempt)))
    raise AssertionError("unreachable")
