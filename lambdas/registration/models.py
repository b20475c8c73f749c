"""The domain's models: one definition per concept, shared by the API, the tasks and the data layer."""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_CAPACITY = 1_000_000

Identifier = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$"),
    Field(description="1 to 64 letters, digits, '-' or '_'", examples=["evt-2026-keynote"]),
]
DisplayText = Annotated[
    str,
    # `\S` (searched, not anchored): at least one visible character.
    StringConstraints(strict=True, min_length=1, max_length=200, pattern=r"\S"),
    Field(description="1 to 200 characters, not only whitespace"),
]
Capacity = Annotated[int, Field(strict=True, ge=0, le=MAX_CAPACITY)]
Timestamp = Annotated[str, Field(description="ISO 8601, UTC, millisecond precision")]

RegistrationStatus = Literal["registered", "waitlisted"]


class _Input(BaseModel):
    """Client-supplied bodies: unknown fields and coerced types are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- users -----------------------------------------------------------------------------


class NewUser(_Input):
    userId: Identifier
    name: DisplayText


class User(_Record):
    userId: str
    name: str
    createdAt: Timestamp


# --- events ----------------------------------------------------------------------------


class NewEvent(_Input):
    eventId: Identifier | None = Field(default=None, description="Generated when absent")
    title: DisplayText
    capacity: Capacity
    hasWaitlist: bool = Field(default=False, strict=True)


class Event(_Record):
    eventId: str
    title: str
    capacity: int
    hasWaitlist: bool
    registeredCount: int = 0
    waitlistCount: int = 0
    createdAt: Timestamp


class EventState(Event):
    """An event as the decisions see it: the public fields plus the waitlist sequence.

    `waitlistSeq` is the sequence number of the last waitlist slot handed out; it only
    grows, so a new entry always lands behind every existing one.
    """

    waitlistSeq: int = 0

    def public(self) -> Event:
        return Event.model_validate(self.model_dump(exclude={"waitlistSeq"}))


# --- registrations ---------------------------------------------------------------------


class Registration(_Record):
    eventId: str
    userId: str
    registeredAt: Timestamp


class WaitlistEntry(_Record):
    eventId: str
    userId: str
    position: int = Field(ge=1, description="1-based place in the queue")
    joinedAt: Timestamp


class UserRegistration(_Record):
    eventId: str
    status: RegistrationStatus
    position: int | None = Field(default=None, description="Only when waitlisted")


class Membership(_Record):
    """What one user holds at one event: a seat, or a place in the waitlist."""

    eventId: str
    userId: str
    status: RegistrationStatus
    since: Timestamp
    requestId: str | None = None
    seq: int | None = None


class WaitlistHead(_Record):
    userId: str
    seq: int


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    nextToken: str | None = None


# --- workflow outcomes -----------------------------------------------------------------


class RegisterResult(_Record):
    eventId: str
    userId: str
    status: RegistrationStatus
    position: int | None = None


class UnregisterResult(_Record):
    eventId: str
    userId: str
    status: Literal["unregistered", "left_waitlist"]
    promoted: str | None = None


# --- workflow state passed between tasks -----------------------------------------------


class WorkflowRequest(BaseModel):
    """What API Gateway (or an operator) starts a workflow with."""

    model_config = ConfigDict(extra="ignore")

    eventId: Identifier
    userId: Identifier
    requestId: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class ValidateInput(WorkflowRequest):
    operation: Literal["register", "unregister"]


class RegisterDecision(_Record):
    action: Literal["seat", "waitlist", "full"]
    attempt: int = Field(ge=1)
    event: EventState
    decidedAt: Timestamp


class UnregisterDecision(_Record):
    action: Literal["unregister", "promote", "leave_waitlist", "not_registered"]
    attempt: int = Field(ge=1)
    event: EventState
    decidedAt: Timestamp
    seq: int | None = None
    head: WaitlistHead | None = None


class RegisterState(WorkflowRequest):
    event: EventState
    decision: RegisterDecision | None = None


class UnregisterState(WorkflowRequest):
    event: EventState
    decision: UnregisterDecision | None = None
