"""Where a running local stack listens, recorded under its data folder (`.local/stack.json`)
so that `regctl` from the same checkout finds it on any port without `--url`."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

RECORD_NAME = "stack.json"
# The folder `make run` keeps its data in, from the checkout's root.
DEFAULT_DATA_DIR = Path(".local")


def record(data_dir: Path, url: str) -> Path:
    """Writes the record for this process; returns its path (for `forget`)."""
    path = data_dir / RECORD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"url": url, "pid": os.getpid()}) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def forget(path: Path) -> None:
    """Removes the record, if it is still this process's (another stack may have taken over)."""
    if _read(path).get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def recorded_url(data_dir: Path = DEFAULT_DATA_DIR) -> str | None:
    """The URL of the stack recorded in `data_dir`, when its process still runs."""
    found = _read(data_dir / RECORD_NAME)
    url, pid = found.get("url"), found.get("pid")
    if not isinstance(url, str) or not isinstance(pid, int) or not _running(pid):
        return None
    return url


def _read(path: Path) -> dict[str, object]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it runs
    return True
