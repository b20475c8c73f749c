"""What `regctl` needs from a stack, locally (HTTP to the local server) or on AWS (boto3)."""

from __future__ import annotations

from typing import Any, Protocol

from infrastructure.ops.executions import ExecutionQuery


class OpsError(Exception):
    """A failure to report as one line (exit code 1)."""


class NotFound(OpsError):
    """The execution or event asked for does not exist."""


class Backend(Protocol):
    def list_executions(self, query: ExecutionQuery) -> list[dict[str, Any]]:
        """Execution summaries, newest first."""
        ...

    def execution(self, name: str, *, history: bool = True, since: str | None = None) -> dict[str, Any]:
        """`{"execution": summary + input/output, "events": normalized history events}`
        (`since`: where to start looking, for stores searched by time)."""
        ...

    def event(self, event_id: str) -> dict[str, Any]:
        """`events.event_report` of the event."""
        ...

    def start_reconcile(self, event_id: str | None) -> dict[str, Any]:
        """Starts the reconcile workflow; `{"name", "executionArn", ...}`."""
        ...

    def domain_events(
        self, cursor: str | None, event_id: str | None, wait: float
    ) -> tuple[list[dict[str, Any]], str]:
        """Domain events (as the bus delivers them) after `cursor`, None meaning from now
        on, only `event_id`'s when given, waiting up to `wait` seconds; and the next cursor."""
        ...

    def oldest_cursor(self) -> str:
        """The cursor before the oldest domain event kept."""
        ...

    def failed_webhooks(self) -> list[dict[str, Any]]:
        """The webhook messages that went to the dead letters after their last attempt."""
        ...

    def redrive_webhooks(self, webhook_id: str | None) -> int:
        """Sends the dead letters (one subscription's, or all) again; how many."""
        ...
