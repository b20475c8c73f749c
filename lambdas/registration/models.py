"""The domain's models: one definition per concept, shared by the API, the tasks and the data layer."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from registration.access import Caller
from registration.domain_events import EventType

MAX_CAPACITY = 1_000_000

_IDENTIFIER = StringConstraints(strict=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
_IDENTIFIER_TEXT = "1 to 64 letters, digits, '-' or '_'"
Identifier = Annotated[str, _IDENTIFIER, Field(description=_IDENTIFIER_TEXT)]
# The same rule; each with an example of its own kind in the OpenAPI document.
UserId = Annotated[str, _IDENTIFIER, Field(description=_IDENTIFIER_TEXT, examples=["ada-lovelace"])]
EventId = Annotated[str, _IDENTIFIER, Field(description=_IDENTIFIER_TEXT, examples=["evt-2026-keynote"])]
# Control characters (C0, DEL, C1: NUL, tab, newline, escape...) have no place in any
# text field; identifiers already admit only letters, digits, '-' and '_'.
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"
DisplayText = Annotated[
    str,
    # Anchored: no control character anywhere, and at least one visible character.
    StringConstraints(
        strict=True,
        min_length=1,
        max_length=200,
        pattern=rf"^[^{CONTROL_CHARACTERS}]*[^\s{CONTROL_CHARACTERS}][^{CONTROL_CHARACTERS}]*$",
    ),
    Field(description="1 to 200 characters, not only whitespace, no control characters"),
]
# Longer text may span lines: tab, line feed and carriage return are its only controls.
_TEXT_CONTROLS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
MAX_DESCRIPTION = 4000
Description = Annotated[
    str,
    StringConstraints(
        strict=True,
        min_length=1,
        max_length=MAX_DESCRIPTION,
        pattern=rf"^[^{_TEXT_CONTROLS}]*[^\s{_TEXT_CONTROLS}][^{_TEXT_CONTROLS}]*$",
    ),
    Field(description=f"1 to {MAX_DESCRIPTION} characters, lines allowed, not only whitespace"),
]
Capacity = Annotated[int, Field(strict=True, ge=0, le=MAX_CAPACITY)]
Timestamp = Annotated[
    str, Field(description="ISO 8601, UTC, millisecond precision", json_schema_extra={"format": "date-time"})
]
INSTANT_FORMAT_MESSAGE = "must be an ISO 8601 date and time with its offset, e.g. 2027-03-01T18:00:00+01:00"


def utc_instant(text: str) -> str:
    """An ISO 8601 date and time with an offset, as the API stores it: UTC with
    milliseconds, the form every stored time has (so that times compare as text)."""
    if not 10 <= len(text) <= 40:
        raise ValueError(INSTANT_FORMAT_MESSAGE)
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("must say its offset from UTC (Z or +01:00, say)")
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except OverflowError:
        raise ValueError(INSTANT_FORMAT_MESSAGE) from None
    except ValueError as error:
        if "offset" in str(error):
            raise
        raise ValueError(INSTANT_FORMAT_MESSAGE) from None


Instant = Annotated[
    str,
    AfterValidator(utc_instant),
    Field(
        strict=True,
        description="ISO 8601 with an offset (stored and answered in UTC)",
        json_schema_extra={"format": "date-time"},
        examples=["2027-03-01T18:00:00+01:00"],
    ),
]

RegistrationStatus = Literal["registered", "waitlisted"]
EventStatus = Literal["scheduled", "cancelled"]


def json_text(document: Any) -> str:
    """A JSON body as the API sends it (compact, as Powertools' resolver serializes)."""
    return json.dumps(document, separators=(",", ":"))


class _Input(BaseModel):
    """Client-supplied bodies: unknown fields and coerced types are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- users -----------------------------------------------------------------------------


class NewUser(_Input):
    userId: UserId
    name: DisplayText


MAX_EMAIL = 254
Email = Annotated[
    str,
    StringConstraints(
        strict=True,
        max_length=MAX_EMAIL,
        pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f.]+(\.[^@\s\x00-\x1f\x7f.]+)+$",
    ),
    Field(
        description=f"An email address (local@domain), at most {MAX_EMAIL} characters",
        examples=["ada@example.org"],
    ),
]


class User(Record):
    userId: str
    name: str
    createdAt: Timestamp
    email: str | None = Field(
        default=None, description="Kept for later use; shown to the user and admins only"
    )


class UserPatch(_Input):
    """A JSON merge patch of a user: `name` replaced, `email` set or (null) removed."""

    name: DisplayText | None = None
    email: Email | None = None

    @model_validator(mode="after")
    def _name_stays(self) -> UserPatch:
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be removed (null)")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields sent, with their values (None: remove)."""
        return {f: getattr(self, f) for f in ("name", "email") if f in self.model_fields_set}


# --- events ----------------------------------------------------------------------------


SCHEDULE_FIELDS = ("startsAt", "endsAt", "registrationOpensAt", "registrationClosesAt")


def schedule_problems(schedule: Mapping[str, str | None]) -> list[dict[str, str]]:
    """What is wrong with an event's times (UTC text, so they compare as text), as field errors."""
    starts, ends = schedule.get("startsAt"), schedule.get("endsAt")
    opens, closes = schedule.get("registrationOpensAt"), schedule.get("registrationClosesAt")
    problems: list[tuple[str, str]] = []
    if ends is not None and starts is None:
        problems.append(("endsAt", "needs startsAt"))
    if ends is not None and starts is not None and ends <= starts:
        problems.append(("endsAt", "must be after startsAt"))
    if opens is not None and closes is not None and closes <= opens:
        problems.append(("registrationClosesAt", "must be after registrationOpensAt"))
    if opens is not None and starts is not None and opens >= starts:
        problems.append(("registrationOpensAt", "must be before startsAt"))
    if closes is not None and starts is not None and closes > starts:
        problems.append(("registrationClosesAt", "must not be after startsAt"))
    return [{"field": f, "message": m, "type": "schedule"} for f, m in problems]


class EventDetails(_Input):
    """What an organizer says about an event beyond its seats (every field optional)."""

    description: Description | None = None
    location: DisplayText | None = None
    startsAt: Instant | None = None
    endsAt: Instant | None = Field(default=None, description="After startsAt")
    registrationOpensAt: Instant | None = Field(
        default=None, description="Registering before it is refused (before startsAt)"
    )
    registrationClosesAt: Instant | None = Field(
        default=None, description="Registering from it on is refused (at startsAt at the latest)"
    )


class NewEvent(EventDetails):
    eventId: EventId | None = Field(default=None, description="Generated when absent")
    title: DisplayText
    capacity: Capacity
    hasWaitlist: bool = Field(default=False, strict=True)

    @model_validator(mode="after")
    def _schedule(self) -> NewEvent:
        problems = schedule_problems(self.model_dump(include=set(SCHEDULE_FIELDS)))
        if problems:
            raise ValueError("; ".join(f"{p['field']} {p['message']}" for p in problems))
        return self


class Event(Record):
    eventId: str
    title: str
    capacity: int
    hasWaitlist: bool
    registeredCount: int = 0
    waitlistCount: int = 0
    createdAt: Timestamp
    organizerId: str | None = Field(
        default=None, description="The user who created the event (none for events made before sign-in)"
    )
    description: str | None = None
    location: str | None = None
    status: EventStatus = Field(default="scheduled", description="cancelled once its organizer cancels it")
    cancelledAt: Timestamp | None = None
    startsAt: Timestamp | None = None
    endsAt: Timestamp | None = None
    registrationOpensAt: Timestamp | None = None
    registrationClosesAt: Timestamp | None = None


class EventState(Event):
    """An event as the decisions see it: the public fields plus the waitlist sequence.

    `waitlistSeq` is the sequence number of the last waitlist slot handed out; it only
    grows, so a new entry always lands behind every existing one.
    """

    waitlistSeq: int = 0
    # Counts the edits of the event's own fields (`PATCH /events/{id}`, its ETag), never
    # the counters: a registration does not make an organizer's If-Match stale.
    version: int = 1
    # Seats above capacity that lowering it left (nobody is evicted): reconciliation
    # calls an event overbooked only beyond them.
    keptOverCapacity: int = 0

    def public(self) -> Event:
        return Event.model_validate(self.model_dump(exclude=INTERNAL_EVENT_FIELDS))


INTERNAL_EVENT_FIELDS = {"waitlistSeq", "version", "keptOverCapacity"}
# What `PATCH /events/{id}` may change; the nullable ones a null removes.
EDITABLE_EVENT_FIELDS = ("title", "capacity", "hasWaitlist", *("description", "location"), *SCHEDULE_FIELDS)
REQUIRED_EVENT_FIELDS = frozenset({"title", "capacity", "hasWaitlist"})


class EventPatch(EventDetails):
    """A JSON merge patch (RFC 7396) of an event: the fields sent replace theirs, a null
    removes an optional one; the id, the organizer and the counters are not editable."""

    title: DisplayText | None = None
    capacity: Capacity | None = None
    hasWaitlist: bool | None = Field(default=None, strict=True)

    @model_validator(mode="after")
    def _required_stay(self) -> EventPatch:
        removed = sorted(f for f in REQUIRED_EVENT_FIELDS & self.model_fields_set if getattr(self, f) is None)
        if removed:
            raise ValueError(f"{', '.join(removed)} cannot be removed (null)")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields sent, with their values (None: remove)."""
        return {f: getattr(self, f) for f in EDITABLE_EVENT_FIELDS if f in self.model_fields_set}


class CancellationEntry(BaseModel):
    """A seat or waitlist place a cancellation releases."""

    userId: str
    kind: Literal["seat", "waitlisted"]
    seq: int | None = None


class CancellationBatches(BaseModel):
    """`NextCancellationBatch`'s answer: the next entries to release, in groups (one a
    child execution of the Distributed Map); none left when empty."""

    groups: list[list[CancellationEntry]]
    entries: int


class CancellationInput(_Input):
    eventId: EventId
    requestId: str = Field(min_length=1, max_length=200)


class ReleaseGroup(BaseModel):
    """One child of the Distributed Map: a group of entries of one event."""

    eventId: str
    requestId: str
    entries: list[CancellationEntry]


class CancelledEvent(BaseModel):
    """`POST /events/{id}/cancel`: the event, cancelled, and the run releasing its seats."""

    eventId: str
    status: EventStatus
    cancelledAt: Timestamp
    registeredCount: int
    waitlistCount: int
    execution: str = Field(description="The cancel workflow's execution (`regctl executions show`)")


class ErasureInput(_Input):
    """The erase workflow's input, and its tasks'."""

    userId: UserId
    requestId: str = Field(min_length=1, max_length=200)
    erasingSince: Timestamp
    settleSeconds: Annotated[int, Field(ge=0, le=3600)]
    late: bool = False


class ErasureProgress(BaseModel):
    """`ReleaseUserRegistrations`' answer: the events it looked at and the seats and places
    it released; `more` while another turn may find something."""

    found: int
    released: int
    more: bool


class ErasureStarted(BaseModel):
    """`DELETE /users/{id}`: the user, being erased, and the run doing it."""

    userId: str
    status: Literal["erasing"] = "erasing"
    erasingSince: Timestamp
    execution: str = Field(description="The erase workflow's execution (`regctl executions show`)")


class EventChange(Event):
    """`PATCH /events/{id}`: the event as changed, and who the change seated."""

    promoted: list[str] = Field(
        default_factory=list,
        description="Users moved from the waitlist into seats the change added, in FIFO order",
    )


# --- registrations ---------------------------------------------------------------------


class Registration(Record):
    eventId: str
    userId: str
    registeredAt: Timestamp


class WaitlistEntry(Record):
    eventId: str
    userId: str
    position: int = Field(ge=1, description="1-based place in the queue")
    joinedAt: Timestamp


class RegistrationView(Record):
    """`GET /events/{eventId}/registrations/{userId}`: where one person stands."""

    eventId: str
    userId: str
    status: RegistrationStatus
    since: Timestamp = Field(description="When the seat was taken or the waitlist joined")
    position: int | None = Field(default=None, ge=1, description="Only when waitlisted (1 = next)")


class UserRegistration(Record):
    eventId: str
    status: RegistrationStatus
    position: int | None = Field(default=None, description="Only when waitlisted")


class Membership(Record):
    """What one user holds at one event: a seat, or a place in the waitlist."""

    eventId: str
    userId: str
    status: RegistrationStatus
    since: Timestamp
    requestId: str | None = None
    seq: int | None = None


class WaitlistHead(Record):
    userId: str
    seq: int


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    nextToken: str | None = None


# --- workflow outcomes -----------------------------------------------------------------


class RegisterResult(Record):
    eventId: str
    userId: str
    status: RegistrationStatus
    position: int | None = None


class UnregisterResult(Record):
    eventId: str
    userId: str
    status: Literal["unregistered", "left_waitlist"]
    promoted: str | None = None


# --- workflow state passed between tasks -----------------------------------------------


class WorkflowRequest(BaseModel):
    """What API Gateway (or an operator) starts a workflow with: `userId` is the user
    acted on, `caller` who asks (from the verified token, never from the body)."""

    model_config = ConfigDict(extra="ignore")

    eventId: EventId
    userId: UserId
    requestId: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    caller: Caller


class ValidateInput(WorkflowRequest):
    operation: Literal["register", "unregister"]


class CapacityAction(StrEnum):
    """What `CheckCapacity` decides; the register workflow's `SeatOrWaitlist` branches on it."""

    SEAT = "seat"  # -> TakeSeat
    WAITLIST = "waitlist"  # -> JoinWaitlist
    FULL = "full"  # -> EventFull


