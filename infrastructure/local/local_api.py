"""API Gateway on one machine, without its socket: the same routes and status mapping.

* Workflow routes (`names.WORKFLOW_ROUTES`) run the synthesized state machine on the
  local engine and wait for its end, as API Gateway's StartSyncExecution integration
  does; the outcome becomes a response through `registration.outcomes`, the mapping
  API Gateway's response templates are generated from. An `Idempotency-Key` header
  goes into the execution input as `idempotencyKey`, as the request template puts it.
* Every other route (`names.LAMBDA_ROUTES`) becomes an API Gateway REST proxy event
  for the API Lambda's handler, called in-process.
* As on API Gateway, an integration that has not answered within 29 s
  (`integration_timeout`) is answered 504 `IntegrationTimeout`; the execution, or the
  handler's thread, may go on. The API handler also stops at its function's own timeout
  (the template's), which API Gateway answers 502.
* A method the template guards with the Cognito authorizer (every route but
  `GET /health`) asks for an ID token of the template's user pool in `Authorization`
  (`Bearer <token>`), verified as the authorizer does (`infrastructure.local.identity`):
  without a valid one it is answered 401 `Unauthorized` before anything runs. The
  verified claims reach the API function as `requestContext.authorizer.claims` and a
  workflow as the execution input's `caller`, as on AWS.
* `GET /openapi.json` and `GET /docs` (Swagger UI, served offline) describe the API.
* It takes on only as much as it can answer in time (`infrastructure.local.admission`):
  workflow routes run 16 at once with 32 more waiting at most 2 s; the API function's
  writes and reads each have a line of 64 waiting at most 5 s. A request that cannot get
  in is answered at once 503 `ServiceUnavailable` with `Retry-After: 1`. Time spent
  waiting counts against the integration's 29 s. `GET /health` is never shed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from infrastructure import names
from infrastructure.execution_names import execution_name
from infrastructure.local import docs_page, iam, operator_endpoints
from infrastructure.local.admission import Gate, Gates, remaining
from infrastructure.local.engine import LocalEngine
from infrastructure.local.execution_results import ExecutionTimeout
from infrastructure.local.identity import InvalidToken
from infrastructure.local.lambda_seam import LambdaContext, LocalFunction, ThreadedCall
from infrastructure.local.proxy_event import ProxyResult, RouteTable, proxy_event, proxy_result
from infrastructure.local.request_validation import register_request
from infrastructure.workflow_responses import workflow_headers
from registration.access import GROUPS_CLAIM, USERNAME_CLAIM
from registration.errors import Unauthorized, ValidationError
from registration.outcomes import (
    INTEGRATION_TIMEOUT_ERROR,
    INTEGRATION_TIMEOUT_MESSAGE,
    INTEGRATION_TIMEOUT_STATUS,
    INTERNAL_ERROR,
    INTERNAL_MESSAGE,
    NEVER_SHED_PATHS,
    UNAUTHORIZED_MESSAGE,
    UNAVAILABLE_ERROR,
    UNAVAILABLE_STATUS,
    error_body,
    error_headers,
    workflow_response,
)

LOG = logging.getLogger(__name__)
# API Gateway gives an integration 29 seconds.
INTEGRATION_TIMEOUT_S = 29.0
# What API Gateway answers when a proxy integration's Lambda failed (it timed out): the
# template's DEFAULT_5XX gateway response keeps the status and gives the error body.
LAMBDA_FAILED_STATUS = 502
JSON = "application/json"
ROUTE_NOT_FOUND = "RouteNotFound"  # as handlers.api answers it
UNSUPPORTED_MEDIA_TYPE = "UnsupportedMediaType"
UNSUPPORTED_MEDIA_MESSAGE = "Send the request body as application/json"


# --- responses -------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""  # for the access log (the execution name of a workflow route)

    @classmethod
    def json(cls, status: int, document: Any, note: str = "") -> Reply:
        return cls(status, json.dumps(document, separators=(",", ":")).encode("utf-8"), note=note)

    @classmethod
    def error(cls, status: int, code: str, message: str, **extra: Any) -> Reply:
        return cls.json(status, {"error": code, "message": message, **extra})


def _is_json(headers: Sequence[tuple[str, str]]) -> bool:
    """API Gateway takes a request without a Content-Type as JSON."""
    for name, value in headers:
        if name.lower() == "content-type":
            media_type = value.split(";", 1)[0].strip().lower()
            return media_type in ("", JSON)
    return True


def idempotency_key(headers: Sequence[tuple[str, str]]) -> str | None:
    """The `Idempotency-Key` header as API Gateway's request template passes it on: the
    name matched case-insensitively, the last one sent, and an empty value as none."""
    # Imported here: registration.idempotency sets up the handlers' Logger (see LocalApi).
    from registration.idempotency import header_value

    return header_value(headers) or None


def unauthorized() -> Reply:
    """The authorizer's refusal (the template's UNAUTHORIZED gateway response)."""
    reply = Reply.error(Unauthorized.http_status, Unauthorized.code, UNAUTHORIZED_MESSAGE)
    reply.headers.append(("WWW-Authenticate", "Bearer"))
    return reply


def _authorization(headers: Sequence[tuple[str, str]]) -> str | None:
    found = None
    for name, value in headers:
        if name.lower() == "authorization":
            found = value
    return found


def route_not_found(method: str, path: str) -> Reply:
    """The API Lambda's not-found answer, for what API Gateway itself would refuse."""
    return Reply.error(404, ROUTE_NOT_FOUND, f"No route {method} {path}")


