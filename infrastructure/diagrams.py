"""Mermaid flowcharts of every state machine, drawn from the synthesized template's ASL.

    python -m infrastructure.diagrams            # rewrite docs/workflows.md
    python -m infrastructure.diagrams --check    # exit 1 when it differs from the template

The pictures come from the definitions CloudFormation deploys (resolved from
`cdk.out/`), not from the CDK code, so they cannot describe a workflow that does not
exist. (The README keeps a hand-drawn overview of the whole stack.)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infrastructure import names
from infrastructure.local.template import load_template
from infrastructure.local.template_specs import LocalTemplate, StateMachineSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = REPO_ROOT / "docs" / "workflows.md"
COMMAND = "python -m infrastructure.diagrams"

_LOGICAL_ID_HASH = re.compile(r"[0-9A-F]{8}$")
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_]")
# Words Mermaid reads as syntax when used as a node id.
_RESERVED_IDS = {
    "end",
    "graph",
    "flowchart",
    "subgraph",
    "class",
    "classdef",
    "click",
    "style",
    "linkstyle",
    "direction",
}

COMPARISONS = {
    "StringEquals": "==",
    "StringLessThan": "<",
    "StringGreaterThan": ">",
    "StringLessThanEquals": "<=",
    "StringGreaterThanEquals": ">=",
    "StringMatches": "matches",
    "NumericEquals": "==",
    "NumericLessThan": "<",
    "NumericGreaterThan": ">",
    "NumericLessThanEquals": "<=",
    "NumericGreaterThanEquals": ">=",
    "BooleanEquals": "==",
    "TimestampEquals": "==",
    "TimestampLessThan": "<",
    "TimestampGreaterThan": ">",
    "TimestampLessThanEquals": "<=",
    "TimestampGreaterThanEquals": ">=",
}
CLASS_DEFS = (
    "classDef succeed fill:#e3f4e1,stroke:#2e7d32,color:#1b5e20",
    "classDef fail fill:#fde7e7,stroke:#c62828,color:#8e0000",
    "classDef choice fill:#fff8e1,stroke:#f9a825",
)


# --- labels ---------------------------------------------------------------------------


def _text(value: str) -> str:
    """Text safe inside a quoted Mermaid label."""
    return value.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def _label(*lines: str) -> str:
    return '"' + "<br/>".join(_text(line) for line in lines if line) + '"'


def _value(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else json.dumps(value)


def condition_text(rule: Mapping[str, Any]) -> str:
    """A Choice rule as one line, e.g. `$.decision.action == 'seat'`."""
    if "And" in rule:
        return " and ".join(f"({condition_text(r)})" for r in rule["And"])
    if "Or" in rule:
        return " or ".join(f"({condition_text(r)})" for r in rule["Or"])
    if "Not" in rule:
        return f"not ({condition_text(rule['Not'])})"
    variable = rule.get("Variable", "")
    for key, value in rule.items():
        if key in ("Variable", "Next"):
            continue
        if key in ("IsPresent", "IsNull", "IsString", "IsNumeric", "IsBoolean", "IsTimestamp"):
            test = key[2:].lower()
            return f"{variable} is {test}" if value else f"{variable} is not {test}"
        if key.endswith("Path") and key[: -len("Path")] in COMPARISONS:
            return f"{variable} {COMPARISONS[key[: -len('Path')]]} {value}"
        if key in COMPARISONS:
            return f"{variable} {COMPARISONS[key]} {_value(value)}"
    if "Condition" in rule:  # JSONata
        return str(rule["Condition"])
    return json.dumps({k: v for k, v in rule.items() if k != "Next"}, sort_keys=True)


def compact_errors(errors: Iterable[str]) -> str:
    """`Lambda.A, Lambda.B, States.Timeout` -> `Lambda.*, States.Timeout` (order kept)."""
    errors = list(errors)
    prefixes = [e.split(".", 1)[0] for e in errors if "." in e]
    shown: list[str] = []
    for error in errors:
        prefix = error.split(".", 1)[0] if "." in error else None
        item = f"{prefix}.*" if prefix is not None and prefixes.count(prefix) > 1 else error
        if item not in shown:
            shown.append(item)
    return ", ".join(shown)


def retry_text(retriers: list[Mapping[str, Any]]) -> str:
    parts = []
    for retrier in retriers:
        attempts = retrier.get("MaxAttempts", 3)
        parts.append(f"retry {attempts}x: {compact_errors(retrier.get('ErrorEquals', []))}")
    return "; ".join(parts)


def fail_text(name: str, state: Mapping[str, Any]) -> str:
    """What a Fail state ends with: its error, or the path it takes the error from
    (`ErrorPath`); nothing when the error is the state's own name."""
    if "ErrorPath" in state:
        return f"error: {state['ErrorPath']}"
    error = str(state.get("Error", ""))
    return "" if error in ("", name) else f"error: {error}"