class RegistrationAction(StrEnum):
    """What `CheckRegistration` decides; the unregister workflow's `WhatToRemove` branches on it."""

    UNREGISTER = "unregister"  # -> Unregister
    PROMOTE = "promote"  # -> PromoteFromWaitlist
    LEAVE_WAITLIST = "leave_waitlist"  # -> LeaveWaitlist
    NOT_REGISTERED = "not_registered"  # -> NotRegistered


class CapacityCheck(Record):
    """The `CheckCapacity` task's answer (`$.decision` of a register execution)."""

    action: CapacityAction
    attempt: int = Field(ge=1)
    event: EventState
    decidedAt: Timestamp


class RegistrationCheck(Record):
    """The `CheckRegistration` task's answer (`$.decision` of an unregister execution)."""

    action: RegistrationAction
    attempt: int = Field(ge=1)
    event: EventState
    decidedAt: Timestamp
    seq: int | None = None
    head: WaitlistHead | None = None


class _KeyedState(WorkflowRequest):
    idempotencyKey: str | None = None

    @property
    def claim_key(self) -> str | None:
        """The key's record: the key as its caller sent it (see `scoped_key`)."""
        return None if self.idempotencyKey is None else scoped_key(self.idempotencyKey, self.caller.userId)


class RegisterState(_KeyedState):
    event: EventState
    decision: CapacityCheck | None = None


