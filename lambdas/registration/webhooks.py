"""Webhook subscriptions and their messages: who may subscribe to what, which URLs, and how
a message is signed (the Standard Webhooks specification).

A message is `{"type", "timestamp", "data"}` with the domain event as `data`, sent with
the headers `webhook-id` (the event's id: the same on every retry), `webhook-timestamp`
(the attempt's, epoch seconds) and `webhook-signature` (`v1,` and the base64 HMAC-SHA256
of `id.timestamp.body` under the subscription's `whsec_` secret), so that a receiver
verifies it with the `standardwebhooks` library.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from registration import access
from registration.access import Caller
from registration.errors import Forbidden
from registration.models import WEBHOOK_SECRET_PREFIX, StoredWebhook, Webhook

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
# A delivery that has no answer within this long failed (it is retried).
DELIVERY_TIMEOUT_S = 10.0
# Hosts a subscription may name over plain http, where the platform allows it (only the
# local stack does: a receiver on the developer's machine).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})


def url_problem(url: str, *, allow_loopback_http: bool) -> str | None:
    """Why `url` cannot receive webhooks (None when it can)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return "url is not a URL"
    if parts.username or parts.password:
        return "url must not carry credentials"
    if not host:
        return "url has no host"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and allow_loopback_http and host in LOOPBACK_HOSTS:
        return None
    if allow_loopback_http:
        return "url must be https://, or http://127.0.0.1 or http://localhost on the local stack"
    return "url must be https://"


# --- who may subscribe -------------------------------------------------------------------


def require_may_subscribe(caller: Caller, event_id: str | None, organizer_of: str | None) -> None:
    """Admins subscribe to anything; an organizer to one of their own events only
    (`organizer_of`: the organizer of `event_id`, None when unknown); others not at all."""
    if caller.is_admin:
        return
    if not caller.is_organizer:
        raise Forbidden("Only an organizer or an admin may subscribe to webhooks")
    if event_id is None:
        raise Forbidden("An organizer subscribes to one of their own events: name its eventId")
    if not caller.organizes(organizer_of):
        raise Forbidden(f"Only the organizer of event {event_id} or an admin may subscribe to it")


def require_may_list(caller: Caller) -> None:
    access.require_organizer(caller, "list webhooks")


def require_may_remove(caller: Caller, webhook: Webhook) -> None:
    if caller.is_admin or (caller.is_organizer and webhook.ownerId == caller.userId):
        return
    raise Forbidden(f"Only the owner of webhook {webhook.webhookId} or an admin may remove it")


# --- messages ------------------------------------------------------------------------------


def message_body(detail: Mapping[str, Any]) -> str:
    """The body of the message for one domain event."""
    return json.dumps(
        {"type": detail["type"], "timestamp": detail["occurredAt"], "data": dict(detail)},
        separators=(",", ":"),
    )


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, message_id, timestamp, body),
    }


def matching(webhooks: Sequence[StoredWebhook], detail: Mapping[str, Any]) -> list[StoredWebhook]:
    return [w for w in webhooks if w.wants(detail)]
