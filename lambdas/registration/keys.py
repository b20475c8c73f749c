"""The single-table layout: every key the data layer writes is built here.

| item                 | PK              | SK                  | GSI1PK         | GSI1SK          |
|----------------------|-----------------|---------------------|----------------|-----------------|
| user                 | USER#{userId}   | METADATA            | USERS          | USER#{userId}   |
| event                | EVENT#{eventId} | METADATA            | EVENTS         | (see below)     |
| seat (registered)    | EVENT#{eventId} | REG#{userId}        | USER#{userId}  | EVENT#{eventId} |
| waitlist membership  | EVENT#{eventId} | WAITLISTED#{userId} | USER#{userId}  | EVENT#{eventId} |
| waitlist slot (FIFO) | EVENT#{eventId} | QUEUE#{seq:012d}    |                |                 |

A user holds at most one of seat or membership per event. The membership item answers
"is this user waitlisted?" by key; the slot items, sorted by a sequence that only grows,
make the head of the waitlist a `Limit=1` query. An event's GSI1SK is
`AT#{startsAt}#{eventId}` when it has a start, `EVENT#{eventId}` otherwise: the listing
gives the dated events by start time (`?from=` is a range on that prefix), then the
others by id ("A" sorts before "E").
"""

from __future__ import annotations

METADATA = "METADATA"
USERS = "USERS"
EVENTS = "EVENTS"
REG_PREFIX = "REG#"
WAITLISTED_PREFIX = "WAITLISTED#"
QUEUE_PREFIX = "QUEUE#"
SEQ_WIDTH = 12

Key = dict[str, str]


USER_PREFIX = "USER#"


def user_pk(user_id: str) -> str:
    return f"{USER_PREFIX}{user_id}"


EVENT_PREFIX = "EVENT#"


def event_pk(event_id: str) -> str:
    return f"{EVENT_PREFIX}{event_id}"


STARTS_PREFIX = "AT#"
# Just past every "AT#..." key ("$" follows "#"): the upper bound of a `?from=` range.
STARTS_END = "AT$"


def event_listing_sk(event_id: str, starts_at: str | None) -> str:
    return f"{STARTS_PREFIX}{starts_at}#{event_id}" if starts_at else event_pk(event_id)


def user_key(user_id: str) -> Key:
    return {"PK": user_pk(user_id), "SK": METADATA}


def event_key(event_id: str) -> Key:
    return {"PK": event_pk(event_id), "SK": METADATA}


def seat_key(event_id: str, user_id: str) -> Key:
    return {"PK": event_pk(event_id), "SK": f"{REG_PREFIX}{user_id}"}


def waitlisted_key(event_id: str, user_id: str) -> Key:
    return {"PK": event_pk(event_id), "SK": f"{WAITLISTED_PREFIX}{user_id}"}


def queue_sk(seq: int) -> str:
    return f"{QUEUE_PREFIX}{seq:0{SEQ_WIDTH}d}"


def queue_key(event_id: str, seq: int) -> Key:
    return {"PK": event_pk(event_id), "SK": queue_sk(seq)}


GSI1 = "GSI1"


# --- reconciliation ----------------------------------------------------------------------
#
# | item                      | PK                 | SK                         |
# |---------------------------|--------------------|----------------------------|
# | repair record (per event) | EVENT#{eventId}    | RECONCILED#{at}#{runId}    |
# | run summary               | RECONCILIATION     | RUN#{at}#{runId}           |
#
# `at` is the run's start time (ISO 8601, UTC), so both sort newest-last and a retried
# task writes the same keys. Both expire (`expiresAt`) after RECORD_RETENTION_DAYS. A
# run that changes nothing writes neither.

RECONCILED_PREFIX = "RECONCILED#"
RECONCILIATION_RUNS_PK = "RECONCILIATION"
RUN_PREFIX = "RUN#"


def reconciliation_record_key(event_id: str, at: str, run_id: str) -> Key:
    return {"PK": event_pk(event_id), "SK": f"{RECONCILED_PREFIX}{at}#{run_id}"}


def reconciliation_run_key(at: str, run_id: str) -> Key:
    return {"PK": RECONCILIATION_RUNS_PK, "SK": f"{RUN_PREFIX}{at}#{run_id}"}


# --- idempotent requests -----------------------------------------------------------------
#
# | item                          | PK                    | SK             |
# |-------------------------------|-----------------------|----------------|
# | request (per Idempotency-Key) | IDEMPOTENCY#{caller}  | REQUEST#{key}  |
#
# A key belongs to the caller who sent it (`models.scoped_key`: `{key}#{caller}`), and its
# record lives in that caller's partition: erasing a user finds all their records in one
# query. A stampede of keyed requests comes from many callers, so it spreads over as many
# partitions. Records expire (`expiresAt`, the table's TTL attribute) after a day.

# A key no item has: `GET /health` reads it to see that the table answers.
HEALTH_PROBE_KEY: Key = {"PK": "HEALTH", "SK": "PROBE"}

IDEMPOTENCY_PREFIX = "IDEMPOTENCY#"
REQUEST_PREFIX = "REQUEST#"


def idempotency_pk(caller_id: str) -> str:
    return f"{IDEMPOTENCY_PREFIX}{caller_id}"


def idempotency_key(claim_key: str) -> Key:
    """The record of a claim's key (`{key}#{caller}`; a key has no '#')."""
    key, _, caller_id = claim_key.partition("#")
    return {"PK": idempotency_pk(caller_id), "SK": f"{REQUEST_PREFIX}{key}"}


# --- domain events -----------------------------------------------------------------------
#
# | item                              | PK              | SK                |
# |-----------------------------------|-----------------|-------------------|
# | change (a seat or place given up) | EVENT#{eventId} | CHANGE#{changeId} |
#
# A change that only deletes items (a user leaving a seat or the waitlist) puts one of
# these to carry its domain event into the table's stream (`registration.domain_events`);
# every other change's event travels on the item it puts. The change's id is a digest of
# its request, so one request can record one change only once. They expire
# (`expiresAt`) after CHANGE_RETENTION_S, as the stream keeps a record for a day.

CHANGE_PREFIX = "CHANGE#"
CHANGE_RETENTION_S = 24 * 3600


def change_key(event_id: str, change_id: str) -> Key:
    return {"PK": event_pk(event_id), "SK": f"{CHANGE_PREFIX}{change_id}"}


# --- webhook subscriptions -----------------------------------------------------------------
#
# | item         | PK                  | SK       | GSI1PK   | GSI1SK              |
# |--------------|---------------------|----------|----------|---------------------|
# | subscription | WEBHOOK#{webhookId} | METADATA | WEBHOOKS | WEBHOOK#{webhookId} |

WEBHOOKS = "WEBHOOKS"
WEBHOOK_PREFIX = "WEBHOOK#"


def webhook_pk(webhook_id: str) -> str:
    return f"{WEBHOOK_PREFIX}{webhook_id}"


def webhook_key(webhook_id: str) -> Key:
    return {"PK": webhook_pk(webhook_id), "SK": METADATA}