class UnregisterState(_KeyedState):
    event: EventState
    decision: RegistrationCheck | None = None


# --- idempotent requests ---------------------------------------------------------------

IdempotencyKey = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$"),
    Field(
        description="1 to 128 letters, digits, '-', '_', '.' or ':' (a UUID is a good key)",
        examples=["4f1c2a9e-8d3b-4c5e-9a7f-0b6d2e1c3f4a"],
    ),
]
IdempotencyStatus = Literal["IN_PROGRESS", "COMPLETED"]


def scoped_key(key: str, caller_id: str) -> str:
    """A key belongs to the caller who sent it: the same key from another caller is
    another request. A key has no '#', so the two parts never run together."""
    return f"{key}#{caller_id}"


class StoredResponse(Record):
    """What the first request answered, replayed as is. The body is kept as the JSON text
    that was sent (a DynamoDB map would not keep its keys' order), so a replay answers the
    same bytes. A workflow's failure also keeps its error code and cause, so a replayed
    execution fails exactly as the first did."""

    statusCode: int
    body: str
    error: str | None = None
    cause: str | None = None

    @field_validator("body", mode="before")
    @classmethod
    def _text(cls, body: Any) -> Any:
        # Records written before bodies were kept as text held a map.
        return json_text(body) if isinstance(body, dict) else body

    def document(self) -> Any:
        return json.loads(self.body)


