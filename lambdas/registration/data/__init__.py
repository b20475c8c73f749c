"""The data layer: the only package that talks to DynamoDB.

One module per aggregate (`users`, `events`, `event_changes` and `cancellations`, `erasures`, `registrations` and `memberships` for seats
and the waitlist, `idempotency_records`, `repairs` for reconciliation, `webhooks`) over the shared
`dynamo` (client, codecs, errors, reads), `transactions` and `pages` (listings and their
tokens). `RegistrationStore` is all of them over one table.
"""

from __future__ import annotations

from registration.data.cancellations import Cancellations
from registration.data.erasures import Erasures
from registration.data.event_changes import EventChanges
from registration.data.events import Events
from registration.data.idempotency_records import IdempotencyRecords
from registration.data.memberships import Memberships
from registration.data.repairs import Repairs
from registration.data.users import Users
from registration.data.webhooks import Webhooks
from registration.settings import Settings


class RegistrationStore(
    Users, Events, EventChanges, Cancellations, Erasures, Memberships, Repairs, IdempotencyRecords, Webhooks
):
    """Users, events, seats, the waitlist, idempotency records, repairs and webhook
    subscriptions over one table."""


_stores: dict[tuple[str, str, str], RegistrationStore] = {}


def get_store() -> RegistrationStore:
    """The process's store for the configured table and endpoint (cached across invocations)."""
    settings = Settings.read()
    if not settings.table_name:
        raise RuntimeError("TABLE_NAME is not set")
    key = (settings.table_name, settings.dynamodb_endpoint, settings.region)
    store = _stores.get(key)
    if store is None:
        store = _stores.setdefault(key, RegistrationStore(settings.table_name))
    return store
