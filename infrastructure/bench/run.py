"""`make bench`: cost per operation at growing event sizes, latency through the local API, AWS figures.

    python -m infrastructure.bench [--small] [--output docs/benchmarks.md]

1. Cost: for events of 10, 1,000 and 100,000 registrants (and waitlists as long), each
   operation runs through the synthesized workflows on the local engine over DynamoDB
   Local; a botocore hook on the task handlers' DynamoDB client counts round trips,
   items and capacity units (AWS's rules, `dynamodb_units.py`), and the execution history
   gives Lambda invocations and state transitions.
2. Latency: registrations through the local HTTP API (its own process) and through the
   data layer called directly, at 1, 8 and 32 in flight; peak memory of the local stack.
3. AWS: what the measured units mean at published prices and quotas (`aws_costs.py`).

The report (markdown and plots) is rewritten from this run's measurements.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from infrastructure import names
from infrastructure.bench import report
from infrastructure.bench.bulk_load import load_event, load_users, serialize
from infrastructure.bench.load import (
    MemorySampler,
    children_named,
    direct_register,
    http_register,
    run_load,
)
from infrastructure.bench.meter import CallRecord, Meter, calls_by_operation, total
from infrastructure.bench.results import (
    Measure,
    Results,
    Settings,
    figures,
)
from infrastructure.local.dynamodb_local import REPO_ROOT, DynamoDBLocal, DynamoDBLocalError, find_jar_dir
from infrastructure.local.engine import LocalEngine
from infrastructure.local.moto_logs import route_moto_logs
from registration import keys
from registration.data import RegistrationStore, get_store
from registration.data.dynamo import now_iso
from registration.data.items import seat_item
from registration.models import MAX_CAPACITY, NewEvent

DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"
DEFAULT_TEMPLATE = REPO_ROOT / names.CDK_OUT_DIR / names.TEMPLATE_FILE
# One measured run: the calls it made; Lambda invocations, state transitions, execution ms, Lambda ms.
Run = tuple[list[CallRecord], tuple[int, int, float, float]]


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to."""


# --- machine ------------------------------------------------------------------------------


def dynamodb_local_version() -> str:
    try:
        jar = find_jar_dir() / "DynamoDBLocal.jar"
        with zipfile.ZipFile(jar) as archive:
            for name in archive.namelist():
                if name.endswith("DynamoDBLocal/pom.properties"):
                    for line in archive.read(name).decode().splitlines():
                        if line.startswith("version="):
                            return line.split("=", 1)[1].strip()
    except (OSError, DynamoDBLocalError, zipfile.BadZipFile):
        pass
    return "unknown version"


def machine_description() -> str:
    cores = os.cpu_count() or 0
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {round(int(line.split()[1]) / 1024 / 1024)} GiB"
    except OSError:
        pass
    python = ".".join(platform.python_version_tuple()[:2])
    return (
        f"{cores} cores{memory}, {platform.system()} {platform.machine()}, Python {python}, "
        f"DynamoDB Local {dynamodb_local_version()}"
    )


