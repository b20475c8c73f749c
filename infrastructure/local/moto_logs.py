"""Where moto's log output goes.

The programs that run an engine (the server, the demo, the benchmark) choose this, not
the engine: a test run or an embedding program keeps its own logging set-up.
"""

from __future__ import annotations

import logging
from pathlib import Path


def route_moto_logs(path: Path | None = None, level: int = logging.WARNING) -> None:
    """Keep moto's loggers off the console.

    moto logs a long dump for every execution that ends in a ``Fail`` state; send it
    to ``path`` (appended) or drop it.
    """
    logger = logging.getLogger("moto")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler: logging.Handler
    if path is None:
        handler = logging.NullHandler()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
