"""Plain-text rendering for a terminal: tables, timelines, event reports, repairs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from infrastructure import names
from infrastructure.ops import executions

TRIM = 100


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def compact(value: Any, full: bool = False, width: int = TRIM) -> str:
    """A JSON value on one line, trimmed to `width` (or pretty-printed in full)."""
    if full:
        text = json.dumps(value, indent=2, ensure_ascii=False) if not isinstance(value, str) else value
        return text
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    minutes, seconds = divmod(ms / 1000, 60)
    return f"{minutes:.0f}m{seconds:02.0f}s"


def when(timestamp: str | None) -> str:
    """`2026-03-01T10:15:02.123Z` -> `2026-03-01 10:15:02`."""
    if not timestamp:
        return "-"
    return timestamp.replace("T", " ")[:19]


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def executions_table(items: Sequence[Mapping[str, Any]]) -> str:
    if not items:
        return "No executions match."
    rows = [
        [
            when(i.get("startDate")),
            str(i.get("workflow") or "-"),
            str(i.get("status")),
            duration(i.get("durationMs")),
            str(i.get("eventId") or "-"),
            str(i.get("userId") or "-"),
            str(i.get("error") or ""),
            str(i.get("name")),
        ]
        for i in items
    ]
    return table(rows, ["STARTED (UTC)", "WORKFLOW", "STATUS", "TOOK", "EVENT", "USER", "ERROR", "NAME"])


REPLAYED_STATES = (names.REPLAYED_SUCCESS_STATE, names.REPLAYED_FAILURE_STATE)


def execution_timeline(document: Mapping[str, Any], states: Sequence[Mapping[str, Any]], full: bool) -> str:
    execution = document["execution"]
    lines = [
        str(execution["name"]),
        f"  workflow {execution.get('workflow') or '-'}   status {execution['status']}   "
        f"started {when(execution.get('startDate'))} UTC   took {duration(execution.get('durationMs'))}",
        f"  input    {compact(execution.get('input'), full)}",
    ]
    if execution.get("output") is not None:
        lines.append(f"  output   {compact(execution.get('output'), full)}")
    if execution.get("error"):
        lines.append(f"  error    {execution['error']}")
        cause = execution.get("cause") if full else executions.cause_summary(execution.get("cause"))
        if cause:
            lines.append(f"  cause    {compact(cause, full, 160)}")
    if any(state.get("name") in REPLAYED_STATES for state in states):
        lines.append(
            "  replay   answered as the first request with its Idempotency-Key was (nothing run, nothing written)"
        )
    if not states:
        return "\n".join(lines)
    lines.append("")
    start = executions.parse_time(execution.get("startDate"))
    for state in states:
        entered = executions.parse_time(state.get("enteredAt"))
        offset = f"+{duration((entered - start).total_seconds() * 1000)}" if entered and start else ""
        label = str(state["name"])
        if state.get("iteration") is not None:
            label = f"[{state['iteration']}] {label}"
        extra = []
        if state.get("retries"):
            extra.append(f"{state['retries']} retr{'y' if state['retries'] == 1 else 'ies'}")
        if state.get("exitedAt") is None and execution["status"] == "RUNNING":
            extra.append("running")
        lines.append(
            f"  {offset:>9}  {label:<32} {state['type']:<8} {duration(state.get('durationMs')):>7}"
            + (f"  ({', '.join(extra)})" if extra else "")
        )
        lines.append(f"{'':13}in   {compact(state.get('input'), full)}")
        if state.get("output") is not None:
            lines.append(f"{'':13}out  {compact(state.get('output'), full)}")
        for number, attempt in enumerate(state.get("attempts") or [], start=1):
            if attempt.get("status") not in ("succeeded", "running"):
                cause = attempt.get("cause") if full else executions.cause_summary(attempt.get("cause"))
                lines.append(
                    f"{'':13}attempt {number} {attempt.get('status')} after {duration(attempt.get('durationMs'))}: "
                    f"{attempt.get('error')}" + (f" — {compact(cause, full, 120)}" if cause else "")
                )
        if state.get("error") and not state.get("attempts"):
            cause = state.get("cause") if full else executions.cause_summary(state.get("cause"))
            lines.append(
                f"{'':13}error {state['error']}" + (f" — {compact(cause, full, 120)}" if cause else "")
            )
    return "\n".join(lines)


def event_report(report: Mapping[str, Any]) -> str:
    lines = [
        f"{report['eventId']}  {report.get('title', '')!r}",
        f"  capacity {report['capacity']}   registered {report['registeredCount']}   "
        f"free {report['freeSeats']}   waitlist {report['waitlistCount']}"
        + ("" if report.get("hasWaitlist") else " (no waitlist)"),
    ]
    head = report.get("waitlistHead") or []
    if head:
        lines.append("  waitlist head:")
        lines += [f"    {w['position']}. {w['userId']}  (joined {when(w.get('joinedAt'))})" for w in head]
    repair = report.get("lastRepair")
    if repair:
        before, after = repair.get("before") or {}, repair.get("after") or {}
        changed = [
            f"{k} {before.get(k)}→{after.get(k)}" for k in sorted(after) if before.get(k) != after.get(k)
        ]
        lines.append(
            f"  last repair: run {repair.get('runId')} at {when(repair.get('lastChangeAt'))}: "
            + ", ".join(
                [
                    *changed,
                    _plural(int(repair.get("waitlistRepairs") or 0), "waitlist repair"),
                    _plural(int(repair.get("promotions") or 0), "promotion"),
                ]
            )
        )
    else:
        lines.append("  last repair: none (no run has found drift here)")
    run = report.get("lastReconciliation")
    if run:
        lines.append(
            f"  last reconciliation: {run['name']} {run['status']} at {when(run.get('startDate'))} UTC"
        )
    else:
        lines.append("  last reconciliation: none yet")
    return "\n".join(lines)


def reconcile_report(report: Mapping[str, Any]) -> str:
    totals = report.get("totals") or {}
    parts = len(report.get("executions") or []) or 1
    lines = [
        f"Reconcile run {report['name']} {report['status']} in {duration(report.get('durationMs'))}: "
        f"{_plural(int(totals.get('events', report.get('events', 0))), 'event')} checked"
        + (f" in {parts} executions" if parts > 1 else "")
        + f", {len(report.get('repairs') or [])} not clean"
    ]
    if report.get("error"):
        lines.append(f"  error {report['error']}: {executions.cause_summary(report.get('cause'))}")
    repairs = report.get("repairs") or []
    if not repairs:
        lines.append("  No repairs: every event's counters and waitlist agree with its items.")
    for result in repairs:
        before, after = result.get("before") or {}, result.get("after") or {}
        changed = [
            f"{k} {before.get(k)}→{after.get(k)}" for k in sorted(after) if before.get(k) != after.get(k)
        ]
        lines.append(
            f"  {result['eventId']}: {result['outcome']}"
            + (f" ({', '.join(changed)})" if changed else "")
            + f"; {result.get('countRepairs', 0)} count, {result.get('waitlistRepairs', 0)} waitlist, "
            + _plural(int(result.get("promotions") or 0), "promotion")
            + (f"; error {result['error']}" if result.get("error") else "")
        )
        lines += [
            f"    {a['kind']} {a['userId']} #{a['seq']}: {a.get('reason', '')}"
            for a in result.get("actions") or []
        ]
    return "\n".join(lines)


def domain_event_summary(detail: Mapping[str, Any]) -> str:
    """What a domain event says, on one line: its type, event and user, and the rest."""
    known = ("id", "type", "eventId", "userId", "occurredAt", "requestId")
    rest = " ".join(f"{k}={v}" for k, v in sorted(detail.items()) if k not in known)
    summary = f"{detail.get('type', '')} event={detail.get('eventId', '-')} user={detail.get('userId', '-')}"
    return f"{summary} {rest}" if rest else summary


def domain_event_line(event: Mapping[str, Any]) -> str:
    """One domain event as the bus delivers it: when, what it says, and its request."""
    detail = event.get("detail") or {}
    when = detail.get("occurredAt", event.get("time", ""))
    return f"{when} {domain_event_summary(detail)} request={detail.get('requestId', '-')}"


def failed_webhooks(failed: Sequence[Mapping[str, Any]]) -> str:
    """The dead letters, one line each; a sentence when there are none."""
    if not failed:
        return "No failed webhook deliveries."
    return "\n".join(
        f"{m['webhookId']}  {m['type']}  event={m['eventId']}  message={m['messageId']}  "
        f"attempts={m['attempts']}  dead since {m.get('deadLetteredAt') or '-'}"
        for m in failed
    )
