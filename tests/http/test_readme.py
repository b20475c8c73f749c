"""What the README shows a command printing is what it prints.

The story between `<!-- story:start -->` and `<!-- story:end -->` is run as written (bash
and curl, against a fresh local stack), and every `# ...` line under a command is what
that command must print; `...` in it stands for what changes from run to run (times,
long messages). tests/http/test_cli.py holds the startup banner to what the server prints.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrastructure.local.engine import LocalEngine
from infrastructure.local.server import LocalServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("http"),
    pytest.mark.local_only("runs the README's story on a stack of its own (its ids are fixed)"),
]

README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://127.0.0.1:3000"
MARK = "@@ step "


def readme_block(start: str, end: str, fence: str) -> list[str]:
    """The lines of the first `fence` code block between the two markers."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(start) : text.index(end)]
    opened = section.index(f"```{fence}\n") + len(fence) + 4
    return section[opened : section.index("```", opened)].splitlines()


def story() -> tuple[str, list[tuple[str, list[str]]]]:
    """(the first line, which sets the variables; then each command with the lines shown under it)."""
    prelude, *rest = readme_block("<!-- story:start -->", "<!-- story:end -->", "sh")
    steps: list[tuple[str, list[str]]] = []
    for line in rest:
        if line.startswith("# "):
            steps[-1][1].append(line[2:])
        elif line.strip():
            steps.append((line, []))
    return prelude, steps


def shown_as(expected: str, printed: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, printed, re.DOTALL) is not None


@pytest.fixture(scope="module")
def stack(engine: LocalEngine) -> Iterator[LocalServer]:
    """A stack of its own (moto's in-memory tables, fresh for this module)."""
    with LocalServer(engine, port=0, access_log=None) as running:
        yield running


def test_every_command_of_the_story_shows_an_output() -> None:
    _, steps = story()
    assert len(steps) >= 10
    assert all(shown for _, shown in steps), [command for command, shown in steps if not shown]


def test_the_readme_story_prints_what_the_readme_shows(stack: LocalServer) -> None:
    curl = shutil.which("curl")
    assert curl, "the README's story needs curl"
    prelude, steps = story()
    assert README_URL in prelude
    script = [prelude.replace(README_URL, stack.url)]
    for n, (command, _) in enumerate(steps):
        script += [f"echo '{MARK}{n}'", command]
    done = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    printed = done.stdout.split(MARK)[1:]
    assert len(printed) == len(steps), done.stdout
    for (command, shown), output in zip(steps, printed, strict=True):
        _, _, text = output.partition("\n")
        lines = text.splitlines()
        assert len(lines) == len(shown), (command, lines)
        for expected, line in zip(shown, lines, strict=True):
            assert shown_as(expected, line), f"{command}\n  README: {expected}\n  prints: {line}"
