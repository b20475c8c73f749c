"""The local HTTP API in a process of its own, over a DynamoDB the benchmark already runs.

    python -m infrastructure.bench.serve --endpoint http://127.0.0.1:PORT [--table NAME]

Prints `READY <url>` once it serves; stops when its standard input closes (or on
SIGTERM). A separate process keeps the load generator's threads off the server's
interpreter, as a client is off API Gateway in AWS.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from infrastructure import names
from infrastructure.local.dynamodb_local import REPO_ROOT
from infrastructure.local.engine import LocalEngine
from infrastructure.local.http_server import LocalServer
from infrastructure.local.moto_logs import route_moto_logs

READY = "READY"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infrastructure.bench.serve")
    parser.add_argument("--endpoint", required=True, help="DynamoDB endpoint URL")
    parser.add_argument("--table", default=names.LOCAL_TABLE_NAME)
    parser.add_argument("--template", type=Path, default=REPO_ROOT / names.CDK_OUT_DIR / names.TEMPLATE_FILE)
    args = parser.parse_args(argv)

    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    logging.basicConfig(level=logging.WARNING)
    route_moto_logs()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    engine = LocalEngine(
        args.template,
        dynamodb_endpoint=args.endpoint,
        table_name=args.table,
        environment={"POWERTOOLS_LOG_LEVEL": os.environ["POWERTOOLS_LOG_LEVEL"]},
    )
    with engine, LocalServer(engine, "127.0.0.1", 0, access_log=None) as server:
        print(f"{READY} {server.url}", flush=True)
        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