class IdempotencyRecord(Record):
    key: str
    fingerprint: str
    status: IdempotencyStatus
    requestId: str
    createdAt: Timestamp
    leaseExpiresAt: int = Field(
        description="Epoch seconds after which a retry may take an unfinished request over"
    )
    expiresAt: int = Field(description="Epoch seconds; the table's TTL attribute")
    response: StoredResponse | None = None


class Completion(Record):
    """The answer a keyed request's write stores on its claim, in the same transaction as
    the write: either both happen or neither does."""

    key: str
    requestId: str
    response: StoredResponse


class ClaimInput(WorkflowRequest):
    """A workflow started with an `Idempotency-Key`."""

    idempotencyKey: IdempotencyKey
    operation: Literal["register", "unregister"]

    @property
    def claim_key(self) -> str:
        return scoped_key(self.idempotencyKey, self.caller.userId)


class ClaimResult(Record):
    """`replay` false: run the workflow. True: end as the first execution ended."""

    replay: bool
    succeeded: bool | None = None
    output: dict[str, Any] | None = None
    error: str | None = None
    cause: str | None = None


class CaughtError(BaseModel):
    """An error as a Step Functions Catch records it."""

    Error: str
    Cause: str | None = None


class RecordFailureInput(ClaimInput):
    """What `RecordFailure` stores: the error a keyed execution ended with."""

    error: CaughtError


