"""Domain errors. Each class name is the stable code the workflows and the API map.

Lambda reports a raised exception's class name as its error type, and Step Functions
Catch/Retry match on that name: renaming a class here is an API change.
"""

from __future__ import annotations

from typing import Any, ClassVar

# Every domain error by its code, filled as the classes below are defined.
ERRORS: dict[str, type[DomainError]] = {}


class DomainError(Exception):
    """An outcome the caller can act on; `code` never changes meaning."""

    code: ClassVar[str] = "DomainError"
    http_status: ClassVar[int] = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.code = cls.__name__
        ERRORS[cls.code] = cls


# A 422 lists at most this many field errors; one more entry counts the rest.
MAX_FIELD_ERRORS = 20
TOO_MANY_ERRORS = "too_many_errors"


def capped_fields(fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first MAX_FIELD_ERRORS field errors, plus one entry saying how many were left out."""
    already_capped = len(fields) == MAX_FIELD_ERRORS + 1 and fields[-1].get("type") == TOO_MANY_ERRORS
    if len(fields) <= MAX_FIELD_ERRORS or already_capped:
        return list(fields)
    left_out = len(fields) - MAX_FIELD_ERRORS
    more = {"field": "body", "message": f"{left_out} more errors not listed", "type": TOO_MANY_ERRORS}
    return [*fields[:MAX_FIELD_ERRORS], more]


def invalid_input(fields: list[dict[str, Any]]) -> ValidationError:
    """The 422 for a list of field errors: the message names the (capped) fields."""
    shown = capped_fields(fields)
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in shown)
    return ValidationError(f"Invalid input: {summary}", fields=shown)


class ValidationError(DomainError):
    """Every 422 is built here: its field list is capped (see `capped_fields`)."""

    http_status = 422

    def __init__(self, message: str, fields: list[dict[str, Any]] | None = None) -> None:
        capped = capped_fields(fields or [])
        super().__init__(message, fields=capped)
        self.fields = capped


class UserNotFound(DomainError):
    http_status = 404


class EventNotFound(DomainError):
    http_status = 404


class WebhookNotFound(DomainError):
    http_status = 404


class NotRegistered(DomainError):
    http_status = 404


class UserAlreadyExists(DomainError):
    http_status = 409


class EventAlreadyExists(DomainError):
    http_status = 409


class AlreadyRegistered(DomainError):
    http_status = 409


class AlreadyWaitlisted(DomainError):
    http_status = 409


class EventFull(DomainError):
    http_status = 409


class EventCancelled(DomainError):
    """Registering for, or changing, an event its organizer cancelled."""

    http_status = 409


class RegistrationNotOpen(DomainError):
    """Registering before the event's `registrationOpensAt`."""

    http_status = 409


class RegistrationClosed(DomainError):
    """Registering from the event's `registrationClosesAt` on (leaving is always allowed)."""

    http_status = 409


class EventStarted(DomainError):
    """Registering once the event has started (`startsAt`)."""

    http_status = 409


class WaitlistNotEmpty(DomainError):
    """Turning an event's waitlist off while anyone is on it."""

    http_status = 409


class PreconditionFailed(DomainError):
    """An `If-Match` that names another version of the event than the current one."""

    http_status = 412


class ExportTooLarge(DomainError):
    """A CSV export larger than one API answer may carry."""

    http_status = 413


class ContentionLimitExceeded(DomainError):
    """The decision was re-taken too many times in a row; the caller may retry later."""

    http_status = 503


class DecisionStale(DomainError):
    """A transaction was cancelled because the event changed since the decision.

    Workflows catch it and go back to the decision step; it never reaches a user.
    """

    http_status = 409


class TransientDatabaseError(DomainError):
    """Throttling or conflicts that outlived the in-task retries; workflows retry it."""

    http_status = 503


class IdempotencyKeyReused(DomainError):
    """The `Idempotency-Key` was first used for a different request."""

    http_status = 422


class RequestInProgress(DomainError):
    """The first request with this `Idempotency-Key` has not finished yet; retry shortly."""

    http_status = 409


class Unauthorized(DomainError):
    """The request names no signed-in caller (API Gateway's authorizer answers most of these)."""

    http_status = 401


class Forbidden(DomainError):
    """A signed-in caller asked for something the ownership rules (`registration.access`) refuse."""

    http_status = 403