def resource_text(state: Mapping[str, Any], handlers: Mapping[str, str]) -> str:
    """What a Task runs: the Lambda handler when the resource is a function, else the integration."""
    resource = str(state.get("Resource", ""))
    function = resource
    if resource.startswith("arn:aws:states:::lambda:invoke"):
        function = str(state.get("Parameters", {}).get("FunctionName", ""))
    if function in handlers:
        return f"λ {handlers[function]}"
    if ":function:" in function:
        return "λ " + function.rsplit(":function:", 1)[1]
    if resource.startswith("arn:aws:states:::"):
        return resource[len("arn:aws:states:::") :]
    return resource


# --- graph ----------------------------------------------------------------------------


@dataclass
class _Flowchart:
    handlers: Mapping[str, str]
    lines: list[str] = field(default_factory=list)
    used_ids: set[str] = field(default_factory=set)
    classes: dict[str, list[str]] = field(default_factory=dict)

    def new_id(self, prefix: str, name: str) -> str:
        base = f"{prefix}{_UNSAFE_ID.sub('_', name)}"
        if base.lower() in _RESERVED_IDS or not base[:1].isalpha():
            base = f"s_{base}"
        node_id, n = base, 1
        while node_id in self.used_ids:
            n += 1
            node_id = f"{base}_{n}"
        self.used_ids.add(node_id)
        return node_id

    def add_class(self, class_name: str, node_id: str) -> None:
        self.classes.setdefault(class_name, []).append(node_id)

    def render_states(self, machine: Mapping[str, Any], prefix: str, indent: str) -> tuple[str, str | None]:
        """Nodes and edges of one (sub)machine. Returns (id of its start state, id of the
        node its End states flow to at top level, if any was needed)."""
        states: Mapping[str, Mapping[str, Any]] = machine["States"]
        ids = {name: self.new_id(prefix, name) for name in states}
        edges: list[str] = []
        fail_nodes: list[str] = []
        end_id: str | None = None

        for name, state in states.items():
            node_id = ids[name]
            fail_node = self._render_node(name, state, node_id, indent)
            if fail_node is not None:
                fail_nodes.append(fail_node)
            edges += _edges(state, node_id, ids)
            if "Next" not in state and state.get("End") and not prefix:
                if end_id is None:
                    end_id = self.new_id("", "end_")
                edges.append(f"{node_id} --> {end_id}")

        if fail_nodes:
            group = self.new_id(prefix, "failures")
            self.lines.append(f'{indent}subgraph {group} ["Fail states"]')
            self.lines.extend(f"{indent}  {node}" for node in fail_nodes)
            self.lines.append(f"{indent}end")
        if end_id is not None:
            self.lines.append(f'{indent}{end_id}(("End"))')
        self.lines.extend(f"{indent}{edge}" for edge in edges)
        return ids[machine["StartAt"]], end_id

    def _render_node(self, name: str, state: Mapping[str, Any], node_id: str, indent: str) -> str | None:
        """Draws one state; a Fail state is returned instead, to be grouped with the others."""
        kind = state["Type"]
        if kind in ("Map", "Parallel"):
            self._render_container(name, state, node_id, indent)
        elif kind == "Fail":
            self.add_class("fail", node_id)
            return f"{node_id}([{_label(name, fail_text(name, state))}])"
        elif kind == "Succeed":
            self.lines.append(f"{indent}{node_id}([{_label(name)}])")
            self.add_class("succeed", node_id)
        elif kind == "Choice":
            self.lines.append(f"{indent}{node_id}{{{_label(name)}}}")
            self.add_class("choice", node_id)
        elif kind == "Task":
            retry = retry_text(state.get("Retry", []))
            self.lines.append(
                f"{indent}{node_id}[{_label(name, resource_text(state, self.handlers), retry)}]"
            )
        elif kind == "Wait":
            wait = next((f"{k}: {v}" for k, v in state.items() if k.startswith(("Seconds", "Timestamp"))), "")
            self.lines.append(f"{indent}{node_id}[/{_label(name, f'wait {wait}')}/]")
        else:  # Pass and anything newer
            self.lines.append(f"{indent}{node_id}[{_label(name, kind)}]")
        return None

    def _render_container(self, name: str, state: Mapping[str, Any], node_id: str, indent: str) -> None:
        """A Map's item processor, or each branch of a Parallel, drawn as a subgraph."""
        retry = retry_text(state.get("Retry", []))
        if state["Type"] == "Map":
            processor = state.get("ItemProcessor") or state.get("Iterator") or {}
            detail = ["Map"]
            if "ItemsPath" in state:
                detail.append(f"each item of {state['ItemsPath']}")
            if state.get("MaxConcurrency"):
                detail.append(f"at most {state['MaxConcurrency']} at a time")
            title = _label(name, ", ".join(detail), retry)
            branches = [processor]
        else:
            title = _label(name, "Parallel", retry)
            branches = list(state.get("Branches", []))
        self.lines.append(f"{indent}subgraph {node_id} [{title}]")
        self.lines.append(f"{indent}  direction TB")
        for n, branch in enumerate(branches, start=1):
            inner_prefix = f"{node_id}__" if len(branches) == 1 else f"{node_id}__b{n}_"
            if len(branches) > 1:
                branch_id = self.new_id(f"{node_id}__", f"branch{n}")
                self.lines.append(f'{indent}  subgraph {branch_id} ["branch {n}"]')
                self.render_states(branch, inner_prefix, indent + "    ")
                self.lines.append(f"{indent}  end")
            else:
                self.render_states(branch, inner_prefix, indent + "  ")
        self.lines.append(f"{indent}end")


