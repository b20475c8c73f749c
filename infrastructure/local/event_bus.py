"""The local event bus: what the pipes put on it, in order, kept as a log.

On AWS the pipe puts each domain event on the project's EventBridge bus. Locally the bus
is an append-only log (JSON lines under the data directory, or memory with ``DB=memory``):
readers follow it by offset (``regctl events tail``, the webhook deliveries), and each
entry keeps the stream position it was read from, so the log is also the pipe's
checkpoint. An entry is written whole before the pipe moves on, and a restarted pipe
resumes after the last entry the log holds: nothing is lost and nothing is put twice.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EVENT = "event"
# A stream record the pipe could not turn into an event (its dead letter): kept in the
# log so that the checkpoint moves past it, never shown to readers of events.
DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class StreamPosition:
    """Where in a stream a record was: its stream, shard and sequence number."""

    stream: str
    shard: str
    sequence: str

    def as_dict(self) -> dict[str, str]:
        return {"stream": self.stream, "shard": self.shard, "sequence": self.sequence}


@dataclass(frozen=True)
class BusEntry:
    offset: int
    kind: str
    body: dict[str, Any]
    position: StreamPosition | None = None

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"offset": self.offset, "kind": self.kind, "body": self.body}
        if self.position is not None:
            entry["position"] = self.position.as_dict()
        return entry

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BusEntry:
        position = data.get("position")
        return cls(
            offset=int(data["offset"]),
            kind=str(data["kind"]),
            body=dict(data["body"]),
            position=StreamPosition(**position) if position else None,
        )


def envelope(
    detail: Mapping[str, Any], detail_type: str, source: str, *, region: str, account: str
) -> dict[str, Any]:
    """An event as EventBridge delivers it to a bus's targets."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [],
        "detail": dict(detail),
    }


class LocalEventBus:
    """One bus. Thread-safe; ``read`` can wait for entries newer than an offset."""

    def __init__(self, name: str, arn: str, path: Path | None = None) -> None:
        self.name = name
        self.arn = arn
        self.path = path
        self._entries: list[BusEntry] = []
        self._changed = threading.Condition()
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            return
        raw = path.read_bytes()
        complete, _, partial = raw.rpartition(b"\n")
        if partial:
            # A write cut short by a crash: that entry was never put (its record is read again).
            with path.open("r+b") as handle:
                handle.truncate(len(complete) + 1 if complete else 0)
        for line in complete.splitlines():
            if line.strip():
                self._entries.append(BusEntry.from_dict(json.loads(line)))

    @property
    def last_offset(self) -> int:
        with self._changed:
            return self._entries[-1].offset if self._entries else 0

    def put(self, items: list[tuple[str, dict[str, Any], StreamPosition | None]]) -> list[BusEntry]:
        """Appends (kind, body, position) entries, durably, in order."""
        with self._changed:
            offset = self._entries[-1].offset if self._entries else 0
            entries = [
                BusEntry(offset + n, kind, body, position)
                for n, (kind, body, position) in enumerate(items, 1)
            ]
            if self.path is not None and entries:
                with self.path.open("a", encoding="utf-8") as handle:
                    for entry in entries:
                        handle.write(json.dumps(entry.as_dict(), separators=(",", ":")) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
            self._entries.extend(entries)
            self._changed.notify_all()
            return entries

    def read(
        self, after: int = 0, limit: int = 100, timeout: float = 0.0, *, kind: str = EVENT
    ) -> list[BusEntry]:
        """Up to ``limit`` entries of ``kind`` after offset ``after``, waiting up to
        ``timeout`` seconds for one when there is none yet."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                start = self._index_after(after)
                found = [e for e in self._entries[start:] if e.kind == kind][:limit]
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                self._changed.wait(remaining)

    def _index_after(self, offset: int) -> int:
        """The index of the first entry after ``offset`` (offsets are 1, 2, 3... in order)."""
        if not self._entries:
            return 0
        first = self._entries[0].offset
        return max(0, min(len(self._entries), offset - first + 1))

    def checkpoint(self, stream: str) -> dict[str, str]:
        """Per shard of ``stream``: the sequence number of the last record the log holds."""
        with self._changed:
            positions: dict[str, str] = {}
            for entry in self._entries:
                if entry.position is not None and entry.position.stream == stream:
                    positions[entry.position.shard] = entry.position.sequence
            return positions

    def events(self) -> list[dict[str, Any]]:
        """Every event on the bus, oldest first."""
        with self._changed:
            return [e.body for e in self._entries if e.kind == EVENT]
