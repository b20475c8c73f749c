"""How the report writes its figures: numbers, dollars, memory sizes, verdicts and markdown tables."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def num(value: float, digits: int = 1) -> str:
    if math.isnan(value):
        return "n/a"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def money(value: float) -> str:
    return f"${value:,.2f}"


def mib(value: int) -> str:
    return f"{value / 1024 / 1024:,.0f} MiB"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": "---", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines
