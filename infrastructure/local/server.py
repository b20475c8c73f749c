"""The HTTP API on one machine: the same routes and status mapping as API Gateway.

    python -m infrastructure.local.server [--port N] [--host 127.0.0.1] [--in-memory]

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
* `GET /openapi.json` and `GET /docs` (Swagger UI, served offline) describe the API.
* The server takes on only as much as it can answer in time
  (`infrastructure.local.admission`): workflow routes run 16 at once with 32 more
  waiting at most 2 s; the API function's writes and reads each have a line of 64
  waiting at most 5 s. A request that cannot get in is answered at once 503
  `ServiceUnavailable` with `Retry-After: 1`. Time spent waiting counts against the
  integration's 29 s. `GET /health` is never shed. `--time-scale` stretches the waits
  as it stretches the 29 s.
* Connections are bounded (`ConnectionLimits`): a request's line and headers must
  arrive within 10 s of its first byte and its body within 10 s more (else 408), an
  idle keep-alive connection closes after 60 s, and at most 256 are open at once (one
  more is answered 503 and closed). A body over 1 MB is refused 413 at once.

The database is DynamoDB Local with its data under `.local/dynamodb` (kept across
restarts), or moto's in-memory DynamoDB with `--in-memory`. Requests are served
concurrently (a thread per connection, at most `ConnectionLimits.max_connections`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, TextIO
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from infrastructure import names
from infrastructure.execution_names import execution_name
from infrastructure.local import docs_page, iam, operator_endpoints
from infrastructure.local.admission import Gate, Gates, remaining
from infrastructure.local.dynamodb_local import (
    DEFAULT_DB_PATH,
    REPO_ROOT,
    DynamoDBLocal,
    DynamoDBLocalError,
    JavaNotFoundError,
    Watchdog,
)
from infrastructure.local.engine import EngineError, ExecutionTimeout, LocalEngine, route_moto_logs
from infrastructure.local.lambda_seam import LambdaContext, LocalFunction, ThreadedCall
from infrastructure.local.proxy_event import ProxyResult, RouteTable, proxy_event, proxy_result
from infrastructure.local.request_validation import register_request
from infrastructure.local.template import TemplateError
from infrastructure.ops import stack_record
from infrastructure.workflow_responses import workflow_headers
from registration.errors import ValidationError
from registration.outcomes import (
    INTEGRATION_TIMEOUT_ERROR,
    INTEGRATION_TIMEOUT_MESSAGE,
    INTEGRATION_TIMEOUT_STATUS,
    INTERNAL_ERROR,
    INTERNAL_MESSAGE,
    NEVER_SHED_PATHS,
    REQUEST_ID_HEADER,
    UNAVAILABLE_ERROR,
    UNAVAILABLE_STATUS,
    error_body,
    error_headers,
    workflow_response,
)

LOG = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_TEMPLATE = REPO_ROOT / names.CDK_OUT_DIR / names.TEMPLATE_FILE
DEFAULT_DATA_DIR = DEFAULT_DB_PATH.parent
# API Gateway gives an integration 29 seconds.
INTEGRATION_TIMEOUT_S = 29.0
# What API Gateway answers when a proxy integration's Lambda failed (it timed out): the
# template's DEFAULT_5XX gateway response keeps the status and gives the error body.
LAMBDA_FAILED_STATUS = 502
MAX_BODY_BYTES = 1024 * 1024  # API Gateway allows 10 MB; nothing here needs more than a few hundred bytes
REQUEST_TIMEOUT_ERROR = "RequestTimeout"
REQUEST_TIMEOUT_MESSAGE = "The request did not arrive in time"
SHORT_BODY_MESSAGE = "The body is shorter than its Content-Length"
TOO_MANY_CONNECTIONS_MESSAGE = "Too many open connections; retry after Retry-After seconds"
JSON = "application/json"
ROUTE_NOT_FOUND = "RouteNotFound"  # as handlers.api answers it
UNSUPPORTED_MEDIA_TYPE = "UnsupportedMediaType"
UNSUPPORTED_MEDIA_MESSAGE = "Send the request body as application/json"
MEMORY_HINT = (
    "To run anyway on moto's in-memory database (nothing is kept between runs): "
    "make run DB=memory  (or: python -m infrastructure.local.server --in-memory)"
)


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
        workflow = names.WORKFLOW_ROUTES.get((method, template.path))
        if workflow is not None:
            if not _is_json(headers):
                # The integration only has an application/json request template.
                return Reply.error(415, UNSUPPORTED_MEDIA_TYPE, UNSUPPORTED_MEDIA_MESSAGE)
            denied = self._integration_denied(method, template.path, workflow)
            if denied is not None:
                return denied
            return self._workflow(
                workflow, parameters, body, request_id, idempotency_key(headers), deadline=deadline
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
        )
        gate: Gate | None = self.gates.reads if method in ("GET", "HEAD") else self.gates.writes
        if template.path in NEVER_SHED_PATHS:
            gate = None  # it still takes its turn at the API function
        return self._lambda(event, request_id, deadline=deadline, gate=gate)

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
        execution_input = {"eventId": event_id, "userId": user_id, "requestId": request_id}
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


# --- HTTP ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may hold of the server, and for how long.

    A request's line and headers must arrive within `header_timeout_s` of its first
    byte, its body within `body_timeout_s` of its headers (else 408 and the connection
    closes; a body cut short by the client's close is a 400). A keep-alive connection
    idle for `idle_timeout_s` is closed. At most `max_connections` are open at once:
    one more is answered 503 `ServiceUnavailable` with `Retry-After` and closed, so a
    client that opens thousands holds no more than that many threads.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    max_connections: int = 256
    # How long the server keeps writing an answer to a client that does not read it.
    send_timeout_s: float = 10.0


class _Phase:
    IDLE = "idle"  # between requests (or before the first): nothing is owed
    HEADERS = "headers"  # a request has begun: its line and headers are due
    BODY = "body"
    DRAIN = "drain"  # a refused body, read and dropped after the answer


def _drop_unread(sock: socket.socket) -> None:
    """Reads and drops what the client has sent and nobody will read, without waiting:
    closing over unread data is a reset, which can hide the answer just sent."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        while sock.recv(65536):
            pass


