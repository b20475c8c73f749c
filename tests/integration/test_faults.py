"""Faults on every task and every DynamoDB call of both workflows, on DynamoDB Local.

Each case builds the same small scenario twice (a twin event with its own users): one
twin runs the operation cleanly, the other with a fault. The faulted twin must end with
the same workflow output and the same table (the event's partition and the users'
items, ids and timestamps normalised) as the clean one: the workflows' Retry policies,
the tasks' in-task retries and the idempotent writes (ClientRequestToken, request ids on
items) absorb the fault. Faults that outlast every retry budget must fail the execution
with a clear error and leave the table unchanged (or, when the write committed before
its answer was lost, exactly as a clean run would: never half-written).

The figures (cases by kind, by task, outcomes) go to `.local/reliability-faults.json`.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer

from infrastructure import names
from infrastructure.local.engine import LocalEngine
from infrastructure.local.execution_results import ExecutionResult
from registration import domain_events, keys, outcomes
from registration.data import RegistrationStore
from registration.data.dynamo import now_iso
from registration.models import NewEvent, NewUser, scoped_key
from tests.fixtures.faults import KINDS, TASK, Fault, FaultInjector
from workflows.common import EXPRESS_RETRY_MAX_ATTEMPTS

pytestmark = pytest.mark.integration

FIGURES = Path(__file__).resolve().parents[2] / ".local" / "reliability-faults.json"
TIME_FIELDS = frozenset({"createdAt", "registeredAt", "joinedAt", "completedAt"})
# Epoch seconds on idempotency records (lease and TTL): they follow the clock.
EPOCH_FIELDS = frozenset({"leaseExpiresAt", "expiresAt"})
# A digest of the twin's own ids: differs between twins by construction.
DIGEST_FIELDS = frozenset({"fingerprint"})
# The workflows' Retry policy: retries after the first attempt (workflows/common.py).
SFN_RETRIES = EXPRESS_RETRY_MAX_ATTEMPTS
# The data layer's in-task retries of a conflicting transaction (1 + CONFLICT_RETRIES tries).
IN_TASK_CONFLICT_TRIES = 5


# --- the paths, their tasks and the DynamoDB calls each task makes ---------------------


@dataclass(frozen=True)
class Task:
    state: str  # the state's name in the workflow
    function: str  # the handler module that runs it
    calls: tuple[str, ...]  # DynamoDB operations it makes on this path (clean run)


@dataclass(frozen=True)
class Scenario:
    """An event, who holds a seat, who waits (in order), and who acts."""

    workflow: str
    capacity: int
    seated: tuple[str, ...]
    queued: tuple[str, ...]
    actor: str
    tasks: tuple[Task, ...]
    # Sent with an Idempotency-Key: the claim and the record of the outcome run too.
    keyed: bool = False
    # The states the one-shot cases fault (all of them by default). A keyed path
    # re-runs tasks the plain paths already cover; only its own tasks are faulted.
    faulted: tuple[str, ...] | None = None
    ends: str = "SUCCEEDED"


VALIDATE_REGISTER = Task("Validate", "validate", ("BatchGetItem",))
VALIDATE_UNREGISTER = Task("Validate", "validate", ("GetItem",))
# The first decision uses the snapshot Validate read: no call of its own.
CHECK_CAPACITY = Task("CheckCapacity", "check_capacity", ())

CLAIM = Task("ClaimRequest", "claim_request", ("PutItem",))
RECORD_FAILURE = Task("RecordFailure", "record_outcome", ("UpdateItem",))
# A keyed success stores its answer in the write's own transaction; a refusal, after.
KEYED_TASKS = ("ClaimRequest", "RecordFailure")

PATHS: dict[str, Scenario] = {
    "register_seat": Scenario(
        names.REGISTER_WORKFLOW,
        capacity=2,
        seated=("a",),
        queued=(),
        actor="new",
        tasks=(
            VALIDATE_REGISTER,
            CHECK_CAPACITY,
            Task("TakeSeat", "write_registration", ("TransactWriteItems",)),
        ),
    ),
    "join_waitlist": Scenario(
        names.REGISTER_WORKFLOW,
        capacity=1,
        seated=("a",),
        queued=("w1",),
        actor="new",
        tasks=(
            VALIDATE_REGISTER,
            CHECK_CAPACITY,
            Task("JoinWaitlist", "write_registration", ("TransactWriteItems",)),
        ),
    ),
    "unregister": Scenario(
        names.UNREGISTER_WORKFLOW,
        capacity=2,
        seated=("a", "b"),
        queued=(),
        actor="a",
        tasks=(
            VALIDATE_UNREGISTER,
            Task("CheckRegistration", "check_registration", ("BatchGetItem",)),
            Task("Unregister", "write_unregistration", ("TransactWriteItems",)),
        ),
    ),
    "unregister_with_promotion": Scenario(
        names.UNREGISTER_WORKFLOW,
        capacity=1,
        seated=("a",),
        queued=("w1", "w2"),
        actor="a",
        tasks=(
            VALIDATE_UNREGISTER,
            Task("CheckRegistration", "check_registration", ("BatchGetItem", "Query")),
            Task("PromoteFromWaitlist", "promote_from_waitlist", ("TransactWriteItems",)),
        ),
    ),
    "leave_waitlist": Scenario(
        names.UNREGISTER_WORKFLOW,
        capacity=1,
        seated=("a",),
        queued=("w1", "w2", "w3"),
        actor="w2",
        tasks=(
            VALIDATE_UNREGISTER,
            Task("CheckRegistration", "check_registration", ("BatchGetItem",)),
            Task("LeaveWaitlist", "write_unregistration", ("TransactWriteItems",)),
        ),
    ),
    "register_seat_keyed": Scenario(
        names.REGISTER_WORKFLOW,
        capacity=2,
        seated=("a",),
        queued=(),
        actor="new",
        tasks=(
            CLAIM,
            VALIDATE_REGISTER,
            CHECK_CAPACITY,
            Task("TakeSeat", "write_registration", ("TransactWriteItems",)),
        ),
        keyed=True,
        faulted=(*KEYED_TASKS, "TakeSeat"),
    ),
    "unregister_with_promotion_keyed": Scenario(
        names.UNREGISTER_WORKFLOW,
        capacity=1,
        seated=("a",),
        queued=("w1", "w2"),
        actor="a",
        tasks=(
            CLAIM,
            VALIDATE_UNREGISTER,
            Task("CheckRegistration", "check_registration", ("BatchGetItem", "Query")),
            Task("PromoteFromWaitlist", "promote_from_waitlist", ("TransactWriteItems",)),
        ),
        keyed=True,
        faulted=(*KEYED_TASKS, "PromoteFromWaitlist"),
    ),
    # A business refusal is an answer too: it is recorded (RecordFailure) and replayed.
    "already_registered_keyed": Scenario(
        names.REGISTER_WORKFLOW,
        capacity=2,
        seated=("a",),
        queued=(),
        actor="a",
        tasks=(
            CLAIM,
            VALIDATE_REGISTER,
            CHECK_CAPACITY,
            # The seat is found taken by the write's condition, not by a read.
            Task("TakeSeat", "write_registration", ("TransactWriteItems",)),
            RECORD_FAILURE,
        ),
        keyed=True,
        faulted=KEYED_TASKS,
        ends="FAILED",
    ),
}

# --- the cases -------------------------------------------------------------------------

ABSORBED = "absorbed"  # ended, answered and left the table as a clean run did
FAILED_UNCHANGED = "failed, table unchanged"
FAILED_COMMITTED = "failed, write committed whole"  # the answer of a committed write was lost
# Failed before the request changed anything, after its claim was written (or with a
# refusal that could not be recorded): a retry waits for the lease, then runs it again.
# Every request is sent by one caller allowed to act for anyone, so a key is one record.
CALLER = {"userId": "fault-operator", "groups": "admins"}
FAILED_CLAIM_LEFT = "failed, request not run, claim left to its lease"
DIVERGED = "diverged"  # anything else: a bug


@dataclass(frozen=True)
class Case:
    path: str
    state: str
    fault: Fault
    expect: str = ABSORBED
    error: str | None = None  # the execution's error when it must fail
    also: tuple[tuple[str, Fault], ...] = ()  # further (state, fault) pairs in the same run

    @property
    def faults(self) -> list[Fault]:
        return [self.fault, *(f for _, f in self.also)]

    @property
    def id(self) -> str:
        def name(state: str, fault: Fault) -> str:
            times = "always" if fault.times is None else f"x{fault.times}"
            after = f"-after{fault.skip}" if fault.skip else ""
            return f"{state}-{fault.operation or 'task'}-{fault.kind}-{times}{after}"

        return "+".join([f"{self.path}-{name(self.state, self.fault)}", *(name(s, f) for s, f in self.also)])


def _one_shot_cases() -> list[Any]:
    """Every (path, task, call, applicable kind) once, and every task-level kind once."""
    params: list[Any] = []
    for path, scenario in PATHS.items():
        for task in scenario.tasks:
            if scenario.faulted is not None and task.state not in scenario.faulted:
                continue
            for operation in task.calls:
                for kind in KINDS.values():
                    if operation in kind.operations:
                        case = Case(path, task.state, Fault(kind.name, task.function, operation))
                        params.append(pytest.param(case, id=case.id))
            for kind in (k for k in KINDS.values() if k.phase == TASK):
                case = Case(path, task.state, Fault(kind.name, task.function))
                params.append(pytest.param(case, id=case.id))
    return params


def _budget_cases() -> list[Any]:
    """At the edge of each retry budget, and beyond it."""
    w = "write_registration"
    u = "write_unregistration"
    p = "promote_from_waitlist"
    tx = "TransactWriteItems"
    transient = "TransientDatabaseError"
    cases = [
        # The most a Step Functions Retry absorbs: every retry fails but the last.
        Case("register_seat", "TakeSeat", Fault("Throttling", w, tx, SFN_RETRIES)),
        Case("join_waitlist", "JoinWaitlist", Fault("ProvisionedThroughputExceeded", w, tx, SFN_RETRIES)),
        Case("unregister", "Unregister", Fault("InternalServerError", u, tx, SFN_RETRIES)),
        Case("unregister_with_promotion", "PromoteFromWaitlist", Fault("TaskTimeout", p, None, SFN_RETRIES)),
        Case("leave_waitlist", "LeaveWaitlist", Fault("ReadTimeoutAfterCall", u, tx, SFN_RETRIES)),
        # Conflicts: the in-task retries absorb 4; a 5th re-decides (new attempt, new token).
        Case("register_seat", "TakeSeat", Fault("TransactionConflict", w, tx, IN_TASK_CONFLICT_TRIES - 1)),
        Case("register_seat", "TakeSeat", Fault("TransactionConflict", w, tx, IN_TASK_CONFLICT_TRIES)),
        # Two re-decisions (5 conflicts each), then one conflict absorbed in the task.
        Case("unregister_with_promotion", "PromoteFromWaitlist", Fault("TransactionConflict", p, tx, 2 * IN_TASK_CONFLICT_TRIES + 1)),
        # Beyond every budget: the execution fails with a clear error, nothing half-written.
        Case("register_seat", "Validate", Fault("Throttling", "validate", "BatchGetItem", None), FAILED_UNCHANGED, transient),
        Case("register_seat", "CheckCapacity", Fault("TaskTimeout", "check_capacity", None, None), FAILED_UNCHANGED, "States.Timeout"),
        Case("register_seat", "TakeSeat", Fault("ProvisionedThroughputExceeded", w, tx, None), FAILED_UNCHANGED, transient),
        Case("register_seat", "TakeSeat", Fault("TransactionConflict", w, tx, None), FAILED_UNCHANGED, "ContentionLimitExceeded"),
        Case("join_waitlist", "JoinWaitlist", Fault("InternalServerError", w, tx, None), FAILED_UNCHANGED, transient),
        Case("unregister", "Unregister", Fault("ReadTimeout", u, tx, None), FAILED_UNCHANGED, transient),
        Case("unregister_with_promotion", "Validate", Fault("ConnectionError", "validate", "GetItem", None), FAILED_UNCHANGED, transient),
        Case("unregister_with_promotion", "CheckRegistration", Fault("Throttling", "check_registration", "Query", None), FAILED_UNCHANGED, transient),
        Case("leave_waitlist", "LeaveWaitlist", Fault("TransactionThrottled", u, tx, None), FAILED_UNCHANGED, transient),
        # Every answer lost after the commit: the execution fails, the write is whole.
        Case("unregister_with_promotion", "PromoteFromWaitlist", Fault("ReadTimeoutAfterCall", p, tx, None), FAILED_COMMITTED, transient),
        # Several faults in one run.
        # Validate throttled; the write commits, its answer is lost; its replay is
        # recognised by its ClientRequestToken and answers.
        Case("join_waitlist", "Validate", Fault("Throttling", "validate", "BatchGetItem"), also=(
            ("JoinWaitlist", Fault("InternalServerErrorAfterCall", w, tx)),
        )),
        # Beyond the budget that keeps an answer inside API Gateway's 29 s (one retry per
        # task): the commit's answer is lost and the retry finds the first try still in
        # progress; or the replay succeeds and then the task times out. The execution
        # fails, the write is whole.
        Case("unregister_with_promotion", "PromoteFromWaitlist", Fault("ReadTimeoutAfterCall", p, tx), FAILED_COMMITTED, transient, also=(
            ("PromoteFromWaitlist", Fault("TransactionInProgress", p, tx, skip=1)),
        )),
        Case("join_waitlist", "JoinWaitlist", Fault("InternalServerErrorAfterCall", w, tx), FAILED_COMMITTED, "States.Timeout", also=(
            ("JoinWaitlist", Fault("TaskTimeout", w)),
        )),
        # Conflicts force a re-decision, which times out once after deciding; the write on
        # the new decision (the first call that reaches DynamoDB) commits and loses its answer.
        Case("register_seat", "TakeSeat", Fault("TransactionConflict", w, tx, IN_TASK_CONFLICT_TRIES), also=(
            ("CheckCapacity", Fault("TaskTimeout", "check_capacity", skip=1)),
            ("TakeSeat", Fault("ReadTimeoutAfterCall", w, tx)),
        )),
        # Keyed: the claim is refused every time; nothing is written.
        Case("register_seat_keyed", "ClaimRequest", Fault("Throttling", "claim_request", "PutItem", None), FAILED_UNCHANGED, transient),
        # Keyed: the claim is written but its answer is lost every time; the request never runs.
        Case("register_seat_keyed", "ClaimRequest", Fault("ReadTimeoutAfterCall", "claim_request", "PutItem", None), FAILED_CLAIM_LEFT, transient),
        # Keyed: every answer of the committed write is lost. Its answer was stored with
        # it, on the claim: the retried task finds it there (the unkeyed path above fails).
        Case("register_seat_keyed", "TakeSeat", Fault("ReadTimeoutAfterCall", w, tx, None)),
        Case("unregister_with_promotion_keyed", "PromoteFromWaitlist", Fault("ReadTimeoutAfterCall", p, tx, None)),
        # Keyed: a refusal can never be recorded; it is not given out (503, retry later).
        Case("already_registered_keyed", "RecordFailure", Fault("InternalServerError", "record_outcome", "UpdateItem", None), FAILED_CLAIM_LEFT, transient),
    ]  # fmt: skip
    return [pytest.param(c, id=c.id) for c in cases]


# --- scenario, run, dump ---------------------------------------------------------------


@dataclass
class Twin:
    """One copy of a scenario: real ids for its roles, and what to normalise them to."""

    event_id: str
    users: dict[str, str]  # role -> userId
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    key: str = field(default_factory=lambda: str(uuid.uuid4()))

    def replacements(self) -> list[tuple[str, str]]:
        pairs = [(self.request_id, "<request>"), (self.event_id, "<event>"), (self.key, "<key>")]
        pairs += [(user_id, f"<user:{role}>") for role, user_id in self.users.items()]
        return sorted(pairs, key=lambda p: len(p[0]), reverse=True)


@dataclass(frozen=True)
class Run:
    result: ExecutionResult
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    output: Any
    error: str | None
    answer: tuple[Any, ...]  # what the caller gets, normalised: status, output, error, message


def _build(store: RegistrationStore, scenario: Scenario) -> Twin:
    tag = uuid.uuid4().hex[:10]
    event_id = f"fault-{tag}"
    roles = (*scenario.seated, *scenario.queued, scenario.actor)
    twin = Twin(event_id, {role: f"{role}-{tag}" for role in dict.fromkeys(roles)})
    for user_id in twin.users.values():
        store.create_user(NewUser(userId=user_id, name="Fault"))
    store.create_event(
        NewEvent(eventId=event_id, title="Fault", capacity=scenario.capacity, hasWaitlist=True)
    )
    for role in scenario.seated:
        user_id = twin.users[role]
        store.take_seat(event_id, user_id, f"seed-{user_id}", now_iso())
    for role in scenario.queued:
        user_id = twin.users[role]
        store.join_waitlist(
            store.get_event(event_id),
            user_id,
            f"seed-{user_id}",
            now_iso(),
        )
    return twin


_deserializer = TypeDeserializer()


def _dump(store: RegistrationStore, twin: Twin) -> list[dict[str, Any]]:
    """Every item of the event's partition and the users' items, normalised, sorted."""
    client, table = store.client, store.table_name
    raw: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "PK = :pk",
        "ExpressionAttributeValues": {":pk": {"S": f"EVENT#{twin.event_id}"}},
        "ConsistentRead": True,
    }
    while True:
        page = client.query(**kwargs)
        raw.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    for user_id in twin.users.values():
        item = client.get_item(
            TableName=table,
            Key={"PK": {"S": f"USER#{user_id}"}, "SK": {"S": "METADATA"}},
            ConsistentRead=True,
        ).get("Item")
        if item:
            raw.append(item)
    record = client.get_item(
        TableName=table,
        Key={k: {"S": v} for k, v in keys.idempotency_key(scoped_key(twin.key, CALLER["userId"])).items()},
        ConsistentRead=True,
    ).get("Item")
    if record:
        raw.append(record)
    items = [{k: _deserializer.deserialize(v) for k, v in item.items()} for item in raw]
    normalised = [_normalise(item, twin) for item in items]
    return sorted(normalised, key=lambda i: (i["PK"], i["SK"]))


def _normalise_change(text: str, twin: Twin) -> dict[str, Any]:
    """A carried domain event: its id is a digest of the twin's ids, its time the clock's;
    an event created through the data layer has a request id of its own."""
    event = json.loads(text)
    known = {real for real, _ in twin.replacements()}
    return {
        k: "<digest>"
        if k == "id"
        else "<time>"
        if k == "occurredAt"
        else "<own request>"
        if k == "requestId" and v not in known
        else _normalise(v, twin)
        for k, v in event.items()
    }


def _normalise(value: Any, twin: Twin) -> Any:
    if isinstance(value, str) and value.startswith(keys.CHANGE_PREFIX):
        return f"{keys.CHANGE_PREFIX}<digest>"
    if isinstance(value, dict) and domain_events.DETAIL_ATTRIBUTE in value:
        value = {
            **value,
            domain_events.DETAIL_ATTRIBUTE: _normalise_change(value[domain_events.DETAIL_ATTRIBUTE], twin),
        }
    if isinstance(value, str):
        for real, placeholder in twin.replacements():
            value = value.replace(real, placeholder)
        return value
    if isinstance(value, dict):
        return {
            _normalise(k, twin): "<time>"
            if k in TIME_FIELDS
            else "<epoch>"
            if k in EPOCH_FIELDS
            else "<digest>"
            if k in DIGEST_FIELDS
            # A stored Lambda error document carries the invocation's own id and stack.
            else _normalise(outcomes.cause_message(v), twin)
            if k == "cause"
            else _normalise(v, twin)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_normalise(v, twin) for v in value]
    return value


def _run(
    engine: LocalEngine,
    store: RegistrationStore,
    scenario: Scenario,
    twin: Twin,
    request_id: str | None = None,
) -> Run:
    before = _dump(store, twin)
    request_id = request_id or twin.request_id
    execution_input = {
        "eventId": twin.event_id,
        "userId": twin.users[scenario.actor],
        "requestId": request_id,
        "caller": CALLER,
    }
    if scenario.keyed:
        execution_input["idempotencyKey"] = twin.key
    result = engine.run(
        scenario.workflow, execution_input, name=f"{scenario.workflow}-{request_id}", timeout=60
    )
    output = _normalise(result.output, twin)
    message = outcomes.cause_message(result.cause) if result.cause else None
    answer = (result.status, output, result.error, _normalise(message, twin))
    return Run(result, before, _dump(store, twin), output, result.error, answer)


def _without_record(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if not str(i["PK"]).startswith(keys.IDEMPOTENCY_PREFIX)]


# --- fixtures --------------------------------------------------------------------------


@dataclass
class Figures:
    cases: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


@pytest.fixture(scope="module")
def injector(local_engine: LocalEngine, handler_store: RegistrationStore) -> Iterator[FaultInjector]:
    injector = FaultInjector(local_engine, handler_store)
    undo = injector.install()
    try:
        yield injector
    finally:
        undo()


@pytest.fixture(scope="module")
def clean_runs(
    local_engine: LocalEngine, local_store: RegistrationStore, injector: FaultInjector
) -> dict[str, Run]:
    """One clean run per path (twice, to show a clean run is reproducible once normalised)."""
    runs: dict[str, Run] = {}
    for path, scenario in PATHS.items():
        first = _run(local_engine, local_store, scenario, _build(local_store, scenario))
        second = _run(local_engine, local_store, scenario, _build(local_store, scenario))
        assert first.result.status == scenario.ends, first.result
        assert (first.answer, first.before, first.after) == (second.answer, second.before, second.after)
        runs[path] = first
    return runs


@pytest.fixture(scope="module")
def figures() -> Iterator[Figures]:
    collected = Figures()
    yield collected
    if collected.cases:
        _write_figures(collected)


# --- the tests -------------------------------------------------------------------------


def test_the_matrix_names_every_call_each_task_makes(
    local_engine: LocalEngine, local_store: RegistrationStore, injector: FaultInjector
) -> None:
    """The declared (task, call) table is what the tasks really do, so no call goes unfaulted."""
    for path, scenario in PATHS.items():
        twin = _build(local_store, scenario)
        with injector.recording(twin.request_id) as calls:
            assert _run(local_engine, local_store, scenario, twin).result.status == scenario.ends
        declared = Counter({(t.function, op): 1 for t in scenario.tasks for op in t.calls})
        assert calls == declared, path


@pytest.mark.parametrize("case", _one_shot_cases() + _budget_cases())
def test_fault(
    case: Case,
    local_engine: LocalEngine,
    local_store: RegistrationStore,
    injector: FaultInjector,
    clean_runs: dict[str, Run],
    figures: Figures,
) -> None:
    scenario, clean = PATHS[case.path], clean_runs[case.path]
    twin = _build(local_store, scenario)
    started = time.monotonic()
    with injector.armed(twin.request_id, case.faults) as armed:
        run = _run(local_engine, local_store, scenario, twin)
    elapsed = time.monotonic() - started

    # Failed task attempts: retried by a Retry, or a stale decision looping back to decide again.
    failures = [
        (e.get("lambdaFunctionFailedEventDetails") or {}).get("error", "States.Timeout")
        for e in local_engine.history(run.result.execution_arn)
        if e["type"] in ("LambdaFunctionFailed", "LambdaFunctionTimedOut")
    ]
    redecided = failures.count("DecisionStale")
    answered_as_clean = run.answer == clean.answer
    claim = local_store.get_request(scoped_key(twin.key, CALLER["userId"])) if scenario.keyed else None
    claim_left = claim is not None and claim.status == "IN_PROGRESS"
    if answered_as_clean and run.after == clean.after:
        outcome = ABSORBED
    elif not run.result.succeeded and run.after == run.before:
        outcome = FAILED_UNCHANGED
    elif (
        not run.result.succeeded and _without_record(run.after) == _without_record(run.before) and claim_left
    ):
        outcome = FAILED_CLAIM_LEFT
    elif not run.result.succeeded and run.after == clean.after:
        outcome = FAILED_COMMITTED
    else:
        outcome = DIVERGED
    figures.cases.append(
        {
            "id": case.id,
            "path": case.path,
            "task": case.state,
            "call": case.fault.operation or "(task)",
            "kind": case.fault.kind,
            "times": case.fault.times,
            "also": [f"{state}:{f.operation or 'task'}:{f.kind}" for state, f in case.also],
            "fired": sum(a.fired for a in armed),
            "expected": case.expect,
            "outcome": outcome,
            "error": run.error,
            "failed_task_attempts": len(failures) - redecided,
            "redecisions": redecided,
            "seconds": round(elapsed, 3),
        }
    )

    assert run.before == clean.before, "the twins started alike"
    for a in armed:
        if a.fault.times is None:
            assert a.fired >= 1, a
        else:
            assert a.fired == a.fault.times, f"{a.fault} fired {a.fired} times"
    assert outcome == case.expect, (run.result.status, run.error, run.result.cause, run.after, clean.after)
    if case.expect == ABSORBED:
        assert run.output == clean.output
        if scenario.keyed:
            # Whatever the first run went through, a replay answers as a clean run did
            # and changes nothing.
            replay = _run(local_engine, local_store, scenario, twin, request_id=uuid.uuid4().hex)
            assert replay.answer == clean.answer
            assert replay.after == run.after
    else:
        assert run.error == case.error, run.result.cause
        if scenario.keyed and case.expect in (FAILED_COMMITTED, FAILED_CLAIM_LEFT):
            # A write that committed answers its replay as a clean run did; a request
            # that changed nothing holds its key until the lease runs out.
            replay = _run(local_engine, local_store, scenario, twin, request_id=uuid.uuid4().hex)
            if case.expect == FAILED_COMMITTED:
                assert replay.answer == clean.answer
            else:
                assert replay.error == "RequestInProgress"
            assert replay.after == run.after
        if case.fault.kind != "TransactionConflict":
            # Every attempt the Retry allows was made, and then no more (a business
            # refusal before them is the path's own, not a retried failure).
            retried = [f for f in failures if outcomes.error_status(f) >= 500]
            assert len(retried) == SFN_RETRIES + 1, failures


# --- figures ---------------------------------------------------------------------------


def _write_figures(collected: Figures) -> None:
    """Per worker, then merged: `pytest -n 2` splits the cases between two processes."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID", "single")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    parts = FIGURES.with_suffix(".parts")
    parts.mkdir(exist_ok=True)
    (parts / f"{worker}.json").write_text(
        json.dumps(
            {
                "run": run_id,
                "seconds": round(time.monotonic() - collected.started, 1),
                "cases": collected.cases,
            }
        )
    )
    with open(parts / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shards = [json.loads(p.read_text()) for p in sorted(parts.glob("*.json"))]
        shards = [s for s in shards if s["run"] == run_id]
        cases = [c for s in shards for c in s["cases"]]
        summary = {
            "cases": len(cases),
            "by_kind": dict(sorted(Counter(c["kind"] for c in cases).items())),
            "by_task": dict(sorted(Counter(c["task"] for c in cases).items())),
            "by_call": dict(sorted(Counter(c["call"] for c in cases).items())),
            "by_path": dict(sorted(Counter(c["path"] for c in cases).items())),
            "outcomes": dict(sorted(Counter(c["outcome"] for c in cases).items())),
            "outcome_as_expected": sum(c["outcome"] == c["expected"] for c in cases),
            "not_as_expected": sorted(c["id"] for c in cases if c["outcome"] != c["expected"]),
            "faults_fired": sum(c["fired"] for c in cases),
            "absorbed_by_step_functions_retry": sum(
                1 for c in cases if c["outcome"] == ABSORBED and c["failed_task_attempts"] > 0
            ),
            "absorbed_by_deciding_again": sum(
                1
                for c in cases
                if c["outcome"] == ABSORBED and c["failed_task_attempts"] == 0 and c["redecisions"] > 0
            ),
            "absorbed_inside_the_task": sum(
                1
                for c in cases
                if c["outcome"] == ABSORBED and c["failed_task_attempts"] == 0 and c["redecisions"] == 0
            ),
            "seconds_per_worker": [s["seconds"] for s in shards],
            "kinds": {k.name: k.description for k in KINDS.values()},
            "case_list": sorted(cases, key=lambda c: c["id"]),
        }
        FIGURES.write_text(json.dumps(summary, indent=2) + "\n")
