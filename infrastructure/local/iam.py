"""IAM in the local twin: every AWS call a handler makes is authorised against its role.

Neither moto's DynamoDB nor DynamoDB Local checks IAM, so a role that lacks a grant works
locally and fails on AWS. While :func:`enforcing` is active, every botocore call made on
behalf of a principal (a Lambda function's execution role, a state machine's role, an
API integration's role) is turned into the IAM requests AWS would authorise
(:mod:`infrastructure.local.iam_requests`), and each is evaluated against that role's
policies from the synthesized template (:mod:`infrastructure.local.iam_policies`) before
the call is sent. A request no statement allows raises the ``AccessDeniedException`` AWS
raises.

This module holds who makes a call (:class:`Principal`, :func:`acting_as`, :func:`bind`),
the :class:`Authorizer` of one template's roles with its record of what was allowed and
denied, the botocore patch that enforces it, and the usage reports drawn from that record.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import fnmatch
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from infrastructure.local.iam_policies import Request, RolePolicy, managed_documents, policy_statements
from infrastructure.local.iam_requests import Arns, KeySchemas, dynamodb_requests, generic_requests
from infrastructure.local.template_specs import LocalTemplate


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
            documents = [*role.documents, *managed_documents(role.managed_policy_arns)]
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
        for document in [*policy.role.documents, *managed_documents(policy.role.managed_policy_arns)]:
            for statement in policy_statements(document):
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