def internal_error(status: int = 500) -> Reply:
    return Reply.error(status, INTERNAL_ERROR, INTERNAL_MESSAGE)


OVERLOADED_MESSAGE = "The server is serving as many requests as it can; retry after Retry-After seconds"


def overloaded() -> Reply:
    """The answer to a request the server sheds: more work offered than it can serve."""
    reply = Reply.error(UNAVAILABLE_STATUS, UNAVAILABLE_ERROR, OVERLOADED_MESSAGE)
    reply.headers.extend(error_headers(UNAVAILABLE_ERROR).items())
    return reply


def integration_timeout(note: str = "") -> Reply:
    """API Gateway's answer for an integration that did not answer in time."""
    reply = Reply.error(INTEGRATION_TIMEOUT_STATUS, INTEGRATION_TIMEOUT_ERROR, INTEGRATION_TIMEOUT_MESSAGE)
    reply.note = note
    return reply


# --- the application -------------------------------------------------------------------


class LocalApi:
    """Turns one HTTP request into a reply: workflow, API Lambda, docs or 404."""

    def __init__(
        self, engine: LocalEngine, *, integration_timeout: float | None = None, gates: Gates | None = None
    ) -> None:
        # Imported here, not at the top: the handlers' Logger reads its level from the
        # environment when first imported, which main() sets up first.
        from handlers import api
        from infrastructure.openapi import document

        self.engine = engine
        # API Gateway's limit for any integration (workflow or Lambda): by default AWS's
        # value, stretched as the engine stretches its own limits (`time_scale`).
        scale = getattr(engine, "time_scale", 1.0)
        self.integration_timeout = (
            INTEGRATION_TIMEOUT_S * scale if integration_timeout is None else integration_timeout
        )
        self.routes = RouteTable([*names.WORKFLOW_ROUTES, *names.LAMBDA_ROUTES])
        # How much work the server takes on at once (infrastructure.local.admission).
        self.gates = gates or Gates.of(time_scale=scale)
        self.openapi = json.dumps(document(), indent=2).encode("utf-8")
        self._api = api
        # Powertools keeps the current request on the resolver *class*: like one Lambda
        # execution environment, the API handler serves one request at a time.
        self._api_lock = threading.Lock()
        self._api_function = self._function_for(names.API_HANDLER)

    def _function_for(self, handler: str) -> LocalFunction:
        scale = getattr(self.engine, "time_scale", 1.0)
        for spec in self.engine.template.functions.values():
            if spec.handler == handler:
                return LocalFunction(
                    name=spec.name,
                    handler=spec.handler,
                    timeout=spec.timeout * scale,
                    memory_size=spec.memory_size,
                    region=self.engine.region,
                    account=self.engine.account,
                    role_arn=spec.role_arn if self.engine.authorizer is not None else None,
                )
        return LocalFunction(
            name="local-api",
            handler=handler,
            timeout=INTEGRATION_TIMEOUT_S,
            region=self.engine.region,
            account=self.engine.account,
        )

    def handle(
        self,
        *,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        request_id: str,
        client: str = "127.0.0.1",
        domain: str = "localhost",
        arrived: float | None = None,
    ) -> Reply:
        """`arrived` (`time.monotonic()`, default now) starts the integration's budget:
        time spent waiting for a turn counts against it, as on API Gateway."""
        deadline = (time.monotonic() if arrived is None else arrived) + self.integration_timeout
        url = urlsplit(target)
        path = url.path or "/"
        if operator_endpoints.is_ops_path(path):  # operator endpoints, for regctl
            return Reply.json(*operator_endpoints.handle(self.engine, method, path, url.query, body))
        if method in ("GET", "HEAD"):
            static = self._static(path)
            if static is not None:
                return static
        resolved = self.routes.resolve(method, path)
        if resolved is None:
            return route_not_found(method, path)
        template, parameters = resolved
        claims = None
        integration = self.engine.template.api_integrations.get((method, template.path))
        if integration is not None and integration.needs_token:
            claims = self._authenticate(headers)
            if claims is None:
                return unauthorized()
        workflow = names.WORKFLOW_ROUTES.get((method, template.path))
        if workflow is not None:
            if not _is_json(headers):
                # The integration only has an application/json request template.
                return Reply.error(415, UNSUPPORTED_MEDIA_TYPE, UNSUPPORTED_MEDIA_MESSAGE)
            denied = self._integration_denied(method, template.path, workflow)
            if denied is not None:
                return denied
            return self._workflow(
                workflow,
                parameters,
                body,
                request_id,
                idempotency_key(headers),
                deadline=deadline,
                claims=claims,
            )
        event = proxy_event(
            method=method,
            path=path,
            query=url.query,
            headers=headers,
            body=body,
            resource=template.path,
            path_parameters=parameters,
            request_id=request_id,
            source_ip=client,
            account=self.engine.account,
            domain=domain,
            claims=claims,
        )
        gate: Gate | None = self.gates.reads if method in ("GET", "HEAD") else self.gates.writes
        if template.path in NEVER_SHED_PATHS:
            gate = None  # it still takes its turn at the API function
        return self._lambda(event, request_id, deadline=deadline, gate=gate)

    def _authenticate(self, headers: Sequence[tuple[str, str]]) -> dict[str, str] | None:
        """The verified claims of the request's ID token, or None (a 401)."""
        identity = self.engine.identity
        if identity is None:
            LOG.error("the template guards routes with a user pool it does not have")
            return None
        try:
            return identity.authorizer_claims(_authorization(headers))
        except InvalidToken as exc:
            LOG.info("refused a token: %s", exc.reason)
            return None

    def _integration_denied(self, method: str, path: str, workflow: str) -> Reply | None:
        """API Gateway starts the execution with the integration's role: refuse, as a
        misconfigured integration fails on AWS, when that role may not start it."""
        integration = self.engine.template.api_integrations.get((method, path))
        if self.engine.authorizer is None or integration is None or integration.credentials is None:
            return None
        principal = iam.Principal(integration.credentials, "ApiGateway")
        try:
            iam.authorize(
                principal,
                "states",
                "StartSyncExecution",
                {"stateMachineArn": self.engine.state_machine_arn(workflow)},
            )
        except ClientError as exc:
            LOG.error("%s %s: the integration may not start %s: %s", method, path, workflow, exc)
            return internal_error()
        return None

    def _static(self, path: str) -> Reply | None:
        if path == "/":
            return Reply(HTTPStatus.FOUND, b"", headers=[("Location", docs_page.DOCS_PATH)])
        if path == docs_page.OPENAPI_PATH:
            return Reply(200, self.openapi)
        if path in (docs_page.DOCS_PATH, docs_page.DOCS_PATH + "/"):
            return Reply(200, docs_page.PAGE.encode("utf-8"), "text/html; charset=utf-8")
        found = docs_page.asset(path)
        if found is not None:
            content, content_type = found
            return Reply(200, content, content_type, headers=[("Cache-Control", "max-age=86400")])
        return None

    def _lambda(
        self,
        event: dict[str, Any],
        request_id: str,
        *,
        deadline: float | None = None,
        gate: Gate | None = None,
    ) -> Reply:
        if deadline is None:
            deadline = time.monotonic() + self.integration_timeout
        if gate is None:
            return self._call_api(event, request_id, deadline)
        with gate.admitted(remaining(deadline)) as inside:
            if not inside:
                return overloaded()
            return self._call_api(event, request_id, deadline)

    def _call_api(self, event: dict[str, Any], request_id: str, deadline: float) -> Reply:
        function = self._api_function

        def call(this: ThreadedCall) -> Any:
            # One request at a time (see __init__); a request still waiting for its turn
            # when API Gateway would have given up never runs.
            if not self._api_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return None
            try:
                this.started()
                with iam.acting_as(function.principal):
                    return self._api.handler(event, LambdaContext(function, request_id))
            finally:
                self._api_lock.release()

        running = ThreadedCall(call, name="local-api-handler")
        finished = running.wait(function.timeout, deadline=deadline)
        started = running.started_at
        if not finished and started is not None and started + function.timeout < deadline:
            LOG.error("the API handler timed out after %ss (request %s)", function.timeout, request_id)
            return internal_error(LAMBDA_FAILED_STATUS)
        if not finished or started is None:
            return integration_timeout()
        if running.error is not None:
            raise running.error
        proxied: ProxyResult = proxy_result(running.result)
        content_type = JSON
        headers = []
        for name, value in proxied.headers:
            if name.lower() == "content-type":
                content_type = value
            elif name.lower() not in ("content-length", "connection", "transfer-encoding"):
                headers.append((name, value))
        return Reply(proxied.status, proxied.body, content_type, headers)

    def _workflow(
        self,
        workflow: str,
        parameters: dict[str, str],
        body: bytes,
        request_id: str,
        key: str | None = None,
        *,
        deadline: float | None = None,
        claims: dict[str, str] | None = None,
    ) -> Reply:
        if deadline is None:
            deadline = time.monotonic() + self.integration_timeout
        try:
            if workflow == names.REGISTER_WORKFLOW:
                user_id = register_request(body).userId
            else:
                user_id = parameters["userId"]
        except ValidationError as exc:
            return Reply.json(exc.http_status, error_body(exc.code, exc.message, exc.fields))
        event_id = parameters["eventId"]
        name = execution_name(workflow, event_id, user_id, request_id)
        # As the request template puts it: from the verified claims only, never the body.
        claims = claims or {}
        caller = {"userId": claims.get(USERNAME_CLAIM, ""), "groups": claims.get(GROUPS_CLAIM, "")}
        execution_input: dict[str, Any] = {
            "eventId": event_id,
            "userId": user_id,
            "requestId": request_id,
            "caller": caller,
        }
        if key is not None:
            # The workflow claims the key (and refuses a malformed one), as on AWS.
            execution_input["idempotencyKey"] = key
        with self.gates.workflows.admitted(remaining(deadline)) as inside:
            if not inside:
                reply = overloaded()
                reply.note = name
                return reply
            try:
                result = self.engine.run(workflow, execution_input, name=name, timeout=remaining(deadline))
            except ExecutionTimeout:
                return integration_timeout(note=name)
        status, document = workflow_response(
            workflow, result.status, result.output, result.error, result.cause
        )
        if status >= 500:
            LOG.error(
                "execution %s ended %s: %s %s",
                result.execution_arn,
                result.status,
                result.error,
                result.cause,
            )
        reply = Reply.json(status, document, note=name)
        reply.headers.extend(workflow_headers(result.status, result.error).items())
        return reply
