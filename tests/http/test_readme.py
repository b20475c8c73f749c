"""What the README shows a command printing is what it prints.

The story between `<!-- story:start -->` and `<!-- story:end -->` is run as written (bash
and curl, against a fresh local stack), and every `# ...` line under a command is what
that command must print; `...` in it stands for what changes from run to run (times,
long messages). tests/http/test_cli.py holds the startup banner to what the server prints.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrastructure.local.engine import LocalEngine
from infrastructure.local.http_server import LocalServer

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
    """(the lines up to the first blank one, which set the variables and sign in; then
    each command with the lines shown under it)."""
    lines = readme_block("<!-- story:start -->", "<!-- story:end -->", "sh")
    blank = lines.index("")
    prelude, rest = "\n".join(lines[:blank]), lines[blank + 1 :]
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
    # `regctl` finds a `make run` stack by itself; this one is on a port of its own.
    environment = {**os.environ, "REGCTL_URL": stack.url}
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=README.parent,
        env=environment,
    )
    assert done.returncode == 0, done.stderr

    printed = done.stdout.split(MARK)[1:]
    assert len(printed) == len(steps), done.stdout
    for (command, shown), output in zip(steps, printed, strict=True):
        _, _, text = output.partition("\n")
        lines = text.splitlines()
        assert len(lines) == len(shown), (command, lines)
        for expected, line in zip(shown, lines, strict=True):
            assert shown_as(expected, line), f"{command}\n  README: {expected}\n  prints: {line}"


# --- excerpts: a README block whose `...` lines stand for lines left out ----------------

# What changes from run to run: ids, times, durations (and so the columns' widths).
VARYING = (
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"\b[0-9a-f]{8}\b"), "<id>"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "<time>"),
    (re.compile(r"\b\d+(\.\d+)?(ms|s)\b"), "<duration>"),
    (re.compile(r"\s+"), " "),
)


def _normal(line: str) -> str:
    for pattern, replacement in VARYING:
        line = pattern.sub(replacement, line)
    return line.strip()


def excerpt_mismatch(excerpt: list[str], printed: list[str]) -> str | None:
    """Where `excerpt` (in order, `...` skipping any lines, the start skipped too) stops
    matching `printed`; None when all of it matches."""
    position, skipping = 0, True
    for line in excerpt:
        if line.strip() == "...":
            skipping = True
            continue
        wanted = _normal(line)
        while position < len(printed) and _normal(printed[position]) != wanted:
            if not skipping:
                return f"README: {line!r}\n  prints: {printed[position]!r}"
            position += 1
        if position == len(printed):
            return f"README: {line!r} is not printed (in that order)"
        position += 1
        skipping = False
    return None


def test_the_excerpt_matcher_refuses_what_differs() -> None:
    printed = ["a", "b 1234abcd   took 12ms", "c", "d"]
    assert excerpt_mismatch(["b 0000ffff took 345ms", "c"], printed) is None
    assert excerpt_mismatch(["a", "...", "d"], printed) is None
    assert excerpt_mismatch(["a", "c"], printed) is not None  # `b` left out without `...`
    assert excerpt_mismatch(["c", "b 1234abcd took 1ms"], printed) is not None  # out of order
    assert excerpt_mismatch(["e"], printed) is not None


def test_make_demo_prints_what_the_readme_shows() -> None:
    excerpt = readme_block("## Running one registration through the engine", "From Python:", "text")
    done = subprocess.run(
        [sys.executable, "-m", "infrastructure.local.demo", "--in-memory"],
        cwd=README.parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    mismatch = excerpt_mismatch(excerpt, done.stdout.splitlines())
    assert mismatch is None, mismatch


def test_regctl_executions_show_prints_what_the_readme_shows(stack: LocalServer) -> None:
    """The README's example run: ada holds pycon's one seat while bob and cy wait, and
    registers again."""
    from infrastructure.ops.cli import main
    from tests.http.client import Client

    block = readme_block("### `regctl executions show NAME`", "### `regctl events show EVENT_ID`", "")
    command, excerpt = block[0], block[1:]
    assert command.startswith("$ regctl executions show register-pycon-ada-"), command
    client = Client(stack.url).as_admin()
    for user in ("ada", "bob", "cy"):
        assert client.post("/users", {"userId": user, "name": user.title()}).status in (201, 409)
    assert (
        client.post(
            "/events", {"eventId": "pycon", "title": "PyCon workshop", "capacity": 1, "hasWaitlist": True}
        ).status
        == 201
    )
    assert [client.register("pycon", u).status for u in ("ada", "bob", "cy", "ada")] == [201, 201, 201, 409]
    failed = client.register("pycon", "ada")
    name = f"register-pycon-ada-{failed.header('X-Request-Id')}"

    out, err = io.StringIO(), io.StringIO()
    assert main(["executions", "show", name, "--url", stack.url], out=out, err=err) == 0, err.getvalue()
    mismatch = excerpt_mismatch(excerpt, out.getvalue().splitlines())
    assert mismatch is None, mismatch
