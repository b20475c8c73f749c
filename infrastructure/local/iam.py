"""IAM in the local twin: every AWS call a handler makes is authorised against its role.

Neither moto's DynamoDB nor DynamoDB Local checks IAM, so a role that lacks a grant works
locally and fails on AWS. While :func:`enforcing` is active, every botocore call made on
behalf of a principal (a Lambda function's execution role, a state machine's role, an
API integration's role) is turned into the IAM requests AWS would authorise, and each is
evaluated against that role's policies from the synthesized template before the call is
sent. A request no statement allows raises the ``AccessDeniedException`` AWS raises.

What AWS authorises, modelled here:

* one request per call, ``service:Operation`` on the resource the call names (a table,
  ``table/NAME/index/INDEX`` for an index query, a state machine, a function);
* ``TransactWriteItems`` and ``TransactGetItems`` have no action of their own: each item
  is authorised as its item action (``PutItem``, ``UpdateItem``, ``DeleteItem``,
  ``ConditionCheckItem``, ``GetItem``) on its table;
* ``BatchGetItem``/``BatchWriteItem``: the batch action on every table named;
* the ``dynamodb:LeadingKeys`` condition key: the partition key values the call touches.

Action and resource matching is moto's maintained evaluator
(:class:`moto.iam.access_control.IAMPolicyStatement`). Its condition support is a stub
(unknown operators pass), so conditions are evaluated here, strictly: an operator or a
condition key this module does not know raises :class:`UnsupportedPolicy`, never allows.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import fnmatch
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from infrastructure.local.template_specs import LocalTemplate, RoleSpec


class UnsupportedPolicy(RuntimeError):
    """A policy uses a condition operator or key the twin cannot evaluate."""


@dataclass(frozen=True)
class Principal:
    """Who makes a call: a role of the template, in a session (a function's name)."""

    role_arn: str
    session: str

    @property
    def arn(self) -> str:
        account = self.role_arn.split(":")[4]
        role_name = self.role_arn.rsplit("/", 1)[-1]
        return f"arn:aws:sts::{account}:assumed-role/{role_name}/{self.session}"


@dataclass(frozen=True)
class Request:
    """One IAM authorisation request: an action on a resource, with condition values."""

    action: str
    resource: str
    context: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


# --- policy evaluation ------------------------------------------------------------------

SUPPORTED_CONDITION_KEYS = frozenset({"dynamodb:leadingkeys"})
_Matcher = Callable[[str, str], bool]
_STRING_OPERATORS: dict[str, tuple[_Matcher, bool]] = {
    "StringEquals": (lambda pattern, value: value == pattern, False),
    "StringNotEquals": (lambda pattern, value: value == pattern, True),
    "StringEqualsIgnoreCase": (lambda pattern, value: value.lower() == pattern.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda pattern, value: value.lower() == pattern.lower(), True),
    "StringLike": (lambda pattern, value: _like(pattern, value), False),
    "StringNotLike": (lambda pattern, value: _like(pattern, value), True),
}


def _like(pattern: str, value: str) -> bool:
    # IAM's wildcards: `*` any run of characters, `?` one character; nothing else is special.
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, tuple[str, ...]]) -> bool:
    qualifier, _, base = operator.rpartition(":")
    if base.endswith("IfExists"):
        raise UnsupportedPolicy(f"condition operator {operator} is not modelled by the local twin")
    if base not in _STRING_OPERATORS or qualifier not in ("", "ForAllValues", "ForAnyValue"):
        raise UnsupportedPolicy(f"condition operator {operator} is not modelled by the local twin")
    if key.lower() not in SUPPORTED_CONDITION_KEYS:
        raise UnsupportedPolicy(f"condition key {key} is not modelled by the local twin")
    match, negated = _STRING_OPERATORS[base]
    patterns = [str(p) for p in (expected if isinstance(expected, list) else [expected])]
    values = context.get(key.lower(), ())

    def one(value: str) -> bool:
        found = any(match(p, value) for p in patterns)
        return not found if negated else found

    if qualifier == "ForAllValues":
        # AWS: true when every value matches, and so also when the request has none.
        return all(one(v) for v in values)
    if qualifier == "ForAnyValue":
        return any(one(v) for v in values)
    # A single-valued operator: the key must be present and (for a list) each value match.
    return bool(values) and all(one(v) for v in values)


