"""A client generated from docs/openapi.json works: openapi-python-client takes the whole
document without a warning, the README's story type-checks against what it generates,
and runs through it with the answers the README shows."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from registration.openapi import DOCUMENT_PATH
from tests.http.client import uid

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("http")]

HERE = Path(__file__).resolve().parent
PACKAGE = "event_registration_api_client"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The generated package's parent folder (put on sys.path for this module)."""
    out = tmp_path_factory.mktemp("client")
    done = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(DOCUMENT_PATH),
            "--meta",
            "none",
            "--output-path",
            str(out / PACKAGE),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(out))
    try:
        yield out
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_every_operation_is_generated(generated: Path) -> None:
    import json

    document = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
    operations = {o["operationId"] for ops in document["paths"].values() for o in ops.values()}
    modules = {p.stem for p in (generated / PACKAGE / "api").rglob("*.py") if p.stem != "__init__"}
    snake = {"".join(f"_{c.lower()}" if c.isupper() else c for c in o) for o in operations}
    assert modules == snake


def test_the_story_type_checks_against_the_generated_client(generated: Path, tmp_path: Path) -> None:
    # The generated package's own internals are the generator's business (its context
    # managers trip mypy 2's checks); what it offers the story is checked.
    config = tmp_path / "mypy.ini"
    config.write_text(
        f"[mypy]\nstrict = True\n\n[mypy-{PACKAGE}.*]\nignore_errors = True\n", encoding="utf-8"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            "--config-file",
            str(config),
            str(HERE / "generated_story.py"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(generated)},
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_story_runs_through_the_generated_client(generated: Path, api_url: str) -> None:
    story = importlib.import_module("tests.http.generated_story").story
    ada, grace, keynote = uid("ada"), uid("grace"), uid("keynote")

    assert story(api_url, ada, grace, keynote) == [
        f"user {ada}",
        f"user {grace}",
        f"event {keynote} capacity 1",
        f"register {ada}: registered",
        f"register {grace}: waitlisted 1",
        "replay 201: waitlisted 1",
        f"waitlist 1. {grace}",
        f"unregister {ada}: unregistered, promoted {grace}",
        f"registrations of {grace} listed",
        f"register {grace} again: 409 AlreadyRegistered",
        "event 1 registered, 0 waiting",
    ]
