"""The domain's models: one definition per concept, shared by the API, the tasks and the data layer."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

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
Capacity = Annotated[int, Field(strict=True, ge=0, le=MAX_CAPACITY)]
Timestamp = Annotated[
    str, Field(description="ISO 8601, UTC, millisecond precision", json_schema_extra={"format": "date-time"})
]

RegistrationStatus = Literal["registered", "waitlisted"]


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


class User(Record):
    userId: str
    name: str
    createdAt: Timestamp


# --- events ----------------------------------------------------------------------------


class NewEvent(_Input):
    eventId: EventId | None = Field(default=None, description="Generated when absent")
    title: DisplayText
    capacity: Capacity
    hasWaitlist: bool = Field(default=False, strict=True)


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


class EventState(Event):
    """An event as the decisions see it: the public fields plus the waitlist sequence.

    `waitlistSeq` is the sequence number of the last waitlist slot handed out; it only
    grows, so a new entry always lands behind every existing one.
    """

    waitlistSeq: int = 0

    def public(self) -> Event:
        return Event.model_validate(self.model_dump(exclude={"waitlistSeq"}))


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