def _conditions_hold(conditions: Mapping[str, Any], context: Mapping[str, tuple[str, ...]]) -> bool:
    return all(
        _condition_holds(operator, key, expected, context)
        for operator, entries in conditions.items()
        for key, expected in entries.items()
    )


def _statements(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    statements = document.get("Statement", [])
    return list(statements) if isinstance(statements, list) else [statements]


def _lowered_actions(statement: Mapping[str, Any]) -> dict[str, Any]:
    # IAM action names are case-insensitive; moto's matcher is not.
    plain = {k: v for k, v in statement.items() if k != "Condition"}
    for element in ("Action", "NotAction"):
        if element in plain:
            value = plain[element]
            plain[element] = [a.lower() for a in value] if isinstance(value, list) else str(value).lower()
    return plain


class RolePolicy:
    """A role's identity policies, evaluated as IAM does: an explicit Deny wins, otherwise
    some Allow must match, otherwise the request is implicitly denied."""

    def __init__(self, role: RoleSpec, documents: Sequence[Mapping[str, Any]]) -> None:
        from moto.iam.access_control import IAMPolicyStatement

        self.role = role
        self._statements = [
            (IAMPolicyStatement(_lowered_actions(s)), s.get("Effect"), s.get("Condition") or {})
            for d in documents
            for s in _statements(d)
        ]

    def allows(self, request: Request) -> bool:
        from moto.iam.access_control import PermissionResult

        allowed = False
        action = request.action.lower()
        for statement, effect, conditions in self._statements:
            result = statement.is_action_permitted(action, request.resource)
            if result == PermissionResult.NEUTRAL:
                continue
            if conditions and not _conditions_hold(conditions, request.context):
                continue
            if effect == "Deny":
                return False
            allowed = True
        return allowed


def _managed_documents(arns: Iterable[str]) -> list[dict[str, Any]]:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    managed = json.loads(aws_managed_policies_data)
    documents = []
    for arn in arns:
        name = arn.rsplit("/", 1)[-1]
        if name not in managed:
            raise UnsupportedPolicy(f"managed policy {arn} is unknown to the local twin")
        documents.append(managed[name]["Document"])
    return documents


# --- calls to requests ------------------------------------------------------------------

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
}


def generic_requests(prefix: str, operation: str, params: Mapping[str, Any], arns: Arns) -> list[Request]:
    """Other services: the action on the resource the call names, else `*`."""
    action = _ACTION_NAMES.get((prefix, operation), f"{prefix}:{operation}")
    if prefix == "lambda" and "FunctionName" in params:
        return [Request(action, arns.function(str(params["FunctionName"])))]
    for name in ("stateMachineArn", "executionArn", "TopicArn", "QueueUrl", "resourceArn"):
        if name in params:
            return [Request(action, str(params[name]))]
    return [Request(action, "*")]


# --- enforcement ------------------------------------------------------------------------

_acting: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "local_iam_principal", default=None
)
PRINCIPAL_ATTRIBUTE = "_local_iam_principal"


@contextlib.contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    """Calls made in this block (this thread, this context) are made by `principal`."""
    token = _acting.set(principal)
    try:
        yield
    finally:
        _acting.reset(token)


def current_principal() -> Principal | None:
    return _acting.get()


def bind(client: Any, principal: Principal) -> Any:
    """Mark a boto3 client: every call it makes is made by `principal`."""
    setattr(client, PRINCIPAL_ATTRIBUTE, principal)
    return client


