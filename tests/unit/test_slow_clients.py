"""Slow, idle and greedy clients against the local server, over raw sockets.

Each deadline is a constructor parameter (`ConnectionLimits`): these tests use short
ones and check that every answer comes within its deadline plus a margin.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from handlers import api
from infrastructure import names
from infrastructure.local.http_server import MAX_BODY_BYTES, ConnectionLimits, LocalServer

DEADLINE_S = 0.5
# A loaded two-core machine (and the suite's other worker) can delay a thread this much.
MARGIN_S = 1.5
LIMITS = ConnectionLimits(
    header_timeout_s=DEADLINE_S, body_timeout_s=DEADLINE_S, idle_timeout_s=DEADLINE_S, max_connections=8
)


def _engine() -> Any:
    return SimpleNamespace(
        template=SimpleNamespace(functions={}, api_integrations={}),
        authorizer=None,
        region="us-east-1",
        account=names.LOCAL_ACCOUNT,
        pipes=None,  # no stream, no bus, no webhook deliveries
        webhooks=None,
        event_sources=None,
    )


def _echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = json.dumps({"length": len(event.get("body") or "")})
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": body}


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(api, "handler", _echo)
    running: list[LocalServer] = []

    def start(limits: ConnectionLimits = LIMITS) -> LocalServer:
        server = LocalServer(_engine(), port=0, connection_limits=limits).start()  # type: ignore[arg-type]
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop(drain_timeout=1)


def _connect(server: LocalServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=30)
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response read off the socket: status, headers (lower-case), body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before an answer: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def _closed(sock: socket.socket) -> bool:
    """True when the server has closed the connection (after any answer was read)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _request(path: str = "/users", body: bytes = b"{}", *, length: int | None = None) -> bytes:
    length = len(body) if length is None else length
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def test_a_keep_alive_connection_serves_requests_one_after_another(serve: Any) -> None:
    server = serve()
    with _connect(server) as sock:
        for _ in range(3):
            sock.sendall(_request(body=b'{"a": 1}'))
            status, _, body = _answer(sock)
            assert status == 200
            assert json.loads(body) == {"length": 8}
            time.sleep(DEADLINE_S / 2)  # under the idle deadline each time


def test_headers_sent_a_byte_at_a_time_get_408_at_the_header_deadline(serve: Any) -> None:
    server = serve()
    with _connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /users HTTP/1.1\r\nHost: localhost\r\n")
        answer: list[Any] = []
        reader = threading.Thread(target=lambda: answer.append(_answer(sock)))
        reader.start()
        with pytest.raises(OSError):  # the server closes while the client still dribbles
            for _ in range(200):
                sock.sendall(b"X")
                time.sleep(0.05)
        reader.join(timeout=5)
        elapsed = time.monotonic() - started
    assert answer, "no answer"
    status, headers, body = answer[0]
    assert status == 408
    assert json.loads(body)["error"] == "RequestTimeout"
    assert headers["connection"] == "close"
    assert elapsed < DEADLINE_S + MARGIN_S + 0.5


def test_a_body_that_stops_short_gets_408_at_the_body_deadline(serve: Any) -> None:
    server = serve()
    with _connect(server) as sock:
        sock.sendall(_request(body=b'{"a"', length=40))
        started = time.monotonic()
        status, headers, body = _answer(sock)
        elapsed = time.monotonic() - started
        assert _closed(sock)
    assert headers["connection"] == "close"
    assert status == 408
    assert json.loads(body)["error"] == "RequestTimeout"
    assert DEADLINE_S * 0.8 <= elapsed < DEADLINE_S + MARGIN_S


def test_a_body_cut_short_by_the_clients_close_gets_400_at_once(serve: Any) -> None:
    server = serve(ConnectionLimits(body_timeout_s=30, max_connections=8))
    with _connect(server) as sock:
        sock.sendall(_request(body=b'{"a"', length=40))
        sock.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        status, _, body = _answer(sock)
        elapsed = time.monotonic() - started
    assert status == 400
    assert json.loads(body) == {
        "error": "BadRequest",
        "message": "The body is shorter than its Content-Length",
    }
    assert elapsed < MARGIN_S


def test_a_content_length_over_the_limit_gets_413_at_once_without_a_body(serve: Any) -> None:
    # A long body deadline: the answer must not wait for a body that never comes.
    server = serve(ConnectionLimits(body_timeout_s=30, idle_timeout_s=30, max_connections=8))
    with _connect(server) as sock:
        started = time.monotonic()
        sock.sendall(_request(body=b"", length=MAX_BODY_BYTES + 1))
        status, headers, body = _answer(sock)
        elapsed = time.monotonic() - started
    assert status == 413
    assert json.loads(body)["error"] == "PayloadTooLarge"
    assert headers["connection"] == "close"
    assert elapsed < MARGIN_S


def test_an_oversized_body_that_is_sent_still_gets_its_413(serve: Any) -> None:
    server = serve(ConnectionLimits(body_timeout_s=5, max_connections=8))
    body = b"x" * (2 * MAX_BODY_BYTES)
    with _connect(server) as sock:
        sock.sendall(_request(body=body))
        status, _, answer = _answer(sock)
    assert status == 413
    assert json.loads(answer)["error"] == "PayloadTooLarge"


def test_an_idle_connection_is_closed_at_the_idle_deadline(serve: Any) -> None:
    server = serve()
    with _connect(server) as sock:  # never sends a byte
        started = time.monotonic()
        assert _closed(sock)
        assert DEADLINE_S * 0.8 <= time.monotonic() - started < DEADLINE_S + MARGIN_S
    with _connect(server) as sock:  # idle after one request
        sock.sendall(_request())
        assert _answer(sock)[0] == 200
        started = time.monotonic()
        assert _closed(sock)
        assert time.monotonic() - started < DEADLINE_S + MARGIN_S
    assert server._httpd is not None
    deadline = time.monotonic() + 5
    while server._httpd.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server._httpd.open_connections == 0


def test_connections_beyond_the_cap_get_503_at_once_and_hold_no_thread(serve: Any) -> None:
    limits = ConnectionLimits(idle_timeout_s=30, header_timeout_s=30, max_connections=8)
    server = serve(limits)
    threads_before = threading.active_count()
    held = [_connect(server) for _ in range(limits.max_connections)]
    try:
        assert server._httpd is not None
        deadline = time.monotonic() + 5
        while server._httpd.open_connections < limits.max_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server._httpd.open_connections == limits.max_connections

        refused = []
        for _ in range(50):
            with _connect(server) as sock:
                started = time.monotonic()
                sock.sendall(_request())
                status, headers, body = _answer(sock)
                refused.append((status, headers, body, time.monotonic() - started))
                assert _closed(sock)
        assert {status for status, *_ in refused} == {503}
        for _, headers, body, elapsed in refused:
            assert json.loads(body)["error"] == "ServiceUnavailable"
            assert headers["retry-after"] == "1"
            assert headers["connection"] == "close"
            assert elapsed < MARGIN_S
        # The 58 connections held at most one thread each for the 8 that got in.
        assert threading.active_count() <= threads_before + limits.max_connections + 2

        held.pop().close()  # one leaves: the next one is served
        deadline = time.monotonic() + 5
        while server._httpd.open_connections >= limits.max_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        with _connect(server) as sock:
            sock.sendall(_request())
            assert _answer(sock)[0] == 200
    finally:
        for sock in held:
            sock.close()
