"""Closed-loop load: N workers, each sending its next registration as soon as the last one answered.

Two ways to register: through the local HTTP API (API route -> Express workflow -> Lambda
tasks -> DynamoDB) and through the data layer called directly (the same service rules
and transactions, no workflow, no HTTP). The difference is the price of orchestration
on this machine.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from registration import service
from registration.access import Caller
from registration.data import RegistrationStore
from registration.errors import DecisionStale
from registration.models import RegisterState, ValidateInput

Register = Callable[[str], bool]


@dataclass(frozen=True)
class LoadResult:
    mode: str
    concurrency: int
    latencies_ms: Sequence[float]
    errors: int
    seconds: float

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors

    @property
    def per_second(self) -> float:
        """Successful registrations per second."""
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        cuts = statistics.quantiles(self.latencies_ms, n=100, method="inclusive")
        return cuts[min(max(round(p) - 1, 0), 98)]


class _Users:
    """Hands out each user id once, across threads."""

    def __init__(self, users: Sequence[str]) -> None:
        self._iterator: Iterator[str] = iter(users)
        self._lock = threading.Lock()

    def next(self) -> str | None:
        with self._lock:
            return next(self._iterator, None)


def run_load(
    mode: str,
    make_register: Callable[[], Register],
    users: Sequence[str],
    *,
    concurrency: int,
    seconds: float,
    warmup: int = 0,
) -> LoadResult:
    """`concurrency` workers register users until `seconds` pass or the users run out.

    Each worker gets its own `Register` (a connection, for HTTP). The first `warmup`
    registrations of each worker are not counted.
    """
    pool = _Users(users)
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    start_line = threading.Barrier(concurrency + 1)
    window: dict[str, float] = {}

    def worker() -> None:
        nonlocal errors
        register = make_register()
        for _ in range(warmup):
            user = pool.next()
            if user is None:
                break
            register(user)
        start_line.wait()
        mine: list[float] = []
        failed = 0
        while time.perf_counter() < window["end"]:
            user = pool.next()
            if user is None:
                break
            began = time.perf_counter()
            try:
                ok = register(user)
            except Exception:
                ok = False
            if ok:
                mine.append((time.perf_counter() - began) * 1000)
            else:
                failed += 1
        with lock:
            latencies.extend(mine)
            errors += failed
        window["last"] = max(window.get("last", 0.0), time.perf_counter())

    threads = [threading.Thread(target=worker, name=f"load-{n}", daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    window["end"] = float("inf")
    start_line.wait()
    began = time.perf_counter()
    window["end"] = began + seconds
    for thread in threads:
        thread.join()
    elapsed = window.get("last", time.perf_counter()) - began
    return LoadResult(mode, concurrency, sorted(latencies), errors, elapsed)


# --- the two ways to register ------------------------------------------------------------


# Who the HTTP load signs in as: an admin registers anyone with no read more than a user
# registering themselves costs (an organizer acting for someone reads the event first).
LOAD_CALLER = "bench-admin"
LOAD_CALLER_GROUPS = ("admins",)


def issue_token(
    base_url: str, user_id: str = LOAD_CALLER, groups: tuple[str, ...] = LOAD_CALLER_GROUPS
) -> str:
    """An ID token of the local server's user pool (its operator endpoint, as `regctl token`)."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        body = json.dumps({"userId": user_id, "groups": list(groups)})
        connection.request("POST", "/_ops/token", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read() or b"{}")
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"the local server issued no token: {response.status} {answer}")
    return str(answer["token"])


def http_register(base_url: str, event_id: str, token: str) -> Callable[[], Register]:
    """One keep-alive connection per worker, signed in with `token`; success is 201."""
    parts = urlsplit(base_url)
    path = f"/events/{event_id}/register"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def make() -> Register:
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)

        def register(user_id: str) -> bool:
            body = json.dumps({"userId": user_id})
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                return False
            return response.status == 201

        return register

    return make


def direct_register(store: RegistrationStore, event_id: str) -> Callable[[], Register]:
    """The register workflow's steps as plain calls: validate, decide, write (re-decide on a lost race)."""

    def make() -> Register:
        def register(user_id: str) -> bool:
            request_id = uuid.uuid4().hex
            caller = Caller(userId=user_id)  # each user registers themselves
            request = ValidateInput(
                eventId=event_id, userId=user_id, requestId=request_id, caller=caller, operation="register"
            )
            state = RegisterState(
                eventId=event_id,
                userId=user_id,
                requestId=request_id,
                caller=caller,
                event=service.validate(store, request),
            )
            while True:
                decision = service.check_capacity(store, state)  # bounded by MAX_DECISIONS
                state = state.model_copy(update={"decision": decision})
                if decision.action == "full":
                    return False
                try:
                    service.write_registration(store, state)
                    return True
                except DecisionStale:
                    continue

        return register

    return make


# --- memory ------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (Linux /proc), None when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def children_named(parent: int, name: str) -> list[int]:
    """Child processes of `parent` whose command name is `name` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields_after = stat[stat.rfind(")") + 2 :].split()
        if comm == name and len(fields_after) > 1 and int(fields_after[1]) == parent:
            found.append(int(entry.name))
    return found


@dataclass
class MemorySampler:
    """Samples the resident memory of some processes until stopped; keeps the peaks."""

    pids: dict[str, int]
    interval: float = 0.1
    peaks: dict[str, int] = field(default_factory=dict)
    peak_total: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        total = 0
        for label, pid in self.pids.items():
            rss = rss_bytes(pid)
            if rss is None:
                continue
            self.peaks[label] = max(self.peaks.get(label, 0), rss)
            total += rss
        self.peak_total = max(self.peak_total, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> MemorySampler:
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