def load_average() -> float | None:
    """The 1-minute load average (what else was running), None where unknown."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# --- part 1: cost per operation -------------------------------------------------------------


def _history_figures(engine: LocalEngine, execution_arn: str) -> tuple[int, int, float]:
    """Lambda invocations, state transitions and the invocations' total duration (ms).

    State transitions are counted as AWS's pricing page defines them: one each time a
    step of the workflow is executed, i.e. one per `*StateEntered` history event (retries
    and loops enter again and count again).
    """
    invocations = transitions = 0
    lambda_ms = 0.0
    started: Any = None
    for event in engine.history(execution_arn):
        kind = event["type"]
        if kind == "LambdaFunctionScheduled":
            invocations += 1
        elif kind.endswith("StateEntered"):
            transitions += 1
        elif kind == "LambdaFunctionStarted":
            started = event["timestamp"]
        elif (
            kind in ("LambdaFunctionSucceeded", "LambdaFunctionFailed", "LambdaFunctionTimedOut") and started
        ):
            lambda_ms += (event["timestamp"] - started).total_seconds() * 1000
            started = None
    return invocations, transitions, lambda_ms


class CostBench:
    """Runs the workflows one execution at a time with the handlers' client metered."""

    def __init__(
        self, engine: LocalEngine, meter: Meter, loader: RegistrationStore, settings: Settings
    ) -> None:
        self.engine = engine
        self.meter = meter
        self.loader = loader
        self.settings = settings

    def _execute(
        self, workflow: str, event_id: str, user_id: str, expect: dict[str, Any], key: str | None = None
    ) -> Run:
        request_id = uuid.uuid4().hex
        execution_input = {"eventId": event_id, "userId": user_id, "requestId": request_id}
        if key is not None:
            execution_input["idempotencyKey"] = key
        with self.meter.counting() as records:
            result = self.engine.run(workflow, execution_input, name=f"bench-{workflow}-{request_id}")
        output = result.output if isinstance(result.output, dict) else {}
        if not result.succeeded or any(output.get(k) != v for k, v in expect.items()):
            raise BenchError(
                f"{workflow} {event_id}/{user_id}: {result.status} {result.error or ''} {result.cause or ''} "
                f"{result.output!r}, expected {expect}"
            )
        invocations, transitions, lambda_ms = _history_figures(self.engine, result.execution_arn)
        return records, (invocations, transitions, result.duration_ms or 0.0, lambda_ms)

    def _measure(
        self,
        operation: str,
        size: int,
        event_id: str,
        runs: Sequence[Callable[[], Run]],
    ) -> Measure:
        measures: list[Measure] = []
        for run in runs:
            records, (invocations, transitions, execution_ms, lambda_ms) = run()
            measures.append(
                Measure(
                    operation=operation,
                    size=size,
                    usage=total(records),
                    calls=calls_by_operation(records),
                    event_pk=keys.event_pk(event_id),
                    lambda_invocations=invocations,
                    state_transitions=transitions,
                    execution_ms=execution_ms,
                    lambda_ms=lambda_ms,
                )
            )
        first = measures[0]
        first.repeats_identical = len({figures(m) for m in measures}) == 1
        first.durations = [(m.execution_ms, m.lambda_ms) for m in measures]
        return first

    def _floor(self, event_id: str, user_id: str) -> Run:
        """Register into a seat as one transaction, no reads: the least DynamoDB can do."""
        store = RegistrationStore(self.loader.table_name, self.meter.client)
        item = seat_item(event_id, user_id, uuid.uuid4().hex, now_iso())
        actions = [
            {
                "Update": {
                    "TableName": store.table_name,
                    "Key": serialize(keys.event_key(event_id)),
                    "UpdateExpression": "SET registeredCount = registeredCount + :one",
                    "ConditionExpression": (
                        "attribute_exists(PK) AND registeredCount < #capacity AND waitlistCount = :zero"
                    ),
                    "ExpressionAttributeNames": {"#capacity": "capacity"},
                    "ExpressionAttributeValues": serialize({":one": 1, ":zero": 0}),
                }
            },
            {
                "Put": {
                    "TableName": store.table_name,
                    "Item": serialize(item),
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            },
            {
                "ConditionCheck": {
                    "TableName": store.table_name,
                    "Key": serialize(keys.user_key(user_id)),
                    "ConditionExpression": "attribute_exists(PK)",
                }
            },
        ]
        began = time.perf_counter()
        with self.meter.counting() as records:
            self.meter.client.transact_write_items(TransactItems=actions)
        return records, (0, 0, (time.perf_counter() - began) * 1000, 0.0)

    def _floor_run(self, event_id: str, user_id: str) -> Callable[[], Run]:
        return lambda: self._floor(event_id, user_id)

    def warm_up(self) -> None:
        """Imports and connections happen here, not in the first measured execution."""
        event_id = "bench-warm-up"
        load_event(self.loader, event_id, capacity=2, seated=1, has_waitlist=True, show_progress=False)
        load_users(self.loader, ["warm-up-user"], show_progress=False)
        self._execute(names.REGISTER_WORKFLOW, event_id, "warm-up-user", {"status": "registered"})
        self._execute(names.UNREGISTER_WORKFLOW, event_id, "warm-up-user", {"status": "unregistered"})

    def at_size(
        self, size: int, newcomers: Sequence[str], floor_users: Sequence[str], keyed_users: Sequence[str]
    ) -> list[Measure]:
        repeats = len(newcomers)
        register, unregister = names.REGISTER_WORKFLOW, names.UNREGISTER_WORKFLOW
        out: list[Measure] = []

        # An event with `size` registrants and free seats, no waitlist.
        seats = f"bench-seats-{size:07d}"
        seated = load_event(self.loader, seats, capacity=size + 3 * repeats, seated=size).seated

        def run(
            workflow: str, event: str, user: str, expect: dict[str, Any], key: str | None = None
        ) -> Callable[[], Any]:
            return lambda: self._execute(workflow, event, user, expect, key)

        out.append(
            self._measure(
                "register_seat",
                size,
                seats,
                [run(register, seats, u, {"status": "registered"}) for u in newcomers],
            )
        )
        out.append(
            self._measure("register_floor", size, seats, [self._floor_run(seats, u) for u in floor_users])
        )
        # The same registration sent with an Idempotency-Key, then sent again.
        keys_by_user = {u: f"bench-{size}-{u}" for u in keyed_users}
        registered = {"status": "registered"}
        out.append(
            self._measure(
                "register_seat_keyed",
                size,
                seats,
                [run(register, seats, u, registered, keys_by_user[u]) for u in keyed_users],
            )
        )
        out.append(
            self._measure(
                "register_replay",
                size,
                seats,
                [run(register, seats, u, registered, keys_by_user[u]) for u in keyed_users],
            )
        )
        out.append(
            self._measure(
                "unregister_release",
                size,
                seats,
                [run(unregister, seats, u, {"status": "unregistered"}) for u in seated[:repeats]],
            )
        )

        # A full event: `size` registrants and `size` people waiting.
        full = f"bench-queue-{size:07d}"
        queued = load_event(self.loader, full, capacity=size, seated=size, waitlisted=size, has_waitlist=True)
        out.append(
            self._measure(
                "join_waitlist",
                size,
                full,
                [run(register, full, u, {"status": "waitlisted"}) for u in newcomers],
            )
        )
        out.append(
            self._measure(
                "leave_waitlist",
                size,
                full,
                [run(unregister, full, u, {"status": "left_waitlist"}) for u in newcomers],
            )
        )
        out.append(
            self._measure(
                "unregister_promote",
                size,
                full,
                [
                    run(unregister, full, u, {"status": "unregistered", "promoted": queued.waitlisted[n]})
                    for n, u in enumerate(queued.seated[:repeats])
                ],
            )
        )
        return out


def measure_costs(
    endpoint: str, template: Path, settings: Settings, results: Results, log: Callable[[str], None]
) -> None:
    quiet = {"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"}
    with LocalEngine(template, dynamodb_endpoint=endpoint, environment=quiet) as engine:
        task_memory = {
            f.memory_size
            for f in engine.template.functions.values()
            if f.handler in names.TASK_HANDLERS.values()
        }
        if task_memory:
            results.lambda_memory_mb = max(task_memory)
        handler_store = get_store()  # the store (and client) the task handlers use
        loader = RegistrationStore(engine.table_name, _client(endpoint))
        with Meter(handler_store.client, _client(endpoint)) as meter:
            bench = CostBench(engine, meter, loader, settings)
            bench.warm_up()
            newcomers = [f"n{n:07d}" for n in range(settings.repeats)]
            floor_users = [f"f{n:07d}" for n in range(settings.repeats)]
            keyed_users = [f"k{n:07d}" for n in range(settings.repeats)]
            load_users(loader, [*newcomers, *floor_users, *keyed_users], show_progress=False)
            for size in settings.sizes:
                log(f"cost: events of {size:,} registrants")
                began = time.monotonic()
                results.costs.extend(bench.at_size(size, newcomers, floor_users, keyed_users))
                results.load_seconds += time.monotonic() - began


def _client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=names.LOCAL_REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=64),
    )


