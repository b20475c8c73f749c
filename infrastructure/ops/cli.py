"""`regctl`: the operator's view of workflow runs and events, locally or on AWS.

    regctl executions list [--workflow W] [--status S] [--event ID] [--user ID]
                           [--since T] [--until T] [--limit N]
    regctl executions show NAME [--full]
    regctl events show EVENT_ID
    regctl events tail [--event EVENT_ID] [--all] [--count N]
    regctl webhooks failed
    regctl webhooks redrive [--webhook WEBHOOK_ID]
    regctl reconcile [EVENT_ID] [--timeout SECONDS]
    regctl token USER_ID [--group organizers] [--group admins]   (local stack only)

Against the local stack (`make run`, http://127.0.0.1:3000; `--url` for another) by
default, against the deployed stack with `--aws` (region and credentials from the usual
AWS settings). A table or text on a terminal, JSON with `--json`. Errors are one line on
stderr with exit code 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from infrastructure.ops import executions, render, stack_record
from infrastructure.ops.backend import Backend, NotFound, OpsError
from infrastructure.ops.executions import STATUSES, ExecutionQuery
from infrastructure.ops.local_backend import DEFAULT_URL, LocalBackend

PROG = "regctl"
URL_VARIABLE = "REGCTL_URL"
DISTRIBUTION = "event-registration"
POLL_S = 0.5
RECONCILE_TIMEOUT_S = 900.0
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def time_arg(value: str) -> str:
    """`30m`, `2h`, `1d` (that long ago) or an ISO 8601 time (UTC unless it says) -> ISO UTC."""
    found = _RELATIVE.match(value.strip())
    try:
        if found:
            ago = dt.timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])
            moment = dt.datetime.now(dt.UTC) - ago
        else:
            moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a time: use 30m, 2h, 1d or 2026-03-01T10:00"
        ) from None
    result = executions.iso(moment)
    assert result is not None
    return result


def status_arg(value: str) -> str:
    status = value.upper().replace("-", "_")
    if status not in STATUSES:
        raise argparse.ArgumentTypeError(f"status must be one of {', '.join(s.lower() for s in STATUSES)}")
    return status


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: the options work before or after the command, without one resetting the other.
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine output")
    where = common.add_mutually_exclusive_group()
    where.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the local stack (default: ${URL_VARIABLE}, else the stack `make run` started from "
        f"this folder, else {DEFAULT_URL})",
    )
    where.add_argument(
        "--aws",
        action="store_true",
        default=argparse.SUPPRESS,
        help="the deployed stack (region/profile from the usual AWS settings)",
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Inspect workflow runs and events of the event registration stack; run reconciliation.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    execs = commands.add_parser("executions", help="list or show workflow runs", parents=[common])
    exec_commands = execs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = exec_commands.add_parser(
        "list", help="runs, newest first", parents=[common], description="Runs, newest first."
    )
    listing.add_argument("--workflow", "-w", help="register, unregister or reconcile")
    listing.add_argument(
        "--status", "-s", type=status_arg, help="running, succeeded, failed, timed_out, aborted"
    )
    listing.add_argument("--event", "-e", dest="event_id", help="runs for this event id")
    listing.add_argument("--user", "-u", dest="user_id", help="runs for this user id")
    listing.add_argument(
        "--since", type=time_arg, help="started at or after: 30m, 2h, 1d or an ISO time (UTC)"
    )
    listing.add_argument("--until", type=time_arg, help="started at or before (same forms)")
    listing.add_argument("--limit", "-n", type=int, default=20, help="at most this many (default 20)")

    show = exec_commands.add_parser(
        "show", help="one run as a timeline", parents=[common], description="One run as a timeline."
    )
    show.add_argument("name", help="the execution name")
    show.add_argument("--full", action="store_true", help="inputs, outputs and causes in full")
    show.add_argument(
        "--since", type=time_arg, help="--aws: search Express logs from then (default the last 7 days)"
    )

    events = commands.add_parser(
        "events", help="an event's counters and waitlist; the domain events", parents=[common]
    )
    event_commands = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    event_show = event_commands.add_parser(
        "show",
        help="capacity, count, waitlist, last reconciliation",
        parents=[common],
        description="Capacity, count, waitlist length and head, last repair and reconciliation run.",
    )
    event_show.add_argument("event_id", metavar="EVENT_ID")
    event_tail = event_commands.add_parser(
        "tail",
        help="follow the domain events as they are committed",
        parents=[common],
        description="Print each domain event from now on (one line each; JSON lines with --json), "
        "until interrupted or --count events were printed.",
    )
    event_tail.add_argument("--event", dest="event_id", metavar="EVENT_ID", help="only this event's")
    event_tail.add_argument(
        "--all", dest="from_start", action="store_true", help="start at the oldest event kept, not now"
    )
    event_tail.add_argument("--count", type=int, help="stop after this many events")

    hooks = commands.add_parser("webhooks", help="webhook deliveries that failed", parents=[common])
    hook_commands = hooks.add_subparsers(dest="action", required=True, metavar="ACTION")
    hook_commands.add_parser(
        "failed",
        help="the messages that went to the dead letters",
        parents=[common],
        description="Webhook messages whose last retry failed: subscription, event, type, attempts, since when.",
    )
    redrive = hook_commands.add_parser(
        "redrive",
        help="send the dead letters again",
        parents=[common],
        description="Send the dead letters (all, or one subscription's) back to the deliveries queue.",
    )
    redrive.add_argument(
        "--webhook", dest="webhook_id", metavar="WEBHOOK_ID", help="only this subscription's"
    )

    reconcile = commands.add_parser(
        "reconcile",
        help="run reconciliation now and print the repairs",
        parents=[common],
        description="Start the reconcile workflow (one event, or all), wait for it, print the repairs.",
    )
    reconcile.add_argument("event_id", metavar="EVENT_ID", nargs="?", help="only this event (default: all)")
    reconcile.add_argument(
        "--timeout", type=float, default=RECONCILE_TIMEOUT_S, help="stop waiting after this many seconds"
    )

    token = commands.add_parser(
        "token",
        help="an ID token of the local user pool (local stack only)",
        parents=[common],
        description="Print an ID token of the local stack's user pool for USER_ID, a member of exactly "
        "the groups given (none without --group); the user is created on first use. "
        'Use it as `curl -H "Authorization: Bearer $(regctl token ada)" ...`.',
    )
    token.add_argument("user_id", metavar="USER_ID")
    token.add_argument(
        "--group", "-g", dest="groups", action="append", default=[], help="organizers or admins (repeatable)"
    )
    return parser


def _token(args: argparse.Namespace, out: TextIO) -> int:
    if getattr(args, "aws", False):
        raise OpsError("tokens come from the local stack's user pool; on AWS, sign in to the deployed pool")
    token = LocalBackend(local_url(getattr(args, "url", None))).token(args.user_id, args.groups)
    if getattr(args, "json", False):
        _print({"token": token}, out)
    else:
        out.write(token + "\n")
    return 0


# How long one ask for the next domain events waits (the local stack answers at once
# when one is committed; it allows at most 20 s).
TAIL_WAIT_S = 10.0


def _tail(backend: Backend, args: argparse.Namespace, out: TextIO) -> int:
    if args.count is not None and args.count < 1:
        raise OpsError("--count must be at least 1")
    cursor: str | None = backend.oldest_cursor() if args.from_start else None
    printed = 0
    while args.count is None or printed < args.count:
        events, cursor = backend.domain_events(cursor, args.event_id, TAIL_WAIT_S)
        for event in events[: None if args.count is None else args.count - printed]:
            out.write((json.dumps(event) if args.json else render.domain_event_line(event)) + "\n")
            out.flush()
            printed += 1
    return 0


def _backend(args: argparse.Namespace) -> Backend:
    if getattr(args, "aws", False):
        from infrastructure.ops.aws_backend import AwsBackend

        return AwsBackend()
    return LocalBackend(local_url(getattr(args, "url", None)))


def local_url(given: str | None = None) -> str:
    """The local stack's URL: `--url`, else $REGCTL_URL, else the one recorded under
    `.local/` by a running `make run` started here, else the default port."""
    from_environment = os.environ.get(URL_VARIABLE, "").strip()
    return given or from_environment or stack_record.recorded_url() or DEFAULT_URL


def _version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _print(document: Any, out: TextIO) -> None:
    out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _show(backend: Backend, args: argparse.Namespace, out: TextIO) -> None:
    document = backend.execution(args.name, since=args.since)
    states = executions.timeline(document.get("events") or [])
    if args.json:
        _print({"execution": document["execution"], "states": states}, out)
    else:
        out.write(render.execution_timeline(document, states, args.full) + "\n")


class Progress:
    """One status line on stderr, rewritten in place on a terminal."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.tty = enabled and stream.isatty()
        self.enabled = enabled
        self._last = ""

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
        elif text.split(" ")[0] != self._last.split(" ")[0]:
            self.stream.write(text + "\n")
            self.stream.flush()
        self._last = text

    def done(self) -> None:
        if self.tty and self._last:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def _reconcile(backend: Backend, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    started = backend.start_reconcile(args.event_id)
    name = started["name"]
    progress = Progress(err, enabled=err.isatty() or not args.json)
    began = time.monotonic()
    progress.update(f"started {name}")
    # A long run continues in further executions: follow it to the last one.
    parts: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    current = name
    try:
        while True:
            _wait_for(backend, current, args, progress, began, len(parts) + 1)
            document = backend.execution(current)
            parts.append((document["execution"], executions.timeline(document.get("events") or [])))
            following = executions.continued_as(document["execution"].get("output"))
            if following is None:
                break
            current = following
    finally:
        progress.done()
    report = executions.reconcile_report(parts)
    if args.json:
        _print(report, out)
    else:
        out.write(render.reconcile_report(report) + "\n")
    return 0 if report["status"] == "SUCCEEDED" else 1


def _wait_for(
    backend: Backend, name: str, args: argparse.Namespace, progress: Progress, began: float, part: int
) -> dict[str, Any]:
    """The execution's document (without history) once it has ended."""
    label = name if part == 1 else f"{name} (part {part})"
    while True:
        elapsed = time.monotonic() - began
        try:
            document = backend.execution(name, history=False)
        except NotFound:
            if part == 1 or elapsed > args.timeout:
                raise
            document = None  # started a moment ago: not listed yet
        if document is not None and document["execution"]["status"] in executions.TERMINAL:
            return document
        if elapsed > args.timeout:
            progress.done()
            status = document["execution"]["status"] if document else "starting"
            raise OpsError(
                f"{label} is still {status} after {args.timeout:g}s; follow it with "
                f"`{PROG} executions show {name}`"
            )
        progress.update(f"running  {label}  {elapsed:.1f}s")
        time.sleep(POLL_S)


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    args.json = getattr(args, "json", False)
    if args.command == "token":
        return _token(args, out)
    backend = _backend(args)
    if args.command == "executions" and args.action == "list":
        if args.limit < 1 or args.limit > 1000:
            raise OpsError("--limit must be between 1 and 1000")
        query = ExecutionQuery(
            workflow=args.workflow,
            status=args.status,
            event_id=args.event_id,
            user_id=args.user_id,
            since=args.since,
            until=args.until,
            limit=args.limit,
        )
        items = backend.list_executions(query)
        if args.json:
            _print({"executions": items}, out)
        else:
            out.write(render.executions_table(items) + "\n")
        return 0
    if args.command == "executions" and args.action == "show":
        _show(backend, args, out)
        return 0
    if args.command == "events" and args.action == "tail":
        return _tail(backend, args, out)
    if args.command == "events":
        report = backend.event(args.event_id)
        if args.json:
            _print(report, out)
        else:
            out.write(render.event_report(report) + "\n")
        return 0
    if args.command == "webhooks" and args.action == "failed":
        failed = backend.failed_webhooks()
        if args.json:
            _print({"failed": failed}, out)
        else:
            out.write(render.failed_webhooks(failed) + "\n")
        return 0
    if args.command == "webhooks":
        count = backend.redrive_webhooks(args.webhook_id)
        if args.json:
            _print({"redriven": count}, out)
        else:
            out.write(f"{count} message{'s' if count != 1 else ''} queued again\n")
        return 0
    if args.command == "reconcile":
        return _reconcile(backend, args, out, err)
    raise OpsError(f"unknown command {args.command}")  # pragma: no cover - argparse refuses it first


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = _parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0)
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        return run(args, out, err)
    except OpsError as exc:
        err.write(f"{PROG}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        err.write(f"{PROG}: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
