"""Process-wide replacements of library attributes, in place while any user needs them.

moto's backends and interpreter are process-wide, so a fix to them is too: the first
`install` puts the replacements in, the last `uninstall` puts the originals back, and
engines (or tests) that overlap share one installation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

Replacement = tuple[Any, str, Any]  # (owner, attribute, new value)
_MISSING = object()


class Patches:
    """Reference-counted replacements; `build` is called at the first `install` (so it
    may import the library then) and returns what to replace."""

    def __init__(
        self, build: Callable[[], Iterable[Replacement]], on_restore: Callable[[], None] | None = None
    ) -> None:
        self._build = build
        self._on_restore = on_restore
        self._lock = threading.Lock()
        self._users = 0
        self._originals: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            try:
                for owner, attribute, replacement in self._build():
                    # The owner's own entry (a staticmethod stays one); _MISSING when
                    # the attribute is inherited, so that restoring deletes the override.
                    own = vars(owner).get(attribute, _MISSING)
                    self._originals.append((owner, attribute, own))
                    setattr(owner, attribute, replacement)
            except BaseException:
                self._restore()
                self._users = 0
                raise

    def uninstall(self) -> None:
        with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users == 0:
                self._restore()

    def _restore(self) -> None:
        while self._originals:
            owner, attribute, original = self._originals.pop()
            if original is _MISSING:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)
        if self._on_restore is not None:
            self._on_restore()
