"""`make bench`: cost per operation at growing event sizes, latency through the local API, AWS figures.

    python -m infrastructure.bench [--small] [--output docs/benchmarks.md]

1. Cost (`cost_scenarios.py`): for events of 10, 1,000 and 100,000 registrants (and
   waitlists as long), each operation runs through the synthesized workflows on the local
   engine over DynamoDB Local; a botocore hook on the task handlers' DynamoDB client counts
   round trips, items and capacity units (AWS's rules, `dynamodb_units.py`), and the
   execution history gives Lambda invocations and state transitions.
2. Latency (`latency_scenarios.py`): registrations through the local HTTP API (its own
   process) and through the data layer called directly, at 1, 8 and 32 in flight; peak
   memory of the local stack.
3. AWS: what the measured units mean at published prices and quotas (`aws_costs.py`,
   `report_aws.py`).

This module describes the machine, runs parts 1 and 2 on one DynamoDB Local, and has the
report (markdown and plots, `report.py`) rewritten from this run's measurements.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from infrastructure import names
from infrastructure.bench import report
from infrastructure.bench.cost_scenarios import measure_costs
from infrastructure.bench.latency_scenarios import measure_latency
from infrastructure.bench.results import Results, Settings
from infrastructure.local.dynamodb_local import REPO_ROOT, DynamoDBLocal, DynamoDBLocalError, find_jar_dir
from infrastructure.local.moto_logs import route_moto_logs

DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"
DEFAULT_TEMPLATE = REPO_ROOT / names.CDK_OUT_DIR / names.TEMPLATE_FILE


# --- machine ------------------------------------------------------------------------------


def dynamodb_local_version() -> str:
    try:
        jar = find_jar_dir() / "DynamoDBLocal.jar"
        with zipfile.ZipFile(jar) as archive:
            for name in archive.namelist():
                if name.endswith("DynamoDBLocal/pom.properties"):
                    for line in archive.read(name).decode().splitlines():
                        if line.startswith("version="):
                            return line.split("=", 1)[1].strip()
    except (OSError, DynamoDBLocalError, zipfile.BadZipFile):
        pass
    return "unknown version"


def machine_description() -> str:
    cores = os.cpu_count() or 0
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {round(int(line.split()[1]) / 1024 / 1024)} GiB"
    except OSError:
        pass
    python = ".".join(platform.python_version_tuple()[:2])
    return (
        f"{cores} cores{memory}, {platform.system()} {platform.machine()}, Python {python}, "
        f"DynamoDB Local {dynamodb_local_version()}"
    )


def load_average() -> float | None:
    """The 1-minute load average (what else was running), None where unknown."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# --- the run ------------------------------------------------------------------------------------


def run(settings: Settings, output: Path, template: Path, log: Callable[[str], None]) -> Results:
    began = time.monotonic()
    results = Results(settings=settings, machine=machine_description(), started=datetime.now(UTC))
    results.load_average = load_average()
    route_moto_logs()
    with DynamoDBLocal(in_memory=True) as database:
        endpoint = database.endpoint_url
        measure_costs(endpoint, template, settings, results, log)
        measure_latency(endpoint, template, settings, results, log)
    results.elapsed_seconds = time.monotonic() - began
    report.write(results, output)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infrastructure.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--small", action="store_true", help="10 and 100 registrants, concurrency 2, short runs"
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="markdown report (plots go beside it)"
    )
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    args = parser.parse_args(argv)
    if not args.template.is_file():
        print(f"{args.template} not found: synthesize the stack first with `make synth`.", file=sys.stderr)
        return 2
    settings = Settings.reduced() if args.small else Settings.full()

    def log(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    try:
        results = run(settings, args.output, args.template, log)
    except DynamoDBLocalError as exc:
        print(exc, file=sys.stderr)
        return 2
    log(f"report: {args.output} ({results.elapsed_seconds:.0f} s in all)")
    if not results.flat_everywhere():
        log("target missed: an operation's cost changes with the event's size")
    if not results.register_within_targets():
        log("target missed: register-into-seat exceeds its round-trip or invocation budget")
    return 0