# HTTP status of AccessDeniedException per service (DynamoDB and Step Functions answer 400).
_DENIED_STATUS = {"lambda": 403}


def access_denied(principal: Principal, request: Request, operation: str) -> ClientError:
    service = request.action.split(":", 1)[0]
    message = (
        f"User: {principal.arn} is not authorized to perform: {request.action} on resource: "
        f"{request.resource} because no identity-based policy allows the {request.action} action"
    )
    return ClientError(
        {
            "Error": {"Code": "AccessDeniedException", "Message": message},
            "ResponseMetadata": {
                "HTTPStatusCode": _DENIED_STATUS.get(service, 400),
                "RequestId": str(uuid.uuid4()),
            },
        },
        operation,
    )


class Authorizer:
    """The roles of one template, and a record of every request it decided."""

    def __init__(self, template: LocalTemplate, *, table_name: str, source: str | None = None) -> None:
        self.template = template
        # Where the template came from (a path), to tell the real stack from variants.
        self.source = source
        self.arns = Arns(template.region, template.account)
        self.keys = KeySchemas(template, table_name)
        self._policies: dict[str, RolePolicy] = {}
        for role in template.roles.values():
            documents = [*role.documents, *_managed_documents(role.managed_policy_arns)]
            self._policies[role.arn] = RolePolicy(role, copy.deepcopy(documents))
        self._lock = threading.Lock()
        self.allowed: Counter[tuple[str, str]] = Counter()
        self.denied: Counter[tuple[str, str, str]] = Counter()
        with _INSTALL_LOCK:
            _CREATED.append(self)

    def knows(self, role_arn: str) -> bool:
        return role_arn in self._policies

    def requests(self, service: str, operation: str, params: Mapping[str, Any]) -> list[Request]:
        if service == "dynamodb":
            return dynamodb_requests(operation, params, self.arns, self.keys)
        return generic_requests(service, operation, params, self.arns)

    def check(self, principal: Principal, requests: Sequence[Request], operation: str) -> None:
        """Raise AWS's AccessDeniedException unless the principal's role allows every request."""
        policy = self._policies.get(principal.role_arn)
        for request in requests:
            allowed = policy is not None and policy.allows(request)
            with self._lock:
                if allowed:
                    self.allowed[(principal.role_arn, request.action)] += 1
                else:
                    self.denied[(principal.role_arn, request.action, request.resource)] += 1
            if not allowed:
                raise access_denied(principal, request, operation)

    def authorize_call(
        self, principal: Principal, service: str, operation: str, params: Mapping[str, Any]
    ) -> None:
        self.check(principal, self.requests(service, operation, params), operation)

    def granted_actions(self, role_arn: str) -> list[str]:
        """The actions a role's Allow statements name (as written, wildcards included)."""
        policy = self._policies.get(role_arn)
        if policy is None:
            return []
        actions: set[str] = set()
        for document in [*policy.role.documents, *_managed_documents(policy.role.managed_policy_arns)]:
            for statement in _statements(document):
                if statement.get("Effect") != "Allow" or "Action" not in statement:
                    continue
                value = statement["Action"]
                actions.update(value if isinstance(value, list) else [value])
        return sorted(actions)

    def usage(self) -> dict[str, Any]:
        """Per role: what it grants, what was called and allowed, what was denied."""
        with self._lock:
            allowed = dict(self.allowed)
            denied = dict(self.denied)
        report: dict[str, Any] = {}
        for role in self.template.roles.values():
            used = sorted({a for (r, a) in allowed if r == role.arn})
            report[role.logical_id] = {
                "granted": self.granted_actions(role.arn),
                "used": used,
                "calls": sum(n for (r, _), n in allowed.items() if r == role.arn),
                "denied": sorted(f"{a} on {res}" for (r, a, res) in denied if r == role.arn),
            }
        return report


_ENFORCERS: list[Authorizer] = []
_CREATED: list[Authorizer] = []
_INSTALL_LOCK = threading.Lock()
_original_make_api_call: Any = None


