"""One registration story through the local engine, with each execution's history.

python -m infrastructure.local.demo              # on DynamoDB Local (in memory)
python -m infrastructure.local.demo --in-memory  # on moto's DynamoDB (no Java needed)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import uuid
from collections.abc import Iterator
from typing import Any

from infrastructure import names
from infrastructure.local.dynamodb_local import DynamoDBLocal, DynamoDBLocalError
from infrastructure.local.engine import LocalEngine
from infrastructure.local.execution_results import ExecutionResult
from infrastructure.local.moto_logs import route_moto_logs
from registration.data import get_store
from registration.models import NewEvent, NewUser


@contextlib.contextmanager
def _database(in_memory: bool) -> Iterator[str | None]:
    if in_memory:
        yield None
        return
    with DynamoDBLocal(in_memory=True) as database:
        yield database.endpoint_url


def _timeline(engine: LocalEngine, result: ExecutionResult) -> list[str]:
    lines = []
    for event in engine.history(result.execution_arn):
        detail: dict[str, Any] = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
        what = detail.get("name") or detail.get("error") or ""
        lines.append(f"    {event['id']:>3}  {event['type']:<26} {what}")
    return lines


def _show(engine: LocalEngine, label: str, result: ExecutionResult) -> None:
    print(f"\n{label}: {result.status}")
    print(f"  execution: {result.name}")
    if result.output is not None:
        print(f"  output:    {json.dumps(result.output)}")
    else:
        print(f"  error:     {result.error}")
    print("  history:")
    print("\n".join(_timeline(engine, result)))


def _run(engine: LocalEngine, workflow: str, event_id: str, user_id: str) -> ExecutionResult:
    request_id = uuid.uuid4().hex
    # Each user acts for themselves, as a signed-in caller of the API would.
    payload: dict[str, Any] = {
        "eventId": event_id,
        "userId": user_id,
        "requestId": request_id,
        "caller": {"userId": user_id, "groups": ""},
    }
    return engine.run(workflow, payload, name=f"{workflow}-{event_id}-{user_id}-{request_id[:8]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--in-memory", action="store_true", help="use moto's DynamoDB instead of DynamoDB Local"
    )
    args = parser.parse_args(argv)
    route_moto_logs()
    try:
        database = _database(args.in_memory)
        endpoint = database.__enter__()
    except DynamoDBLocalError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        quiet = {"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}
        with LocalEngine(dynamodb_endpoint=endpoint, environment=quiet) as engine:
            store = get_store()
            store.create_user(NewUser(userId="ada", name="Ada Lovelace"))
            store.create_user(NewUser(userId="grace", name="Grace Hopper"))
            store.create_event(NewEvent(eventId="keynote", title="Keynote", capacity=1, hasWaitlist=True))
            print("Event 'keynote': 1 seat, with a waitlist. Users 'ada' and 'grace'.")
            _show(engine, "ada registers", _run(engine, names.REGISTER_WORKFLOW, "keynote", "ada"))
            _show(engine, "grace registers", _run(engine, names.REGISTER_WORKFLOW, "keynote", "grace"))
            _show(engine, "ada unregisters", _run(engine, names.UNREGISTER_WORKFLOW, "keynote", "ada"))
            event = store.get_event("keynote")
            print(
                f"\nkeynote now: registeredCount={event.registeredCount} waitlistCount={event.waitlistCount}"
            )
    finally:
        database.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
