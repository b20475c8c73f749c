"""The local server's admission control: bounded work, a bounded line, shed at once."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from handlers import api
from infrastructure.local import local_api as twin
from infrastructure.local.admission import Gate, Gates, Limits
from registration import outcomes
from tests.fixtures.stub_engine import JSON_HEADERS, REGISTER, stub_engine

# --- the gate --------------------------------------------------------------------------


def _hold(gate: Gate, count: int) -> None:
    for _ in range(count):
        assert gate.acquire()


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        Limits(in_flight=0, waiting=1, max_wait_s=1)
    with pytest.raises(ValueError):
        Limits(in_flight=1, waiting=-1, max_wait_s=1)


def test_a_free_slot_admits_at_once_and_a_full_line_sheds_at_once() -> None:
    gate = Gate(Limits(in_flight=2, waiting=1, max_wait_s=5.0))
    _hold(gate, 2)
    waiter = ThreadPoolExecutor(max_workers=1).submit(gate.acquire)
    while gate.stats().waiting < 1:
        time.sleep(0.001)

    started = time.monotonic()
    assert gate.acquire() is False  # two running, one waiting: no room
    assert time.monotonic() - started < 0.1

    gate.release()
    assert waiter.result(timeout=2) is True
    stats = gate.stats()
    assert (stats.in_flight, stats.waiting, stats.admitted, stats.shed) == (2, 0, 3, 1)


def test_a_wait_ends_at_max_wait_or_at_the_callers_budget() -> None:
    gate = Gate(Limits(in_flight=1, waiting=4, max_wait_s=0.3))
    _hold(gate, 1)

    started = time.monotonic()
    assert gate.acquire() is False
    assert 0.25 <= time.monotonic() - started < 0.6

    started = time.monotonic()
    assert gate.acquire(timeout=0.05) is False  # less budget left than max_wait
    assert time.monotonic() - started < 0.25

    assert gate.acquire(timeout=0) is False  # no budget: no wait
    assert gate.stats().waiting == 0  # who gave up left the line


def test_the_line_is_first_come_first_served() -> None:
    gate = Gate(Limits(in_flight=1, waiting=8, max_wait_s=5.0))
    _hold(gate, 1)
    order: list[int] = []
    lock = threading.Lock()

    def wait_turn(i: int) -> None:
        assert gate.acquire()
        with lock:
            order.append(i)
        gate.release()

    threads = []
    for i in range(5):
        thread = threading.Thread(target=wait_turn, args=(i,))
        thread.start()
        threads.append(thread)
        while gate.stats().waiting < i + 1:  # each joins the line before the next
            time.sleep(0.001)
    gate.release()
    for thread in threads:
        thread.join(timeout=5)

    assert order == [0, 1, 2, 3, 4]
    assert gate.stats().in_flight == 0


def test_never_more_than_in_flight_hold_the_gate_at_once() -> None:
    gate = Gate(Limits(in_flight=3, waiting=64, max_wait_s=5.0))
    inside = 0
    most = 0
    lock = threading.Lock()

    def work(_: int) -> bool:
        nonlocal inside, most
        with gate.admitted() as admitted:
            if admitted:
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.01)
                with lock:
                    inside -= 1
            return admitted

    with ThreadPoolExecutor(max_workers=24) as pool:
        assert all(pool.map(work, range(48)))
    assert most == 3
    assert gate.stats().in_flight == 0
    with pytest.raises(RuntimeError):
        gate.release()


# --- the server's use of it ----------------------------------------------------------------


NO_LINE = Limits(in_flight=1, waiting=0, max_wait_s=0)


def _succeeded() -> Any:
    return SimpleNamespace(
        status="SUCCEEDED", output={"ok": True}, error=None, cause=None, execution_arn="arn"
    )


def _assert_shed(reply: twin.Reply) -> None:
    assert reply.status == 503
    assert json.loads(reply.body) == {"error": "ServiceUnavailable", "message": twin.OVERLOADED_MESSAGE}
    assert ("Retry-After", "1") in reply.headers


def test_a_workflow_request_that_cannot_get_in_is_shed_at_once_with_retry_after() -> None:
    release = threading.Event()

    def run(workflow: str, execution_input: dict[str, Any], **kwargs: Any) -> Any:
        release.wait(5)
        return _succeeded()

    local_api = twin.LocalApi(stub_engine(run), gates=Gates.of(workflows=NO_LINE))  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(local_api.handle, headers=JSON_HEADERS, request_id="r-1", **REGISTER)
        while local_api.gates.workflows.stats().in_flight < 1:
            time.sleep(0.001)
        started = time.monotonic()
        shed = local_api.handle(headers=JSON_HEADERS, request_id="r-2", **REGISTER)
        assert time.monotonic() - started < 0.1
        release.set()
        assert first.result(timeout=5).status == 201
    _assert_shed(shed)
    assert "ServiceUnavailable" in outcomes.RETRY_LATER_CODES


def test_time_in_line_counts_against_the_integration_budget() -> None:
    budgets: list[float] = []

    def run(workflow: str, execution_input: dict[str, Any], **kwargs: Any) -> Any:
        budgets.append(kwargs["timeout"])
        if len(budgets) == 1:
            time.sleep(0.4)
        return _succeeded()

    gates = Gates.of(workflows=Limits(in_flight=1, waiting=1, max_wait_s=5.0))
    local_api = twin.LocalApi(stub_engine(run), integration_timeout=2.0, gates=gates)  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(local_api.handle, headers=JSON_HEADERS, request_id="r-1", **REGISTER)
        while gates.workflows.stats().in_flight < 1:
            time.sleep(0.001)
        second = local_api.handle(headers=JSON_HEADERS, request_id="r-2", **REGISTER)
        assert first.result(timeout=5).status == 201
    assert second.status == 201
    assert budgets[0] > 1.9
    assert budgets[1] < 2.0 - 0.3  # it waited its turn (about 0.4 s) out of its 2 s


def test_a_request_arriving_with_its_budget_spent_is_not_started() -> None:
    started: list[Any] = []

    local_api = twin.LocalApi(
        stub_engine(lambda *a, **k: started.append(a)), gates=Gates.of(workflows=NO_LINE)
    )  # type: ignore[arg-type]
    gates = local_api.gates
    assert gates.workflows.acquire()  # the one slot is taken
    reply = local_api.handle(
        headers=JSON_HEADERS, request_id="r-1", arrived=time.monotonic() - 30, **REGISTER
    )
    gates.workflows.release()
    _assert_shed(reply)
    assert started == []


def test_reads_are_not_shed_by_a_burst_of_writes_or_workflows(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event["httpMethod"] == "POST":
            time.sleep(0.2)
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}

    monkeypatch.setattr(api, "handler", handler)
    local_api = twin.LocalApi(stub_engine(), gates=Gates.of(workflows=NO_LINE, writes=NO_LINE))  # type: ignore[arg-type]
    assert local_api.gates.workflows.acquire()  # the workflows are busy

    with ThreadPoolExecutor(max_workers=2) as pool:
        write = pool.submit(
            local_api.handle,
            method="POST",
            target="/users",
            headers=JSON_HEADERS,
            body=b'{"userId": "u1", "name": "U"}',
            request_id="w-1",
        )
        while local_api.gates.writes.stats().in_flight < 1:
            time.sleep(0.001)
        second_write = local_api.handle(
            method="POST", target="/users", headers=JSON_HEADERS, body=b"{}", request_id="w-2"
        )
        workflow = local_api.handle(headers=JSON_HEADERS, request_id="r-1", **REGISTER)
        read = local_api.handle(method="GET", target="/health", headers=[], body=b"", request_id="g-1")
        assert write.result(timeout=5).status == 200
    local_api.gates.workflows.release()

    _assert_shed(second_write)
    _assert_shed(workflow)
    assert read.status == 200


def test_the_waits_stretch_with_the_engines_time_scale() -> None:
    engine = stub_engine()
    engine.time_scale = 3.0
    gates = twin.LocalApi(engine).gates  # type: ignore[arg-type]
    assert gates.workflows.limits == Limits(in_flight=16, waiting=32, max_wait_s=6.0)
    assert gates.writes.limits.max_wait_s == gates.reads.limits.max_wait_s == 15.0
    assert twin.LocalApi(stub_engine()).gates.workflows.limits.max_wait_s == 2.0  # type: ignore[arg-type]
