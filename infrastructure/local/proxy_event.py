"""HTTP requests as API Gateway REST (v1) proxy events, and Lambda proxy results back.

The local server hands the API Lambda exactly what API Gateway's `AWS_PROXY`
integration would: the matched resource and its path parameters, single- and
multi-value query strings and headers, the body as text, and a request context whose
`requestId` is the correlation id the handler logs.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

STAGE = "local"
API_ID = "local"

_PARAMETER = re.compile(r"^\{([^{}/]+)\}$")


@dataclass(frozen=True)
class RouteTemplate:
    """One API Gateway resource path (`/events/{eventId}/register`) and its methods."""

    path: str
    methods: frozenset[str]
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.path.strip("/").split("/")))

    def match(self, path: str) -> dict[str, str] | None:
        """Path parameters (URL-decoded) when `path` fits this template, else None."""
        parts = path.strip("/").split("/")
        if len(parts) != len(self.segments):
            return None
        parameters: dict[str, str] = {}
        for template, actual in zip(self.segments, parts, strict=True):
            name = _PARAMETER.match(template)
            if name:
                if not actual:
                    return None
                parameters[name.group(1)] = unquote(actual)
            elif template != actual:
                return None
        return parameters


class RouteTable:
    """API Gateway's routing: exact segments beat parameters, one segment per parameter."""

    def __init__(self, routes: Iterable[tuple[str, str]]) -> None:
        methods: dict[str, set[str]] = {}
        for method, path in routes:
            methods.setdefault(path, set()).add(method.upper())
        # More literal segments first, as API Gateway prefers `/users/me` over `/users/{id}`.
        self.templates = sorted(
            (RouteTemplate(path, frozenset(m)) for path, m in methods.items()),
            key=lambda t: -sum(1 for s in t.segments if not _PARAMETER.match(s)),
        )

    def resolve(self, method: str, path: str) -> tuple[RouteTemplate, dict[str, str]] | None:
        """The template a request lands on, or None for an unknown route or method."""
        for template in self.templates:
            parameters = template.match(path)
            if parameters is not None and method.upper() in template.methods:
                return template, parameters
        return None


def _single_and_multi(pairs: Sequence[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for key, value in pairs:
        single[key] = value  # API Gateway keeps the last value in the single-value map
        multi.setdefault(key, []).append(value)
    return single, multi


def proxy_event(
    *,
    method: str,
    path: str,
    query: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None,
    resource: str,
    path_parameters: Mapping[str, str],
    request_id: str,
    source_ip: str = "127.0.0.1",
    account: str = "123456789012",
    domain: str = "localhost",
    claims: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway REST API proxy event for one HTTP request; `claims` are what a
    Cognito authorizer verified (`requestContext.authorizer.claims`)."""
    query_single, query_multi = _single_and_multi(parse_qsl(query, keep_blank_values=True))
    header_single, header_multi = _single_and_multi(list(headers))
    text: str | None = None
    encoded = False
    if body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
    now = time.time()
    context_extra: dict[str, Any] = {} if claims is None else {"authorizer": {"claims": dict(claims)}}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method.upper(),
        "headers": header_single or None,
        "multiValueHeaders": header_multi or None,
        "queryStringParameters": query_single or None,
        "multiValueQueryStringParameters": query_multi or None,
        "pathParameters": dict(path_parameters) or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": resource,
            "resourcePath": resource,
            "httpMethod": method.upper(),
            "path": f"/{STAGE}{path}",
            "stage": STAGE,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "accountId": account,
            "apiId": API_ID,
            "domainName": domain,
            "protocol": "HTTP/1.1",
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "identity": {
                "sourceIp": source_ip,
                "userAgent": header_single.get("User-Agent") or header_single.get("user-agent"),
            },
            **context_extra,
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


@dataclass(frozen=True)
class ProxyResult:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def proxy_result(result: Mapping[str, Any]) -> ProxyResult:
    """A Lambda proxy integration result as status, headers and body bytes."""
    headers: list[tuple[str, str]] = []
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    for name, values in multi.items():
        headers.extend((str(name), str(v)) for v in values)
    for name, value in single.items():
        if name not in multi:
            headers.append((str(name), str(value)))
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode("utf-8")
    return ProxyResult(status=int(result.get("statusCode", 502)), headers=headers, body=body)
