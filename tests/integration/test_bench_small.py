"""The benchmark's small version end to end, so `make bench` cannot rot.

Runs `python -m infrastructure.bench --small` (events of 10 and 100 registrants, 2
registrations in flight) into a temporary folder and reads the report it wrote.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infrastructure import names
from infrastructure.bench.results import OPERATIONS, Settings
from infrastructure.local.dynamodb_local import REPO_ROOT, DynamoDBLocalError, find_jar_dir, find_java

# One worker runs the whole module: its report fixture (a whole `--small` run, about a
# minute) is module-scoped, and a module split across workers would run it on each.
pytestmark = pytest.mark.xdist_group("bench")

TEMPLATE = REPO_ROOT / names.CDK_OUT_DIR / names.TEMPLATE_FILE
NUMBER = re.compile(r"^\**\$?-?[\d,]+(\.\d+)?\**$")


def _database_available() -> None:
    try:
        find_java()
        find_jar_dir()
    except DynamoDBLocalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


def _tables(markdown: str) -> dict[str, list[list[str]]]:
    """Each section's tables' body rows (cells stripped), keyed by the section heading."""
    out: dict[str, list[list[str]]] = {}
    section = ""
    for line in markdown.splitlines():
        if line.startswith("#"):
            section = line.lstrip("# ").strip()
        elif line.startswith("|") and not re.match(r"^\|[-:| ]+\|$", line):
            out.setdefault(section, []).append([c.strip() for c in line.strip().strip("|").split("|")])
    # Drop the header rows (the first row of every table).
    cleaned: dict[str, list[list[str]]] = {}
    for key, rows in out.items():
        headers = {
            tuple(r) for r in rows if r and r[0] in ("target", "operation", "path", "in flight", "limit")
        }
        cleaned[key] = [r for r in rows if tuple(r) not in headers]
    return cleaned


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    _database_available()
    if not TEMPLATE.exists():
        from infrastructure.app import main

        main()
    output = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "-m", "infrastructure.bench", "--small", "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return output.read_text(encoding="utf-8"), output.parent


@pytest.mark.integration
def test_targets_are_met(report: tuple[str, Path]) -> None:
    text, _ = report
    rows = _tables(text)["Targets"]
    assert len(rows) == 2
    assert all(row[-1] == "met" for row in rows), rows
    assert "identical figures at every size" in rows[0][1]


@pytest.mark.integration
def test_every_operation_has_numbers_at_every_size(report: tuple[str, Path]) -> None:
    text, _ = report
    rows = _tables(text)["1. Cost per operation"]
    sizes = Settings.reduced().sizes
    by_key = {(row[0], int(row[1].replace(",", ""))): row for row in rows}
    assert set(by_key) == {(label, size) for label in OPERATIONS.values() for size in sizes}
    for row in rows:
        numbers = [row[3], row[4], row[5], row[6], row[7].split(" ")[0], row[8], row[9]]
        assert all(NUMBER.match(cell) for cell in numbers), row
    # Flat: the same figures at both sizes, row for row.
    for label in OPERATIONS.values():
        assert len({tuple(by_key[(label, size)][2:]) for size in sizes}) == 1, label
    register = by_key[(OPERATIONS["register_seat"], sizes[-1])]
    assert int(register[3]) <= 3 and int(register[8]) <= 4


@pytest.mark.integration
def test_latency_rows_and_memory(report: tuple[str, Path]) -> None:
    text, _ = report
    rows = _tables(text)["2. Latency and throughput on this machine"]
    paths = [r for r in rows if r[0] in ("HTTP API -> workflow", "data layer, direct")]
    assert {(r[0], r[1]) for r in paths} == {("HTTP API -> workflow", "2"), ("data layer, direct", "2")}
    for row in paths:
        assert all(NUMBER.match(cell) for cell in row[1:]), row
        assert int(row[2].replace(",", "")) > 0
    ratios = [r for r in rows if r[0] == "2"]
    assert len(ratios) == 1 and all(cell.endswith("x") for cell in ratios[0][1:])
    assert re.search(r"Peak resident memory of the local stack during the 2-way run: [\d,]+ MiB", text)


@pytest.mark.integration
def test_aws_figures_and_sources(report: tuple[str, Path]) -> None:
    text, _ = report
    rows = _tables(text)["3. What it means on AWS"]
    costs = {r[0]: r for r in rows if r[0] in OPERATIONS.values()}
    assert set(costs) == set(OPERATIONS.values())
    for row in costs.values():
        assert all(NUMBER.match(cell) for cell in row[1:6]), row
    assert any("(binds)" in r[1] for r in rows)
    for url in (
        "https://aws.amazon.com/step-functions/pricing/",
        "https://aws.amazon.com/lambda/pricing/",
        "https://aws.amazon.com/dynamodb/pricing/on-demand/",
        "https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html",
    ):
        assert url in text


@pytest.mark.integration
def test_plots_are_written_and_the_report_names_no_local_paths(report: tuple[str, Path]) -> None:
    text, folder = report
    for name in ("latency.png", "cost.png"):
        assert f"(benchmarks/{name})" in text
        data = (folder / "benchmarks" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
    assert str(REPO_ROOT) not in text
    assert str(folder) not in text


@pytest.mark.integration
def test_domain_event_delivery_and_cost(report: tuple[str, Path]) -> None:
    text, _ = report
    rows = _tables(text)["4. Domain events"]
    (delivery,) = [r for r in rows if r[0].startswith("answer to event")]
    median, p99, slowest = (float(cell.replace(",", "")) for cell in delivery[1:])
    assert 0 < median <= p99 <= slowest
    (cost,) = [r for r in rows if r[0].startswith("$")]
    assert all(NUMBER.match(cell.strip("*")) for cell in cost), cost
    for url in ("https://aws.amazon.com/eventbridge/pricing/", "https://aws.amazon.com/cloudwatch/pricing/"):
        assert url in text


@pytest.mark.integration
def test_webhook_delivery_is_timed(report: tuple[str, Path]) -> None:
    text, _ = report
    (webhook,) = [r for r in _tables(text)["4. Domain events"] if r[0].startswith("answer to webhook")]
    median, p99, slowest = (float(cell.replace(",", "")) for cell in webhook[1:])
    assert 0 < median <= p99 <= slowest


@pytest.mark.integration
def test_webhook_delivery_cost_adds_up_and_grows_with_the_subscriptions(report: tuple[str, Path]) -> None:
    text, _ = report
    assert "https://aws.amazon.com/sqs/pricing/" in text
    rows = {r[0]: r for r in _tables(text)["4. Domain events"] if r[0] in ("1", "3")}

    def dollars(cell: str) -> float:
        return float(cell.strip("*$").replace(",", ""))

    one, three = ([dollars(c) for c in rows[n][1:]] for n in ("1", "3"))
    for subscriptions, parts in ((1, one), (3, three)):
        pipes, sqs, lambda_, reads, total, per_delivery = parts
        assert total == pytest.approx(pipes + sqs + lambda_ + reads, abs=0.02)
        assert per_delivery == pytest.approx(total / subscriptions, abs=0.01)
    # The pipe is paid once per event; queues, runs and reads grow with the deliveries,
    # so a delivery costs less when an event has more subscriptions.
    assert three[0] == one[0]
    assert all(b > a for a, b in zip(one[1:5], three[1:5], strict=True))
    assert three[5] < one[5]
