"""`GET /health`: does the table answer, and are the workflows there to run?

The same handler answers on AWS and in the local twin (through the API function, with
its role), so a database that stopped or a state machine that is gone shows up alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from registration import settings, step_functions
from registration.data import RegistrationStore
from registration.models import ComponentHealth, Health
from registration.settings import Settings

DOWN_STATUS = 503


def _probe(check: Callable[[], ComponentHealth]) -> ComponentHealth:
    try:
        return check()
    except Exception as exc:  # any failure is "down"; the error's code says which
        response = getattr(exc, "response", None)
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        return ComponentHealth(status="down", detail=str(code or type(exc).__name__))


def _database(store: RegistrationStore) -> ComponentHealth:
    store.ping()
    return ComponentHealth(status="ok")


def _workflow(arn: str | None, client: Any) -> ComponentHealth:
    if not arn:
        return ComponentHealth(status="down", detail="NotConfigured")
    described = (client or step_functions.client_for(arn)).describe_state_machine(stateMachineArn=arn)
    status = str(described.get("status", "ACTIVE"))
    return (
        ComponentHealth(status="ok") if status == "ACTIVE" else ComponentHealth(status="down", detail=status)
    )


def check(
    store: RegistrationStore, environment: Mapping[str, str] | None = None, client: Any = None
) -> tuple[int, Health]:
    """(HTTP status, report): 200 when everything answers, 503 when anything is down."""
    database = _probe(lambda: _database(store))
    arns = Settings.read(environment).workflow_arns

    def workflow(name: str) -> Callable[[], ComponentHealth]:
        return lambda: _workflow(arns.get(name), client)

    workflows = {name: _probe(workflow(name)) for name in settings.WORKFLOW_ARNS}
    healthy = database.status == "ok" and all(w.status == "ok" for w in workflows.values())
    report = Health(status="ok" if healthy else "down", database=database, workflows=workflows)
    return (200 if healthy else DOWN_STATUS), report
