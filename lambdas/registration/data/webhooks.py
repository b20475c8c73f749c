"""Webhook subscriptions: one item each, listed through GSI1."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from botocore.exceptions import ClientError

from registration import keys
from registration.data.dynamo import error_code, now_iso, serialize
from registration.data.pages import LISTING_WEBHOOKS, Listings
from registration.data.transactions import Transactions
from registration.errors import WebhookNotFound
from registration.models import Completion, Page
from registration.webhooks import CreatedWebhook, NewWebhook, StoredWebhook, Webhook, new_secret


class Webhooks(Transactions, Listings):
    def create_webhook(
        self,
        new: NewWebhook,
        owner_id: str,
        answer: Callable[[CreatedWebhook], Completion | None] | None = None,
    ) -> CreatedWebhook:
        """A subscription with a fresh id and secret; `answer` as for the other creations."""
        created = CreatedWebhook(
            webhookId=uuid.uuid4().hex,
            url=new.url,
            types=new.types,
            eventId=new.eventId,
            ownerId=owner_id,
            createdAt=now_iso(),
            secret=new_secret(),
        )
        item = {
            **keys.webhook_key(created.webhookId),
            "entity": "WEBHOOK",
            "GSI1PK": keys.WEBHOOKS,
            "GSI1SK": keys.webhook_pk(created.webhookId),
            **created.model_dump(exclude_none=True),
        }
        completion = answer(created) if answer else None
        if completion is not None:
            # A fresh id cannot exist: the condition only keeps a replayed write from repeating.
            self._create(item, completion, WebhookNotFound("unreachable"))
            return created
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item=serialize(item),
                ConditionExpression="attribute_not_exists(PK)",
            )
        except ClientError as exc:  # pragma: no cover - a uuid4 collision
            if error_code(exc) == "ConditionalCheckFailedException":
                raise RuntimeError("webhook id collision") from None
            raise
        return created

    def find_webhook(self, webhook_id: str) -> StoredWebhook | None:
        """The subscription with its secret, read strongly consistently (None: there is none)."""
        item = self._get(keys.webhook_key(webhook_id))
        return StoredWebhook.model_validate(item) if item else None

    def get_webhook(self, webhook_id: str) -> Webhook:
        found = self.find_webhook(webhook_id)
        if found is None:
            raise WebhookNotFound(f"Webhook {webhook_id} does not exist")
        return Webhook.model_validate(found.model_dump())

    def list_webhooks(self, limit: int = 25, next_token: str | None = None) -> Page[Webhook]:
        items, token = self._query_gsi(LISTING_WEBHOOKS, keys.WEBHOOKS, limit, next_token)
        return Page[Webhook](items=[Webhook.model_validate(i) for i in items], nextToken=token)

    def all_webhooks(self) -> list[StoredWebhook]:
        """Every subscription with its secret (what a delivery matches an event against)."""
        found: list[StoredWebhook] = []
        token: str | None = None
        while True:
            items, token = self._query_gsi(LISTING_WEBHOOKS, keys.WEBHOOKS, 100, token)
            found.extend(StoredWebhook.model_validate(i) for i in items)
            if token is None:
                return found

    def delete_webhook(self, webhook_id: str) -> None:
        try:
            self._call(
                "delete_item",
                TableName=self.table_name,
                Key=serialize(keys.webhook_key(webhook_id)),
                ConditionExpression="attribute_exists(PK)",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise WebhookNotFound(f"Webhook {webhook_id} does not exist") from None
            raise
