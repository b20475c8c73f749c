"""The twin's in-memory DynamoDB keeps DynamoDB's request rules (ClientRequestToken,
all-or-nothing transactions isolated from other threads), as DynamoDB documents them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from infrastructure.local import moto_dynamodb
from infrastructure.local.moto_dynamodb import DYNAMODB_RULES

TABLE = "rules"


@pytest.fixture
def client() -> Iterator[Any]:
    DYNAMODB_RULES.install()
    try:
        with mock_aws():
            dynamodb = boto3.client("dynamodb", region_name="us-east-1")
            dynamodb.create_table(
                TableName=TABLE,
                KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            dynamodb.put_item(TableName=TABLE, Item={"PK": {"S": "counter"}, "n": {"N": "0"}})
            yield dynamodb
    finally:
        DYNAMODB_RULES.uninstall()


def _increment(condition: str = "attribute_exists(PK)") -> dict[str, Any]:
    return {
        "Update": {
            "TableName": TABLE,
            "Key": {"PK": {"S": "counter"}},
            "UpdateExpression": "SET n = n + :one",
            "ConditionExpression": condition,
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }


def _put(pk: str, condition: str = "attribute_not_exists(PK)") -> dict[str, Any]:
    return {"Put": {"TableName": TABLE, "Item": {"PK": {"S": pk}}, "ConditionExpression": condition}}


def _count(client: Any) -> int:
    item = client.get_item(TableName=TABLE, Key={"PK": {"S": "counter"}}, ConsistentRead=True)["Item"]
    return int(item["n"]["N"])


def _exists(client: Any, pk: str) -> bool:
    return "Item" in client.get_item(TableName=TABLE, Key={"PK": {"S": pk}}, ConsistentRead=True)


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_the_same_token_and_contents_is_applied_once_and_answered_alike(client: Any) -> None:
    items = [_increment(), _put("a")]
    first = client.transact_write_items(TransactItems=items, ClientRequestToken="t-1")
    again = client.transact_write_items(TransactItems=items, ClientRequestToken="t-1")
    assert first["ResponseMetadata"]["HTTPStatusCode"] == again["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert _count(client) == 1  # the retry wrote nothing (its Put's condition would have failed)
    # Without a token, the same transaction is a new request, decided by its conditions.
    with pytest.raises(ClientError) as refused:
        client.transact_write_items(TransactItems=items)
    assert _code(refused) == "TransactionCanceledException"


def test_the_same_token_with_other_contents_is_refused(client: Any) -> None:
    client.transact_write_items(TransactItems=[_increment(), _put("a")], ClientRequestToken="t-2")
    with pytest.raises(ClientError) as refused:
        client.transact_write_items(TransactItems=[_increment(), _put("b")], ClientRequestToken="t-2")
    assert _code(refused) == "IdempotentParameterMismatchException"
    assert (_count(client), _exists(client, "b")) == (1, False)


def test_a_cancelled_transaction_holds_no_token(client: Any) -> None:
    blocked = [_increment(), _put("c", condition="attribute_exists(PK)")]
    with pytest.raises(ClientError) as cancelled:
        client.transact_write_items(TransactItems=blocked, ClientRequestToken="t-3")
    assert _code(cancelled) == "TransactionCanceledException"
    reasons = [r["Code"] for r in cancelled.value.response["CancellationReasons"]]
    assert reasons == ["None", "ConditionalCheckFailed"]
    assert _count(client) == 0  # nothing of it was written

    client.put_item(TableName=TABLE, Item={"PK": {"S": "c"}})
    client.transact_write_items(TransactItems=blocked, ClientRequestToken="t-3")
    assert _count(client) == 1  # the same token again is a new request, now applied


def test_a_token_is_forgotten_after_the_window(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    items = [_increment()]
    client.transact_write_items(TransactItems=items, ClientRequestToken="t-4")
    monkeypatch.setattr(moto_dynamodb, "TOKEN_WINDOW_S", 0.0)
    client.transact_write_items(TransactItems=items, ClientRequestToken="t-4")
    assert _count(client) == 2


def test_a_write_that_fails_while_applying_undoes_the_transactions_earlier_writes(client: Any) -> None:
    client.put_item(TableName=TABLE, Item={"PK": {"S": "text"}, "n": {"S": "not a number"}})
    adding_to_text = {
        "Update": {
            "TableName": TABLE,
            "Key": {"PK": {"S": "text"}},
            "UpdateExpression": "SET n = n + :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }
    with pytest.raises(ClientError):
        client.transact_write_items(TransactItems=[_put("d"), _increment(), adding_to_text])
    assert (_exists(client, "d"), _count(client)) == (False, 0)


def test_failing_transactions_never_undo_what_other_threads_wrote(client: Any) -> None:
    """moto alone restores a copy of the table when a transaction fails, so a write
    another thread committed in between disappears."""
    threads, rounds = 8, 25
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for r in range(rounds):
                client.transact_write_items(TransactItems=[_increment(), _put(f"w-{n}-{r}")])
                with pytest.raises(ClientError):  # fails its condition on the counter
                    client.transact_write_items(
                        TransactItems=[_put(f"x-{n}-{r}"), _increment(condition="attribute_not_exists(PK)")]
                    )
        except BaseException as exc:  # reported below, from the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert _count(client) == threads * rounds
    written = client.scan(TableName=TABLE, ConsistentRead=True)["Items"]
    keys = {item["PK"]["S"] for item in written}
    assert {f"w-{n}-{r}" for n in range(threads) for r in range(rounds)} <= keys
    assert not any(k.startswith("x-") for k in keys)
