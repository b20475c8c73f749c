"""The data layer: the only package that talks to DynamoDB.

One module per aggregate (`users`, `events`, `registrations` and `memberships` for seats
and the waitlist, `idempotency_records`, `repairs` for reconciliation) over the shared
`dynamo` (client, codecs, errors, reads), `transactions` and `pages` (listings and their
tokens). `RegistrationStore` is all of them over one table.
"""

from __future__ import annotations

import os

from registration.data.events import Events
from registration.data.idempotency_records import IdempotencyRecords
from registration.data.memberships import Memberships
from registration.data.repairs import Repairs
from registration.data.users import Users


class RegistrationStore(Users, Events, Memberships, Repairs, IdempotencyRecords):
    """Users, events, seats, the waitlist, idempotency records and repairs over one table."""


_stores: dict[tuple[str, str, str], RegistrationStore] = {}


def get_store() -> RegistrationStore:
    """The process's store for the configured table and endpoint (cached across invocations)."""
    table = os.environ.get("TABLE_NAME", "")
    if not table:
        raise RuntimeError("TABLE_NAME is not set")
    key = (
        table,
        os.environ.get("AWS_ENDPOINT_URL_DYNAMODB", ""),
        os.environ.get("AWS_DEFAULT_REGION", ""),
    )
    store = _stores.get(key)
    if store is None:
        store = _stores.setdefault(key, RegistrationStore(table))
    return store
