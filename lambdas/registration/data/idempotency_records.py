"""Idempotency records (`IDEMPOTENCY#{key}`): claims, stored answers, releases."""

from __future__ import annotations

from botocore.exceptions import ClientError

from registration import keys
from registration.data.dynamo import Table, deserialize, error_code, plain_deep, serialize
from registration.models import IdempotencyRecord, StoredResponse


class IdempotencyRecords(Table):
    def claim_request(self, claim: IdempotencyRecord, now: int) -> IdempotencyRecord | None:
        """Write `claim` (IN_PROGRESS) unless a live record holds its key; None when written.

        A record is dead once `expiresAt` has passed (TTL deletes lazily), and an
        unfinished one may be taken over after its lease by the same request (same
        fingerprint). The request that wrote a claim may write it again (a retried task).
        Otherwise the record that holds the key is returned, read in the same call.
        """
        item = {
            **keys.idempotency_key(claim.key),
            "entity": "IDEMPOTENCY",
            **claim.model_dump(exclude_none=True),
        }
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item=serialize(item),
                ConditionExpression=(
                    "attribute_not_exists(PK) OR expiresAt < :now OR requestId = :requestId "
                    "OR (#status = :inProgress AND leaseExpiresAt < :now AND fingerprint = :fingerprint)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=serialize(
                    {
                        ":now": now,
                        ":requestId": claim.requestId,
                        ":inProgress": "IN_PROGRESS",
                        ":fingerprint": claim.fingerprint,
                    }
                ),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            held = exc.response.get("Item") or self._call(
                "get_item",
                TableName=self.table_name,
                Key=serialize(keys.idempotency_key(claim.key)),
                ConsistentRead=True,
            ).get("Item")
            if not held:  # pragma: no cover - deleted between the write and the read: try again
                return self.claim_request(claim, now)
            return IdempotencyRecord.model_validate(plain_deep(deserialize(held)))
        return None

    def complete_request(self, key: str, request_id: str, response: StoredResponse, at: str) -> bool:
        """Store the answer of the request that holds the claim; False if another took it over."""
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=serialize(keys.idempotency_key(key)),
                UpdateExpression="SET #status = :completed, #response = :response, completedAt = :at",
                ConditionExpression="requestId = :requestId",
                ExpressionAttributeNames={"#status": "status", "#response": "response"},
                ExpressionAttributeValues=serialize(
                    {
                        ":completed": "COMPLETED",
                        ":response": response.model_dump(exclude_none=True),
                        ":at": at,
                        ":requestId": request_id,
                    }
                ),
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release_request(self, key: str, request_id: str) -> bool:
        """Forget an unfinished claim so that a retry runs the request again."""
        try:
            self._call(
                "delete_item",
                TableName=self.table_name,
                Key=serialize(keys.idempotency_key(key)),
                ConditionExpression="requestId = :requestId AND #status = :inProgress",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=serialize({":requestId": request_id, ":inProgress": "IN_PROGRESS"}),
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def get_request(self, key: str) -> IdempotencyRecord | None:
        item = self._get(keys.idempotency_key(key))
        return IdempotencyRecord.model_validate(plain_deep(item)) if item else None
