"""Property-based fuzzing of the local server from its own OpenAPI document (schemathesis).

Every operation in docs/openapi.json gets generated requests, valid and invalid (path
parameters, query strings, bodies, content types). Every answer must be documented for
that operation (status, content type, body schema), none a 5xx, and invalid input must
be refused. After every refused request the whole table is read back: it must be
exactly as before (a rejected request writes nothing but, when it carried an
`Idempotency-Key`, the record of its answer).

A valid `Idempotency-Key` that schemathesis generates is replaced by a fresh one, so
that keyed requests reach their routes instead of colliding on a few generated keys;
each keyed request is then sent again, and the replay must answer the same status and
body and leave the table exactly as the first left it.

`make test` runs FUZZ_EXAMPLES examples per operation (valid and invalid mixed); the
`thorough` hypothesis profile runs FUZZ_EXAMPLES_THOROUGH. The figures go to
`.local/reliability-fuzz.json`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from infrastructure.local.engine import LocalEngine
from infrastructure.local.http_server import LocalServer
from registration import idempotency, keys
from registration.errors import ValidationError
from tests.fixtures import figures as figure_files
from tests.fixtures.table_checks import scan_table, table_violations

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("fuzz"),
    pytest.mark.local_only("reads the whole table after every request"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]
OPENAPI = REPO_ROOT / "docs" / "openapi.json"
FIGURES = figure_files.path("fuzz")
FUZZ_EXAMPLES = 150
FUZZ_EXAMPLES_THOROUGH = 1000
EXAMPLES = FUZZ_EXAMPLES_THOROUGH if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else FUZZ_EXAMPLES

schema = schemathesis.openapi.from_path(str(OPENAPI))

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


class Tally:
    """What was sent and answered, across the module (one xdist worker runs it all)."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.by_operation: dict[str, Counter[str]] = {}
        self.refused_checked = 0
        self.replays_checked = 0
        self.seconds = 0.0  # time spent sending and checking (the module may be interleaved)
        self.snapshot: list[dict[str, Any]] | None = None

    def record(self, operation: str, status: int) -> None:
        self.statuses[str(status)] += 1
        self.by_operation.setdefault(operation, Counter())[str(status)] += 1


TALLY = Tally()
FuzzCase = schemathesis.Case[Any]


@pytest.fixture(scope="module")
def server(local_engine: LocalEngine) -> Iterator[LocalServer]:
    TALLY.snapshot = None  # a new engine starts from a fresh table
    with LocalServer(local_engine, port=0) as running:
        yield running
    if TALLY.statuses:
        document = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        workers = document.get("workers", {}) if document.get("run") == figure_files.RUN_ID else {}
        workers[figure_files.WORKER] = {
            "seconds": TALLY.seconds,
            "refused": TALLY.refused_checked,
            "replays": TALLY.replays_checked,
            "byOperation": {op: dict(c) for op, c in TALLY.by_operation.items()},
        }
        by_operation: dict[str, Counter[str]] = {}
        for worker in workers.values():
            for op, counts in worker["byOperation"].items():
                by_operation.setdefault(op, Counter()).update(counts)
        statuses: Counter[str] = sum(by_operation.values(), Counter())
        figure_files.merge(
            "fuzz",
            {
                "examplesPerOperation": EXAMPLES,
                "operations": len(by_operation),
                "requests": sum(statuses.values()),
                "seconds": round(sum(w["seconds"] for w in workers.values()), 1),
                "statuses": dict(sorted(statuses.items())),
                "refusedRequestsCheckedForWrites": sum(w["refused"] for w in workers.values()),
                "keyedRequestsReplayed": sum(w.get("replays", 0) for w in workers.values()),
                "byOperation": {op: dict(sorted(c.items())) for op, c in sorted(by_operation.items())},
                "workers": workers,
            },
        )


@pytest.fixture(scope="module")
def table(local_engine: LocalEngine) -> tuple[Any, str]:
    return local_engine.dynamodb_client(), local_engine.table_name


OPERATIONS = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]


def _fresh_key(case: FuzzCase) -> str | None:
    """Replace a valid generated `Idempotency-Key` with a new one; the key sent, if any."""
    for name, value in (case.headers or {}).items():
        if name.lower() != idempotency.HEADER.lower() or not isinstance(value, str):
            continue
        try:
            if idempotency.parse_key(value) is None:
                return None
        except ValidationError:
            return None  # a malformed key: it must be refused
        key = str(uuid.uuid4())
        case.headers[name] = key
        return key
    return None


def _without_record(items: list[dict[str, Any]], key: str | None) -> list[dict[str, Any]]:
    """The table but the idempotency record of `key` (the answer a refusal may store)."""
    if key is None:
        return items
    record = f"{keys.IDEMPOTENCY_PREFIX}{key}"
    return [item for item in items if item["PK"] != record]


def _cases(operation: Any) -> st.SearchStrategy[FuzzCase]:
    return st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_every_answer_is_documented_and_refusals_write_nothing(
    operation: Any, server: LocalServer, table: tuple[Any, str]
) -> None:
    client, table_name = table

    @given(case=_cases(operation))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case: FuzzCase) -> None:
        started = time.perf_counter()
        try:
            check(case)
        finally:
            TALLY.seconds += time.perf_counter() - started

    def check(case: FuzzCase) -> None:
        if TALLY.snapshot is None:
            TALLY.snapshot = scan_table(client, table_name)
        key = _fresh_key(case)
        response = case.call(base_url=server.url, timeout=60)
        TALLY.record(f"{case.method.upper()} {case.path}", response.status_code)
        after = scan_table(client, table_name)
        if response.status_code >= 400:
            TALLY.refused_checked += 1
            assert _without_record(after, key) == _without_record(TALLY.snapshot, key), (
                f"{case.method} {case.formatted_path} -> {response.status_code} wrote"
            )
        TALLY.snapshot = after
        case.validate_response(response, checks=CHECKS)
        if key is not None and response.status_code < 500:
            replay = case.call(base_url=server.url, timeout=60)
            TALLY.replays_checked += 1
            assert (replay.status_code, replay.json()) == (response.status_code, response.json()), (
                f"{case.method} {case.formatted_path}: the replay answered differently"
            )
            assert scan_table(client, table_name) == after, (
                f"{case.method} {case.formatted_path}: the replay wrote"
            )

    fuzz()


def test_the_fuzzed_table_keeps_every_invariant(server: LocalServer, table: tuple[Any, str]) -> None:
    """After all of it (runs last in the module)."""
    client, table_name = table
    assert table_violations(scan_table(client, table_name)) == []
