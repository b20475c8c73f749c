"""An organizer's CSV export of an event's seats or waitlist: every page, in one answer.

The API function answers through API Gateway's Lambda proxy, whose body is at most 6 MB
(Lambda's synchronous payload), within the function's 10 s. An export reads the listing
a page (100 rows) at a time, two reads a page: 2 MB (about 30,000 rows) take a few
seconds. One that would pass MAX_EXPORT_BYTES is refused (413 `ExportTooLarge`) rather
than cut short: the JSON listing pages through any size.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from pydantic import BaseModel

from registration.data.pages import MAX_PAGE
from registration.errors import ExportTooLarge
from registration.models import Page

CSV = "text/csv"
MAX_EXPORT_BYTES = 2_000_000
EXPORT_PAGE = MAX_PAGE


def wants_csv(accept: str | None) -> bool:
    """Whether an `Accept` header prefers CSV (`text/csv`, with or without parameters,
    named before any JSON type); JSON otherwise."""
    for media_range in (accept or "").split(","):
        media_type = media_range.split(";", 1)[0].strip().lower()
        if media_type == CSV:
            return True
        if media_type in ("application/json", "*/*", "application/*"):
            return False
    return False


RowT = TypeVar("RowT", bound=BaseModel)


def every_page(read: Callable[[str | None], Page[RowT]]) -> Iterator[RowT]:
    """Every item of a listing, page after page (`read` gets each page's token)."""
    token: str | None = None
    while True:
        page = read(token)
        yield from page.items
        token = page.nextToken
        if token is None:
            return


def to_csv(rows: Iterator[BaseModel], columns: Sequence[str], what: str) -> str:
    """The rows as CSV (a header line, then one line a row, CRLF as RFC 4180 says)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        values = row.model_dump()
        writer.writerow(["" if values.get(c) is None else values[c] for c in columns])
        if out.tell() > MAX_EXPORT_BYTES:
            raise ExportTooLarge(
                f"The export of {what} passes {MAX_EXPORT_BYTES:,} bytes; page through the JSON listing instead"
            )
    return out.getvalue()
