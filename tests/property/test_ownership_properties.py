"""Random sequences of requests by random callers never reach past the ownership rules.

Requests go through the local API (`LocalApi.handle`: token verification, the API
function and the real workflows on moto) signed by a fixed cast: three plain users, two
organizers and an admin. The expectation of each request is the requirement's table,
written out here: a caller registers, unregisters or reads only themselves, an
organizer also anyone on their own events, an admin anyone. After every step the
table's memberships equal a model changed only by the requests that were allowed, so a
refused request is shown to have changed nothing.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from infrastructure.local.engine import LocalEngine
from infrastructure.local.local_api import LocalApi, Reply

USERS = ("ada", "bob", "cyd")
ORGANIZERS = ("olga", "oscar")
ADMIN = "root"
CALLERS = (*USERS, *ORGANIZERS, ADMIN)


def _groups(caller: str) -> list[str]:
    if caller in ORGANIZERS:
        return ["organizers"]
    return ["admins"] if caller == ADMIN else []


class OwnershipMachine(RuleBasedStateMachine):
    api: LocalApi
    tokens: dict[str, str]

    events = Bundle("events")

    def __init__(self) -> None:
        super().__init__()
        self.api.engine.reset_table()
        for user in CALLERS:
            self._call(ADMIN, "POST", "/users", {"userId": user, "name": user}, expect=201)
        self.organizer_of: dict[str, str] = {}
        self.members: set[tuple[str, str]] = set()  # (event, user), seated or waiting

    def _call(
        self, caller: str, method: str, path: str, body: Any = None, *, expect: int | None = None
    ) -> Reply:
        headers = [("Authorization", f"Bearer {self.tokens[caller]}"), ("Content-Type", "application/json")]
        reply = self.api.handle(
            method=method,
            target=path,
            headers=headers,
            body=b"" if body is None else json.dumps(body).encode(),
            request_id=str(uuid.uuid4()),
        )
        assert reply.status < 500, (method, path, reply.status, reply.body)
        if expect is not None:
            assert reply.status == expect, (caller, method, path, reply.status, reply.body)
        return reply

    def _acts_for(self, caller: str, user: str, event: str) -> bool:
        return caller in (user, ADMIN) or self.organizer_of[event] == caller

    @rule(target=events, organizer=st.sampled_from((*ORGANIZERS, ADMIN)), capacity=st.integers(0, 2))
    def create_event(self, organizer: str, capacity: int) -> str:
        event_id = f"pe-{uuid.uuid4().hex[:10]}"
        body = {"eventId": event_id, "title": "T", "capacity": capacity, "hasWaitlist": True}
        reply = self._call(organizer, "POST", "/events", body, expect=201)
        assert json.loads(reply.body)["organizerId"] == organizer
        self.organizer_of[event_id] = organizer
        return event_id

    @rule(caller=st.sampled_from(USERS))
    def a_plain_user_creates_no_event(self, caller: str) -> None:
        self._call(caller, "POST", "/events", {"title": "T", "capacity": 1}, expect=403)

    @rule(caller=st.sampled_from(CALLERS), user=st.sampled_from(CALLERS), event=events)
    def register(self, caller: str, user: str, event: str) -> None:
        reply = self._call(caller, "POST", f"/events/{event}/register", {"userId": user})
        if not self._acts_for(caller, user, event):
            assert reply.status == 403, reply.body
        elif (event, user) in self.members:
            assert reply.status == 409, reply.body
        else:
            assert reply.status == 201, reply.body
            self.members.add((event, user))

    @rule(caller=st.sampled_from(CALLERS), user=st.sampled_from(CALLERS), event=events)
    def unregister(self, caller: str, user: str, event: str) -> None:
        reply = self._call(caller, "DELETE", f"/events/{event}/register/{user}")
        if not self._acts_for(caller, user, event):
            assert reply.status == 403, reply.body
        elif (event, user) not in self.members:
            assert reply.status == 404, reply.body
        else:
            assert reply.status == 200, reply.body
            self.members.discard((event, user))

    @rule(caller=st.sampled_from(CALLERS), user=st.sampled_from(CALLERS))
    def read_registrations(self, caller: str, user: str) -> None:
        reply = self._call(caller, "GET", f"/users/{user}/registrations?limit=100")
        if caller not in (user, ADMIN):
            assert reply.status == 403, reply.body
            return
        assert reply.status == 200, reply.body
        listed = {item["eventId"] for item in json.loads(reply.body)["items"]}
        assert listed == {event for event, member in self.members if member == user}

    @rule(
        caller=st.sampled_from(CALLERS), event=events, listing=st.sampled_from(("registrations", "waitlist"))
    )
    def read_event_lists(self, caller: str, event: str, listing: str) -> None:
        reply = self._call(caller, "GET", f"/events/{event}/{listing}?limit=100")
        allowed = caller == ADMIN or self.organizer_of[event] == caller
        assert reply.status == (200 if allowed else 403), reply.body

    @invariant()
    def memberships_changed_only_as_allowed(self) -> None:
        found = set()
        for event in self.organizer_of:
            for listing in ("registrations", "waitlist"):
                reply = self._call(ADMIN, "GET", f"/events/{event}/{listing}?limit=100", expect=200)
                found |= {(event, item["userId"]) for item in json.loads(reply.body)["items"]}
        assert found == self.members


def test_random_callers_never_reach_past_the_rules(engine: LocalEngine) -> None:
    api = LocalApi(engine)
    identity = engine.identity
    assert identity is not None, "the synthesized template has a user pool"
    OwnershipMachine.api = api
    OwnershipMachine.tokens = {caller: identity.token(caller, _groups(caller)) for caller in CALLERS}
    machine = OwnershipMachine.TestCase
    machine.settings = settings(stateful_step_count=20)
    machine().runTest()
