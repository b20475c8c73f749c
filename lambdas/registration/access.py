"""Who may do what: the one place the API's ownership rules live.

The caller comes from a verified ID token (API Gateway's Cognito authorizer on AWS, the
local server's verification on one machine): their user id is the token's
`cognito:username`, their roles its `cognito:groups`. A user id in a body or a path is
never trusted on its own: each rule checks it against the caller.

| action                              | user       | organizer                      | admin  |
|-------------------------------------|------------|--------------------------------|--------|
| create a user                       | themselves | themselves                     | anyone |
| read a user or their registrations  | themselves | themselves                     | anyone |
| list users                          | no         | no                             | yes    |
| create an event                     | no         | yes (recorded as its organizer)| yes    |
| read events                         | yes        | yes                            | yes    |
| register or unregister a user       | themselves | themselves, anyone for own events | anyone |
| list an event's seats or waitlist   | no         | own events                     | anyone |

The API Lambda applies these before it reads or writes; the register and unregister
workflows apply them in their first task, so a refused request writes nothing and claims
no `Idempotency-Key`. A refusal is `Forbidden` (403): it says what was refused, never
what the table holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from registration.errors import Forbidden, Unauthorized
from registration.outcomes import UNAUTHORIZED_MESSAGE

ORGANIZERS = "organizers"
ADMINS = "admins"
# Claims as API Gateway hands them on: every value a string.
USERNAME_CLAIM = "cognito:username"
GROUPS_CLAIM = "cognito:groups"
# Cognito user names are at most 128 characters.
CallerId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# API Gateway writes a list claim as one string: "a,b" (REST APIs) or "[a b]" (HTTP APIs).
_GROUP_SEPARATORS = re.compile(r"[\s,]+")


def parse_groups(value: Any) -> frozenset[str]:
    """The group names of a `cognito:groups` claim, in any of the shapes it arrives in:
    a JSON list (the token itself), or API Gateway's string of it."""
    if value is None:
        return frozenset()
    if isinstance(value, (list, tuple, set, frozenset)):
        return frozenset(str(group) for group in value if str(group))
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return frozenset(group for group in _GROUP_SEPARATORS.split(text) if group)


class Caller(BaseModel):
    """Who is calling, as the verified token says."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    userId: CallerId
    groups: frozenset[str] = Field(default_factory=frozenset)

    @field_validator("groups", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> frozenset[str]:
        return parse_groups(value)

    @property
    def is_admin(self) -> bool:
        return ADMINS in self.groups

    @property
    def is_organizer(self) -> bool:
        return ORGANIZERS in self.groups

    def organizes(self, organizer_id: str | None) -> bool:
        """An organizer acting on an event they created."""
        return self.is_organizer and organizer_id is not None and organizer_id == self.userId


def caller_from_claims(claims: Mapping[str, Any] | None) -> Caller:
    """The caller the authorizer's claims name; `Unauthorized` when they name nobody (a
    route reached without an authorizer in front is refused, not served)."""
    user_id = (claims or {}).get(USERNAME_CLAIM)
    if not isinstance(user_id, str) or not user_id or len(user_id) > 128:
        raise Unauthorized(UNAUTHORIZED_MESSAGE)
    return Caller(userId=user_id, groups=(claims or {}).get(GROUPS_CLAIM))


# --- the rules ---------------------------------------------------------------------------


def require_self_or_admin(caller: Caller, user_id: str, action: str) -> None:
    """Creating or reading a user, or reading their registrations."""
    if caller.is_admin or caller.userId == user_id:
        return
    raise Forbidden(f"Only {user_id} or an admin may {action}")


def require_admin(caller: Caller, action: str) -> None:
    if not caller.is_admin:
        raise Forbidden(f"Only an admin may {action}")


def require_organizer(caller: Caller, action: str) -> None:
    """Creating an event."""
    if not (caller.is_organizer or caller.is_admin):
        raise Forbidden(f"Only an organizer or an admin may {action}")


def acts_for_others(caller: Caller, user_id: str) -> bool:
    """Whether acting for `user_id` needs more than being signed in (so the event's
    organizer must be known)."""
    return not (caller.is_admin or caller.userId == user_id)


def require_may_act_for(caller: Caller, user_id: str, organizer_id: str | None, action: str) -> None:
    """Registering or unregistering `user_id` for an event organized by `organizer_id`."""
    if not acts_for_others(caller, user_id) or caller.organizes(organizer_id):
        return
    raise Forbidden(f"Only {user_id}, the event's organizer or an admin may {action}")


def require_event_manager(caller: Caller, organizer_id: str | None, action: str) -> None:
    """Reading an event's seats or waitlist."""
    if caller.is_admin or caller.organizes(organizer_id):
        return
    raise Forbidden(f"Only the event's organizer or an admin may {action}")
