"""The twin's IAM evaluation: which requests a call becomes, and how a role decides them."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from infrastructure.local import iam
from infrastructure.local.iam_policies import UnsupportedPolicy
from infrastructure.local.template import parse_template
from tests.fixtures.sample_template import sample_template

REGION = "us-east-1"
ACCOUNT = "123456789012"
TABLE = "sample-table"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}"


def _template_with(statements: list[dict[str, Any]]) -> dict[str, Any]:
    """The sample template whose function role holds exactly `statements`."""
    template = sample_template()
    template["Resources"]["FunctionRolePolicy"]["Properties"]["PolicyDocument"]["Statement"] = statements
    return template


def _authorizer(statements: list[dict[str, Any]]) -> iam.Authorizer:
    template = parse_template(_template_with(statements), region=REGION, account=ACCOUNT, table_name=TABLE)
    return iam.Authorizer(template, table_name=TABLE)


def _principal(authorizer: iam.Authorizer) -> iam.Principal:
    role = authorizer.template.roles["FunctionRole"]
    return iam.Principal(role.arn, "CheckFunction")


def _allowed(authorizer: iam.Authorizer, operation: str, params: dict[str, Any]) -> bool:
    try:
        authorizer.authorize_call(_principal(authorizer), "dynamodb", operation, params)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDeniedException"
        return False
    return True


def _key(pk: str) -> dict[str, Any]:
    return {"PK": {"S": pk}, "SK": {"S": "METADATA"}}


def _allow(actions: list[str], resource: Any = TABLE_ARN, condition: Any = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": actions, "Resource": resource}
    if condition is not None:
        statement["Condition"] = condition
    return statement


def test_a_transaction_needs_each_items_own_action() -> None:
    authorizer = _authorizer([_allow(["dynamodb:PutItem", "dynamodb:UpdateItem"])])
    put_and_update = {
        "TransactItems": [
            {"Put": {"TableName": TABLE, "Item": _key("EVENT#e1")}},
            {"Update": {"TableName": TABLE, "Key": _key("EVENT#e1"), "UpdateExpression": "SET a = :a"}},
        ]
    }
    with_delete = {
        "TransactItems": [
            *put_and_update["TransactItems"],
            {"Delete": {"TableName": TABLE, "Key": _key("EVENT#e2")}},
        ]
    }

    assert _allowed(authorizer, "TransactWriteItems", put_and_update)
    assert not _allowed(authorizer, "TransactWriteItems", with_delete)
    # TransactWriteItems is not itself an action a role can be granted.
    assert not _allowed(
        _authorizer([_allow(["dynamodb:TransactWriteItems"])]), "TransactWriteItems", with_delete
    )


def test_batch_get_needs_its_own_action_not_get_item() -> None:
    params = {"RequestItems": {TABLE: {"Keys": [_key("USER#u1"), _key("EVENT#e1")]}}}

    assert not _allowed(_authorizer([_allow(["dynamodb:GetItem"])]), "BatchGetItem", params)
    assert _allowed(_authorizer([_allow(["dynamodb:BatchGetItem"])]), "BatchGetItem", params)


def test_an_index_query_needs_the_index_resource() -> None:
    query = {
        "TableName": TABLE,
        "IndexName": "GSI1",
        "KeyConditionExpression": "GSI1PK = :pk",
        "ExpressionAttributeValues": {":pk": {"S": "USER#u1"}},
    }
    on_table = _authorizer([_allow(["dynamodb:Query"])])
    on_index = _authorizer([_allow(["dynamodb:Query"], resource=f"{TABLE_ARN}/index/GSI1")])

    assert not _allowed(on_table, "Query", query)
    assert _allowed(on_index, "Query", query)
    on_the_table_itself = {k: v for k, v in query.items() if k != "IndexName"}
    assert not _allowed(on_index, "Query", on_the_table_itself)


def test_another_table_is_denied() -> None:
    authorizer = _authorizer([_allow(["dynamodb:GetItem"])])

    assert _allowed(authorizer, "GetItem", {"TableName": TABLE, "Key": _key("USER#u1")})
    assert not _allowed(authorizer, "GetItem", {"TableName": "other-table", "Key": _key("USER#u1")})


def test_leading_keys_confine_every_item_of_a_call() -> None:
    confined = _authorizer(
        [
            _allow(
                ["dynamodb:PutItem", "dynamodb:BatchGetItem", "dynamodb:Query"],
                condition={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["IDEMPOTENCY#*"]}},
            )
        ]
    )

    assert _allowed(confined, "PutItem", {"TableName": TABLE, "Item": _key("IDEMPOTENCY#k1")})
    assert not _allowed(confined, "PutItem", {"TableName": TABLE, "Item": _key("EVENT#e1")})
    mixed = {"RequestItems": {TABLE: {"Keys": [_key("IDEMPOTENCY#k1"), _key("EVENT#e1")]}}}
    assert not _allowed(confined, "BatchGetItem", mixed)
    query = {
        "TableName": TABLE,
        "KeyConditionExpression": "#pk = :pk AND begins_with(SK, :s)",
        "ExpressionAttributeNames": {"#pk": "PK"},
        "ExpressionAttributeValues": {":pk": {"S": "EVENT#e1"}, ":s": {"S": "REG#"}},
    }
    assert not _allowed(confined, "Query", query)
    query["ExpressionAttributeValues"][":pk"] = {"S": "IDEMPOTENCY#k1"}
    assert _allowed(confined, "Query", query)


def test_an_explicit_deny_wins_over_an_allow() -> None:
    authorizer = _authorizer(
        [
            _allow(["dynamodb:*"]),
            {"Effect": "Deny", "Action": "dynamodb:DeleteItem", "Resource": "*"},
        ]
    )

    assert _allowed(authorizer, "UpdateItem", {"TableName": TABLE, "Key": _key("EVENT#e1")})
    assert not _allowed(authorizer, "DeleteItem", {"TableName": TABLE, "Key": _key("EVENT#e1")})


def test_action_names_are_case_insensitive() -> None:
    authorizer = _authorizer([_allow(["DynamoDB:getitem"])])

    assert _allowed(authorizer, "GetItem", {"TableName": TABLE, "Key": _key("USER#u1")})


@pytest.mark.parametrize(
    "condition",
    [
        {"ForAllValues:StringLike": {"dynamodb:Attributes": ["PK"]}},
        {"NumericLessThan": {"dynamodb:LeadingKeys": "5"}},
        {"StringLikeIfExists": {"dynamodb:LeadingKeys": "USER#*"}},
    ],
)
def test_a_condition_the_twin_cannot_evaluate_is_an_error_not_an_allow(condition: dict[str, Any]) -> None:
    authorizer = _authorizer([_allow(["dynamodb:GetItem"], condition=condition)])

    with pytest.raises(UnsupportedPolicy):
        _allowed(authorizer, "GetItem", {"TableName": TABLE, "Key": _key("USER#u1")})


def test_the_denial_names_the_principal_action_and_resource_as_aws_does() -> None:
    authorizer = _authorizer([_allow(["dynamodb:GetItem"])])
    principal = _principal(authorizer)

    with pytest.raises(ClientError) as raised:
        authorizer.authorize_call(principal, "dynamodb", "DeleteItem", {"TableName": TABLE, "Key": _key("U")})

    error = raised.value.response["Error"]
    assert error["Code"] == "AccessDeniedException"
    assert error["Message"] == (
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/FunctionRole/CheckFunction is not authorized to "
        f"perform: dynamodb:DeleteItem on resource: {TABLE_ARN} because no identity-based policy "
        "allows the dynamodb:DeleteItem action"
    )


def test_managed_policies_are_read_from_awss_published_documents() -> None:
    template = _template_with([])
    role = template["Resources"]["FunctionRole"]["Properties"]
    role["ManagedPolicyArns"] = ["arn:aws:iam::aws:policy/AmazonDynamoDBReadOnlyAccess"]
    authorizer = iam.Authorizer(
        parse_template(template, region=REGION, account=ACCOUNT, table_name=TABLE), table_name=TABLE
    )

    assert _allowed(authorizer, "GetItem", {"TableName": TABLE, "Key": _key("USER#u1")})
    assert not _allowed(authorizer, "PutItem", {"TableName": TABLE, "Item": _key("USER#u1")})


def test_calls_made_as_a_principal_go_through_the_authorizer_and_others_do_not() -> None:
    authorizer = _authorizer([_allow(["dynamodb:DescribeTable"], resource="*")])
    with mock_aws(), iam.enforcing(authorizer):
        client = boto3.client("dynamodb", region_name=REGION)
        with iam.acting_as(_principal(authorizer)):
            with pytest.raises(client.exceptions.ResourceNotFoundException):
                client.describe_table(TableName=TABLE)  # allowed: reaches the (empty) database
            with pytest.raises(ClientError) as raised:
                client.list_tables()
        assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
        assert client.list_tables()["TableNames"] == []  # no principal: the twin's own call

    assert authorizer.usage()["FunctionRole"]["used"] == ["dynamodb:DescribeTable"]
    assert authorizer.usage()["FunctionRole"]["denied"] == ["dynamodb:ListTables on *"]
