"""Erasing a user: the mark that removes their personal data and stops every new seat of
theirs, where they still hold seats and places (GSI1), their idempotency records, and
at last the user item itself."""

from __future__ import annotations

from botocore.exceptions import ClientError

from registration import keys
from registration.data.dynamo import Table, deserialize, error_code, serialize
from registration.errors import UserNotFound


class Erasures(Table):
    def mark_erasing(self, user_id: str, at: str) -> str:
        """Marks the user erased from `at` on (or finds since when they are): their name
        and email are removed at once and they leave the users' listing; reads answer as
        for a user that does not exist, and registering them is refused. The time of the
        mark, which names the erasure's run."""
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=serialize(keys.user_key(user_id)),
                UpdateExpression="SET erasingSince = :at REMOVE #name, email, GSI1PK, GSI1SK",
                ConditionExpression="attribute_exists(PK) AND attribute_not_exists(erasingSince)",
                ExpressionAttributeNames={"#name": "name"},
                ExpressionAttributeValues=serialize({":at": at}),
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            found = self._get(keys.user_key(user_id))
            if found is None:
                raise UserNotFound(f"User {user_id} does not exist") from None
            return str(found["erasingSince"])  # marked before: that erasure goes on
        return at

    def held_event_ids(self, user_id: str, limit: int) -> list[str]:
        """Events where the user holds a seat or a waitlist place, at most `limit`, from
        GSI1 (eventually consistent: a place taken a moment ago may be missing, and one
        given up a moment ago may still be listed; the caller reads each one again)."""
        response = self._call(
            "query",
            TableName=self.table_name,
            IndexName=keys.GSI1,
            KeyConditionExpression="GSI1PK = :pk AND begins_with(GSI1SK, :events)",
            ExpressionAttributeValues=serialize({":pk": keys.user_pk(user_id), ":events": keys.EVENT_PREFIX}),
            ProjectionExpression="eventId",
            Limit=limit,
        )
        return [str(deserialize(item)["eventId"]) for item in response.get("Items", [])]

    def forget_requests(self, user_id: str, limit: int) -> int:
        """Deletes up to `limit` of the idempotency records of the user's requests (their
        stored answers may hold what the user sent); how many were deleted."""
        response = self._call(
            "query",
            TableName=self.table_name,
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues=serialize({":pk": keys.idempotency_pk(user_id)}),
            ProjectionExpression="PK, SK",
            ConsistentRead=True,
            Limit=limit,
        )
        records = response.get("Items", [])
        for key in records:
            self._call("delete_item", TableName=self.table_name, Key=key)
        return len(records)

    def delete_erased_user(self, user_id: str, since: str) -> bool:
        """Deletes the user item of the erasure that began at `since`; False when it is
        gone already (this step ran before). The id may be created again afterwards."""
        try:
            self._call(
                "delete_item",
                TableName=self.table_name,
                Key=serialize(keys.user_key(user_id)),
                ConditionExpression="erasingSince = :since",
                ExpressionAttributeValues=serialize({":since": since}),
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True
