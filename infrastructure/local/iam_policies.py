"""IAM policy evaluation in the local twin: does a role's policy allow a request.

Action and resource matching is moto's maintained evaluator
(:class:`moto.iam.access_control.IAMPolicyStatement`). Its condition support is a stub
(unknown operators pass), so conditions are evaluated here, strictly: an operator or a
condition key this module does not know raises :class:`UnsupportedPolicy`, never allows.

Apart from :mod:`infrastructure.local.iam` (which decides who makes a call and enforces
the answer) because evaluating a policy document knows nothing of calls or principals.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infrastructure.local.template_specs import RoleSpec


class UnsupportedPolicy(RuntimeError):
    """A policy uses a condition operator or key the twin cannot evaluate."""


@dataclass(frozen=True)
class Request:
    """One IAM authorisation request: an action on a resource, with condition values."""

    action: str
    resource: str
    context: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


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


def policy_statements(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A policy document's statements (a lone statement as a list of one)."""
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
            for s in policy_statements(d)
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


def managed_documents(arns: Iterable[str]) -> list[dict[str, Any]]:
    """The documents of AWS managed policies, by ARN, from moto's copy of them."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    managed = json.loads(aws_managed_policies_data)
    documents = []
    for arn in arns:
        name = arn.rsplit("/", 1)[-1]
        if name not in managed:
            raise UnsupportedPolicy(f"managed policy {arn} is unknown to the local twin")
        documents.append(managed[name]["Document"])
    return documents