def _authorizer_for(principal: Principal) -> Authorizer | None:
    for authorizer in reversed(list(_ENFORCERS)):
        if authorizer.knows(principal.role_arn):
            return authorizer
    return None


def _make_api_call(self: Any, operation_name: str, api_params: Mapping[str, Any]) -> Any:
    principal = getattr(self, PRINCIPAL_ATTRIBUTE, None) or _acting.get()
    if principal is not None:
        authorizer = _authorizer_for(principal)
        service = self.meta.service_model.signing_name or self.meta.service_model.service_name
        if authorizer is None:
            raise access_denied(principal, Request(f"{service}:{operation_name}", "*"), operation_name)
        authorizer.authorize_call(principal, service, operation_name, api_params)
    return _original_make_api_call(self, operation_name, api_params)


def authorize(principal: Principal, service: str, operation: str, params: Mapping[str, Any]) -> None:
    """Authorise a call that does not go through botocore (the twin's own Lambda invoke,
    API Gateway's integration); nothing to do while no authorizer is enforcing."""
    if not _ENFORCERS:
        return
    authorizer = _authorizer_for(principal)
    if authorizer is None:
        raise access_denied(principal, Request(f"{service}:{operation}", "*"), operation)
    authorizer.authorize_call(principal, service, operation, params)


def install(authorizer: Authorizer) -> None:
    """Authorise every call made by a principal against `authorizer`'s roles from now on."""
    global _original_make_api_call
    from botocore.client import BaseClient

    with _INSTALL_LOCK:
        if authorizer in _ENFORCERS:
            return
        if not _ENFORCERS:
            _original_make_api_call = BaseClient._make_api_call
            BaseClient._make_api_call = _make_api_call  # type: ignore[method-assign]
        _ENFORCERS.append(authorizer)


def uninstall(authorizer: Authorizer) -> None:
    from botocore.client import BaseClient

    global _original_make_api_call
    with _INSTALL_LOCK:
        if authorizer not in _ENFORCERS:
            return
        _ENFORCERS.remove(authorizer)
        if not _ENFORCERS and _original_make_api_call is not None:
            BaseClient._make_api_call = _original_make_api_call  # type: ignore[method-assign]
            _original_make_api_call = None


@contextlib.contextmanager
def enforcing(authorizer: Authorizer) -> Iterator[Authorizer]:
    install(authorizer)
    try:
        yield authorizer
    finally:
        uninstall(authorizer)


def is_enforcing() -> bool:
    return bool(_ENFORCERS)


def merged_usage(source: str) -> dict[str, Any]:
    """`Authorizer.usage()` of every authorizer of this process built from `source`, merged."""
    with _INSTALL_LOCK:
        authorizers = [a for a in _CREATED if a.source == source]
    return merge_usage(a.usage() for a in authorizers)


def merge_usage(reports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for report in reports:
        for role, entry in report.items():
            into = merged.setdefault(
                role, {"granted": entry["granted"], "used": [], "calls": 0, "denied": []}
            )
            into["used"] = sorted(set(into["used"]) | set(entry["used"]))
            into["denied"] = sorted(set(into["denied"]) | set(entry["denied"]))
            into["calls"] += entry["calls"]
    return merged


# Grants the platform uses on a role's behalf (the Lambda runtime's logs, the X-Ray
# daemon, Step Functions' log delivery), never the code: the twin does not model them.
PLATFORM_SERVICES = frozenset({"logs", "xray"})


def unused_grants(entry: Mapping[str, Any]) -> list[str]:
    """Granted actions no call used (wildcard grants count as used when a call matched them),
    leaving out the platform's own (PLATFORM_SERVICES)."""
    used = {a.lower() for a in entry["used"]}
    return [
        g
        for g in entry["granted"]
        if g.split(":", 1)[0].lower() not in PLATFORM_SERVICES
        and not any(fnmatch.fnmatchcase(u, g.lower()) for u in used)
    ]
