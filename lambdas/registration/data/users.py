"""Users."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from registration import keys
from registration.data.dynamo import Item, deserialize, error_code, merge_patch_update, now_iso, serialize
from registration.data.items import user_item
from registration.data.pages import LISTING_USERS, Listings
from registration.data.transactions import Transactions
from registration.errors import UserAlreadyExists, UserNotFound
from registration.models import Completion, NewUser, Page, User


def is_present(item: Item | None) -> bool:
    """A user item that stands for a user: one being erased answers as none."""
    return item is not None and "erasingSince" not in item


class Users(Transactions, Listings):
    def create_user(self, new: NewUser, answer: Callable[[User], Completion | None] | None = None) -> User:
        """`answer` gives the completion of a keyed request, stored with the user in one transaction."""
        user = User(userId=new.userId, name=new.name, createdAt=now_iso())
        item = user_item(user)
        completion = answer(user) if answer else None
        if completion is not None:
            self._create(item, completion, UserAlreadyExists(f"User {new.userId} already exists"))
            return user
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item=serialize(item),
                ConditionExpression="attribute_not_exists(PK)",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise UserAlreadyExists(f"User {new.userId} already exists") from None
            raise
        return user

    def get_user(self, user_id: str) -> User:
        item = self._get(keys.user_key(user_id))
        if not is_present(item):
            raise UserNotFound(f"User {user_id} does not exist")
        return User.model_validate(item)

    def change_user(self, user_id: str, changes: dict[str, Any]) -> User:
        """Sets the fields given (None removes one) on an existing user; the user as changed."""
        sets, removes, names, values = merge_patch_update(changes)
        update = " ".join(
            part
            for part in (sets and "SET " + ", ".join(sets), removes and "REMOVE " + ", ".join(removes))
            if part
        )
        if not update:
            return self.get_user(user_id)
        try:
            response = self._call(
                "update_item",
                TableName=self.table_name,
                Key=serialize(keys.user_key(user_id)),
                UpdateExpression=update,
                ConditionExpression="attribute_exists(PK) AND attribute_not_exists(erasingSince)",
                ExpressionAttributeNames=names,
                **({"ExpressionAttributeValues": serialize(values)} if values else {}),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise UserNotFound(f"User {user_id} does not exist") from None
            raise
        return User.model_validate(deserialize(response["Attributes"]))

    def list_users(self, limit: int = 25, next_token: str | None = None) -> Page[User]:
        items, token = self._query_gsi(LISTING_USERS, keys.USERS, limit, next_token)
        return Page[User](items=[User.model_validate(i) for i in items], nextToken=token)
