"""The ownership rules (`registration.access`) and the caller they are applied to."""

from __future__ import annotations

import pytest

from registration import access
from registration.access import Caller, caller_from_claims, parse_groups
from registration.errors import Forbidden, Unauthorized

ADA = Caller(userId="ada")
ORGANIZER = Caller(userId="olga", groups=frozenset({"organizers"}))
ADMIN = Caller(userId="root", groups=frozenset({"admins"}))


@pytest.mark.parametrize(
    ("claim", "groups"),
    [
        (None, set()),
        ("", set()),
        ("admins", {"admins"}),
        ("admins,organizers", {"admins", "organizers"}),  # a REST API's authorizer
        ("[admins organizers]", {"admins", "organizers"}),  # an HTTP API's JWT authorizer
        ("[admins, organizers]", {"admins", "organizers"}),
        (["organizers"], {"organizers"}),  # the token's own JSON list
    ],
)
def test_the_groups_claim_is_read_in_every_shape_api_gateway_hands_it_on(
    claim: object, groups: set[str]
) -> None:
    assert parse_groups(claim) == groups
    assert Caller(userId="x", groups=claim).groups == groups


def test_claims_without_a_user_are_unauthorized() -> None:
    for claims in (None, {}, {"cognito:username": ""}, {"cognito:username": 7}, {"sub": "x"}):
        with pytest.raises(Unauthorized):
            caller_from_claims(claims)  # type: ignore[arg-type]
    caller = caller_from_claims({"cognito:username": "ada", "cognito:groups": "organizers", "sub": "s"})
    assert caller == Caller(userId="ada", groups=frozenset({"organizers"}))


def test_a_group_name_that_merely_contains_admins_is_not_admins() -> None:
    assert not Caller(userId="x", groups="not-admins,admins2").is_admin
    assert not Caller(userId="x", groups="organizers-team").is_organizer


@pytest.mark.parametrize(
    ("caller", "user", "allowed"),
    [
        (ADA, "ada", True),
        (ADA, "bob", False),
        (ORGANIZER, "bob", False),
        (ORGANIZER, "olga", True),
        (ADMIN, "bob", True),
    ],
)
def test_users_are_theirs_or_an_admins(caller: Caller, user: str, allowed: bool) -> None:
    if allowed:
        access.require_self_or_admin(caller, user, "read it")
    else:
        with pytest.raises(Forbidden, match=f"Only {user} or an admin may read it"):
            access.require_self_or_admin(caller, user, "read it")


def test_only_organizers_and_admins_create_events_and_only_admins_list_users() -> None:
    access.require_organizer(ORGANIZER, "create events")
    access.require_organizer(ADMIN, "create events")
    with pytest.raises(Forbidden):
        access.require_organizer(ADA, "create events")
    access.require_admin(ADMIN, "list users")
    for caller in (ADA, ORGANIZER):
        with pytest.raises(Forbidden):
            access.require_admin(caller, "list users")


@pytest.mark.parametrize(
    ("caller", "user", "organizer", "allowed"),
    [
        (ADA, "ada", None, True),
        (ADA, "ada", "olga", True),
        (ADA, "bob", "olga", False),
        (ADA, "bob", "ada", False),  # organizing needs the organizers group too
        (ORGANIZER, "bob", "olga", True),
        (ORGANIZER, "bob", "someone-else", False),
        (ORGANIZER, "bob", None, False),  # an event without an organizer is nobody's
        (ADMIN, "bob", None, True),
    ],
)
def test_acting_for_a_user_on_an_event(
    caller: Caller, user: str, organizer: str | None, allowed: bool
) -> None:
    if allowed:
        access.require_may_act_for(caller, user, organizer, "register")
    else:
        with pytest.raises(Forbidden):
            access.require_may_act_for(caller, user, organizer, "register")
    assert access.acts_for_others(caller, user) == (not (caller.is_admin or caller.userId == user))


@pytest.mark.parametrize(
    ("caller", "organizer", "allowed"),
    [(ADA, "ada", False), (ORGANIZER, "olga", True), (ORGANIZER, "x", False), (ADMIN, None, True)],
)
def test_an_events_lists_are_its_organizers_and_admins(
    caller: Caller, organizer: str | None, allowed: bool
) -> None:
    if allowed:
        access.require_event_manager(caller, organizer, "list")
    else:
        with pytest.raises(Forbidden):
            access.require_event_manager(caller, organizer, "list")