# --- HTTP API --------------------------------------------------------------------------


class RegisterRequest(_Input):
    """Body of `POST /events/{eventId}/register` (API Gateway's request model is built from it)."""

    userId: UserId


class FieldError(BaseModel):
    field: str = Field(description="The offending field (`body` for the body as a whole)")
    message: str
    type: str | None = Field(default=None, description="Machine-readable reason, e.g. `string_too_long`")


class ErrorBody(BaseModel):
    """Every error response: a stable code and a human sentence; 422s also list the fields."""

    # Whole examples: a generated one would give a 404 the 422's `fields`.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"error": "EventNotFound", "message": "Event evt-2026-keynote does not exist"},
                {
                    "error": "ValidationError",
                    "message": "Invalid input: capacity: Input should be a valid integer",
                    "fields": [
                        {
                            "field": "capacity",
                            "message": "Input should be a valid integer",
                            "type": "int_type",
                        }
                    ],
                },
            ]
        }
    )

    error: str = Field(description="Stable error code, e.g. `EventFull`", examples=["EventNotFound"])
    message: str = Field(description="A sentence for humans; its wording may change")
    fields: list[FieldError] | None = Field(default=None, description="Only on 422 ValidationError")


# --- health ----------------------------------------------------------------------------

HealthStatus = Literal["ok", "down"]


class ComponentHealth(BaseModel):
    status: HealthStatus
    detail: str | None = Field(default=None, description="Why it is down (an error code)")


class Health(BaseModel):
    """`GET /health`: 200 when the table answers and every workflow is there to run, else 503."""

    status: HealthStatus
    database: ComponentHealth
    workflows: dict[str, ComponentHealth] = Field(description="By workflow: register, unregister")


# --- webhook subscriptions -----------------------------------------------------------------

WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_SECRET_BYTES = 24
MAX_WEBHOOK_URL_LENGTH = 2048

WebhookUrl = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=MAX_WEBHOOK_URL_LENGTH),
    Field(description="https:// (locally also http://127.0.0.1 or http://localhost)"),
]


class NewWebhook(BaseModel):
    """`POST /webhooks`: the URL, which event types (all without), which event (all without)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: WebhookUrl
    types: list[EventType] | None = Field(default=None, min_length=1, max_length=16)
    eventId: EventId | None = None

    @field_validator("types")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        return sorted(set(value)) if value is not None else None


class Webhook(BaseModel):
    """A subscription as stored and listed (its secret is shown once, when created)."""

    model_config = ConfigDict(extra="ignore")

    webhookId: str
    url: str
    types: list[str] | None = None
    eventId: str | None = None
    ownerId: str
    createdAt: Timestamp

    def wants(self, detail: Mapping[str, Any]) -> bool:
        """Whether a domain event is this subscription's: of its types and event, and
        committed after it was created (times are ISO 8601 UTC, so they sort as text)."""
        return (
            (self.types is None or detail["type"] in self.types)
            and self.eventId in (None, detail["eventId"])
            and str(detail["occurredAt"]) >= self.createdAt
        )


class CreatedWebhook(Webhook):
    secret: str


class StoredWebhook(Webhook):
    """What the deliveries read: the subscription with its secret."""

    secret: str


def new_webhook_secret() -> str:
    """A subscription's signing secret, in the Standard Webhooks form (`whsec_` + base64)."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(WEBHOOK_SECRET_BYTES)).decode()
