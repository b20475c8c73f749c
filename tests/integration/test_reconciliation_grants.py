"""Least privilege for reconciliation, measured: a run that makes every kind of repair
(and starts the cancel run a cancelled event never got) uses every action its functions'
roles grant, and needs no other.

The engine authorises each call against the synthesized roles, so a missing grant fails
the run (AccessDenied); what the run's calls used is then compared with what each role
grants, so a grant no repair needs fails the test too. The expectation comes from the
calls the code makes, not from a list kept beside the grants.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from infrastructure import names
from infrastructure.local import iam
from infrastructure.local.engine import LocalEngine
from registration import cancellation, keys
from registration.data import RegistrationStore
from registration.models import NewEvent, NewUser
from tests.fixtures.drift import assert_consistent, delete, put, set_fields, slot
from tests.fixtures.workflows import Workflows, follow_reconcile

pytestmark = pytest.mark.integration


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _event_with(
    store: RegistrationStore, flows: Workflows, capacity: int, people: int
) -> tuple[str, list[str]]:
    event = store.create_event(
        NewEvent(eventId=_fresh("e"), title="Granted", capacity=capacity, hasWaitlist=True)
    )
    users = [store.create_user(NewUser(userId=_fresh("u"), name="Granted")).userId for _ in range(people)]
    for user in users:
        outcome = flows.register(event.eventId, user)
        assert outcome.ok, (outcome.error, outcome.cause)
    return event.eventId, users


def _used(before: Counter[tuple[str, str]], after: Counter[tuple[str, str]]) -> dict[str, set[str]]:
    """Per role ARN, the actions called (and allowed) between the two counts."""
    used: dict[str, set[str]] = {}
    for (role, action), count in after.items():
        if count > before.get((role, action), 0):
            used.setdefault(role, set()).add(action)
    return used


def test_a_run_with_every_repair_uses_exactly_the_reconciliation_grants(
    local_engine: LocalEngine, local_store: RegistrationStore, local_workflows: Workflows
) -> None:
    authorizer = local_engine.authorizer
    assert authorizer is not None, "the engine must enforce IAM for this test to mean anything"
    counted, _ = _event_with(local_store, local_workflows, capacity=3, people=2)
    set_fields(local_store, counted, registeredCount=3)  # a wrong count
    grown, _ = _event_with(local_store, local_workflows, capacity=1, people=3)
    set_fields(local_store, grown, capacity=2)  # a free seat while people wait: a promotion
    orphans, (seated, *_) = _event_with(local_store, local_workflows, capacity=1, people=3)
    delete(local_store, keys.queue_key(orphans, 2))  # a membership without its slot
    put(local_store, slot(orphans, 9, seated))  # a seat holder's stray slot
    set_fields(local_store, orphans, waitlistCount=1)
    # Cancelled while it holds seats, and its cancel run never started (the API stopped).
    cancelled, _ = _event_with(local_store, local_workflows, capacity=1, people=2)
    cancellation.cancel(local_store, cancelled)

    before = Counter(authorizer.allowed)
    # The whole table, as the schedule runs it: ListEventsPage pages the events' index.
    arn = local_engine.start_execution(names.RECONCILE_WORKFLOW, {}, name=_fresh("grants"))
    run = follow_reconcile(local_engine, arn, timeout=60.0)
    assert all(part.succeeded for part in run.parts), [(p.name, p.error, p.cause) for p in run.parts]
    assert set(run.output["repairedEventIds"]) == {counted, grown, orphans}
    assert run.output["countRepairs"] >= 1
    assert run.output["promotions"] >= 1
    assert run.output["waitlistRepairs"] >= 2
    for event in (counted, grown, orphans):
        assert_consistent(local_store, event)
    (release,) = [
        e
        for e in local_engine.list_executions(names.CANCEL_WORKFLOW)
        if e["name"] == cancellation.execution_name(cancelled)
    ]
    assert local_engine.wait(release["executionArn"], timeout=60.0).succeeded

    used = _used(before, Counter(authorizer.allowed))
    roles = {
        function.role_arn: logical_id
        for logical_id, function in local_engine.template.functions.items()
        if function.handler in names.RECONCILE_HANDLERS.values() and function.role_arn
    }
    assert len(roles) == len(names.RECONCILE_HANDLERS), roles
    report = {
        logical_id: sorted(
            set(
                iam.unused_grants(
                    {"granted": authorizer.granted_actions(role), "used": sorted(used.get(role, ()))}
                )
            )
        )
        for role, logical_id in roles.items()
    }
    assert report == {logical_id: [] for logical_id in roles.values()}, "granted, never called"
    assert any("dynamodb:Query" in used.get(role, ()) for role in roles), "the run read no index"
