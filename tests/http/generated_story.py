"""The README's story, written against the client openapi-python-client generates from
docs/openapi.json (package `event_registration_api_client`).

tests/http/test_generated_client.py generates the client, type-checks this module with
it (mypy, strict), then runs `story` against the API. Nothing here is untyped: every call
returns the generated models, and a mistake in the document shows as a type error or a
wrong answer.
"""

from __future__ import annotations

import datetime

from event_registration_api_client import AuthenticatedClient
from event_registration_api_client.api.events import create_event, get_event
from event_registration_api_client.api.registrations import list_waitlist, register, unregister
from event_registration_api_client.api.users import create_user, list_user_registrations
from event_registration_api_client.models import (
    ErrorBody,
    Event,
    NewEvent,
    NewUser,
    PageUserRegistration,
    PageWaitlistEntry,
    RegisterRequest,
    RegisterResult,
    RegisterResultStatus,
    UnregisterResult,
    UnregisterResultStatus,
    User,
    UserRegistrationStatus,
)


def story(base_url: str, token: str, ada: str, grace: str, keynote: str) -> list[str]:
    """Runs the story signed in with `token` (an admin's ID token: the generated client
    sends it as `Authorization: Bearer`); returns what it saw, one line a step."""
    seen: list[str] = []
    with AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True) as client:
        for user_id, name in ((ada, "Ada Lovelace"), (grace, "Grace Hopper")):
            user = create_user.sync(client=client, body=NewUser(user_id=user_id, name=name))
            assert isinstance(user, User), user
            assert isinstance(user.created_at, datetime.datetime)
            seen.append(f"user {user.user_id}")

        event = create_event.sync(
            client=client,
            body=NewEvent(title="Opening keynote", capacity=1, event_id=keynote, has_waitlist=True),
        )
        assert isinstance(event, Event), event
        seen.append(f"event {event.event_id} capacity {event.capacity}")

        first = register.sync(keynote, client=client, body=RegisterRequest(user_id=ada))
        assert isinstance(first, RegisterResult), first
        assert first.status is RegisterResultStatus.REGISTERED
        seen.append(f"register {first.user_id}: {first.status.value}")

        second = register.sync(
            keynote, client=client, body=RegisterRequest(user_id=grace), idempotency_key="k-1"
        )
        assert isinstance(second, RegisterResult), second
        seen.append(f"register {second.user_id}: {second.status.value} {second.position}")
        replay = register.sync_detailed(
            keynote, client=client, body=RegisterRequest(user_id=grace), idempotency_key="k-1"
        )
        assert isinstance(replay.parsed, RegisterResult), replay
        seen.append(
            f"replay {int(replay.status_code)}: {replay.parsed.status.value} {replay.parsed.position}"
        )

        waitlist = list_waitlist.sync(keynote, client=client)
        assert isinstance(waitlist, PageWaitlistEntry), waitlist
        assert all(isinstance(w.joined_at, datetime.datetime) for w in waitlist.items)
        seen.append("waitlist " + ", ".join(f"{w.position}. {w.user_id}" for w in waitlist.items))

        left = unregister.sync(keynote, ada, client=client)
        assert isinstance(left, UnregisterResult), left
        assert left.status is UnregisterResultStatus.UNREGISTERED
        seen.append(f"unregister {left.user_id}: {left.status.value}, promoted {left.promoted}")

        mine = list_user_registrations.sync(grace, client=client)
        assert isinstance(mine, PageUserRegistration), mine
        # GSI1, which AWS updates eventually: the seat, or (just after the write) nothing yet.
        assert [(r.event_id, r.status) for r in mine.items] in (
            [],
            [(keynote, UserRegistrationStatus.REGISTERED)],
        )
        seen.append(f"registrations of {grace} listed")

        again = register.sync_detailed(keynote, client=client, body=RegisterRequest(user_id=grace))
        assert isinstance(again.parsed, ErrorBody), again
        seen.append(f"register {grace} again: {int(again.status_code)} {again.parsed.error}")

        after = get_event.sync(keynote, client=client)
        assert isinstance(after, Event), after
        seen.append(f"event {after.registered_count} registered, {after.waitlist_count} waiting")
    return seen
