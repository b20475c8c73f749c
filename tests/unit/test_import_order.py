"""The local server's modules do not import the functions' observability module: its
logger takes its level (and Powertools its settings) from the environment when it is
created, which the engine sets only when it starts (a logger created before logs at
INFO wherever the server asked for WARNING)."""

from __future__ import annotations

import subprocess
import sys

from infrastructure.local.dynamodb_local import REPO_ROOT


def test_starting_the_server_modules_creates_no_function_logger() -> None:
    code = (
        "import sys\n"
        "import infrastructure.local.server, infrastructure.bench.serve, infrastructure.ops.cli\n"
        "print('registration.observability' in sys.modules)\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'lambdas'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert answer.stdout.strip() == "False", answer.stderr
