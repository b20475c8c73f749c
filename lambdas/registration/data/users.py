"""Users."""

from __future__ import annotations

from collections.abc import Callable

from botocore.exceptions import ClientError

from registration import keys
from registration.data.dynamo import error_code, now_iso, serialize
from registration.data.items import user_item
from registration.data.pages import LISTING_USERS, Listings
from registration.data.transactions import Transactions
from registration.errors import UserAlreadyExists, UserNotFound
from registration.models import Completion, NewUser, Page, User


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
        if item is None:
            raise UserNotFound(f"User {user_id} does not exist")
        return User.model_validate(item)

    def list_users(self, limit: int = 25, next_token: str | None = None) -> Page[User]:
        items, token = self._query_gsi(LISTING_USERS, keys.USERS, limit, next_token)
        return Page[User](items=[User.model_validate(i) for i in items], nextToken=token)
