"""The layout holds: no import cycle, dependencies one way, and a Lambda asset of only what
the functions run.

The import graph is read from the source (every import, those inside functions and
under TYPE_CHECKING included, so that a lazy import cannot hide a cycle).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.infrastructure.conftest import Synthesized

REPO = Path(__file__).resolve().parents[2]
# Top-level packages and where they live.
ROOTS = {
    "infrastructure": REPO / "infrastructure",
    "workflows": REPO / "workflows",
    "registration": REPO / "lambdas" / "registration",
    "handlers": REPO / "lambdas" / "handlers",
}
# What the data layer may know: the domain and the functions' settings; everything else
# of `registration` is above it.
BELOW_THE_DATA = {
    "registration.domain_events",
    "registration.keys",
    "registration.errors",
    "registration.models",
    "registration.reconciliation_models",
    "registration.settings",
    "registration.webhooks",  # the subscriptions' models (data/webhooks.py stores them)
}
# The local twin and the tools (regctl, the benchmark, the diagram and OpenAPI writers):
# anything may be below them, nothing above.
TOP = (
    "infrastructure.local",
    "infrastructure.ops",
    "infrastructure.bench",
    "infrastructure.diagrams",
    "infrastructure.openapi",
)

pytestmark = pytest.mark.infrastructure


def modules_under(roots: Mapping[str, Path]) -> dict[str, Path]:
    found = {}
    for top, base in roots.items():
        for path in base.rglob("*.py"):
            parts = [top, *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(path: Path, known: Iterable[str]) -> set[str]:
    """The known modules `path` imports (a `from package import name` names the submodule)."""
    known = set(known)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found & known


MODULES = modules_under(ROOTS)
GRAPH = {name: imports(path, MODULES) - {name} for name, path in MODULES.items()}


def unit(module: str) -> str:
    """A package's direct child (module or subpackage): `registration.data.users` -> `registration.data`."""
    return ".".join(module.split(".")[:2])


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert cycles(GRAPH) == []


def test_no_cycle_between_packages() -> None:
    units: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        units.setdefault(unit(module), set()).update(unit(t) for t in targets if unit(t) != unit(module))
    assert cycles(units) == []


def _offenders(sources: Iterable[str], allowed: object) -> dict[str, list[str]]:
    rule = allowed if callable(allowed) else (lambda target: target in allowed)  # type: ignore[operator]
    found = {m: sorted(t for t in GRAPH[m] if not rule(t)) for m in sources}
    return {m: targets for m, targets in found.items() if targets}


def test_the_data_layer_knows_only_the_domain() -> None:
    data = [m for m in MODULES if m.startswith("registration.data")]
    assert data, "no data layer found"
    assert _offenders(data, lambda t: t.startswith("registration.data") or t in BELOW_THE_DATA) == {}


def test_the_lambda_code_imports_nothing_of_the_infrastructure() -> None:
    lambda_code = [m for m in MODULES if m.split(".")[0] in ("registration", "handlers")]
    assert _offenders(lambda_code, lambda t: t.split(".")[0] in ("registration", "handlers")) == {}


def test_nothing_below_the_twin_and_the_tools_imports_them() -> None:
    below = [m for m in MODULES if not m.startswith(TOP)]
    assert _offenders(below, lambda t: not t.startswith(TOP)) == {}


def test_the_lambda_asset_holds_what_its_functions_run(synthesized: Synthesized) -> None:
    functions = synthesized.resources("AWS::Lambda::Function")
    handlers: dict[str, set[str]] = {}
    for resource in functions.values():
        asset = "asset." + resource["Properties"]["Code"]["S3Key"].removesuffix(".zip")
        handlers.setdefault(asset, set()).add(resource["Properties"]["Handler"].rpartition(".")[0])
    assert handlers, "no Lambda function in the template"
    for asset, entry_points in handlers.items():
        root = synthesized.outdir / asset
        shipped = modules_under({p.name: p for p in root.iterdir() if (p / "__init__.py").is_file()})
        graph = {name: imports(path, shipped) for name, path in shipped.items()}
        reached, pending = set(), list(entry_points)
        while pending:
            module = pending.pop()
            if module in reached:
                continue
            reached.add(module)
            pending += graph.get(module, ())
            # Importing a module runs its packages' __init__ first.
            pending += [".".join(module.split(".")[:n]) for n in range(1, module.count(".") + 1)]
        assert entry_points <= set(shipped), f"{asset} lacks handlers {sorted(entry_points - set(shipped))}"
        assert sorted(set(shipped) - reached) == [], f"{asset} ships modules no function runs"
        defined = {
            (name, node.name)
            for name, path in shipped.items()
            for node in _functions_and_methods(ast.parse(path.read_text(encoding="utf-8")))
            if not _registered(node)
        }
        # The operator CLI reads the table through the data layer (only it talks to
        # DynamoDB), so a read only `regctl` makes is shipped too, and counted as used.
        readers = [*shipped.values(), *(p for n, p in MODULES.items() if n.startswith("infrastructure.ops"))]
        used = {
            word
            for path in readers
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            for word in _names_used(node)
        }
        entry_functions = {(m, "handler") for m in entry_points}
        unused = sorted(f"{m}.{n}" for m, n in defined - entry_functions if n not in used)
        assert unused == [], f"{asset} ships functions nothing in it calls: {unused}"
        stray = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix != ".py")
        assert stray == [], f"{asset} ships files that are not code"


