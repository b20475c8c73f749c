"""Execution names: what an operator searches for, inside Step Functions' 80 characters.

    <workflow>-<eventId>-<userId>-<requestId>

API Gateway's request template (`constructs.api`) and the local server name register
and unregister executions this way; the request id (a UUID, `$context.requestId`) is
the unique suffix and the correlation id in the execution's input and logs. Runs of the
reconcile workflow started by the operator CLI or the local schedule follow the same
shape with the event id (or `all`) and who started it (`regctl`, `schedule`) in place
of the user id. (Runs started by EventBridge Scheduler on AWS carry Scheduler's name.)
A run over all events that outgrows one execution continues in fresh ones, which the
workflow names `<workflow>-all-part<N>-<chainId>` (N counts from 2; the chain id is a
UUID the run draws when it starts), so they parse like the rest.

With CloudWatch logging on only letters, digits, `-` and `_` are safe: other characters
are dropped, and each id is trimmed to an equal share of what the request id leaves.
Because ids may contain `-`, a name alone cannot always be split back into its ids:
`matches` checks a name's prefix and suffix, which never misses an execution of the
asked event or user; where the execution input is at hand, callers check it as well.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

MAX_LENGTH = 80
UNSAFE = "[^A-Za-z0-9_-]"
REQUEST_ID_LENGTH = 36  # a UUID, like API Gateway's $context.requestId

# Who started a reconcile run, in the user id's place.
ALL_EVENTS = "all"
STARTED_BY_CLI = "regctl"
STARTED_BY_SCHEDULE = "schedule"
# The executions a reconcile run continues in: `part<N>` in the user id's place.
CONTINUATION_PART = "part"

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def clean(text: str) -> str:
    """`text` without the characters an execution name may not carry."""
    return re.sub(UNSAFE, "", text)


def budget(workflow: str) -> int:
    """Characters each of eventId and userId may take in a name."""
    share = (MAX_LENGTH - len(workflow) - 3 - REQUEST_ID_LENGTH) // 2
    if share < 1:
        raise ValueError(f"workflow name {workflow!r} leaves no room in an execution name")
    return share


def execution_name(workflow: str, event_id: str, user_id: str, request_id: str) -> str:
    """`<workflow>-<eventId>-<userId>-<requestId>`, at most 80 characters."""
    share = budget(workflow)
    name = f"{workflow}-{clean(event_id)[:share]}-{clean(user_id)[:share]}-{clean(request_id)}"
    return name[:MAX_LENGTH]


def reconcile_name(workflow: str, event_id: str | None, started_by: str, suffix: str | None = None) -> str:
    """The name of a reconcile run over one event (or all of them)."""
    return execution_name(workflow, event_id or ALL_EVENTS, started_by, suffix or str(uuid.uuid4()))


def continuation_name(workflow: str, part: int, chain_id: str) -> str:
    """The name of the `part`-th execution of a reconcile run (the first has its own name)."""
    return f"{workflow}-{ALL_EVENTS}-{CONTINUATION_PART}{part}-{chain_id}"


def continuation_format(workflow: str) -> str:
    """`continuation_name` as the format string of `States.Format(format, part, chainId)`."""
    return f"{workflow}-{ALL_EVENTS}-{CONTINUATION_PART}{{}}-{{}}"


def is_continuation(name: str, workflow: str) -> bool:
    """Whether `name` is one of the later executions of a reconcile run."""
    parts = parse(name, [workflow])
    return (
        parts is not None
        and parts.workflow == workflow
        and re.fullmatch(rf"{ALL_EVENTS}-{CONTINUATION_PART}[0-9]+", parts.middle) is not None
    )


@dataclass(frozen=True)
class NameParts:
    workflow: str
    middle: str  # `<eventId>-<userId>` as trimmed into the name
    request_id: str

    @property
    def event_id(self) -> str | None:
        """The event id when the middle splits unambiguously (one `-`)."""
        parts = self.middle.split("-")
        return parts[0] if len(parts) == 2 else None

    @property
    def user_id(self) -> str | None:
        parts = self.middle.split("-")
        return parts[1] if len(parts) == 2 else None


def parse(name: str, workflows: tuple[str, ...] | list[str]) -> NameParts | None:
    """The parts of a name of this shape, or None (a name given by someone else)."""
    for workflow in sorted(workflows, key=len, reverse=True):
        prefix = f"{workflow}-"
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        if len(rest) < REQUEST_ID_LENGTH + 2 or rest[-REQUEST_ID_LENGTH - 1] != "-":
            return None
        request_id = rest[-REQUEST_ID_LENGTH:]
        if not _UUID.match(request_id):
            return None
        return NameParts(workflow=workflow, middle=rest[: -REQUEST_ID_LENGTH - 1], request_id=request_id)
    return None


def matches(
    name: str,
    workflows: tuple[str, ...] | list[str],
    *,
    event_id: str | None = None,
    user_id: str | None = None,
) -> bool:
    """Whether a name can belong to an execution for this event and/or user.

    Exact for ids without `-`; with one, another id pair may share the name's middle, so
    this may say yes to an execution of another event or user (never no to a right one).
    """
    if event_id is None and user_id is None:
        return True
    parts = parse(name, workflows)
    if parts is None:
        return False
    share = budget(parts.workflow)
    if event_id is not None and not parts.middle.startswith(clean(event_id)[:share] + "-"):
        return False
    return user_id is None or parts.middle.endswith("-" + clean(user_id)[:share])
