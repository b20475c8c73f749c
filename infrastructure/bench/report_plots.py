"""The report's plots: latency and throughput against concurrency, cost per operation against event size.

They are written beside the markdown, in `PLOTS_DIR`, which the markdown links to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from infrastructure.bench.results import OPERATIONS, Measure, Results

PLOTS_DIR = "benchmarks"
LATENCY_PLOT = "latency.png"
COST_PLOT = "cost.png"


# matplotlib is imported where a plot is drawn: it is slow to import and must be given its
# non-interactive backend before pyplot loads.
def plot_latency(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {
        "orchestrated": ("HTTP API -> workflow", "tab:red"),
        "direct": ("data layer, direct", "tab:blue"),
    }
    for mode, (label, color) in styles.items():
        rows = sorted((r for r in results.loads if r.mode == mode), key=lambda r: r.concurrency)
        if not rows:
            continue
        xs = [r.concurrency for r in rows]
        left.plot(xs, [r.percentile(50) for r in rows], "o-", color=color, label=f"{label}, p50")
        left.plot(xs, [r.percentile(95) for r in rows], "s--", color=color, alpha=0.7, label=f"{label}, p95")
        left.plot(xs, [r.percentile(99) for r in rows], "^:", color=color, alpha=0.5, label=f"{label}, p99")
        right.plot(xs, [r.per_second for r in rows], "o-", color=color, label=label)
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(results.settings.concurrency), [str(c) for c in results.settings.concurrency])
        axis.set_xlabel("registrations in flight")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    left.set_ylabel("latency, ms")
    left.set_title("Latency")
    right.set_ylabel("registrations per second")
    right.set_title("Throughput")
    figure.suptitle(f"Registration through the local stack ({results.machine})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_costs(results: Results, path: Path) -> None:
    """One panel per figure; per operation, one bar per event size (equal bars: flat cost)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels: list[tuple[str, Callable[[Measure], float]]] = [
        ("read units", lambda m: m.usage.read_units),
        ("write units (table + GSI)", lambda m: m.usage.total_write_units),
        ("DynamoDB round trips", lambda m: float(m.usage.round_trips)),
        ("Lambda invocations", lambda m: float(m.lambda_invocations)),
    ]
    sizes = sorted(results.settings.sizes)
    operations = list(OPERATIONS)
    width = 0.8 / len(sizes)
    figure, axes = plt.subplots(1, len(panels), figsize=(15, 4.6), sharex=True)
    colors = plt.get_cmap("viridis")
    for axis, (title, value) in zip(axes, panels, strict=True):
        for n, size in enumerate(sizes):
            xs = [i + (n - (len(sizes) - 1) / 2) * width for i in range(len(operations))]
            heights = [value(results.measure(op, size)) for op in operations]
            axis.bar(
                xs,
                heights,
                width,
                color=colors(n / max(len(sizes) - 1, 1) * 0.85),
                label=f"{size:,} registrants",
            )
        axis.set_title(title)
        axis.set_xticks(
            range(len(operations)), [OPERATIONS[op] for op in operations], rotation=35, ha="right", fontsize=7
        )
        axis.grid(True, axis="y", alpha=0.3)
        axis.set_axisbelow(True)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper right", ncol=len(sizes), fontsize=8, frameon=False)
    figure.suptitle(
        "Cost per operation against event size: one bar per event size (equal bars: the cost does not grow)",
        fontsize=10,
        x=0.01,
        ha="left",
    )
    figure.tight_layout(rect=(0, 0, 1, 0.94))
    figure.savefig(path, dpi=110)
    plt.close(figure)