class _DeadlineReader(io.RawIOBase):
    """The connection's reads, each bounded by what is left of the current phase's time:
    a client that sends one byte at a time cannot stretch a deadline."""

    def __init__(self, sock: socket.socket, limits: ConnectionLimits) -> None:
        self._sock = sock
        self._limits = limits
        self.phase = _Phase.IDLE
        self.deadline = time.monotonic() + limits.idle_timeout_s
        self.timed_out = False

    def begin(self, phase: str, seconds: float) -> None:
        self.phase = phase
        self.deadline = time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.timed_out = True
            raise TimeoutError(f"{self.phase} deadline passed")
        self._sock.settimeout(left)
        try:
            count = self._sock.recv_into(buffer)
        except TimeoutError:
            self.timed_out = True
            raise
        if count and self.phase == _Phase.IDLE:
            # The first byte of a request: its line and headers are due from now.
            self.begin(_Phase.HEADERS, self._limits.header_timeout_s)
        return count


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "event-registration-local"
    server: _HttpServer
    reader: _DeadlineReader
    _drain: int | None = None  # the length of a refused body to read after the answer

    def setup(self) -> None:
        super().setup()
        self.reader = _DeadlineReader(self.connection, self.server.limits)
        self.rfile = io.BufferedReader(self.reader)

    def handle_one_request(self) -> None:
        # The standard library ends the connection on a read that timed out, silently.
        super().handle_one_request()
        if self.reader.timed_out:
            self.close_connection = True
            if self.reader.phase == _Phase.HEADERS:  # a request began and did not finish
                self._refuse_incomplete()
        elif not self.close_connection:
            self.reader.begin(_Phase.IDLE, self.server.limits.idle_timeout_s)

    def finish(self) -> None:
        super().finish()
        if self.close_connection:
            _drop_unread(self.connection)

    def _refuse_incomplete(self) -> None:
        self.command = getattr(self, "command", None) or ""
        request_id = str(uuid.uuid4())
        reply = Reply.error(408, REQUEST_TIMEOUT_ERROR, REQUEST_TIMEOUT_MESSAGE)
        with contextlib.suppress(OSError):
            self.connection.settimeout(self.server.limits.send_timeout_s)
            self._send(reply, request_id)
        self.server.log_access(f'{self.client_address[0]} "- -" {reply.status} 0ms {request_id}')

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _serve(self) -> None:
        started = time.perf_counter()
        arrived = time.monotonic()
        request_id = str(uuid.uuid4())
        self.server.begin()
        reply: Reply | None = None
        try:
            reply = self._reply(request_id, arrived)
        except Exception:
            LOG.exception("request %s %s failed", self.command, self.path)
            reply = internal_error()
        finally:
            if reply is None:
                reply = internal_error()
            try:
                self.connection.settimeout(self.server.limits.send_timeout_s)
                self._send(reply, request_id)
                if self._drain is not None:
                    self._discard(self._drain)
            finally:
                self.server.end()
                self.server.log_access(
                    f'{self.client_address[0]} "{self.command} {self.path}" {reply.status} '
                    f"{(time.perf_counter() - started) * 1000:.0f}ms {request_id}"
                    + (f" {reply.note}" if reply.note else "")
                )

    def _reply(self, request_id: str, arrived: float | None = None) -> Reply:
        self._drain: int | None = None
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return Reply.error(411, "LengthRequired", "Send the body with a Content-Length header")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return Reply.error(400, "BadRequest", "Content-Length is not a number")
        if length < 0 or length > MAX_BODY_BYTES:
            # Answered at once, whether or not the body ever comes; what does come is
            # read and dropped after the answer (see _discard).
            self.close_connection = True
            self._drain = length
            return Reply.error(413, "PayloadTooLarge", "The request body is too large")
        body = b""
        if length:
            self.reader.begin(_Phase.BODY, self.server.limits.body_timeout_s)
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                self.close_connection = True
                return Reply.error(408, REQUEST_TIMEOUT_ERROR, REQUEST_TIMEOUT_MESSAGE)
            if len(body) < length:  # the client closed its side before the whole body
                self.close_connection = True
                return Reply.error(400, "BadRequest", SHORT_BODY_MESSAGE)
        return self.server.api.handle(
            method=self.command.upper(),
            target=self.path,
            headers=list(self.headers.items()),
            body=body,
            request_id=request_id,
            client=self.client_address[0],
            domain=self.headers.get("Host", "localhost"),
            arrived=arrived,
        )

    def _discard(self, length: int) -> None:
        """Read (and drop) a refused body so the client sees the answer, not a reset;
        for no longer than a body may take to arrive."""
        remaining = min(max(length, 0), 16 * MAX_BODY_BYTES)
        self.reader.begin(_Phase.DRAIN, self.server.limits.body_timeout_s)
        with contextlib.suppress(OSError):
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 65536))
                if not chunk:
                    return
                remaining -= len(chunk)

    def _send(self, reply: Reply, request_id: str) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        # The API function and the workflow mappings name the request id themselves;
        # the server does for what it answers before any route.
        if not any(name.lower() == REQUEST_ID_HEADER.lower() for name, _ in reply.headers):
            self.send_header(REQUEST_ID_HEADER, request_id)
        for name, value in reply.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the standard library answers itself (bad request line, unknown method)."""
        command = getattr(self, "command", None) or "-"
        target = getattr(self, "path", None) or "-"
        if code == HTTPStatus.NOT_IMPLEMENTED and command != "-":
            reply = route_not_found(command, urlsplit(target).path)
        else:
            phrase = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "Error"
            reply = Reply.error(code, phrase.replace(" ", ""), message or phrase)
        self.close_connection = True
        request_id = str(uuid.uuid4())
        with contextlib.suppress(OSError):
            self.connection.settimeout(self.server.limits.send_timeout_s)
            self._send(reply, request_id)
        self.server.log_access(
            f'{self.client_address[0]} "{command} {target}" {reply.status} 0ms {request_id}'
        )

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one access line per request is written by _serve


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        api: LocalApi,
        access_log: TextIO | None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.api = api
        self.access_log = access_log
        self.limits = limits or ConnectionLimits()
        self._log_lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition()
        self._connections = 0
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def open_connections(self) -> int:
        return self._connections

    def process_request(self, request: Any, client_address: Any) -> None:
        """Runs in the accepting thread: a connection beyond the cap gets no thread."""
        with self._connections_lock:
            full = self._connections >= self.limits.max_connections
            if not full:
                self._connections += 1
        if full:
            self._refuse_connection(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connection_closed()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connection_closed()

    def _connection_closed(self) -> None:
        with self._connections_lock:
            self._connections -= 1

    def _refuse_connection(self, request: socket.socket, client_address: Any) -> None:
        """503 and close, without waiting for the client: what it already sent is read
        (without blocking) and dropped, so the close is not a reset that hides the answer."""
        body = json.dumps(
            {"error": UNAVAILABLE_ERROR, "message": TOO_MANY_CONNECTIONS_MESSAGE}, separators=(",", ":")
        ).encode("utf-8")
        request_id = str(uuid.uuid4())
        head = [
            f"HTTP/1.1 {UNAVAILABLE_STATUS} {HTTPStatus(UNAVAILABLE_STATUS).phrase}",
            f"Server: {_Handler.server_version}",
            f"Content-Type: {JSON}",
            f"Content-Length: {len(body)}",
            f"{REQUEST_ID_HEADER}: {request_id}",
            *(f"{name}: {value}" for name, value in error_headers(UNAVAILABLE_ERROR).items()),
            "Connection: close",
        ]
        _drop_unread(request)
        with contextlib.suppress(OSError):
            request.settimeout(0.5)
            request.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            request.shutdown(socket.SHUT_WR)
        self.shutdown_request(request)
        self.log_access(
            f'{client_address[0]} "- -" {UNAVAILABLE_STATUS} 0ms {request_id} too many connections'
        )

    def begin(self) -> None:
        with self._idle:
            self._in_flight += 1

    def end(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def log_access(self, line: str) -> None:
        if self.access_log is None:
            return
        with self._log_lock:
            self.access_log.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            self.access_log.flush()


class LocalServer:
    """The local API over a started engine; `start()` serves from a background thread."""

    def __init__(
        self,
        engine: LocalEngine,
        host: str = DEFAULT_HOST,
        port: int = names.LOCAL_API_PORT,
        *,
        access_log: TextIO | None = None,
        integration_timeout: float | None = None,
        gates: Gates | None = None,
        connection_limits: ConnectionLimits | None = None,
    ) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self.access_log = access_log
        self.integration_timeout = integration_timeout
        self.gates = gates
        self.connection_limits = connection_limits
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> LocalServer:
        if self._httpd is not None:
            return self
        api = LocalApi(self.engine, integration_timeout=self.integration_timeout, gates=self.gates)
        httpd = _HttpServer((self.host, self.port), api, self.access_log, self.connection_limits)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="local-api", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting requests, let the ones in flight finish (briefly), close."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.wait_idle(drain_timeout)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- command line ----------------------------------------------------------------------


def _port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infrastructure.local.server",
        description="Serve the event registration API locally (DynamoDB Local + the synthesized workflows).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="default: %(default)s")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT") or names.LOCAL_API_PORT),
        help=f"default: $PORT or {names.LOCAL_API_PORT}",
    )
    parser.add_argument(
        "--in-memory",
        action="store_true",
        help="use moto's in-memory DynamoDB instead of DynamoDB Local (no Java needed, nothing kept)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where DynamoDB Local keeps its data and moto.log goes (default: .local)",
    )
    parser.add_argument(
        "--template",
        type=Path,
        default=DEFAULT_TEMPLATE,
        help=f"default: {names.CDK_OUT_DIR}/{names.TEMPLATE_FILE}",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log lines")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="stretch every AWS time limit (functions, workflows, the API's 29 s) by FACTOR, "
        "for a machine that runs the workflows that many times slower than AWS (default: 1)",
    )
    parser.add_argument(
        "--reconcile-every",
        type=float,
        metavar="SECONDS",
        default=float(os.environ.get("RECONCILE_EVERY") or operator_endpoints.schedule_seconds()),
        help=f"start the reconcile workflow this often (default: $RECONCILE_EVERY or "
        f"{names.DEFAULT_RECONCILE_SCHEDULE}, as on AWS; 0 disables)",
    )
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be positive")
    return args


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C (SIGINT) or SIGTERM; the previous handlers come back after."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _say(text: str = "", stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stdout, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    # Handler logs (Powertools JSON lines) at WARNING keep the console readable.
    log_level = os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    # No X-Ray daemon or metrics sink locally (the engine sets these too, but modules
    # imported before it starts read them at import time).
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    template: Path = args.template
    if not template.is_file():
        _say(f"{template} not found: synthesize the stack first with `make synth`.", sys.stderr)
        return 2
    if _port_in_use(args.host, args.port):
        _say(
            f"Port {args.port} on {args.host} is already in use: stop what uses it, "
            f"or pick another port (make run PORT=3001).",
            sys.stderr,
        )
        return 2

    data_dir: Path = args.data_dir
    with _stop_signals() as stop, contextlib.ExitStack() as cleanup:
        database = "moto's in-memory DynamoDB (nothing is kept)"
        endpoint: str | None = None
        # The JVM takes seconds to listen: import the rest meanwhile.
        preload = threading.Thread(target=_preload, name="preload", daemon=True)
        preload.start()
        cleanup.callback(preload.join)
        if not args.in_memory:
            db = DynamoDBLocal(db_path=data_dir / "dynamodb")
            try:
                db.start()
            except JavaNotFoundError as exc:
                _say(str(exc), sys.stderr)
                _say(MEMORY_HINT, sys.stderr)
                return 1
            except DynamoDBLocalError as exc:
                _say(f"DynamoDB Local did not start: {exc}", sys.stderr)
                _say(MEMORY_HINT, sys.stderr)
                return 1
            cleanup.callback(db.stop)
            watchdog = Watchdog(db, sys.stdout).start()
            cleanup.callback(watchdog.stop)  # runs before db.stop: no restart while stopping
            endpoint = db.endpoint_url
            database = f"DynamoDB Local at {endpoint}, data in {_shown(data_dir / 'dynamodb')}"
        preload.join()
        if stop.is_set():
            return 130

        route_moto_logs(data_dir / "moto.log")
        try:
            engine = LocalEngine(
                template,
                dynamodb_endpoint=endpoint,
                environment={"POWERTOOLS_LOG_LEVEL": log_level},
                time_scale=args.time_scale,
            )
            engine.start()
        except (EngineError, TemplateError) as exc:
            _say(f"The local engine did not start: {exc}", sys.stderr)
            return 1
        cleanup.callback(engine.close)

        server = LocalServer(
            engine,
            args.host,
            args.port,
            access_log=None if args.quiet else sys.stdout,
        )
        server.start()
        cleanup.callback(server.stop)
        cleanup.callback(stack_record.forget, stack_record.record(data_dir, server.url))
        schedule = operator_endpoints.ReconcileSchedule(engine, args.reconcile_every, out=sys.stdout).start()
        cleanup.callback(schedule.stop)  # runs first: no new run while the rest stops

        _say("Event registration API, running locally")
        _say(f"  API       {server.url}")
        _say(f"  OpenAPI   {server.url}{docs_page.OPENAPI_PATH}")
        _say(f"  Docs      {server.url}{docs_page.DOCS_PATH}")
        _say(f"  Database  {database}")
        _say(f"  Workflows {', '.join(sorted(engine.workflows))} (moto log: {_shown(data_dir / 'moto.log')})")
        _say(
            f"  Reconcile every {args.reconcile_every:g}s (--reconcile-every SECONDS; 0 disables)"
            if schedule.enabled
            else "  Reconcile on demand only (regctl reconcile)"
        )
        _say(f"  Operator  regctl (endpoints under {server.url}{names.LOCAL_OPS_PREFIX})")
        _say(
            "  History   workflow runs are kept until the server stops (the tables are kept)"
            if endpoint
            else "  History   workflow runs and tables are kept until the server stops"
        )
        _say("Press Ctrl-C to stop.")
        while not stop.wait(0.5):
            pass
        _say("Stopping ...")
    _say("Stopped.")
    return 0


def _preload() -> None:
    """Import what the engine and the API need (a head start, no side effects)."""
    for module in ("moto", "moto.stepfunctions.parser.models", "handlers.api", "infrastructure.openapi"):
        try:
            importlib.import_module(module)
        except Exception:  # the real import reports it
            return


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
