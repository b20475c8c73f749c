"""DynamoDB's request rules on moto's in-memory tables (the twin's fast tiers).

moto 5.x differs from DynamoDB where this project relies on DynamoDB:

* It ignores `ClientRequestToken`. DynamoDB applies a TransactWriteItems once per token
  for 10 minutes: a retry with the same token and contents answers success and writes
  nothing, the same token with other contents is refused with
  IdempotentParameterMismatchException. The data layer counts on that when a task is
  retried after its function ran out of time with its transaction committed (the answer
  lost): on moto the retry's conditions failed and the request was answered as if it had
  never been made (an unregistration answered 404 `NotRegistered`).
* Its transactions are not isolated. It copies every table a transaction touches and, when
  a condition fails, puts the copy back, undoing whatever another thread wrote meanwhile;
  and nothing keeps two threads' requests apart.

Here every item read and write of moto's DynamoDB backend runs under one lock (DynamoDB's
single-item requests are atomic and its transactions serializable); a transaction checks
every condition before it writes anything and, should a write fail, undoes only its own
writes; and tokens are kept as DynamoDB keeps them. DynamoDB Local does all of this itself.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from infrastructure.local.patching import Patches, Replacement

# How long DynamoDB holds a ClientRequestToken after the request that used it.
TOKEN_WINDOW_S = 600.0
MAX_TRANSACT_ITEMS = 100
_OPERATIONS = ("ConditionCheck", "Put", "Delete", "Update")

# One lock for every backend: requests are short, and the engine's threads share one process.
LOCK = threading.RLock()


def _locked(function: Callable[..., Any]) -> Callable[..., Any]:
    def locked(*args: Any, **kwargs: Any) -> Any:
        with LOCK:
            return function(*args, **kwargs)

    locked.__name__ = getattr(function, "__name__", "locked")
    locked.__doc__ = function.__doc__
    return locked


def _item_key(table: Any, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        return dict(op["Key"])
    attrs = op["Item"]
    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attrs[table.range_key_attr]
    return key


def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
    """TransactWriteItems, all or nothing, isolated from every other request."""
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > MAX_TRANSACT_ITEMS:
        raise TooManyTransactionsException()
    with LOCK:
        targets: set[tuple[str, str]] = set()
        planned: list[tuple[int, str, dict[str, Any], dict[str, Any]]] = []
        reasons: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
        # First every condition, on the items as they are: no two actions name one item,
        # so no action's write can change what another one's condition reads.
        for index, entry in enumerate(transact_items):
            if len(entry) > 1:
                raise TransactWriteSingleOpException()
            op_type, op = next(iter(entry.items()))
            try:
                if op_type not in _OPERATIONS:
                    raise ValueError("Unsupported transaction operation")
                table = backend.get_table(op["TableName"])
                key = _item_key(table, op_type, op)
                target = (str(op["TableName"]), str(dict(sorted(key.items()))))
                if target in targets:
                    raise MultipleTransactionsException()
                targets.add(target)
                current = backend.get_item(op["TableName"], key)
                condition = op.get("ConditionExpression")
                if condition is not None and not get_filter_expression(
                    condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                ).expr(current):
                    old = None
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current is not None:
                        old = current.to_json()["Attributes"]
                    reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
                    continue
                reasons.append((None, None, None))
                planned.append((index, op_type, op, key))
            except MockValidationException:
                raise
            except Exception as exc:  # what moto reports as the action's cancellation reason
                reasons.append((type(exc).__name__, str(exc), None))
        if any(code is not None for code, _, _ in reasons):
            raise TransactionCanceledException(reasons)

        undo: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        writing = 0
        try:
            for index, op_type, op, key in planned:
                writing = index
                if op_type != "ConditionCheck":
                    _write(backend, op_type, op, key, undo)
        except BaseException as exc:
            _undo(backend, undo)
            if isinstance(exc, MockValidationException) or not isinstance(exc, Exception):
                raise
            failed: list[tuple[str | None, str | None, None]] = [(None, None, None)] * len(transact_items)
            failed[writing] = (type(exc).__name__, str(exc), None)
            raise TransactionCanceledException(failed) from exc


def _write(
    backend: Any,
    op_type: str,
    op: dict[str, Any],
    key: dict[str, Any],
    undo: list[tuple[str, dict[str, Any], dict[str, Any] | None]],
) -> None:
    table_name = op["TableName"]
    before = backend.get_item(table_name, key)
    undo.append((table_name, key, copy.deepcopy(before.to_json()["Attributes"]) if before else None))
    if op_type == "Put":
        backend.put_item(table_name, op["Item"])
    elif op_type == "Delete":
        backend.delete_item(table_name, key)
    else:
        backend.update_item(
            table_name,
            key,
            update_expression=op["UpdateExpression"],
            expression_attribute_names=op.get("ExpressionAttributeNames"),
            expression_attribute_values=op.get("ExpressionAttributeValues"),
        )


def _undo(backend: Any, undo: list[tuple[str, dict[str, Any], dict[str, Any] | None]]) -> None:
    """Puts back, newest first, the items a failed transaction had written."""
    for table_name, key, attrs in reversed(undo):
        if attrs is not None:
            backend.put_item(table_name, attrs)
        elif backend.get_item(table_name, key) is not None:
            backend.delete_item(table_name, key)


def _mismatch() -> Exception:
    from moto.dynamodb.exceptions import ERROR_TYPE_PREFIX, DynamodbException

    return DynamodbException(
        ERROR_TYPE_PREFIX + "IdempotentParameterMismatchException",
        "The request uses the same client token as a previous, but non-identical request.",
    )


def _digest(body: dict[str, Any]) -> str:
    contents = {name: value for name, value in body.items() if name != "ClientRequestToken"}
    return hashlib.sha256(json.dumps(contents, sort_keys=True, default=str).encode()).hexdigest()


def _held_tokens(backend: Any) -> dict[str, tuple[str, float]]:
    """The backend's tokens still within DynamoDB's window: token -> (digest, completed at)."""
    tokens: dict[str, tuple[str, float]] = backend.__dict__.setdefault("_client_request_tokens", {})
    now = time.monotonic()
    for token in [t for t, (_, at) in tokens.items() if now - at >= TOKEN_WINDOW_S]:
        del tokens[token]
    return tokens


def _token_aware(respond: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wraps moto's TransactWriteItems response with DynamoDB's ClientRequestToken rule."""

    def transact_write_items(handler: Any) -> Any:
        from moto.core.responses import ActionResult

        token = handler.body.get("ClientRequestToken")
        if token is None:
            return respond(handler)
        digest = _digest(handler.body)
        with LOCK:
            tokens = _held_tokens(handler.dynamodb_backend)
            held = tokens.get(token)
            if held is not None:
                if held[0] != digest:
                    raise _mismatch()
                return ActionResult({"ConsumedCapacity": [], "ItemCollectionMetrics": {}})
            result = respond(handler)
            # Only a request that was applied holds its token: a cancelled one wrote nothing.
            tokens[token] = (digest, time.monotonic())
            return result

    return transact_write_items


def _replacements() -> Iterable[Replacement]:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.responses import DynamoHandler

    for name in ("get_item", "put_item", "update_item", "delete_item", "query", "scan"):
        yield DynamoDBBackend, name, _locked(getattr(DynamoDBBackend, name))
    yield DynamoDBBackend, "transact_write_items", transact_write_items
    yield DynamoHandler, "transact_get_items", _locked(DynamoHandler.transact_get_items)
    yield DynamoHandler, "transact_write_items", _token_aware(DynamoHandler.transact_write_items)


DYNAMODB_RULES = Patches(_replacements)
