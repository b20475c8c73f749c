"""Random sequences of create/register/unregister through the workflows, against a plain model.

After every step: requirement 6 (counts equal the registered users and never exceed
capacity; the waitlist is in arrival order) and each user's registrations as listed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from infrastructure.local.engine import LocalEngine
from registration.data import RegistrationStore
from registration.models import NewEvent, NewUser
from tests.fixtures.workflows import Workflows


@dataclass
class ModelEvent:
    capacity: int
    has_waitlist: bool
    registered: set[str] = field(default_factory=set)
    waitlist: list[str] = field(default_factory=list)


class RegistrationMachine(RuleBasedStateMachine):
    store: RegistrationStore
    workflows: Workflows
    engine: LocalEngine

    users = Bundle("users")
    events = Bundle("events")

    def __init__(self) -> None:
        super().__init__()
        # Each example starts from an empty table, so listings stay small and fast.
        self.engine.reset_table()
        self.model: dict[str, ModelEvent] = {}
        self.known_users: set[str] = set()

    @rule(target=users)
    def create_user(self) -> str:
        user_id = f"su-{uuid.uuid4().hex[:10]}"
        self.store.create_user(NewUser(userId=user_id, name="Stateful user"))
        self.known_users.add(user_id)
        return user_id

    @rule(target=events, capacity=st.integers(0, 3), has_waitlist=st.booleans())
    def create_event(self, capacity: int, has_waitlist: bool) -> str:
        event = self.store.create_event(
            NewEvent(
                eventId=f"se-{uuid.uuid4().hex[:10]}",
                title="Stateful",
                capacity=capacity,
                hasWaitlist=has_waitlist,
            )
        )
        self.model[event.eventId] = ModelEvent(capacity, has_waitlist)
        return event.eventId

    @rule(user=users, event=events)
    def register(self, user: str, event: str) -> None:
        m = self.model[event]
        outcome = self.workflows.register(event, user)
        if user in m.registered:
            assert outcome.error == "AlreadyRegistered", outcome
        elif user in m.waitlist:
            assert outcome.error == "AlreadyWaitlisted", outcome
        elif not m.waitlist and len(m.registered) < m.capacity:
            assert outcome.ok and outcome.output is not None and outcome.output["status"] == "registered", (
                outcome
            )
            m.registered.add(user)
        elif m.has_waitlist:
            m.waitlist.append(user)
            assert outcome.ok and outcome.output == {
                "eventId": event,
                "userId": user,
                "status": "waitlisted",
                "position": len(m.waitlist),
            }, outcome
        else:
            assert outcome.error == "EventFull", outcome

    @rule(user=users, event=events)
    def unregister(self, user: str, event: str) -> None:
        m = self.model[event]
        outcome = self.workflows.unregister(event, user)
        if user in m.registered:
            m.registered.discard(user)
            promoted = m.waitlist.pop(0) if m.waitlist else None
            if promoted:
                m.registered.add(promoted)
            assert outcome.ok and outcome.output == {
                "eventId": event,
                "userId": user,
                "status": "unregistered",
                "promoted": promoted,
            }, outcome
        elif user in m.waitlist:
            m.waitlist.remove(user)
            assert outcome.ok and outcome.output is not None, outcome
            assert outcome.output["status"] == "left_waitlist", outcome
        else:
            assert outcome.error == "NotRegistered", outcome

    @rule(event=events)
    def register_unknown_user(self, event: str) -> None:
        assert self.workflows.register(event, f"ghost-{uuid.uuid4().hex[:8]}").error == "UserNotFound"

    @invariant()
    def requirement_6_holds(self) -> None:
        for event_id, m in self.model.items():
            event = self.store.get_event(event_id)
            registered = {r.userId for r in self.store.list_registrations(event_id, limit=100).items}
            waitlist = [w.userId for w in self.store.list_waitlist(event_id, limit=100).items]
            assert event.registeredCount == len(registered) <= event.capacity
            assert registered == m.registered
            assert waitlist == m.waitlist
            assert event.waitlistCount == len(waitlist)
            # Fairness: nobody waits while a seat is free.
            assert not waitlist or event.registeredCount == event.capacity

    @invariant()
    def user_registrations_match(self) -> None:
        for user in self.known_users:
            listed = {
                r.eventId: (r.status, r.position)
                for r in self.store.list_user_registrations(user, limit=100).items
            }
            expected: dict[str, tuple[str, int | None]] = {}
            for event_id, m in self.model.items():
                if user in m.registered:
                    expected[event_id] = ("registered", None)
                elif user in m.waitlist:
                    expected[event_id] = ("waitlisted", m.waitlist.index(user) + 1)
            assert listed == expected


def test_registration_state_machine(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows
) -> None:
    RegistrationMachine.engine = engine
    RegistrationMachine.store = store
    RegistrationMachine.workflows = workflows
    machine = RegistrationMachine.TestCase
    machine.settings = settings(stateful_step_count=25)
    machine().runTest()
