"""The committed workflow diagrams are those the synthesized definitions produce."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infrastructure import diagrams
from infrastructure.local.template import parse_template
from tests.infrastructure.conftest import Synthesized

pytestmark = pytest.mark.infrastructure


def test_committed_diagrams_match_the_template(synthesized: Synthesized) -> None:
    outputs = diagrams.expected_outputs(parse_template(synthesized.raw))
    stale = [str(path.relative_to(diagrams.REPO_ROOT)) for path in diagrams.drifted(outputs)]
    assert not stale, f"stale diagrams in {stale}: run `{diagrams.COMMAND}` and commit the result"


def test_every_state_machine_is_drawn(synthesized: Synthesized) -> None:
    template = parse_template(synthesized.raw)
    document = diagrams.render_document(template)
    assert document.count("```mermaid") == len(template.state_machines)
    for spec in template.state_machines.values():
        for state in spec.definition_dict["States"]:
            assert state in document


def test_check_mode_reports_drift(tmp_path: Path, synthesized: Synthesized) -> None:
    template = parse_template(synthesized.raw)
    doc = tmp_path / "workflows.md"
    outputs = diagrams.expected_outputs(template, doc_path=doc)
    assert diagrams.drifted(outputs) == [doc]
    for path, text in outputs.expected.items():
        path.write_text(text, encoding="utf-8")
    assert diagrams.drifted(diagrams.expected_outputs(template, doc_path=doc)) == []
    doc.write_text("stale\n", encoding="utf-8")
    assert diagrams.drifted(diagrams.expected_outputs(template, doc_path=doc)) == [doc]


# --- rendering ------------------------------------------------------------------------------

SAMPLE: dict[str, Any] = {
    "StartAt": "Load",
    "States": {
        "Load": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:dynamodb:query",
            "Retry": [{"ErrorEquals": ["DynamoDb.ThrottlingException", "States.Timeout"], "MaxAttempts": 5}],
            "Catch": [
                {
                    "ErrorEquals": ["Bad", "Worse", "Lambda.Unknown", "Lambda.ServiceException"],
                    "Next": "Broken",
                },
                {"ErrorEquals": ["States.ALL"], "Next": "Broken"},
            ],
            "Next": "EachEvent",
        },
        "EachEvent": {
            "Type": "Map",
            "ItemsPath": "$.events",
            "MaxConcurrency": 4,
            "ItemProcessor": {
                "StartAt": "Count",
                "States": {
                    "Count": {"Type": "Task", "Resource": "arn:aws:lambda:r:1:function:Fn", "Next": "Same?"},
                    "Same?": {
                        "Type": "Choice",
                        "Choices": [
                            {
                                "And": [
                                    {"Variable": "$.n", "NumericEqualsPath": "$.m"},
                                    {"Variable": "$.ok", "BooleanEquals": True},
                                ],
                                "Next": "end",
                            }
                        ],
                        "Default": "Fix",
                    },
                    "Fix": {"Type": "Pass", "End": True},
                    "end": {"Type": "Succeed"},
                },
            },
            "Next": "Both",
        },
        "Both": {
            "Type": "Parallel",
            "Branches": [
                {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}},
                {"StartAt": "A", "States": {"A": {"Type": "Wait", "Seconds": 5, "End": True}}},
            ],
            "End": True,
        },
        "Broken": {"Type": "Fail", "Error": "LoadFailed", "Cause": "no"},
    },
}


def test_render_flowchart_covers_tasks_choices_catches_maps_and_parallels() -> None:
    chart = diagrams.render_flowchart(SAMPLE, {"arn:aws:lambda:r:1:function:Fn": "handlers.count.handler"})
    lines = [line.strip() for line in chart.splitlines()]
    assert lines[0] == "flowchart TD"
    assert "start_ --> Load" in lines
    assert (
        'Load["Load<br/>aws-sdk:dynamodb:query<br/>retry 5x: DynamoDb.ThrottlingException, States.Timeout"]'
        in lines
    )
    # Catchers going to one state are one edge listing every error.
    # Error names sharing a prefix are shown once, as `Prefix.*`, like retry policies.
    assert 'Load -.->|"Bad, Worse, Lambda.*, States.ALL"| Broken' in lines
    assert 'subgraph EachEvent ["EachEvent<br/>Map, each item of $.events, at most 4 at a time"]' in lines
    assert 'EachEvent__Count["Count<br/>λ handlers.count.handler"]' in lines
    assert (
        'EachEvent__Same_ -->|"($.n == $.m) and ($.ok == true)"| EachEvent__s_end' not in lines
    )  # ids are prefixed, not the reserved word
    assert 'EachEvent__Same_ -->|"($.n == $.m) and ($.ok == true)"| EachEvent__end' in lines
    assert 'EachEvent__Same_ -->|"otherwise"| EachEvent__Fix' in lines
    assert "EachEvent --> Both" in lines
    assert any(line.startswith("subgraph Both__branch1") for line in lines)
    assert any(line.startswith("subgraph Both__branch2") for line in lines)
    assert "Both --> end_" in lines
    assert 'Broken(["Broken<br/>error: LoadFailed"])' in lines
    assert 'subgraph failures ["Fail states"]' in lines
    assert any(line.startswith("class ") and line.endswith(" fail") and "Broken" in line for line in lines)


def test_reserved_words_and_odd_names_become_safe_ids() -> None:
    definition = {
        "StartAt": "end",
        "States": {"end": {"Type": "Pass", "Next": '1 "odd"'}, '1 "odd"': {"Type": "Succeed"}},
    }
    chart = diagrams.render_flowchart(definition)
    assert "s_end --> s_1__odd_" in chart
    assert 's_1__odd_(["1 #quot;odd#quot;"])' in chart


def test_fail_states_show_their_error_or_the_path_it_is_taken_from() -> None:
    definition = {
        "StartAt": "Which",
        "States": {
            "Which": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.n", "NumericEquals": 1, "Next": "Own"},
                    {"Variable": "$.n", "NumericEquals": 2, "Next": "Other"},
                    {"Variable": "$.n", "NumericEquals": 3, "Next": "Bare"},
                ],
                "Default": "Failed",
            },
            "Own": {"Type": "Fail", "Error": "Own", "Cause": "c"},
            "Other": {"Type": "Fail", "Error": "Broken"},
            "Bare": {"Type": "Fail"},
            "Failed": {"Type": "Fail", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"},
        },
    }
    lines = [line.strip() for line in diagrams.render_flowchart(definition).splitlines()]
    assert 'Failed(["Failed<br/>error: $.error.Error"])' in lines
    assert 'Other(["Other<br/>error: Broken"])' in lines
    assert 'Own(["Own"])' in lines  # the error is the state's name: said once
    assert 'Bare(["Bare"])' in lines  # no error at all: no empty `error:` line
