"""A reconcile run over more events than one Standard execution's history can hold.

AWS fails a Standard execution at 25,000 history events, and an inline Map records every
iteration in its execution's history. Here the engine's limit is lowered to
HISTORY_LIMIT and pages are small, so that a table of 150 events is already more than
one execution can page through (with AWS's limit that takes about 3,500 events, minutes
of reconciling on this machine); `tests/unit/test_engine.py` pins the engine's default
limit to AWS's.

The engine runs the synthesized reconcile workflow and, beside it, the same definition
without its continuation (one execution pages through everything, as the workflow did
before): the second fails where the first goes on in fresh executions.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from infrastructure import execution_names, names
from infrastructure.bench.bulk_load import load_events
from infrastructure.local.dynamodb_local import DynamoDBLocal
from infrastructure.local.engine import LocalEngine
from infrastructure.local.template import load_template
from infrastructure.local.template_specs import LocalTemplate
from infrastructure.ops import executions
from registration.data import RegistrationStore
from tests.fixtures.drift import assert_consistent, counters, run_summaries
from tests.fixtures.engines import recorded_history, synthesized_template_path
from tests.fixtures.workflows import follow_reconcile, pages_per_execution, worst_case_history

pytestmark = pytest.mark.integration

# Its own region and table: nothing here touches the other modules' engines or data.
REGION = "ap-southeast-2"
TABLE = "reconcile-history"
INLINE = "reconcile-inline"
HISTORY_LIMIT = 700
PAGE_SIZE = 5
EVENTS = 150
RUN_TIMEOUT_S = 300.0
START_EXECUTION = ":states:::states:startExecution"


def _reachable(states: dict[str, Any], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        state = states[name]
        todo += [state[k] for k in ("Next", "Default") if k in state]
        todo += [rule["Next"] for rule in state.get("Choices", [])]
        todo += [catcher["Next"] for catcher in state.get("Catch", [])]
    return seen


def _leads_straight_to(states: dict[str, Any], start: str, targets: set[str]) -> bool:
    """Whether following `Next` alone from `start` (no choice on the way) reaches a target."""
    name: str | None = start
    seen: set[str] = set()
    while name is not None and name not in seen:
        if name in targets:
            return True
        seen.add(name)
        name = states[name].get("Next")
    return False


def without_continuation(definition: dict[str, Any]) -> dict[str, Any]:
    """The workflow as one execution: the Choice rule that goes on to start the next
    execution is dropped (and the states only it reached)."""
    old = copy.deepcopy(definition)
    states = old["States"]
    continues = {
        name for name, state in states.items() if str(state.get("Resource", "")).endswith(START_EXECUTION)
    }
    assert continues, "the workflow no longer continues in a new execution"
    for state in states.values():
        if "Choices" in state:
            state["Choices"] = [
                rule for rule in state["Choices"] if not _leads_straight_to(states, rule["Next"], continues)
            ]
    old["States"] = {name: states[name] for name in _reachable(states, old["StartAt"])}
    assert not set(old["States"]) & continues
    return old


def _with_inline_variant(template: LocalTemplate) -> LocalTemplate:
    spec = template.workflows[names.RECONCILE_WORKFLOW]
    inline = dataclasses.replace(
        spec,
        logical_id="InlineReconcile",
        name=INLINE,
        arn=spec.arn.rsplit(":", 1)[0] + ":" + INLINE,
        definition=json.dumps(without_continuation(spec.definition_dict)),
    )
    return dataclasses.replace(
        template,
        state_machines={**template.state_machines, inline.logical_id: inline},
        workflows={**template.workflows, INLINE: inline},
    )


@pytest.fixture(scope="module")
def history_engine(dynamodb_local: DynamoDBLocal) -> Iterator[LocalEngine]:
    template = _with_inline_variant(
        load_template(synthesized_template_path(), region=REGION, table_name=TABLE)
    )
    with LocalEngine(
        template, dynamodb_endpoint=dynamodb_local.endpoint_url, region=REGION, table_name=TABLE
    ) as running:
        running.history_limit = HISTORY_LIMIT
        yield running


@pytest.fixture
def store(history_engine: LocalEngine) -> RegistrationStore:
    """A fresh table (a whole-table run sees only this test's events)."""
    history_engine.reset_table()
    return RegistrationStore(history_engine.table_name, history_engine.dynamodb_client())


def _definition(engine: LocalEngine) -> dict[str, Any]:
    return engine.template.workflows[names.RECONCILE_WORKFLOW].definition_dict


def _drifted(n: int) -> int:
    """Every seventh event says one seat is taken (none is): drift in every part of a run."""
    return 1 if n % 7 == 3 else 0


def _seed(store: RegistrationStore) -> tuple[list[str], list[str]]:
    ids = [f"h{n:05d}" for n in range(EVENTS)]
    load_events(store, ids, registered_count=_drifted, show_progress=False)
    return ids, [event for n, event in enumerate(ids) if _drifted(n)]


def test_one_execution_cannot_page_through_more_than_its_history_holds(
    history_engine: LocalEngine, store: RegistrationStore
) -> None:
    _, drifted = _seed(store)

    result = history_engine.run(INLINE, {"pageSize": PAGE_SIZE}, name="inline-run", timeout=RUN_TIMEOUT_S)

    assert (result.status, result.error) == ("FAILED", "States.Runtime")
    assert result.cause == f"The execution reached the maximum number of history events ({HISTORY_LIMIT})."
    events = recorded_history(history_engine, result.execution_arn)
    assert len(events) == HISTORY_LIMIT
    # It got part of the way: the events of the later pages were never looked at, and
    # the run was never recorded (every scheduled run would fail the same way).
    still_drifted = [event for event in drifted if counters(store, event)[0] != 0]
    assert still_drifted and still_drifted[-1] == drifted[-1]
    assert run_summaries(store) == []


def test_a_run_continues_in_fresh_executions_and_reconciles_every_event(
    history_engine: LocalEngine, store: RegistrationStore
) -> None:
    ids, drifted = _seed(store)

    arn = history_engine.start_execution(
        names.RECONCILE_WORKFLOW, {"pageSize": PAGE_SIZE}, name="history-run"
    )
    parts = follow_reconcile(history_engine, arn, timeout=RUN_TIMEOUT_S).parts

    assert all(part.succeeded for part in parts), [(p.name, p.error, p.cause) for p in parts]
    assert len(parts) > 2
    sizes = [len(recorded_history(history_engine, part.execution_arn)) for part in parts]
    assert max(sizes) < HISTORY_LIMIT < sum(sizes)
    # What the interpreter recorded stays within the bound the definition promises.
    assert max(sizes) <= worst_case_history(_definition(history_engine), PAGE_SIZE)
    # One run: the first execution's name and start, carried by every later execution.
    root = parts[0]
    chain_id = parts[1].input[names.RECONCILE_CONTINUATION_KEY]["run"]["chainId"]
    for number, part in enumerate(parts[1:], start=2):
        assert part.name == execution_names.continuation_name(names.RECONCILE_WORKFLOW, number, chain_id)
        assert executions.run_of(part.input, part.name)["runId"] == root.name
    summary = parts[-1].output
    assert summary["runId"] == root.name
    assert (summary["events"], summary["clean"], summary["repaired"]) == (
        len(ids),
        len(ids) - len(drifted),
        len(drifted),
    )
    assert summary["countRepairs"] == len(drifted)
    for event in ids:
        assert counters(store, event) == (0, 0, 0)
    for event in drifted:
        assert_consistent(store, event)
        (record,) = store.reconciliation_records(event)
        assert record["runId"] == root.name
    (run,) = run_summaries(store)
    assert (run["runId"], run["events"]) == (root.name, len(ids))


def test_overlapping_long_runs_each_repair_what_the_other_did_not(
    history_engine: LocalEngine, store: RegistrationStore
) -> None:
    ids = [f"o{n:05d}" for n in range(3 * PAGE_SIZE * pages_per_execution(_definition(history_engine)) // 2)]
    load_events(store, ids, registered_count=_drifted, show_progress=False)
    drifted = [event for n, event in enumerate(ids) if _drifted(n)]

    arns = [
        history_engine.start_execution(names.RECONCILE_WORKFLOW, {"pageSize": PAGE_SIZE}, name=f"overlap-{n}")
        for n in (1, 2)
    ]
    runs = [follow_reconcile(history_engine, arn, timeout=RUN_TIMEOUT_S) for arn in arns]

    assert all(part.succeeded for run in runs for part in run.parts)
    assert all(len(run.parts) == 2 for run in runs)
    first, second = ({part.name for part in run.parts} for run in runs)
    assert not first & second  # each run continues under its own chain id
    for event in ids:
        assert counters(store, event) == (0, 0, 0)
    # Every drift was repaired once, by one run or the other.
    assert sum(run.output["countRepairs"] for run in runs) == len(drifted)
    for event in drifted:
        (record,) = store.reconciliation_records(event)
        assert record["runId"] in {run.name for run in runs}