def _functions_and_methods(module: ast.Module) -> list[ast.FunctionDef]:
    """A module's functions and its classes' methods (not the dunder ones Python calls)."""
    found = [node for node in module.body if isinstance(node, ast.FunctionDef)]
    for cls in (node for node in module.body if isinstance(node, ast.ClassDef)):
        found += [
            node
            for node in cls.body
            if isinstance(node, ast.FunctionDef)
            and not (node.name.startswith("__") and node.name.endswith("__"))
        ]
    return found


def _names_used(node: ast.AST) -> list[str]:
    """The names a node refers to (not those it defines)."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.ImportFrom):
        return [alias.name for alias in node.names]
    return []


PLAIN_DECORATORS = {"classmethod", "staticmethod", "property"}


def _registered(node: ast.FunctionDef) -> bool:
    """Registered by a decorator (`@app.get(...)`, `@field_validator(...)`): called through it."""
    return any(not (isinstance(d, ast.Name) and d.id in PLAIN_DECORATORS) for d in node.decorator_list)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _task_states(states: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for name, state in states.items():
        if state["Type"] == "Task":
            yield name, state
        for inner in [state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])]:
            if inner:
                yield from _task_states(inner["States"])


def test_a_reader_of_the_asl_finds_the_code_of_each_task(synthesized: Synthesized) -> None:
    """One name from state to code: a Lambda task's function is named after its handler
    module, and that handler runs (itself, or through the function it calls) a function
    of the domain named after the state: `TakeSeat` -> `take_seat`."""
    functions = synthesized.resources("AWS::Lambda::Function")
    domain = {
        node.name: node
        for name, path in MODULES.items()
        if name.startswith("registration")
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.FunctionDef)
    }
    checked = []
    for machine in synthesized.resources("AWS::StepFunctions::StateMachine"):
        for state_name, state in _task_states(synthesized.definition(machine)["States"]):
            function_id = state["Resource"].rpartition(":function:")[2]
            if function_id not in functions:
                continue  # not a Lambda task (StartExecution)
            module = functions[function_id]["Properties"]["Handler"].rpartition(".")[0]
            assert module.startswith("handlers."), module
            camel = "".join(part.title() for part in module.removeprefix("handlers.").split("_"))
            assert function_id[:-8].endswith(camel), f"{state_name}: function {function_id} runs {module}"
            handler_uses = {
                w for node in ast.walk(ast.parse(MODULES[module].read_text())) for w in _names_used(node)
            }
            reached = set(handler_uses)
            for called in handler_uses & set(domain):
                reached |= {w for node in ast.walk(domain[called]) for w in _names_used(node)}
            wanted = _snake(state_name)
            assert wanted in domain, f"state {state_name}: no function {wanted} in the domain"
            assert wanted in reached, f"state {state_name}: {module} does not run {wanted}"
            checked.append(state_name)
    assert {"TakeSeat", "JoinWaitlist", "RecordFailure", "Tally"} <= set(checked)


def _key_family(node: ast.expr) -> str:
    """`keys.user_pk(user_id)` -> `keys.user_pk`; `keys.EVENTS` -> `keys.EVENTS`."""
    return ast.unparse(node.func if isinstance(node, ast.Call) else node)


def test_every_index_key_the_data_layer_writes_is_one_a_listing_queries() -> None:
    """No GSI key is written for a query nothing runs: each GSI1PK an item builder or
    update puts is the partition of some `_query_gsi` listing (and the asset test above
    holds that every listing is called)."""
    written: set[str] = set()
    queried: set[str] = set()
    for name, path in MODULES.items():
        if not name.startswith("registration.data"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        entries = [
            (key.value, value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Dict)
            for key, value in zip(node.keys, node.values, strict=True)
            if isinstance(key, ast.Constant) and isinstance(key.value, str)
        ]
        # An item puts the key itself; an update names it (`"#gpk": "GSI1PK"`) and sets
        # it from the value of the same placeholder (`":gpk": ...`).
        aliases = {":" + k[1:] for k, v in entries if isinstance(v, ast.Constant) and v.value == "GSI1PK"}
        written |= {_key_family(v) for k, v in entries if k == "GSI1PK" or k in aliases}
        queried |= {
            _key_family(node.args[1])
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and _names_used(node.func) == ["_query_gsi"]
        }
    assert written, "found no GSI1PK written"
    assert sorted(written - queried) == []
