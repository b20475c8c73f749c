"""Part 1 of the benchmark: each operation through the synthesized workflows, at every event size, metered.

Events of each size are bulk-loaded, then every operation runs one execution at a time
on the local engine; the meter on the task handlers' DynamoDB client counts what each
execution cost, and its history gives Lambda invocations and state transitions.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from infrastructure import names
from infrastructure.bench.bulk_load import load_event, load_users, serialize
from infrastructure.bench.local_stack import BenchError, dynamodb_client
from infrastructure.bench.meter import CallRecord, Meter, calls_by_operation, total
from infrastructure.bench.results import (
    ERASED_REGISTRATIONS,
    PROMOTED_BY_A_RAISE,
    CancelRun,
    ErasureRun,
    Measure,
    Results,
    Settings,
    figures,
)
from infrastructure.local.engine import LocalEngine
from registration import cancellation, erasure, event_changes, keys
from registration.data import RegistrationStore, get_store
from registration.data.dynamo import now_iso
from registration.data.items import seat_item
from registration.models import ErasureInput, EventPatch, NewEvent, NewUser

# One measured run: the calls it made; Lambda invocations, state transitions, execution ms, Lambda ms.
Run = tuple[list[CallRecord], tuple[int, int, float, float]]


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
        execution_input: dict[str, Any] = {
            "eventId": event_id,
            "userId": user_id,
            "requestId": request_id,
            "caller": {"userId": user_id, "groups": ""},  # each user acts for themselves
        }
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

    def _raise_capacity(self, event_id: str) -> Run:
        """`PATCH /events/{id}` adding PROMOTED_BY_A_RAISE seats, as the API function runs it
        (one invocation, no workflow), through the handlers' metered store."""
        store = get_store()
        event = store.get_event(event_id)
        patch = EventPatch(capacity=event.capacity + PROMOTED_BY_A_RAISE)
        began = time.perf_counter()
        with self.meter.counting() as records:
            outcome = event_changes.change_event(store, event_id, patch, None, uuid.uuid4().hex)
        took = (time.perf_counter() - began) * 1000
        if len(outcome.promoted) != PROMOTED_BY_A_RAISE:
            raise BenchError(f"raising {event_id}'s capacity promoted {outcome.promoted}")
        return records, (1, 0, took, took)

    def erase_user(self, registrations: int = ERASED_REGISTRATIONS) -> ErasureRun:
        """`DELETE /users/{id}` of a user seated at `registrations` events, someone waiting
        at each: the mark, then the erase workflow's whole run (ten hand-overs, the
        records and the user deleted). It does not wait for registrations in flight: the
        wait is one transition, and nothing registers here meanwhile."""
        user_id, waiter = f"bench-erased-{uuid.uuid4().hex[:8]}", f"bench-waiter-{uuid.uuid4().hex[:8]}"
        for person in (user_id, waiter):
            self.loader.create_user(NewUser(userId=person, name=f"Benchmark {person}"))
        for n in range(registrations):
            event = self.loader.create_event(
                NewEvent(
                    eventId=f"{user_id}-{n:02d}", title="Benchmark erasure", capacity=1, hasWaitlist=True
                )
            )
            self.loader.take_seat(event.eventId, user_id, uuid.uuid4().hex, now_iso())
            full = self.loader.get_event(event.eventId)
            self.loader.join_waitlist(full, waiter, uuid.uuid4().hex, now_iso())
        store = get_store()
        began = time.perf_counter()
        with self.meter.counting() as records:
            since = erasure.mark(store, user_id)
            run = ErasureInput(
                userId=user_id, requestId=uuid.uuid4().hex, erasingSince=since, settleSeconds=0
            )
            result = self.engine.run(
                names.ERASE_WORKFLOW,
                run.model_dump(mode="json"),
                name=erasure.execution_name(user_id, since),
                timeout=600,
            )
        seconds = time.perf_counter() - began
        seated = {r.eventId for r in self.loader.list_user_registrations(waiter, limit=100).items}
        if (
            not result.succeeded
            or len(seated) != registrations
            or self.loader.find_event(f"{user_id}-00") is None
        ):
            raise BenchError(
                f"erasing {user_id}: {result.status} {result.error or ''}, {waiter} seated at {seated}"
            )
        invocations, transitions, _ = _history_figures(self.engine, result.execution_arn)
        return ErasureRun(
            registrations=registrations,
            seconds=seconds,
            usage=total(records),
            transitions=transitions,
            invocations=invocations,
        )

    def cancel_at(self, size: int) -> CancelRun:
        """`POST /events/{id}/cancel` on an event of `size` registrants: the mark, then the
        cancel workflow's whole run (its Distributed Map's children included)."""
        event_id = f"bench-cancel-{size:07d}"
        load_event(self.loader, event_id, capacity=size, seated=size, show_progress=False)
        request_id = uuid.uuid4().hex
        began = time.perf_counter()
        with self.meter.counting() as records:
            cancellation.cancel(get_store(), event_id)
            result = self.engine.run(
                names.CANCEL_WORKFLOW,
                {"eventId": event_id, "requestId": request_id},
                name=f"bench-cancel-{size}-{request_id}",
                timeout=3600,
            )
        seconds = time.perf_counter() - began
        left = self.loader.get_event(event_id)
        if not result.succeeded or (left.registeredCount, left.waitlistCount) != (0, 0):
            raise BenchError(f"cancelling {event_id}: {result.status} {result.error or ''}, {left}")
        invocations, transitions, _ = _history_figures(self.engine, result.execution_arn)
        groups = -(-size // cancellation.ENTRIES_PER_GROUP)
        return CancelRun(
            size=size,
            seconds=seconds,
            usage=total(records),
            groups=groups,
            transitions=transitions + groups,
            invocations=invocations + groups,
        )

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
        # A full event of `size` registrants with enough people waiting for every raise.
        raised = f"bench-raise-{size:07d}"
        load_event(
            self.loader,
            raised,
            capacity=size,
            seated=size,
            waitlisted=PROMOTED_BY_A_RAISE * repeats,
            has_waitlist=True,
        )
        out.append(
            self._measure(
                "raise_capacity", size, raised, [lambda: self._raise_capacity(raised) for _ in range(repeats)]
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
        loader = RegistrationStore(engine.table_name, dynamodb_client(endpoint))
        with Meter(handler_store.client, dynamodb_client(endpoint)) as meter:
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
            for size in settings.sizes:
                log(f"cost: cancelling an event of {size:,} registrants")
                results.cancels.append(bench.cancel_at(size))
            log(f"cost: erasing a user with {ERASED_REGISTRATIONS} registrations")
            results.erasures.append(bench.erase_user())
