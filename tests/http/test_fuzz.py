"""Property-based fuzzing of the local server from its own OpenAPI document (schemathesis).

Every operation in docs/openapi.json gets generated requests, valid and invalid (path
parameters, query strings, bodies, content types). Every answer must be documented for
that operation (status, content type, body schema), none a 5xx, and invalid input must
be refused. After every refused request the whole table is read back: it must be
exactly as before (a rejected request writes nothing).

`make test` runs FUZZ_EXAMPLES examples per operation and generation mode; the
`thorough` hypothesis profile runs FUZZ_EXAMPLES_THOROUGH. The figures go to
`.local/reliability-fuzz.json`.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from infrastructure.local.engine import LocalEngine
from infrastructure.local.server import LocalServer
from tests.fixtures.table_checks import scan_table, table_violations

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("fuzz")]

REPO_ROOT = Path(__file__).resolve().parents[2]
OPENAPI = REPO_ROOT / "docs" / "openapi.json"
FIGURES = REPO_ROOT / ".local" / "reliability-fuzz.json"
FUZZ_EXAMPLES = 80
FUZZ_EXAMPLES_THOROUGH = 600
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
        self.started = time.perf_counter()
        self.snapshot: list[dict[str, Any]] | None = None

    def record(self, operation: str, status: int) -> None:
        self.statuses[str(status)] += 1
        self.by_operation.setdefault(operation, Counter())[str(status)] += 1


TALLY = Tally()


@pytest.fixture(scope="module")
def server(local_engine: LocalEngine) -> Iterator[LocalServer]:
    with LocalServer(local_engine, port=0) as running:
        yield running
    if TALLY.statuses:
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        FIGURES.write_text(
            json.dumps(
                {
                    "examplesPerOperation": EXAMPLES,
                    "requests": sum(TALLY.statuses.values()),
                    "seconds": round(time.perf_counter() - TALLY.started, 1),
                    "statuses": dict(sorted(TALLY.statuses.items())),
                    "refusedRequestsCheckedForWrites": TALLY.refused_checked,
                    "byOperation": {
                        op: dict(sorted(c.items())) for op, c in sorted(TALLY.by_operation.items())
                    },
                },
                indent=2,
            )
            + "\n"
        )


@pytest.fixture(scope="module")
def table(local_engine: LocalEngine) -> tuple[Any, str]:
    return local_engine.dynamodb_client(), local_engine.table_name


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_answer_is_documented_and_refusals_write_nothing(
    case: schemathesis.Case, server: LocalServer, table: tuple[Any, str]
) -> None:
    client, table_name = table
    if TALLY.snapshot is None:
        TALLY.snapshot = scan_table(client, table_name)
    response = case.call(base_url=server.url, timeout=60)
    TALLY.record(f"{case.method.upper()} {case.path}", response.status_code)
    after = scan_table(client, table_name)
    if response.status_code >= 400:
        TALLY.refused_checked += 1
        assert after == TALLY.snapshot, f"{case.method} {case.formatted_path} -> {response.status_code} wrote"
    TALLY.snapshot = after
    case.validate_response(response, checks=CHECKS)


def test_the_fuzzed_table_keeps_every_invariant(server: LocalServer, table: tuple[Any, str]) -> None:
    """After all of it (runs last in the module)."""
    client, table_name = table
    assert table_violations(scan_table(client, table_name)) == []
