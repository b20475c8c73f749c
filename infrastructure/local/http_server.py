"""The local API's HTTP server: a thread per connection, with bounded connections.

Connections are bounded (`ConnectionLimits`): a request's line and headers must arrive
within 10 s of its first byte and its body within 10 s more (else 408), an idle
keep-alive connection closes after 60 s, and at most 256 are open at once (one more is
answered 503 and closed). A body over 1 MB is refused 413 at once.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import urlsplit

from infrastructure import names
from infrastructure.local.admission import Gates
from infrastructure.local.engine import LocalEngine
from infrastructure.local.local_api import (
    JSON,
    LocalApi,
    Reply,
    internal_error,
    route_not_found,
)
from registration.outcomes import (
    REQUEST_ID_HEADER,
    UNAVAILABLE_ERROR,
    UNAVAILABLE_STATUS,
    error_headers,
)

LOG = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"

MAX_BODY_BYTES = 1024 * 1024  # API Gateway allows 10 MB; nothing here needs more than a few hundred bytes
REQUEST_TIMEOUT_ERROR = "RequestTimeout"
REQUEST_TIMEOUT_MESSAGE = "The request did not arrive in time"
SHORT_BODY_MESSAGE = "The body is shorter than its Content-Length"
TOO_MANY_CONNECTIONS_MESSAGE = "Too many open connections; retry after Retry-After seconds"


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
        # The stack's pipes run while it serves, as they run beside a deployed API.
        if self.engine.pipes is not None:
            self.engine.pipes.start()
        if self.engine.event_sources is not None:
            self.engine.event_sources.start()
        return self

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting requests, let the ones in flight finish (briefly), close."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        if self.engine.event_sources is not None:
            self.engine.event_sources.stop()
        if self.engine.pipes is not None:
            self.engine.pipes.stop()
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
