"""Random sequences of create/register/unregister through the workflows, organizers'
changes of capacity and waitlist (the API's `PATCH /events/{id}` logic), cancellations and
erasures of users (their workflows), against a plain model.

After every step: requirement 6 (counts equal the registered users and never exceed
capacity; the waitlist is in arrival order), each user's registrations as listed, and the
domain events on the bus (through the synthesized pipe): exactly one per change the model
made, in the order the changes were made, each naming the request that made it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from infrastructure.local.engine import LocalEngine
from registration import cancellation, erasure, event_changes
from registration.data import RegistrationStore
from registration.errors import EventCancelled, UserNotFound, WaitlistNotEmpty
from registration.models import ErasureInput, EventPatch, NewEvent, NewUser
from tests.fixtures.workflows import Outcome, Workflows

# What a domain event says, as compared: (type, eventId, userId, requestId, data...).
Change = dict[str, object]


@dataclass
class ModelEvent:
    capacity: int
    has_waitlist: bool
    registered: set[str] = field(default_factory=set)
    waitlist: list[str] = field(default_factory=list)
    cancelled: bool = False


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
        self.erased: set[str] = set()
        assert self.engine.pipes is not None
        self.pipes = self.engine.pipes
        self.pipes.drain()
        self.bus_offset = self.pipes.bus.last_offset
        # The changes the model made, one group per request (a hand-over makes two).
        self.changes: list[list[Change]] = []
        self.seen: list[Change] = []

    def _changed(self, outcome: Outcome | None, *changes: Change) -> None:
        request = {"requestId": outcome.request_id} if outcome is not None else {}
        self.changes.append([{**change, **request} for change in changes])

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
        self._changed(None, {"type": "event.created", "eventId": event.eventId})
        return event.eventId

    @rule(user=users, event=events)
    def register(self, user: str, event: str) -> None:
        m = self.model[event]
        outcome = self.workflows.register(event, user)
        if user in self.erased:
            assert outcome.error == "UserNotFound", outcome
        elif m.cancelled:
            assert outcome.error == "EventCancelled", outcome
        elif user in m.registered:
            assert outcome.error == "AlreadyRegistered", outcome
        elif user in m.waitlist:
            assert outcome.error == "AlreadyWaitlisted", outcome
        elif not m.waitlist and len(m.registered) < m.capacity:
            assert outcome.ok and outcome.output is not None and outcome.output["status"] == "registered", (
                outcome
            )
            m.registered.add(user)
            self._changed(outcome, {"type": "registration.registered", "eventId": event, "userId": user})
        elif m.has_waitlist:
            m.waitlist.append(user)
            self._changed(
                outcome,
                {
                    "type": "registration.waitlisted",
                    "eventId": event,
                    "userId": user,
                    "position": len(m.waitlist),
                },
            )
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
            # A seat above a lowered capacity is not a free seat.
            promoted = m.waitlist.pop(0) if m.waitlist and len(m.registered) < m.capacity else None
            left: Change = {"type": "registration.unregistered", "eventId": event, "userId": user}
            if promoted:
                m.registered.add(promoted)
                self._changed(
                    outcome,
                    left,
                    {
                        "type": "registration.promoted",
                        "eventId": event,
                        "userId": promoted,
                        "fromPosition": 1,
                        "reason": "unregistration",
                    },
                )
            else:
                self._changed(outcome, left)
            assert outcome.ok and outcome.output == {
                "eventId": event,
                "userId": user,
                "status": "unregistered",
                "promoted": promoted,
            }, outcome
        elif user in m.waitlist:
            m.waitlist.remove(user)
            self._changed(outcome, {"type": "registration.left_waitlist", "eventId": event, "userId": user})
            assert outcome.ok and outcome.output is not None, outcome
            assert outcome.output["status"] == "left_waitlist", outcome
        else:
            assert outcome.error == "NotRegistered", outcome

    @rule(event=events, capacity=st.integers(0, 4), has_waitlist=st.none() | st.booleans())
    def change_event(self, event: str, capacity: int, has_waitlist: bool | None) -> None:
        m = self.model[event]
        sent = (
            {"capacity": capacity}
            if has_waitlist is None
            else {"capacity": capacity, "hasWaitlist": has_waitlist}
        )
        request_id = f"change-{uuid.uuid4().hex}"
        if m.cancelled:
            try:
                event_changes.change_event(self.store, event, EventPatch(**sent), None, request_id)
            except EventCancelled:
                return
            raise AssertionError("changed a cancelled event")
        if has_waitlist is False and m.waitlist:
            try:
                event_changes.change_event(self.store, event, EventPatch(**sent), None, request_id)
            except WaitlistNotEmpty:
                return
            raise AssertionError("turned a waitlist off while people wait")
        outcome = event_changes.change_event(self.store, event, EventPatch(**sent), None, request_id)
        m.capacity = capacity
        m.has_waitlist = m.has_waitlist if has_waitlist is None else has_waitlist
        free = max(0, capacity - len(m.registered))
        promoted, m.waitlist = m.waitlist[:free], m.waitlist[free:]
        m.registered.update(promoted)
        assert outcome.promoted == promoted
        assert (outcome.event.capacity, outcome.event.hasWaitlist) == (m.capacity, m.has_waitlist)
        if promoted:
            self.changes.append(
                [
                    {
                        "type": "registration.promoted",
                        "eventId": event,
                        "userId": user,
                        "fromPosition": 1,
                        "reason": "capacity",
                        "requestId": request_id,
                    }
                    for user in promoted
                ]
            )

    @rule(event=events)
    def cancel(self, event: str) -> None:
        """As `POST /events/{id}/cancel` does: the mark, then the cancel workflow's run."""
        m = self.model[event]
        request_id = f"cancel-{uuid.uuid4().hex}"
        assert cancellation.cancel(self.store, event).status == "cancelled"
        run = self.engine.run(
            "cancel", {"eventId": event, "requestId": request_id}, name=f"{request_id}", timeout=60
        )
        assert run.succeeded, (run.status, run.error, run.cause)
        if not m.cancelled and (m.registered or m.waitlist):
            self.changes.append(
                [
                    {
                        "type": "registration.unregistered",
                        "eventId": event,
                        "userId": user,
                        "reason": "event_cancelled",
                        "requestId": request_id,
                    }
                    for user in [*sorted(m.registered), *m.waitlist]
                ]
            )
        m.cancelled, m.registered, m.waitlist = True, set(), []

    @rule(user=users)
    def erase(self, user: str) -> None:
        """As `DELETE /users/{id}` does: the mark, then the erase workflow's run (nothing
        registers meanwhile, so it need not settle). Every seat is handed to its waitlist's
        head as a user leaving it would be; the erased id then answers as unknown."""
        if user not in self.known_users:
            return  # erased already (the bundle keeps the id)
        request_id = f"erase-{uuid.uuid4().hex}"
        since = erasure.mark(self.store, user)
        run = ErasureInput(userId=user, requestId=request_id, erasingSince=since, settleSeconds=0)
        result = self.engine.run(
            "erase", run.model_dump(mode="json"), name=erasure.execution_name(user, since), timeout=60
        )
        assert result.succeeded, (result.status, result.error, result.cause)
        changes: list[Change] = []
        for event_id, m in self.model.items():
            if user in m.registered:
                m.registered.discard(user)
                changes.append(
                    {
                        "type": "registration.unregistered",
                        "eventId": event_id,
                        "userId": user,
                        "reason": "user_erased",
                    }
                )
                if m.waitlist and len(m.registered) < m.capacity:
                    promoted = m.waitlist.pop(0)
                    m.registered.add(promoted)
                    changes.append(
                        {
                            "type": "registration.promoted",
                            "eventId": event_id,
                            "userId": promoted,
                            "fromPosition": 1,
                            "reason": "unregistration",
                        }
                    )
            elif user in m.waitlist:
                m.waitlist.remove(user)
                changes.append(
                    {
                        "type": "registration.left_waitlist",
                        "eventId": event_id,
                        "userId": user,
                        "reason": "user_erased",
                    }
                )
        if changes:
            self.changes.append([{**change, "requestId": request_id} for change in changes])
        self.known_users.discard(user)
        self.erased.add(user)
        with pytest.raises(UserNotFound):
            self.store.get_user(user)

    @rule(event=events)
    def register_unknown_user(self, event: str) -> None:
        assert self.workflows.register(event, f"ghost-{uuid.uuid4().hex[:8]}").error == "UserNotFound"

    @invariant()
    def requirement_6_holds(self) -> None:
        for event_id, m in self.model.items():
            event = self.store.get_event(event_id)
            registered = {r.userId for r in self.store.list_registrations(event_id, limit=100).items}
            waitlist = [w.userId for w in self.store.list_waitlist(event_id, limit=100).items]
            # Above capacity only by the seats a lowered capacity kept.
            assert event.registeredCount == len(registered) <= event.capacity + event.keptOverCapacity
            assert registered == m.registered
            assert waitlist == m.waitlist
            assert event.waitlistCount == len(waitlist)
            # Fairness: nobody waits while a seat is free.
            assert not waitlist or event.registeredCount >= event.capacity

    def teardown(self) -> None:
        """The whole example's event log against its changes, once (a drain per step
        would double the test's time and prove nothing more: order is the log's)."""
        self.the_event_log_is_the_sequence_of_changes()

    def the_event_log_is_the_sequence_of_changes(self) -> None:
        self.pipes.drain()
        for entry in self.pipes.bus.read(self.bus_offset, limit=10_000):
            self.bus_offset = entry.offset
            detail = entry.body["detail"]
            assert entry.body["detail-type"] == detail["type"]
            self.seen.append({k: v for k, v in detail.items() if k not in ("id", "occurredAt")})
        observed = iter(self.seen)
        for group in self.changes:
            got = [next(observed, None) for _ in group]
            if "requestId" not in group[0]:  # made through the data layer, under an id of its own
                got = [g and {k: v for k, v in g.items() if k != "requestId"} for g in got]
            # One request's changes are one commit, whose records' order is not defined.
            assert sorted(got, key=str) == sorted(group, key=str), (group, got)
        assert next(observed, None) is None, "an event that no change made"

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
