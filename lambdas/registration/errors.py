"""Domain errors. Each class name is the stable code the workflows and the API map.

Lambda reports a raised exception's class name as its error type, and Step Functions
Catch/Retry match on that name: renaming a class here is an API change.
"""

from __future__ import annotations

from typing import Any, ClassVar


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


class ValidationError(DomainError):
    http_status = 422

    def __init__(self, message: str, fields: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, fields=fields or [])
        self.fields = fields or []


class UserNotFound(DomainError):
    http_status = 404


class EventNotFound(DomainError):
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


ERRORS: dict[str, type[DomainError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        UserNotFound,
        EventNotFound,
        NotRegistered,
        UserAlreadyExists,
        EventAlreadyExists,
        AlreadyRegistered,
        AlreadyWaitlisted,
        EventFull,
        ContentionLimitExceeded,
        DecisionStale,
        TransientDatabaseError,
        IdempotencyKeyReused,
        RequestInProgress,
    )
}
