"""A write task whose transaction committed but whose answer was lost, retried by its
workflow's Retry, answers as its first try would have (the twin's in-memory DynamoDB).

A retry that sends the same transaction is answered by DynamoDB from its
ClientRequestToken (which the twin keeps as DynamoDB does); one that read its items again
sends another transaction, which meets the conditions its own commit made false, and
the items that carry the request id (a seat, a waitlist place) let it recognise that
commit instead of deciding again on a table it already changed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from infrastructure import names
from infrastructure.local.engine import LocalEngine
from infrastructure.local.execution_results import ExecutionResult
from infrastructure.local.template import load_template
from registration.data import RegistrationStore
from tests.fixtures.engines import TEMPLATE
from tests.fixtures.faults import Fault, FaultInjector
from tests.fixtures.workflows import Workflows, new_event, new_users

WRITE = "TransactWriteItems"


@pytest.fixture(scope="module")
def injector(engine: LocalEngine, store: RegistrationStore) -> Iterator[FaultInjector]:
    injector = FaultInjector(engine, store)
    undo = injector.install()
    try:
        yield injector
    finally:
        undo()


def _run_losing_the_answer(
    engine: LocalEngine, injector: FaultInjector, workflow: str, function: str, event_id: str, user_id: str
) -> ExecutionResult:
    """Runs the workflow; `function`'s transaction commits once, then its answer is lost."""
    request_id = uuid.uuid4().hex
    fault = Fault("ReadTimeoutAfterCall", function, WRITE)
    with injector.armed(request_id, [fault]) as (armed,):
        result = engine.run(
            workflow,
            {
                "eventId": event_id,
                "userId": user_id,
                "requestId": request_id,
                "caller": {"userId": user_id, "groups": ""},
            },
            name=f"{workflow}-{request_id}",
        )
    assert armed.fired == 1
    # The task failed once (the lost answer) and its Retry ran it again.
    failures = [
        (e.get("lambdaFunctionFailedEventDetails") or {}).get("error")
        for e in engine.history(result.execution_arn)
        if e["type"] == "LambdaFunctionFailed"
    ]
    assert failures == ["TransientDatabaseError"], failures
    return result


def _table(store: RegistrationStore, event_id: str) -> dict[str, Any]:
    event = store.get_event(event_id)
    return {
        "seated": sorted(r.userId for r in store.list_registrations(event_id).items),
        "waiting": [w.userId for w in store.list_waitlist(event_id).items],
        "counters": (event.registeredCount, event.waitlistCount),
    }


def test_a_retried_promotion_whose_answer_was_lost_names_who_it_promoted(
    engine: LocalEngine, store: RegistrationStore, injector: FaultInjector, workflows: Workflows
) -> None:
    leaving, head, behind = new_users(store, 3)
    event_id = new_event(store, capacity=1, waitlist=True)
    for user in (leaving, head, behind):
        assert workflows.register(event_id, user).ok

    result = _run_losing_the_answer(
        engine, injector, names.UNREGISTER_WORKFLOW, "promote_from_waitlist", event_id, leaving
    )

    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert result.output == {
        "eventId": event_id,
        "userId": leaving,
        "status": "unregistered",
        "promoted": head,
    }
    # One promotion, not two: the retry wrote nothing more.
    assert _table(store, event_id) == {"seated": [head], "waiting": [behind], "counters": (1, 1)}


def test_a_retried_seat_whose_answer_was_lost_is_registered(
    engine: LocalEngine, store: RegistrationStore, injector: FaultInjector, workflows: Workflows
) -> None:
    first, user = new_users(store, 2)
    event_id = new_event(store, capacity=2, waitlist=True)
    assert workflows.register(event_id, first).ok

    result = _run_losing_the_answer(
        engine, injector, names.REGISTER_WORKFLOW, "write_registration", event_id, user
    )

    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert result.output == {"eventId": event_id, "userId": user, "status": "registered", "position": None}
    assert _table(store, event_id) == {"seated": sorted([first, user]), "waiting": [], "counters": (2, 0)}


def test_a_retried_unregistration_whose_answer_was_lost_frees_the_seat(
    engine: LocalEngine, store: RegistrationStore, injector: FaultInjector, workflows: Workflows
) -> None:
    stays, leaving = new_users(store, 2)
    event_id = new_event(store, capacity=2, waitlist=True)
    for user in (stays, leaving):
        assert workflows.register(event_id, user).ok

    result = _run_losing_the_answer(
        engine, injector, names.UNREGISTER_WORKFLOW, "write_unregistration", event_id, leaving
    )

    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert result.output == {
        "eventId": event_id,
        "userId": leaving,
        "status": "unregistered",
        "promoted": None,
    }
    assert _table(store, event_id) == {"seated": [stays], "waiting": [], "counters": (1, 0)}


def test_a_retried_waitlist_leave_whose_answer_was_lost_leaves_once(
    engine: LocalEngine, store: RegistrationStore, injector: FaultInjector, workflows: Workflows
) -> None:
    seated, leaving, behind = new_users(store, 3)
    event_id = new_event(store, capacity=1, waitlist=True)
    for user in (seated, leaving, behind):
        assert workflows.register(event_id, user).ok

    result = _run_losing_the_answer(
        engine, injector, names.UNREGISTER_WORKFLOW, "write_unregistration", event_id, leaving
    )

    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert result.output == {
        "eventId": event_id,
        "userId": leaving,
        "status": "left_waitlist",
        "promoted": None,
    }
    assert _table(store, event_id) == {"seated": [seated], "waiting": [behind], "counters": (1, 1)}


def test_the_local_template_reader_ignores_the_layers_cloudformation_resolves() -> None:
    """Layers do not run locally; their `{{resolve:ssm:...}}` references load untouched."""
    raw = TEMPLATE.read_text(encoding="utf-8")
    assert "{{resolve:ssm:/aws/service/powertools/" in raw
    template = load_template(TEMPLATE)
    assert {f.handler for f in template.functions.values()} >= set(names.TASK_HANDLERS.values())
