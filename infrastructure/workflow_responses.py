"""A workflow route's answer beyond its body: the headers API Gateway's response mapping
adds to a finished execution's answer (rendered into its templates by `constructs/api.py`),
which the local server sends too."""

from __future__ import annotations

from registration.outcomes import RETRY_AFTER_S, TIMED_OUT, error_headers


def workflow_headers(status: str, error: str | None = None) -> dict[str, str]:
    """Response headers, beyond the content type, for a finished execution."""
    if status == TIMED_OUT:
        return {"Retry-After": str(RETRY_AFTER_S)}
    return error_headers(error) if status == "FAILED" else {}
