"""Domain events: each committed change yields exactly its event, through the synthesized
pipe (filter, input template, bus parameters) run by the twin over the table's stream.

The events are read off the bus the way a consumer sees them; what each should say is
derived from what the workflows answered (their outputs and request ids), not from the
code that writes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from infrastructure import names
from infrastructure.local.engine import LocalEngine
from infrastructure.local.pipes import LocalPipes
from registration import domain_events, keys
from registration.data import RegistrationStore
from registration.models import NewEvent, NewUser
from tests.fixtures.drift import set_fields
from tests.fixtures.workflows import Workflows, follow_reconcile, fresh_id

pytestmark = pytest.mark.xdist_group("domain-events")


def _pipes(engine: LocalEngine) -> LocalPipes:
    assert engine.pipes is not None, "the template has no pipe"
    return engine.pipes


class Tail:
    """The events put on the bus since it was made, as (detail-type, detail)."""

    def __init__(self, engine: LocalEngine) -> None:
        self.pipes = _pipes(engine)
        self.pipes.drain()
        self.offset = self.pipes.bus.last_offset

    def new(self) -> list[dict[str, Any]]:
        self.pipes.drain()
        entries = self.pipes.bus.read(self.offset, limit=1000)
        if entries:
            self.offset = entries[-1].offset
        for entry in entries:
            assert entry.body["source"] == domain_events.EVENT_SOURCE
            assert entry.body["detail-type"] == entry.body["detail"]["type"]
        return [entry.body["detail"] for entry in entries]


def _said(detail: dict[str, Any]) -> dict[str, Any]:
    """What an event says, without its id and time (checked apart)."""
    return {k: v for k, v in detail.items() if k not in ("id", "occurredAt")}


def _users(store: RegistrationStore, count: int) -> list[str]:
    users = [fresh_id("u") for _ in range(count)]
    for user in users:
        store.create_user(NewUser(userId=user, name="Events"))
    return users


def test_every_path_of_the_workflows_yields_exactly_its_event(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows
) -> None:
    tail = Tail(engine)
    a, b, c = _users(store, 3)
    event_id = fresh_id("e")
    store.create_event(
        NewEvent(eventId=event_id, title="Events", capacity=1, hasWaitlist=True),
        organizer_id=a,
        request_id="create-1",
    )
    assert [_said(d) for d in tail.new()] == [
        {"type": "event.created", "eventId": event_id, "userId": a, "requestId": "create-1"}
    ]

    seat, wait_b, wait_c = (workflows.register(event_id, user) for user in (a, b, c))
    assert [o.output["status"] for o in (seat, wait_b, wait_c) if o.output] == [
        "registered",
        "waitlisted",
        "waitlisted",
    ]
    assert [_said(d) for d in tail.new()] == [
        {"type": "registration.registered", "eventId": event_id, "userId": a, "requestId": seat.request_id},
        {
            "type": "registration.waitlisted",
            "eventId": event_id,
            "userId": b,
            "position": 1,
            "requestId": wait_b.request_id,
        },
        {
            "type": "registration.waitlisted",
            "eventId": event_id,
            "userId": c,
            "position": 2,
            "requestId": wait_c.request_id,
        },
    ]

    leave = workflows.unregister(event_id, a)
    assert leave.output is not None and leave.output["promoted"] == b
    handed_over = sorted((_said(d) for d in tail.new()), key=lambda d: str(d["type"]))
    assert handed_over == [
        {
            "type": "registration.promoted",
            "eventId": event_id,
            "userId": b,
            "fromPosition": 1,
            "reason": "unregistration",
            "requestId": leave.request_id,
        },
        {
            "type": "registration.unregistered",
            "eventId": event_id,
            "userId": a,
            "requestId": leave.request_id,
        },
    ]

    gone = workflows.unregister(event_id, c)
    assert gone.output is not None and gone.output["status"] == "left_waitlist"
    freed = workflows.unregister(event_id, b)
    assert freed.output is not None and freed.output["promoted"] is None
    assert [_said(d) for d in tail.new()] == [
        {
            "type": "registration.left_waitlist",
            "eventId": event_id,
            "userId": c,
            "requestId": gone.request_id,
        },
        {
            "type": "registration.unregistered",
            "eventId": event_id,
            "userId": b,
            "requestId": freed.request_id,
        },
    ]


def test_an_event_is_whole_without_a_read(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows
) -> None:
    """Every detail is a domain event as the model parses it, with a stable, distinct id
    and its commit time; the change items that carried the leaving ones expire."""
    tail = Tail(engine)
    (a,) = _users(store, 1)
    event_id = fresh_id("e")
    store.create_event(NewEvent(eventId=event_id, title="Events", capacity=1))
    workflows.register(event_id, a)
    workflows.unregister(event_id, a)
    details = tail.new()
    parsed = [domain_events.DomainEvent.model_validate(d) for d in details]
    assert len({e.id for e in parsed}) == len(parsed) == 3
    assert [e.occurredAt for e in parsed] == sorted(e.occurredAt for e in parsed)
    (change,) = list(store.iter_partition(event_id, keys.CHANGE_PREFIX))
    assert change["requestId"] == parsed[-1].requestId
    # It outlives the stream's copy of its record (DynamoDB Streams keeps records a day).
    left_at = datetime.fromisoformat(parsed[-1].occurredAt).timestamp()
    assert int(change["expiresAt"]) >= int(left_at) + 24 * 3600


def test_refusals_yield_no_event(engine: LocalEngine, store: RegistrationStore, workflows: Workflows) -> None:
    a, b = _users(store, 2)
    event_id = fresh_id("e")
    store.create_event(NewEvent(eventId=event_id, title="Full", capacity=1))
    assert workflows.register(event_id, a).ok
    tail = Tail(engine)
    refusals = [
        workflows.register(event_id, a).error,  # already registered
        workflows.register(event_id, b).error,  # full, no waitlist
        workflows.unregister(event_id, b).error,  # not registered
        workflows.register(event_id, "nobody-here").error,  # unknown user
    ]
    assert refusals == ["AlreadyRegistered", "EventFull", "NotRegistered", "UserNotFound"]
    assert tail.new() == []


def test_a_promotion_by_reconciliation_names_the_run(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows
) -> None:
    a, b = _users(store, 2)
    event_id = fresh_id("e")
    store.create_event(NewEvent(eventId=event_id, title="Drifted", capacity=2, hasWaitlist=True))
    assert workflows.register(event_id, a).ok
    set_fields(store, event_id, registeredCount=2)  # looks full: the next registrant waits
    assert workflows.register(event_id, b).output["status"] == "waitlisted"  # type: ignore[index]
    tail = Tail(engine)
    arn = engine.start_execution(names.RECONCILE_WORKFLOW, {"eventId": event_id}, name=fresh_id("reconcile"))
    run = follow_reconcile(engine, arn)
    assert run.succeeded, (run.error, run.cause)
    # The counter repair is no event; the promotion it allowed is one, by this run.
    ((promoted),) = [_said(d) for d in tail.new()]
    assert promoted == {
        "type": "registration.promoted",
        "eventId": event_id,
        "userId": b,
        "fromPosition": 1,
        "reason": "reconciliation",
        "requestId": f"reconcile:{run.name}",
    }
