"""`python -m infrastructure.local.server` as a user runs it: start, answer, stop, restart."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infrastructure import names
from infrastructure.local.dynamodb_local import free_port
from tests.fixtures import figures
from tests.fixtures.processes import READY, REPO, running
from tests.fixtures.template_variants import role_of, synthesized_template, without_grant
from tests.http.client import Client, uid

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("http-cli"),
    pytest.mark.local_only("starts the local server as a process"),
]


def _listening(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def _banner(lines: list[str], port: int | str, data_dir: Path | str) -> list[str]:
    """The startup banner, with what differs between runs (ports, the data folder) named."""
    start = next(i for i, line in enumerate(lines) if line.startswith("Event registration API"))
    end = next(i for i, line in enumerate(lines) if line.startswith(READY))
    banner = "\n".join(lines[start : end + 1]).replace(f"127.0.0.1:{port}", "127.0.0.1:PORT")
    banner = re.sub(r"DynamoDB Local at http://127\.0\.0\.1:\d+", "DynamoDB Local at DB", banner)
    return banner.replace(str(data_dir), "DATA").splitlines()


def test_serves_stops_on_ctrl_c_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    port = free_port()
    args = ["--port", str(port), "--data-dir", str(tmp_path)]
    user_id = uid("kept")

    with running(args) as first:
        first.wait_for(READY)
        # The README shows this banner, as `make run` prints it.
        readme = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
        assert _banner(first.text.splitlines(), port, tmp_path) == _banner(readme, 3000, ".local")
        assert f"http://127.0.0.1:{port}/docs" in first.text
        assert f"http://127.0.0.1:{port}/openapi.json" in first.text
        match = re.search(r"DynamoDB Local at (http://\S+),", first.text)
        assert match, first.text
        database = match.group(1)
        client = Client(f"http://127.0.0.1:{port}").as_admin()
        assert client.post("/users", {"userId": user_id, "name": "Kept"}).status == 201
        event_id = client.event(capacity=1)
        assert client.register(event_id, user_id).status == 201

        first.popen.send_signal(signal.SIGINT)
        assert first.finish() == 0, first.text
    assert "Stopped." in first.text
    assert "Traceback" not in first.text, first.text
    assert not _listening(database), "DynamoDB Local outlived the server"
    assert not _listening(f"http://127.0.0.1:{port}")
    assert (tmp_path / "dynamodb").is_dir()

    with running(args) as second:
        second.wait_for(READY)
        client = Client(f"http://127.0.0.1:{port}").as_admin()
        assert client.get(f"/users/{user_id}").body["name"] == "Kept"
        assert client.get(f"/events/{event_id}").body["registeredCount"] == 1
        second.popen.send_signal(signal.SIGTERM)
        assert second.finish() == 0, second.text


def test_without_java_says_how_to_install_it_or_run_in_memory(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {"PATH": str(empty), "JAVA_HOME": "", "PORT": str(free_port())}

    with running(["--data-dir", str(tmp_path)], env) as process:
        code = process.finish(timeout=60)

    assert code == 1, process.text
    assert "Java 17" in process.text
    assert "make run DB=memory" in process.text
    assert "Traceback" not in process.text


def test_in_memory_needs_no_java(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    port = free_port()
    env = {"PATH": str(empty), "JAVA_HOME": "", "PORT": str(port)}

    with running(["--in-memory", "--data-dir", str(tmp_path), "--quiet"], env) as process:
        process.wait_for(READY)
        assert "in-memory" in process.text
        client = Client(f"http://127.0.0.1:{port}").as_admin()
        assert client.post("/users", {"userId": "mem", "name": "In memory"}).status == 201
        process.popen.send_signal(signal.SIGINT)
        assert process.finish() == 0, process.text


def test_missing_template_says_to_synthesize(tmp_path: Path) -> None:
    with running(
        ["--in-memory", "--template", str(tmp_path / "absent.json"), "--port", str(free_port())]
    ) as p:
        assert p.finish(timeout=60) == 2
    assert "make synth" in p.text


def test_busy_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with running(["--in-memory", "--port", str(port), "--data-dir", str(tmp_path)]) as p:
            assert p.finish(timeout=60) == 2
    assert f"Port {port}" in p.text and "PORT=" in p.text


def test_runs_another_synthesized_template_as_given(tmp_path: Path) -> None:
    """`make run TEMPLATE=...`: the stack of that template, its roles enforced as on AWS."""
    template = synthesized_template()
    variant = tmp_path / "variant.template.json"
    variant.write_text(
        json.dumps(
            without_grant(
                template, role_of(template, handler=names.TASK_HANDLERS["Validate"]), "dynamodb:BatchGetItem"
            )
        )
    )
    port = free_port()
    args = ["--in-memory", "--data-dir", str(tmp_path), "--quiet", "--template", str(variant)]
    with running(args, {"PORT": str(port)}) as process:
        process.wait_for(READY)
        client = Client(f"http://127.0.0.1:{port}").as_admin()
        user, event = uid("u"), uid("e")
        created = client.post("/users", {"userId": user, "name": "Variant"}).status
        client.post("/events", {"eventId": event, "title": "Variant", "capacity": 1})
        register = client.post(f"/events/{event}/register", {"userId": user})
        process.popen.send_signal(signal.SIGINT)
        assert process.finish() == 0, process.text

    assert created == 201
    # Validate may not BatchGetItem: the request fails as it would on AWS.
    register.error(500, "InternalError")


def _regctl(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "REGCTL_URL"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "regctl"), *args],
        cwd=cwd,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_regctl_finds_the_stack_started_from_its_folder_on_any_port(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / ".local"  # what `make run` uses, seen from the checkout (here tmp_path)
    with running(["--in-memory", "--port", str(port), "--data-dir", str(data_dir)]) as stack:
        stack.wait_for(READY)
        event_id = Client(f"http://127.0.0.1:{port}").as_admin().event(capacity=3)

        found = _regctl(["events", "show", event_id], cwd=tmp_path)
        assert found.returncode == 0, found.stdout + found.stderr
        assert event_id in found.stdout
        # $REGCTL_URL wins over the record, and --url over both.
        elsewhere = f"http://127.0.0.1:{free_port()}"
        assert _regctl(["events", "show", event_id], cwd=tmp_path, REGCTL_URL=elsewhere).returncode != 0
        given = _regctl(
            ["--url", f"http://127.0.0.1:{port}", "events", "show", event_id],
            cwd=tmp_path,
            REGCTL_URL=elsewhere,
        )
        assert given.returncode == 0, given.stdout + given.stderr

        stack.popen.send_signal(signal.SIGINT)
        assert stack.finish() == 0, stack.text
    assert not (data_dir / "stack.json").exists()  # a stopped stack is not found any more


def test_regctl_answers_its_version(tmp_path: Path) -> None:
    answer = _regctl(["--version"], cwd=tmp_path)
    assert answer.returncode == 0, answer.stderr
    assert re.fullmatch(r"regctl \d+\.\d+\.\d+\n", answer.stdout), answer.stdout


def _database_pid(data_dir: Path) -> int:
    """The DynamoDB Local JVM keeping its data in `data_dir`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        if "DynamoDBLocal" in command and str(data_dir) in command:
            return int(proc.name)
    raise AssertionError(f"no DynamoDB Local process with its data in {data_dir}")


