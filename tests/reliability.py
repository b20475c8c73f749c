"""Run the reliability suites and write their figures into docs/reliability.md.

    python -m tests.reliability            # run the suites, then rewrite the document
    python -m tests.reliability --no-run   # rewrite it from the last run's figures

The suites (concurrency and overload over HTTP, the fault matrix, crashes of the serving
process, a database that dies, fuzzing and hostile input, the security baseline) write
their figures to `.local/reliability-*.json`; this module only renders them.
They start their own DynamoDB Local (in memory); `CI=1` makes a missing Java fail.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL = REPO_ROOT / ".local"
DOCUMENT = REPO_ROOT / "docs" / "reliability.md"
SUITES = (
    "tests/integration/test_concurrency_http.py",
    "tests/integration/test_stampede_http.py",
    "tests/integration/test_faults.py",
    "tests/http/test_crash_replay.py",
    "tests/http/test_cli.py::test_a_database_that_dies_is_restarted_on_its_data_and_the_stack_recovers",
    "tests/http/test_fuzz.py",
    "tests/property/test_hostile_input.py",
    "tests/infrastructure/test_security.py",
)
FIGURES = {
    name: LOCAL / f"reliability-{name}.json"
    for name in (
        "concurrency",
        "stampede",
        "faults",
        "crash_replay",
        "database_restart",
        "fuzz",
        "hostile_input",
        "nag",
    )
}
COMMAND = "make reliability  # or: .venv/bin/python -m tests.reliability"


def run_suites() -> int:
    for path in FIGURES.values():
        path.unlink(missing_ok=True)
    environment = {**os.environ, "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci")}
    command = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", *SUITES]
    return subprocess.run(command, cwd=REPO_ROOT, env=environment, check=False).returncode


def _load(name: str) -> dict[str, Any] | None:
    path = FIGURES[name]
    return json.loads(path.read_text()) if path.exists() else None


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


SCENARIOS = {
    "registerWithWaitlist": "500 registrations, one 50-seat event with a waitlist",
    "registerWithoutWaitlist": "500 registrations, one 50-seat event without a waitlist",
    "unregisterWithPromotion": "the 50 registered users unregister at once (450 waiting)",
    "mixedWorkload": "random register / unregister / leave waitlist, 4 events, 30 users",
    "capacityRaisedDuringStampede": "capacity 10 -> 40 while 105 more registrations arrive (15 before)",
    "cancelDuringUnregistrations": "an event of 60 (30 seated, 30 waiting) cancelled while all 60 leave",
    "erasureDuringUnregistrations": "a user seated at 5 events erased while 10 others leave and 10 register",
}


def _concurrency(figures: dict[str, Any] | None) -> list[str]:
    lines = ["## Concurrency", ""]
    if figures is None:
        return [*lines, "No figures: run the suite (`tests/integration/test_concurrency_http.py`).", ""]
    lines += [
        f"Through the local HTTP server (the synthesized workflows on the local engine, "
        f"DynamoDB Local in memory), {figures['inFlight']} requests in flight at a time, "
        f"while a reader samples `GET /events/{{id}}`. Recorded {figures['recordedAt']}.",
        "",
    ]
    rows = []
    for key, scenario in figures["scenarios"].items():
        latency = scenario["latencyMs"]
        rows.append(
            [
                SCENARIOS.get(key, key),
                scenario["requests"],
                f"{scenario['seconds']} s",
                scenario["requestsPerSecond"],
                f"{latency['p50']} / {latency['p95']} / {latency['max']}",
                _statuses(scenario["statuses"]),
                scenario.get("over29s", "?"),
                scenario["eventReads"],
            ]
        )
    lines += _table(
        [
            "scenario",
            "requests",
            "time",
            "req/s",
            "latency ms p50 / p95 / max",
            "answers",
            "over 29 s",
            "event reads",
        ],
        rows,
    )
    lines += [
        "Checked against the table after each run: `registeredCount` equals the seats and",
        "never exceeds the capacity (also at every sampled read), the waitlist count equals",
        "the slots and the memberships, positions 1 to 450 each told once and matching the",
        "queue in the table, nobody both seated and waiting, nobody waiting while a seat is",
        "free, no item written by a refused registration, 50 distinct promotions taken from",
        "the head of the queue with the rest keeping their order; for the mixed workload the",
        "answers account exactly for the seats and places in the table.",
        "",
        "The local engine runs every task in one Python process: the waitlist scenario is",
        "bound by contention on the event's tail (each join is conditioned on the exact",
        "tail it saw) and by the interpreter lock, not by DynamoDB. The write tasks re-decide",
        "a lost race on the tail or the head themselves, with a short randomized wait that",
        "shrinks as a request keeps losing, so a burst neither starves a request nor sends",
        "every loser round the workflow again. The engine enforces AWS's time limits (each",
        "function's timeout, each task's and workflow's TimeoutSeconds, the API's 29 s); with",
        "that many requests in one process it runs them an order of magnitude slower than AWS,",
        f"so the suite stretches every limit {figures.get('timeScale', 1):g} times (`time_scale`) and",
        "counts the requests that took longer than 29 s (`over 29 s`).",
        "",
    ]
    return lines


def _faults(figures: dict[str, Any] | None) -> list[str]:
    lines = ["## Faults injected", ""]
    if figures is None:
        return [*lines, "No figures: run `tests/integration/test_faults.py`.", ""]
    lines += [
        f"{figures['cases']} cases, {figures['faults_fired']} faults fired, on every task and "
        "every DynamoDB call of both workflows (DynamoDB Local); each faulted run is compared "
        "with a clean twin (same output, same table).",
        "",
        f"Outcomes: {_statuses(figures['outcomes'])}; as expected: {figures['outcome_as_expected']}"
        f" of {figures['cases']}. Absorbed by a Step Functions Retry: "
        f"{figures['absorbed_by_step_functions_retry']}, inside the task: "
        f"{figures['absorbed_inside_the_task']}, by deciding again: {figures['absorbed_by_deciding_again']}.",
        "",
    ]
    lines += _table(
        ["fault", "what it does", "cases"],
        [[k, figures["kinds"].get(k, ""), v] for k, v in figures["by_kind"].items()],
    )
    lines += _table(["task", "cases"], list(figures["by_task"].items()))
    lines += _table(["call", "cases"], list(figures["by_call"].items()))
    return lines


def _fuzz(figures: dict[str, Any] | None) -> list[str]:
    lines = ["## Bad input (fuzzing)", ""]
    if figures is None:
        return [*lines, "No figures: run `tests/http/test_fuzz.py`.", ""]
    lines += [
        f"schemathesis, from docs/openapi.json, against the local server: {figures['requests']} "
        f"generated requests ({figures['examplesPerOperation']} examples per operation, valid and "
        f"invalid) in {figures['seconds']} s. Answers: {_statuses(figures['statuses'])}. "
        "Every answer documented for its operation (status, content type, body schema), no 5xx, "
        f"invalid input refused; after each of the {figures['refusedRequestsCheckedForWrites']} "
        "refused requests the whole table was read back unchanged (but for the record of a "
        "refused request's own `Idempotency-Key`). "
        f"{figures.get('keyedRequestsReplayed', 0)} requests carrying a valid key were sent again "
        "with it: each replay answered the same status and body and left the table as it was.",
        "",
    ]
    rows = [[op, _statuses(c)] for op, c in figures["byOperation"].items()]
    return lines + _table(["operation", "answers"], rows)


def _nag(figures: dict[str, Any] | None) -> list[str]:
    lines = ["## Security baseline", ""]
    if figures is None:
        return [*lines, "No figures: run `tests/infrastructure/test_security.py`.", ""]
    nag = figures.get("cdkNag", {})
    lines += [
        f"cdk-nag packs {', '.join(nag.get('packs', []))}: {nag.get('unacknowledgedFindings', '?')} "
        f"unacknowledged findings, {nag.get('acknowledgements', 0)} acknowledgements "
        "(made in `infrastructure/nag.py`, by kind of resource, each with its reason):",
        "",
    ]
    lines += _table(
        ["rule", "findings", "reason"], [[r["rule"], r["count"], r["reason"]] for r in nag.get("byRule", [])]
    )
    lint = figures.get("cfnLint", {})
    asl = figures.get("aslValidator", {})
    ignored = "; ".join(f"{k} ({v})" for k, v in nag.get("cfnLintIgnored", {}).items())
    lines += [
        f"cfn-lint: {lint.get('findings', '?')} findings on the synthesized template (ignored: {ignored}).",
        f"asl-validator: {asl.get('stateMachines', '?')} state machine definitions, "
        f"{asl.get('invalid', '?')} invalid.",
        "",
        "Least privilege (tests/infrastructure): one role per function naming only the table",
        "actions its task uses; no wildcard action anywhere; database actions only on the",
        "table and its index; each state machine role invokes only its own tasks' functions;",
        "API Gateway's start roles may only StartSyncExecution their own state machine; the",
        "table is encrypted with point-in-time recovery; the stage is throttled.",
        "",
    ]
    return lines


def _idempotency(faults: dict[str, Any] | None) -> list[str]:
    keyed = {k: v for k, v in (faults or {}).get("by_path", {}).items() if k.endswith("_keyed")}
    lines = [
        "## Idempotent requests",
        "",
        "`Idempotency-Key` on every POST and DELETE. Within 24 hours a replay answers the",
        "original status and body and changes nothing; the same key with another request is",
        "422 `IdempotencyKeyReused`; a replay while the first still runs is 409",
        "`RequestInProgress`. A 5xx is not stored: the claim is released and a retry runs again.",
        "",
        "- One record per key in the single table (`PK = IDEMPOTENCY#{key}`, `SK = REQUEST`):",
        "  a fingerprint of what was asked (route, ids, body), `IN_PROGRESS` or `COMPLETED`, the",
        "  stored answer, a lease (90 s) after which the same request may take an unfinished",
        "  claim over, and `expiresAt` (the table's TTL attribute). Claims are one conditioned",
        "  PutItem; a record past `expiresAt` counts as gone (TTL deletes lazily).",
        "- Workflow routes: API Gateway passes the header into the execution input. The",
        "  workflows start with a Choice on it: without a key nothing changes; with one,",
        "  `ClaimRequest` claims it or ends the execution as the first one ended (same output,",
        "  or same error and cause, so the response mapping answers the same), and the body",
        "  runs in a one-branch Parallel. The task that changes the table (`TakeSeat`,",
        "  `JoinWaitlist`, `Unregister`, `PromoteFromWaitlist`, `LeaveWaitlist`) stores the answer",
        "  on the key in the same transaction, conditioned on the claim still being this",
        "  request's: the change and its answer commit together or not at all, so no crash",
        "  can leave a change without its answer. A refusal (the body failed) is stored by",
        "  `RecordFailure`; a refusal that cannot be stored ends the execution with",
        "  `AnswerNotRecorded` (503 `TransientDatabaseError`), not with an answer a retry",
        "  would not get back. The claim and record roles may only touch `IDEMPOTENCY#*`",
        "  partitions (`dynamodb:LeadingKeys`).",
        "- The answer is stored as the JSON text the caller got, so a replay answers it byte",
        "  for byte.",
        "- Lambda routes (`POST /users`, `POST /events`): the API function claims around the",
        "  route with the same records, and the create's transaction stores its answer.",
        "  Powertools' idempotency utility was not used: the workflow routes have no Lambda in front to run it, and on a table with a",
        "  sort key it keeps every record under one partition key, a hot partition under a",
        "  stampede; one record format serves both kinds of route.",
        "",
        "Tested by `tests/unit/test_idempotency.py` (also on DynamoDB Local),",
        "`tests/integration/test_idempotent_workflows.py` (replays, reuse, concurrent requests",
        "with one key, a lost unregister answer recovered), a property test through the real",
        "workflows (`tests/property/test_idempotency_properties.py`), the HTTP tier, and the",
        "fault matrix above"
        + (
            f": {sum(keyed.values())} cases on keyed paths ("
            + ", ".join(f"{k}: {v}" for k, v in keyed.items())
            + "), each absorbed case followed by a replay that must answer as a clean run."
            if keyed
            else "."
        ),
        "",
    ]
    return lines


def _crash_replay(figures: dict[str, Any] | None) -> list[str]:
    lines = ["## Crashes of the serving process", ""]
    if figures is None:
        return [*lines, "No figures: run `tests/http/test_crash_replay.py`.", ""]
    cases = [v for k, v in figures.items() if k != "run"]
    lines += [
        "The local server (DynamoDB Local on disk) is killed with SIGKILL while it serves a",
        "keyed request, at each point the request passes: `claimed` (the key claimed,",
        "nothing written), `written` (the change and its answer committed), `before-record`",
        "and `recorded` (a refusal about to be stored, and stored). It is started again on",
        "the same data and the request sent again with its key: within the claim's lease, and",
        "after it. Each case is compared with a clean run of the same steps (answers, the",
        "event's items) and, for the unregistration, with a registration made after the crash",
        "that the retry must leave alone.",
        "",
    ]
    lines += _table(
        ["request", "killed when", "first answer", "retry in lease", "retry after lease", "restart"],
        [
            [
                c["scenario"],
                c["point"],
                c["answered"],
                c["within_lease"],
                c["after_lease"],
                f"{c['restart_seconds']} s",
            ]
            for c in cases
        ],
    )
    lines += [
        f"{len(cases)} cases: after a crash past the write, every retry answers the first",
        "answer byte for byte and writes nothing; before it, a retry is 409 `RequestInProgress`",
        "(with `Retry-After`) until the lease ends, then runs once. No case changed the table",
        "twice.",
        "",
    ]
    return lines


def _stampede(figures: dict[str, Any] | None) -> list[str]:
    lines = ["## Overload", ""]
    if figures is None:
        return [*lines, "No figures: run `tests/integration/test_stampede_http.py`.", ""]
    limits = figures.get("workflowLimits", {})
    lines += [
        f"{figures['requests']} registrations for two events (one with a waitlist), "
        f"{figures['in_flight']} in flight at a time, through the local server on DynamoDB Local",
        f"({figures.get('seconds', '?')} s; time limits stretched {figures.get('timeScale', 1):g} times). "
        "More than it can serve at once: the workflow routes run "
        f"{limits.get('inFlight', '?')} requests with {limits.get('waiting', '?')} more waiting at most "
        f"{limits.get('maxWaitS', '?'):g} s, and what cannot get in is answered at once 503 "
        "`ServiceUnavailable` with `Retry-After`, rather than after API Gateway's 29 s.",
        "",
        f"Answers: {_statuses(figures['statuses'])}. Slowest answer {figures['slowest_s']} s, slowest "
        f"503 {figures.get('slowest_503_s', '?')} s; over 29 s: {figures['over_29s']}. No 500, 502 or 504; "
        "the table's invariants held and matched what the clients were told.",
        "",
    ]
    return lines


def _database_restart(figures: dict[str, Any] | None) -> list[str]:
    lines = ["## A database that dies", ""]
    if figures is None:
        return [*lines, "No figures: run the database test in `tests/http/test_cli.py`.", ""]
    lines += [
        "DynamoDB Local killed (SIGKILL) under `make run`: the local stack notices, starts it",
        f"again on the same data and answers again {figures['recovered_seconds']} s after the kill.",
        f"Meanwhile {figures['answers_while_down']} requests got 503 `TransientDatabaseError` with",
        "`Retry-After: 1` and no internal address; `GET /health` reports the database's state.",
        "",
    ]
    return lines


def _hostile(figures: dict[str, Any] | None) -> list[str]:
    lines = ["## Hostile input", ""]
    if figures is None:
        return [*lines, "No figures: run `tests/property/test_hostile_input.py`.", ""]
    lines += [
        f"hypothesis, {figures['requests']} requests over the {figures['routes']} routes: hostile",
        "bodies (deep nesting, huge numbers, tens of thousands of unknown keys, control",
        "characters), media types, `Idempotency-Key` values, tampered and foreign `nextToken`s",
        "and path segments (10,000 characters, NUL, `..`). Answers:",
        f"{_statuses(figures['statuses'])}. Each one documented for its route, in the one error",
        "shape, under 64 KiB, with nothing internal in its message; no 5xx.",
        "",
    ]
    return lines


def render() -> str:
    lines = [
        "# Reliability",
        "",
        "Figures from the last run of the reliability suites. Reproduce them (and rewrite this",
        "file) with:",
        "",
        "```",
        COMMAND,
        "```",
        "",
        "The suites also run in `make test`; each starts its own DynamoDB Local (in memory).",
        "",
    ]
    lines += _concurrency(_load("concurrency"))
    lines += _stampede(_load("stampede"))
    lines += _faults(_load("faults"))
    lines += _database_restart(_load("database_restart"))
    lines += _fuzz(_load("fuzz"))
    lines += _hostile(_load("hostile_input"))
    lines += _nag(_load("nag"))
    lines += _idempotency(_load("faults"))
    lines += _crash_replay(_load("crash_replay"))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--no-run", action="store_true", help="only rewrite the document from the last figures"
    )
    args = parser.parse_args(argv)
    status = 0 if args.no_run else run_suites()
    DOCUMENT.write_text(render())
    print(
        f"wrote {DOCUMENT.relative_to(REPO_ROOT)}"
        + ("" if status == 0 else f" (the suites failed: {status})")
    )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
