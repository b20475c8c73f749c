"""The IAM requests AWS authorises for one AWS call, as the local twin models them.

* one request per call, ``service:Operation`` on the resource the call names (a table,
  ``table/NAME/index/INDEX`` for an index query, a state machine, a function);
* ``TransactWriteItems`` and ``TransactGetItems`` have no action of their own: each item
  is authorised as its item action (``PutItem``, ``UpdateItem``, ``DeleteItem``,
  ``ConditionCheckItem``, ``GetItem``) on its table;
* ``BatchGetItem``/``BatchWriteItem``: the batch action on every table named;
* the ``dynamodb:LeadingKeys`` condition key: the partition key values the call touches.

Apart from :mod:`infrastructure.local.iam` (which enforces the answers) because turning
a call's parameters into requests is a model of AWS's API, not of who may call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infrastructure.local.iam_policies import Request
from infrastructure.local.template_specs import LocalTemplate

_TRANSACT_ITEM_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


class Arns:
    """Resource ARNs of this account and region, as the calls name them."""

    def __init__(self, region: str, account: str) -> None:
        self.region = region
        self.account = account

    def table(self, name_or_arn: str, index: str | None = None) -> str:
        arn = (
            name_or_arn
            if name_or_arn.startswith("arn:")
            else f"arn:aws:dynamodb:{self.region}:{self.account}:table/{name_or_arn}"
        )
        return f"{arn}/index/{index}" if index else arn

    def queue(self, url_or_arn: str) -> str:
        """A queue's ARN from its URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`)."""
        if url_or_arn.startswith("arn:"):
            return url_or_arn
        account, name = url_or_arn.rstrip("/").split("/")[-2:]
        return f"arn:aws:sqs:{self.region}:{account}:{name}"

    def function(self, name_or_arn: str) -> str:
        if name_or_arn.startswith("arn:"):
            return name_or_arn
        if ":function:" in name_or_arn:  # a partial ARN
            return f"arn:aws:lambda:{self.region}:{name_or_arn}"
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{name_or_arn}"


def _attribute_value(value: Any) -> str:
    # A key attribute in DynamoDB JSON ({"S": "..."}), or a plain value from a resource.
    if isinstance(value, Mapping) and len(value) == 1:
        (inner,) = value.values()
        return str(inner)
    return str(value)


class KeySchemas:
    """Partition key attribute of each table and index (for `dynamodb:LeadingKeys`)."""

    def __init__(self, template: LocalTemplate, table_name: str) -> None:
        self.table_name = table_name
        spec = template.table
        self.table_key: str = next(k["AttributeName"] for k in spec.key_schema if k["KeyType"] == "HASH")
        self.index_keys: dict[str, str] = {
            index["IndexName"]: next(k["AttributeName"] for k in index["KeySchema"] if k["KeyType"] == "HASH")
            for index in [*spec.global_secondary_indexes, *spec.local_secondary_indexes]
        }

    def partition_attribute(self, index: str | None) -> str:
        return self.index_keys.get(index, self.table_key) if index else self.table_key

    def leading_keys(self, item_or_key: Mapping[str, Any] | None) -> tuple[str, ...]:
        if not item_or_key or self.table_key not in item_or_key:
            return ()
        return (_attribute_value(item_or_key[self.table_key]),)

    def query_leading_keys(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        attribute = self.partition_attribute(params.get("IndexName"))
        names = dict(params.get("ExpressionAttributeNames") or {})
        values = params.get("ExpressionAttributeValues") or {}
        condition = str(params.get("KeyConditionExpression", ""))
        for clause in condition.replace("(", " ").replace(")", " ").split(" AND "):
            left, sep, right = clause.partition("=")
            name, placeholder = left.strip(), right.strip()
            if not sep or not placeholder.startswith(":"):
                continue
            if names.get(name, name) == attribute and placeholder in values:
                return (_attribute_value(values[placeholder]),)
        for name, condition_spec in (params.get("KeyConditions") or {}).items():
            if name == attribute:
                return tuple(_attribute_value(v) for v in condition_spec.get("AttributeValueList", []))
        return ()


def _leading(values: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {"dynamodb:leadingkeys": values}


def dynamodb_requests(
    operation: str, params: Mapping[str, Any], arns: Arns, keys: KeySchemas
) -> list[Request]:
    """The IAM requests AWS authorises for one DynamoDB call."""
    if operation in ("TransactWriteItems", "TransactGetItems"):
        requests = []
        for entry in params.get("TransactItems", []):
            ((kind, body),) = entry.items()
            item = body.get("Item") or body.get("Key")
            requests.append(
                Request(
                    f"dynamodb:{_TRANSACT_ITEM_ACTIONS[kind]}",
                    arns.table(body["TableName"]),
                    _leading(keys.leading_keys(item)),
                )
            )
        return requests
    if operation == "BatchGetItem":
        return [
            Request(
                "dynamodb:BatchGetItem",
                arns.table(table),
                _leading(tuple(v for k in spec.get("Keys", []) for v in keys.leading_keys(k))),
            )
            for table, spec in params.get("RequestItems", {}).items()
        ]
    if operation == "BatchWriteItem":
        requests = []
        for table, writes in params.get("RequestItems", {}).items():
            values: list[str] = []
            for write in writes:
                ((_, body),) = write.items()
                values.extend(keys.leading_keys(body.get("Item") or body.get("Key")))
            requests.append(Request("dynamodb:BatchWriteItem", arns.table(table), _leading(tuple(values))))
        return requests
    action = f"dynamodb:{operation}"
    table = params.get("TableName")
    if table is None:
        return [Request(action, "*")]
    resource = arns.table(table, params.get("IndexName"))
    if operation in ("GetItem", "DeleteItem", "UpdateItem"):
        return [Request(action, resource, _leading(keys.leading_keys(params.get("Key"))))]
    if operation == "PutItem":
        return [Request(action, resource, _leading(keys.leading_keys(params.get("Item"))))]
    if operation == "Query":
        return [Request(action, resource, _leading(keys.query_leading_keys(params)))]
    return [Request(action, resource)]


# Operations whose IAM action is not named after them.
_ACTION_NAMES = {
    ("lambda", "Invoke"): "lambda:InvokeFunction",
    ("lambda", "InvokeWithResponseStream"): "lambda:InvokeFunction",
    # SQS's batch calls are authorised as their single actions.
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
}


def generic_requests(prefix: str, operation: str, params: Mapping[str, Any], arns: Arns) -> list[Request]:
    """Other services: the action on the resource the call names, else `*`."""
    action = _ACTION_NAMES.get((prefix, operation), f"{prefix}:{operation}")
    if prefix == "lambda" and "FunctionName" in params:
        return [Request(action, arns.function(str(params["FunctionName"])))]
    if prefix == "sqs" and "QueueUrl" in params:
        return [Request(action, arns.queue(str(params["QueueUrl"])))]
    for name in ("stateMachineArn", "executionArn", "TopicArn", "QueueUrl", "resourceArn"):
        if name in params:
            return [Request(action, str(params[name]))]
    return [Request(action, "*")]