def test_a_database_that_dies_is_restarted_on_its_data_and_the_stack_recovers(tmp_path: Path) -> None:
    port = free_port()
    with running(["--port", str(port), "--data-dir", str(tmp_path), "--quiet"]) as stack:
        stack.wait_for(READY)
        client = Client(f"http://127.0.0.1:{port}", timeout=60).as_admin()
        user_id = uid("survivor")
        assert client.post("/users", {"userId": user_id, "name": "Survivor"}).status == 201

        os.kill(_database_pid(tmp_path), signal.SIGKILL)
        killed = time.monotonic()
        answers = []
        while time.monotonic() - killed < 90:
            answer = client.get(f"/users/{user_id}")
            answers.append(answer)
            if answer.status == 200:
                break
            time.sleep(0.2)
        recovered_after = time.monotonic() - killed

        assert answers[-1].status == 200 and answers[-1].body["name"] == "Survivor", answers[-1].raw
        assert client.get("/health").body["database"] == {"status": "ok", "detail": None}
        down = [a for a in answers if a.status != 200]
        for answer in down:  # meanwhile: "retry later", with nothing internal in it
            answer.error(503, "TransientDatabaseError")
            assert answer.header("Retry-After") == "1", answer.raw
            assert b"127.0.0.1" not in answer.raw and b"http://" not in answer.raw, answer.raw
        stack.wait_for("DynamoDB Local is back after")
        assert "restarting it on the same data" in stack.text
        assert recovered_after < 60, recovered_after
        figures.merge(
            "database_restart",
            {"recovered_seconds": round(recovered_after, 1), "answers_while_down": len(down)},
        )
        stack.popen.send_signal(signal.SIGINT)
        assert stack.finish() == 0, stack.text
