"""The workflow routes answer inside API Gateway's integration timeout, whatever fails.

API Gateway waits 29 s for StartSyncExecution. The worst case of each Express workflow
is computed here from the synthesized ASL: the longest path through the graph (no state
twice), every Task on it using every retry its Retry policy allows, each attempt lasting
its TimeoutSeconds and each wait between attempts its longest (IntervalSeconds x
BackoffRate^n, at most MaxDelaySeconds). The graph's loops (the decision taken again
after a lost race) are bounded by the state machine's TimeoutSeconds: the execution
stops there and ends TIMED_OUT, which the API answers with a mapped status
(`registration.outcomes`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from infrastructure.local.local_api import INTEGRATION_TIMEOUT_S
from registration import errors, service
from tests.infrastructure.conftest import Synthesized, function_id_from_arn
from tests.infrastructure.test_template import EXPRESS_WORKFLOWS

pytestmark = pytest.mark.infrastructure

# Time StartSyncExecution and API Gateway take around the execution itself (tens of
# milliseconds), with room to spare.
MARGIN_S = 3.0
# ASL defaults (Amazon States Language specification).
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_INTERVAL_S = 1
DEFAULT_BACKOFF_RATE = 2.0
TERMINAL = frozenset({"Succeed", "Fail"})


@dataclass(frozen=True)
class Path:
    seconds: float
    states: tuple[str, ...]


def retry_seconds(state: Mapping[str, Any]) -> tuple[int, float]:
    """(attempts, seconds waited between them) when every retrier is used to the end."""
    attempts = 1
    waits = 0.0
    for retrier in state.get("Retry", []):
        max_attempts = retrier.get("MaxAttempts", DEFAULT_MAX_ATTEMPTS)
        interval = retrier.get("IntervalSeconds", DEFAULT_INTERVAL_S)
        rate = retrier.get("BackoffRate", DEFAULT_BACKOFF_RATE)
        cap = retrier.get("MaxDelaySeconds", math.inf)
        attempts += max_attempts
        waits += sum(min(cap, interval * rate ** (n - 1)) for n in range(1, max_attempts + 1))
    return attempts, waits


def state_seconds(state: Mapping[str, Any]) -> float:
    """The longest one state can take (all its attempts), not counting what follows."""
    kind = state["Type"]
    if kind == "Task":
        attempts, waits = retry_seconds(state)
        # A Task without TimeoutSeconds waits for its resource for as long as it takes.
        return attempts * state.get("TimeoutSeconds", math.inf) + waits
    if kind == "Parallel":
        attempts, waits = retry_seconds(state)
        branches = max(longest_path(branch).seconds for branch in state["Branches"])
        return attempts * branches + waits
    if kind == "Wait":
        return float(state.get("Seconds", math.inf))
    if kind == "Map":
        return math.inf  # none here; an item count is not in the definition
    return 0.0


def successors(state: Mapping[str, Any]) -> Iterator[str]:
    if "Next" in state:
        yield state["Next"]
    if "Default" in state:
        yield state["Default"]
    for choice in state.get("Choices", []):
        yield choice["Next"]
    for catcher in state.get("Catch", []):
        yield catcher["Next"]


def longest_path(machine: Mapping[str, Any]) -> Path:
    """The slowest way through `machine` (a definition or a branch) visiting no state twice."""
    states: Mapping[str, Any] = machine["States"]

    def walk(name: str, seen: frozenset[str]) -> Path:
        state = states[name]
        here = state_seconds(state)
        inside: tuple[str, ...] = ()
        if state["Type"] == "Parallel":  # the slowest branch's states, for the record
            inside = max((longest_path(b) for b in state["Branches"]), key=lambda p: p.seconds).states
        after = [walk(n, seen | {n}) for n in dict.fromkeys(successors(state)) if n not in seen]
        rest = max(after, key=lambda p: p.seconds, default=Path(0.0, ()))
        return Path(here + rest.seconds, (name, *inside, *rest.states))

    start: str = machine["StartAt"]
    return walk(start, frozenset({start}))


def loop_edges(machine: Mapping[str, Any]) -> set[tuple[str, str]]:
    """Edges that close a cycle (to a state already on the path), in every branch too."""
    found: set[tuple[str, str]] = set()
    states: Mapping[str, Any] = machine["States"]

    def walk(name: str, stack: tuple[str, ...], done: set[str]) -> None:
        for following in successors(states[name]):
            if following in stack:
                found.add((name, following))
            elif following not in done:
                walk(following, (*stack, following), done)
        done.add(name)

    walk(machine["StartAt"], (machine["StartAt"],), set())
    for state in states.values():
        for branch in state.get("Branches", []):
            found |= loop_edges(branch)
    return found


def all_states(machine: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, state in machine["States"].items():
        found[name] = state
        for branch in state.get("Branches", []):
            found.update(all_states(branch))
    return found


def function_of(task: Mapping[str, Any]) -> str:
    arn = task["Resource"]
    if arn.startswith("arn:aws:states:::lambda:invoke"):
        arn = task["Parameters"]["FunctionName"]
    return function_id_from_arn(arn)


# --- the computation itself -------------------------------------------------------------


def test_the_walk_counts_every_attempt_wait_and_branch() -> None:
    machine = {
        "StartAt": "A",
        "States": {
            "A": {
                "Type": "Task",
                "Resource": "x",
                "TimeoutSeconds": 2,
                # 1 + 3 + 1 attempts; waits 1, 2, 3 (capped) and then 5.
                "Retry": [
                    {"ErrorEquals": ["X"], "MaxAttempts": 3, "MaxDelaySeconds": 3},
                    {"ErrorEquals": ["Y"], "MaxAttempts": 1, "IntervalSeconds": 5},
                ],
                "Catch": [{"ErrorEquals": ["Z"], "Next": "Slow"}],
                "Next": "P",
            },
            "P": {
                "Type": "Parallel",
                "Branches": [
                    {"StartAt": "B", "States": {"B": {"Type": "Wait", "Seconds": 4, "End": True}}},
                    {"StartAt": "C", "States": {"C": {"Type": "Wait", "Seconds": 6, "End": True}}},
                ],
                "End": True,
            },
            "Slow": {"Type": "Wait", "Seconds": 30, "Next": "A"},
        },
    }
    path = longest_path(machine)
    assert path == Path(5 * 2 + (1 + 2 + 3) + 5 + 30, ("A", "Slow"))
    assert loop_edges(machine) == {("Slow", "A")}
    del machine["States"]["A"]["Catch"]
    assert longest_path(machine) == Path(5 * 2 + 11 + 6, ("A", "P", "C"))


# --- the synthesized workflows ------------------------------------------------------------


@pytest.mark.parametrize("workflow", EXPRESS_WORKFLOWS)
def test_the_worst_case_fits_inside_the_integration_timeout(
    synthesized: Synthesized, state_machine_ids: dict[str, str], workflow: str
) -> None:
    definition = synthesized.definition(state_machine_ids[workflow])
    execution_limit = definition["TimeoutSeconds"]
    worst = longest_path(definition)
    # Every retry used on the longest path still ends before the execution's own limit...
    assert worst.seconds <= execution_limit, worst
    # ...and the execution ends, whatever happens, before API Gateway stops waiting.
    assert execution_limit + MARGIN_S <= INTEGRATION_TIMEOUT_S
    # The path is the one expected: claim, validate, decide, write, record.
    tasks = [name for name in worst.states if all_states(definition)[name]["Type"] == "Task"]
    assert len(tasks) == 5, worst


@pytest.mark.parametrize("workflow", EXPRESS_WORKFLOWS)
def test_the_only_loops_go_back_to_a_decision_that_bounds_them(
    synthesized: Synthesized, state_machine_ids: dict[str, str], workflow: str
) -> None:
    definition = synthesized.definition(state_machine_ids[workflow])
    states = all_states(definition)
    loops = loop_edges(definition)
    assert loops, "the decision loop is gone: this test has nothing left to check"
    for source, target in loops:
        catchers = states[source].get("Catch", [])
        assert [c["ErrorEquals"] for c in catchers if c["Next"] == target] == [[errors.DecisionStale.code]]
        # The decision gives up after a bounded number of tries (and the execution's
        # TimeoutSeconds bounds the loop in time).
        caught = {e for c in states[target].get("Catch", []) for e in c["ErrorEquals"]}
        assert errors.ContentionLimitExceeded.code in caught, target
    assert service.MAX_DECISIONS >= 1


@pytest.mark.parametrize("workflow", EXPRESS_WORKFLOWS)
def test_a_function_stops_before_its_task_gives_up_on_it(
    synthesized: Synthesized, state_machine_ids: dict[str, str], workflow: str
) -> None:
    """An attempt that ran out of time is over (Lambda stopped the function) before the
    task's retry starts, and a write task's own retries of lost races stop before the
    function's timeout."""
    definition = synthesized.definition(state_machine_ids[workflow])
    resources = synthesized.raw["Resources"]
    for name, state in all_states(definition).items():
        if state["Type"] != "Task":
            continue
        function_timeout = resources[function_of(state)]["Properties"]["Timeout"]
        assert function_timeout < state["TimeoutSeconds"], name
        assert service.in_task_budget(function_timeout * 1000) < function_timeout, name
        assert function_timeout > service.IN_TASK_BUDGET_S, name