# --- part 2: latency and throughput -----------------------------------------------------------


class ServerProcess:
    """`infrastructure.bench.serve` as a child process."""

    def __init__(self, endpoint: str, template: Path, table: str) -> None:
        self.command = [
            sys.executable,
            "-m",
            "infrastructure.bench.serve",
            "--endpoint",
            endpoint,
            "--template",
            str(template),
            "--table",
            table,
        ]
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> ServerProcess:
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("READY "):
            self.__exit__()
            raise BenchError(f"the local API did not start (it said {line!r})")
        self.url = line.split(" ", 1)[1]
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __exit__(self, *exc: object) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin:
            process.stdin.close()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def measure_latency(
    endpoint: str, template: Path, settings: Settings, results: Results, log: Callable[[str], None]
) -> None:
    store = RegistrationStore(names.LOCAL_TABLE_NAME, _client(endpoint))
    users = [f"load-{n:06d}" for n in range(settings.user_pool)]
    load_users(store, users, label="load users")
    warmup = 2

    def event(mode: str, concurrency: int) -> str:
        event_id = f"bench-load-{mode}-{concurrency}-{uuid.uuid4().hex[:6]}"
        store.create_event(NewEvent(eventId=event_id, title="Load", capacity=MAX_CAPACITY))
        return event_id

    with ServerProcess(endpoint, template, names.LOCAL_TABLE_NAME) as server:
        database = children_named(os.getpid(), "java")
        for concurrency in settings.concurrency:
            log(f"latency: through the HTTP API, {concurrency} in flight")
            sampler = MemorySampler(
                {"local API": server.pid, **({"DynamoDB Local": database[0]} if database else {})}
            )
            with sampler:
                result = run_load(
                    "orchestrated",
                    http_register(server.url, event("http", concurrency)),
                    users,
                    concurrency=concurrency,
                    seconds=settings.seconds,
                    warmup=warmup,
                )
            results.loads.append(result)
            if concurrency == max(settings.concurrency):
                results.memory_peaks = dict(sampler.peaks)
                results.memory_peak_total = sampler.peak_total
    for concurrency in settings.concurrency:
        log(f"latency: the data layer called directly, {concurrency} in flight")
        results.loads.append(
            run_load(
                "direct",
                direct_register(store, event("direct", concurrency)),
                users,
                concurrency=concurrency,
                seconds=settings.seconds,
                warmup=warmup,
            )
        )


