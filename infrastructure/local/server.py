"""`make run`: the HTTP API on one machine, over DynamoDB Local and the local engine.

    python -m infrastructure.local.server [--port N] [--host 127.0.0.1] [--in-memory]

It serves the local API (`local_api.py`: API Gateway's routes, status mapping,
admission and integration timeouts) through its HTTP server (`http_server.py`: bounded
connections); `--time-scale` stretches the time limits and the admission waits.

The database is DynamoDB Local with its data under `.local/dynamodb` (kept across
restarts), or moto's in-memory DynamoDB with `--in-memory`. Requests are served
concurrently (a thread per connection, at most `ConnectionLimits.max_connections`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from infrastructure import names
from infrastructure.local import docs_page, operator_endpoints, webhook_delivery
from infrastructure.local.dynamodb_local import (
    DEFAULT_DB_PATH,
    REPO_ROOT,
    DynamoDBLocal,
    DynamoDBLocalError,
    JavaNotFoundError,
    Watchdog,
)
from infrastructure.local.engine import LocalEngine
from infrastructure.local.execution_results import EngineError
from infrastructure.local.http_server import (
    DEFAULT_HOST,
    LocalServer,
    _port_in_use,
)
from infrastructure.local.intrinsic_functions import TemplateError
from infrastructure.local.moto_logs import route_moto_logs
from infrastructure.ops import stack_record

DEFAULT_TEMPLATE = REPO_ROOT / names.CDK_OUT_DIR / names.TEMPLATE_FILE
DEFAULT_DATA_DIR = DEFAULT_DB_PATH.parent
MEMORY_HINT = (
    "To run anyway on moto's in-memory database (nothing is kept between runs): "
    "make run DB=memory  (or: python -m infrastructure.local.server --in-memory)"
)


def _schedule(text: str) -> tuple[int, ...]:
    try:
        waits = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of whole seconds such as 1,2,4,8,16 (a visibility timeout is whole seconds)"
        ) from None
    if not waits or any(not 0 <= w <= 43200 for w in waits):
        raise argparse.ArgumentTypeError("the waits must be whole seconds from 0 to 43200 (12 hours)")
    return waits


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infrastructure.local.server",
        description="Serve the event registration API locally (DynamoDB Local + the synthesized workflows).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="default: %(default)s")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT") or names.LOCAL_API_PORT),
        help=f"default: $PORT or {names.LOCAL_API_PORT}",
    )
    parser.add_argument(
        "--in-memory",
        action="store_true",
        help="use moto's in-memory DynamoDB instead of DynamoDB Local (no Java needed, nothing kept)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where DynamoDB Local keeps its data and moto.log goes (default: .local)",
    )
    parser.add_argument(
        "--template",
        type=Path,
        default=DEFAULT_TEMPLATE,
        help=f"default: {names.CDK_OUT_DIR}/{names.TEMPLATE_FILE}",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log lines")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="stretch every AWS time limit (functions, workflows, the API's 29 s) by FACTOR, "
        "for a machine that runs the workflows that many times slower than AWS (default: 1)",
    )
    parser.add_argument(
        "--reconcile-every",
        type=float,
        metavar="SECONDS",
        default=float(os.environ.get("RECONCILE_EVERY") or operator_endpoints.schedule_seconds()),
        help=f"start the reconcile workflow this often (default: $RECONCILE_EVERY or "
        f"{names.DEFAULT_RECONCILE_SCHEDULE}, as on AWS; 0 disables)",
    )
    parser.add_argument(
        "--webhook-retries",
        type=_schedule,
        metavar="S,S,...",
        default=webhook_delivery.LOCAL_RETRY_SCHEDULE_S,
        help="the waits (whole seconds) after each failed webhook delivery; after the last one the "
        "message is a dead letter (default: 1,2,4,8,16; AWS: 30 s doubling to 1 h, for a day)",
    )
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be positive")
    return args


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C (SIGINT) or SIGTERM; the previous handlers come back after."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _say(text: str = "", stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stdout, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    # Handler logs (Powertools JSON lines) at WARNING keep the console readable.
    log_level = os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    # No X-Ray daemon or metrics sink locally (the engine sets these too, but modules
    # imported before it starts read them at import time).
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    template: Path = args.template
    if not template.is_file():
        _say(f"{template} not found: synthesize the stack first with `make synth`.", sys.stderr)
        return 2
    if _port_in_use(args.host, args.port):
        _say(
            f"Port {args.port} on {args.host} is already in use: stop what uses it, "
            f"or pick another port (make run PORT=3001).",
            sys.stderr,
        )
        return 2

    data_dir: Path = args.data_dir
    with _stop_signals() as stop, contextlib.ExitStack() as cleanup:
        database = "moto's in-memory DynamoDB (nothing is kept)"
        endpoint: str | None = None
        # The JVM takes seconds to listen: import the rest meanwhile.
        preload = threading.Thread(target=_preload, name="preload", daemon=True)
        preload.start()
        cleanup.callback(preload.join)
        if not args.in_memory:
            db = DynamoDBLocal(db_path=data_dir / "dynamodb")
            try:
                db.start()
            except JavaNotFoundError as exc:
                _say(str(exc), sys.stderr)
                _say(MEMORY_HINT, sys.stderr)
                return 1
            except DynamoDBLocalError as exc:
                _say(f"DynamoDB Local did not start: {exc}", sys.stderr)
                _say(MEMORY_HINT, sys.stderr)
                return 1
            cleanup.callback(db.stop)
            watchdog = Watchdog(db, sys.stdout).start()
            cleanup.callback(watchdog.stop)  # runs before db.stop: no restart while stopping
            endpoint = db.endpoint_url
            database = f"DynamoDB Local at {endpoint}, data in {_shown(data_dir / 'dynamodb')}"
        preload.join()
        if stop.is_set():
            return 130

        route_moto_logs(data_dir / "moto.log")
        try:
            engine = LocalEngine(
                template,
                dynamodb_endpoint=endpoint,
                environment={"POWERTOOLS_LOG_LEVEL": log_level},
                time_scale=args.time_scale,
                # The bus's log is kept with the database (it is the pipe's checkpoint).
                events_dir=data_dir / "events" if endpoint else None,
                webhook_retry_schedule=args.webhook_retries,
            )
            engine.start()
        except (EngineError, TemplateError) as exc:
            _say(f"The local engine did not start: {exc}", sys.stderr)
            return 1
        cleanup.callback(engine.close)

        server = LocalServer(
            engine,
            args.host,
            args.port,
            access_log=None if args.quiet else sys.stdout,
        )
        server.start()
        cleanup.callback(server.stop)
        cleanup.callback(stack_record.forget, stack_record.record(data_dir, server.url))
        schedule = operator_endpoints.ReconcileSchedule(engine, args.reconcile_every, out=sys.stdout).start()
        cleanup.callback(schedule.stop)  # runs first: no new run while the rest stops

        _say("Event registration API, running locally")
        _say(f"  API       {server.url}")
        _say(f"  OpenAPI   {server.url}{docs_page.OPENAPI_PATH}")
        _say(f"  Docs      {server.url}{docs_page.DOCS_PATH}")
        _say(f"  Database  {database}")
        _say(f"  Workflows {', '.join(sorted(engine.workflows))} (moto log: {_shown(data_dir / 'moto.log')})")
        _say(
            f"  Reconcile every {args.reconcile_every:g}s (--reconcile-every SECONDS; 0 disables)"
            if schedule.enabled
            else "  Reconcile on demand only (regctl reconcile)"
        )
        if engine.pipes is not None:
            kept = f"log in {_shown(data_dir / 'events')}" if endpoint else "kept in memory"
            _say(f"  Events    bus {engine.pipes.bus.name}, {kept} (regctl events tail)")
            waits = ", ".join(str(w) for w in args.webhook_retries)
            _say(f"  Webhooks  retried after {waits} s, then dead letters (regctl webhooks failed)")
        _say(f"  Operator  regctl (endpoints under {server.url}{names.LOCAL_OPS_PREFIX})")
        _say(
            "  History   workflow runs are kept until the server stops (the tables are kept)"
            if endpoint
            else "  History   workflow runs and tables are kept until the server stops"
        )
        _say("Press Ctrl-C to stop.")
        while not stop.wait(0.5):
            pass
        _say("Stopping ...")
    _say("Stopped.")
    return 0


def _preload() -> None:
    """Import what the engine and the API need (a head start, no side effects)."""
    for module in ("moto", "moto.stepfunctions.parser.models", "handlers.api", "infrastructure.openapi"):
        try:
            importlib.import_module(module)
        except Exception:  # the real import reports it
            return


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