def render_flowchart(definition: Mapping[str, Any], handlers: Mapping[str, str] | None = None) -> str:
    """Mermaid `flowchart` text (without the code fence) for one ASL definition."""
    chart = _Flowchart(handlers=handlers or {})
    chart.lines.append("flowchart TD")
    start_id = chart.new_id("", "start_")
    chart.lines.append(f'  {start_id}(("Start"))')
    start_edge = len(chart.lines)
    first, _ = chart.render_states(definition, "", "  ")
    chart.lines.insert(start_edge, f"  {start_id} --> {first}")
    chart.lines.extend(f"  {line}" for line in CLASS_DEFS)
    for class_name, node_ids in chart.classes.items():
        chart.lines.append(f"  class {','.join(node_ids)} {class_name}")
    return "\n".join(chart.lines)


# --- documents ------------------------------------------------------------------------


def _title(logical_id: str, workflows: Mapping[str, StateMachineSpec]) -> str:
    for workflow, spec in workflows.items():
        if spec.logical_id == logical_id:
            return workflow
    return _LOGICAL_ID_HASH.sub("", logical_id)


def _ordered(template: LocalTemplate) -> list[StateMachineSpec]:
    """Workflows named in `names` first (in that order), then any other state machine."""
    known = [template.workflows[w] for w in names.WORKFLOW_OUTPUTS if w in template.workflows]
    others = sorted(
        (sm for sm in template.state_machines.values() if sm not in known), key=lambda sm: sm.logical_id
    )
    return known + others


def render_sections(template: LocalTemplate, heading: str = "##") -> str:
    handlers = {function.arn: function.handler for function in template.functions.values()}
    sections = []
    for spec in _ordered(template):
        definition = spec.definition_dict
        title = _title(spec.logical_id, template.workflows)
        lines = [f"{heading} {title} ({spec.type.capitalize()})", ""]
        if definition.get("Comment"):
            lines += [str(definition["Comment"]), ""]
        lines += ["```mermaid", render_flowchart(definition, handlers), "```"]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


LEGEND = (
    "Solid arrows are transitions (`Next`, and each `Choice` rule with its condition); dashed "
    "arrows are caught errors (`Catch`), labelled with the error names. A task names the Lambda "
    "handler it runs and its `Retry` policy. Fail states are grouped; their names are the error "
    "codes the API maps to HTTP statuses, except those labelled `error: $.path`, which end with "
    "the error found at that path (the one the workflow failed with, passed on unchanged)."
)


def render_document(template: LocalTemplate) -> str:
    return "\n".join(
        [
            f"<!-- Generated by `{COMMAND}` from the synthesized template: do not edit by hand. -->",
            "# Workflows",
            "",
            LEGEND,
            "",
            render_sections(template, "##"),
            "",
        ]
    )


@dataclass(frozen=True)
class Outputs:
    """The files the generator owns, with their expected text."""

    expected: dict[Path, str]


def expected_outputs(template: LocalTemplate, doc_path: Path = DOC_PATH) -> Outputs:
    return Outputs(expected={doc_path: render_document(template)})


def drifted(outputs: Outputs) -> list[Path]:
    return [
        path
        for path, text in outputs.expected.items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed diagrams are stale")
    parser.add_argument("--template", type=Path, help="synthesized template (default: cdk.out/)")
    args = parser.parse_args(argv)

    try:
        template = load_template(args.template)
    except FileNotFoundError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    outputs = expected_outputs(template)
    stale = drifted(outputs)
    if args.check:
        for path in stale:
            print(f"{path.relative_to(REPO_ROOT)} is out of date: run `{COMMAND}`", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(outputs.expected[path], encoding="utf-8")
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


def _edges(state: Mapping[str, Any], node_id: str, ids: Mapping[str, str]) -> list[str]:
    """A state's edges to the states it can go to: its choices, its next, what it catches."""
    edges = []
    if state["Type"] == "Choice":
        for rule in state.get("Choices", []):
            edges.append(f"{node_id} -->|{_label(condition_text(rule))}| {ids[rule['Next']]}")
        if "Default" in state:
            edges.append(f"{node_id} -->|{_label('otherwise')}| {ids[state['Default']]}")
    if "Next" in state:
        edges.append(f"{node_id} --> {ids[state['Next']]}")
    caught: dict[str, list[str]] = {}
    for catcher in state.get("Catch", []):
        caught.setdefault(catcher["Next"], []).extend(catcher.get("ErrorEquals", []))
    for target, errors in caught.items():
        edges.append(f"{node_id} -.->|{_label(compact_errors(errors))}| {ids[target]}")
    return edges


if __name__ == "__main__":
    raise SystemExit(main())
