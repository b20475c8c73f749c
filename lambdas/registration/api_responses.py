"""The error responses each API route documents (its route decorators' `responses`):
the statuses an error code can answer, in the words the OpenAPI document shows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from registration.errors import ERRORS

INTERNAL_ERROR = "InternalError"
# What a request sent with an `Idempotency-Key` can also be answered (every POST and DELETE).
IDEMPOTENCY_ERRORS = ("IdempotencyKeyReused", "RequestInProgress")

STATUS_TEXT = {
    404: "Not found",
    409: "Conflict",
    422: "Refused; a `ValidationError` lists the offending fields",
    500: "Unexpected failure; the cause is logged, not returned",
    503: "Too much contention or throttling; retry later",
}


def error_responses(codes: Iterable[str]) -> dict[int, dict[str, Any]]:
    """OpenAPI responses (without content) for error codes, grouped by their status."""
    by_status: dict[int, list[str]] = {}
    for code in (*codes, "ValidationError"):
        by_status.setdefault(ERRORS[code].http_status, []).append(code)
    by_status[500] = [INTERNAL_ERROR]
    return {
        status: {
            "description": f"{STATUS_TEXT.get(status, 'Error')}: "
            + ", ".join(f"`{c}`" for c in sorted(set(codes)))
        }
        for status, codes in sorted(by_status.items())
    }