# --- the run ------------------------------------------------------------------------------------


def run(settings: Settings, output: Path, template: Path, log: Callable[[str], None]) -> Results:
    began = time.monotonic()
    results = Results(settings=settings, machine=machine_description(), started=datetime.now(UTC))
    results.load_average = load_average()
    route_moto_logs()
    with DynamoDBLocal(in_memory=True) as database:
        endpoint = database.endpoint_url
        measure_costs(endpoint, template, settings, results, log)
        measure_latency(endpoint, template, settings, results, log)
    results.elapsed_seconds = time.monotonic() - began
    report.write(results, output)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infrastructure.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--small", action="store_true", help="10 and 100 registrants, concurrency 2, short runs"
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="markdown report (plots go beside it)"
    )
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    args = parser.parse_args(argv)
    if not args.template.is_file():
        print(f"{args.template} not found: synthesize the stack first with `make synth`.", file=sys.stderr)
        return 2
    settings = Settings.reduced() if args.small else Settings.full()

    def log(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    try:
        results = run(settings, args.output, args.template, log)
    except DynamoDBLocalError as exc:
        print(exc, file=sys.stderr)
        return 2
    log(f"report: {args.output} ({results.elapsed_seconds:.0f} s in all)")
    if not results.flat_everywhere():
        log("target missed: an operation's cost changes with the event's size")
    if not results.register_within_targets():
        log("target missed: register-into-seat exceeds its round-trip or invocation budget")
    return 0
