"""The CSV export: content negotiation, every page in order, and its size bound."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import pytest

from registration import exports
from registration.errors import ExportTooLarge
from registration.models import Page, WaitlistEntry


@pytest.mark.parametrize(
    ("accept", "csv_wanted"),
    [
        ("text/csv", True),
        ("Text/CSV; charset=utf-8", True),
        ("text/csv;q=0.9, application/json;q=0.5", True),
        ("application/json, text/csv", False),
        ("*/*", False),
        (None, False),
        ("", False),
        ("text/html", False),
    ],
)
def test_csv_only_when_asked_for_before_json(accept: str | None, csv_wanted: bool) -> None:
    assert exports.wants_csv(accept) is csv_wanted


def _pages(total: int, size: int) -> tuple[list[str | None], Callable[[str | None], Page[WaitlistEntry]]]:
    asked: list[str | None] = []

    def read(token: str | None) -> Page[WaitlistEntry]:
        asked.append(token)
        start = int(token or 0)
        items = [
            WaitlistEntry(eventId="e", userId=f"u{n}", position=n + 1, joinedAt="2026-01-01T00:00:00.000Z")
            for n in range(start, min(total, start + size))
        ]
        return Page[WaitlistEntry](items=items, nextToken=str(start + size) if start + size < total else None)

    return asked, read


def test_every_page_is_read_in_order_into_one_csv() -> None:
    asked, read = _pages(total=7, size=3)

    text = exports.to_csv(exports.every_page(read), list(WaitlistEntry.model_fields), "the waitlist")

    assert asked == [None, "3", "6"]
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["eventId", "userId", "position", "joinedAt"]
    assert [r[1] for r in rows[1:]] == [f"u{n}" for n in range(7)]


def test_an_export_past_its_bound_is_refused_not_cut_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exports, "MAX_EXPORT_BYTES", 200)
    _, read = _pages(total=50, size=10)

    with pytest.raises(ExportTooLarge, match="page through the JSON listing"):
        exports.to_csv(exports.every_page(read), list(WaitlistEntry.model_fields), "the waitlist")
