"""Admission control for the local server: how much work it takes on at once.

The local twin runs every workflow and handler in one Python process. Offered more
requests than it can serve, it would start them all, serve each of them slower, and
answer most after API Gateway's 29 s (504), or fail inside the interpreter. A `Gate`
bounds the work instead: `Limits.in_flight` requests run, at most `Limits.waiting`
more wait in line (first come, first served) for at most `Limits.max_wait_s`, and
any other is refused at once, so the client can retry (503 with `Retry-After`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """How many requests run at once, how many may wait, and for how long."""

    in_flight: int
    waiting: int
    max_wait_s: float

    def __post_init__(self) -> None:
        if self.in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        if self.waiting < 0 or self.max_wait_s < 0:
            raise ValueError("waiting and max_wait_s cannot be negative")

    def stretched(self, scale: float) -> Limits:
        """The same limits with the wait stretched `scale` times (see `Gates.of`)."""
        return Limits(self.in_flight, self.waiting, self.max_wait_s * scale)


@dataclass
class GateStats:
    in_flight: int
    waiting: int
    admitted: int
    shed: int


class _Waiter:
    __slots__ = ("admitted", "event")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.admitted = False


class Gate:
    """At most `limits.in_flight` holders; a bounded, first-come-first-served line."""

    def __init__(self, limits: Limits, name: str = "gate") -> None:
        self.limits = limits
        self.name = name
        self._lock = threading.Lock()
        self._running = 0
        self._line: deque[_Waiter] = deque()
        self._admitted = 0
        self._shed = 0

    def acquire(self, timeout: float | None = None) -> bool:
        """True once admitted; False when the line is full or the wait ran out.

        The wait is at most `limits.max_wait_s`, and at most `timeout` (what is left of
        the caller's own budget) when given. An admitted caller must `release()`.
        """
        wait = self.limits.max_wait_s if timeout is None else max(0.0, min(timeout, self.limits.max_wait_s))
        with self._lock:
            if self._running < self.limits.in_flight and not self._line:
                self._running += 1
                self._admitted += 1
                return True
            if len(self._line) >= self.limits.waiting or wait <= 0:
                self._shed += 1
                return False
            waiter = _Waiter()
            self._line.append(waiter)
        waiter.event.wait(wait)
        with self._lock:
            if waiter.admitted:  # a release handed this waiter its slot
                return True
            self._line.remove(waiter)
            self._shed += 1
            return False

    def release(self) -> None:
        with self._lock:
            if self._line:
                # The slot passes to the head of the line: the running count stays.
                waiter = self._line.popleft()
                waiter.admitted = True
                self._admitted += 1
                waiter.event.set()
                return
            if self._running <= 0:
                raise RuntimeError(f"{self.name}: released more often than acquired")
            self._running -= 1

    @contextmanager
    def admitted(self, timeout: float | None = None) -> Iterator[bool]:
        """`with gate.admitted(budget) as inside:`; `inside` False means shed."""
        inside = self.acquire(timeout)
        try:
            yield inside
        finally:
            if inside:
                self.release()

    def stats(self) -> GateStats:
        with self._lock:
            return GateStats(self._running, len(self._line), self._admitted, self._shed)


# The local API's gates (see infrastructure.local.local_api). Workflow routes run the
# interpreter, the costly part: 16 at once, as many executions as the engine keeps
# parsed programs for. The API function serves one request at a time (one Lambda
# execution environment); writes and reads each have their own line, so a burst of
# writes does not shed the health check or a listing.
WORKFLOW_LIMITS = Limits(in_flight=16, waiting=32, max_wait_s=2.0)
API_LIMITS = Limits(in_flight=1, waiting=64, max_wait_s=5.0)
READ_LIMITS = Limits(in_flight=1, waiting=64, max_wait_s=5.0)


@dataclass
class Gates:
    workflows: Gate
    writes: Gate
    reads: Gate

    @classmethod
    def of(
        cls,
        workflows: Limits = WORKFLOW_LIMITS,
        writes: Limits = API_LIMITS,
        reads: Limits = READ_LIMITS,
        *,
        time_scale: float = 1.0,
    ) -> Gates:
        """`time_scale` stretches the waits as the engine stretches AWS's time limits (the
        integration's 29 s among them): on a machine that many times slower, the line
        moves that many times slower."""
        return cls(
            Gate(workflows.stretched(time_scale), "workflows"),
            Gate(writes.stretched(time_scale), "api-writes"),
            Gate(reads.stretched(time_scale), "api-reads"),
        )


def remaining(deadline: float) -> float:
    """Seconds left until a `time.monotonic()` deadline (never negative)."""
    return max(0.0, deadline - time.monotonic())
