"""Idempotent requests: a POST or DELETE sent with an `Idempotency-Key` runs at most once.

The first request with a key claims it (one conditioned write). A request that changes
the table stores its answer on the claim in the same transaction as its change
(`completion`), so a crash can never leave a change without its answer: the claim is
either still in progress with the table untouched, or complete. A request that ends
without a change (a refusal) stores its answer after (`finish`). Within
`RETENTION_SECONDS`:

* the same request again gets the stored answer, byte for byte, and changes nothing;
* a different request with the same key is refused (`IdempotencyKeyReused`, 422);
* any request with the key while the first is still running is refused
  (`RequestInProgress`, 409).

"The same request" is decided by a fingerprint of what the request asks for (route,
path ids, body), not of how it was sent. Business answers (2xx, 4xx) are stored; a
failure of ours (5xx) releases the claim instead, so a retry runs the request again. A
claim whose request died without either (a crash, a timed-out execution) changed nothing,
and can be taken over by the same request once its lease has run out; the first run's
write, were it still alive, would then fail its condition on the claim.

The register and unregister workflows call this from their first and last tasks (API
Gateway starts them directly, so no Lambda sits in front); the API Lambda calls it around
its routes. Both keep one record format in the single table.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from registration import outcomes
from registration.data import RegistrationStore
from registration.data.dynamo import now_iso
from registration.errors import IdempotencyKeyReused, RequestInProgress, ValidationError
from registration.models import (
    CaughtError,
    ClaimResult,
    Completion,
    IdempotencyKey,
    IdempotencyRecord,
    StoredResponse,
    json_text,
    scoped_key,
)
from registration.observability import count, logger
from registration.validation import field_errors

HEADER = "Idempotency-Key"
RETENTION_SECONDS = 24 * 60 * 60
# Longer than anything a request may run: an Express workflow stops after 26 s, the
# API Lambda after 10 s. Until then a second request is told to wait, never run twice.
LEASE_SECONDS = 90
# Ours to fix, not the caller's: the claim is released and a retry runs the request again.
RETRYABLE_STATUS = 500


def fingerprint(*parts: Any) -> str:
    """A digest of what a request asks for; parts are JSON values (dict keys are sorted)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def workflow_fingerprint(operation: str, event_id: str, user_id: str) -> str:
    return fingerprint("workflow", operation, event_id, user_id)


def begin(
    store: RegistrationStore, key: str, caller_id: str, request_fingerprint: str, request_id: str
) -> StoredResponse | None:
    """Claim `key`, as `caller_id` sent it, for this request: None to go ahead, or the
    first request's answer. The record is the caller's own (`scoped_key`): the same key
    from another caller is another request.

    Raises `IdempotencyKeyReused` or `RequestInProgress` when the key is not this
    request's to run or replay.
    """
    now = int(time.time())
    claim = IdempotencyRecord(
        key=scoped_key(key, caller_id),
        fingerprint=request_fingerprint,
        status="IN_PROGRESS",
        requestId=request_id,
        createdAt=now_iso(),
        leaseExpiresAt=now + LEASE_SECONDS,
        expiresAt=now + RETENTION_SECONDS,
    )
    held = store.claim_request(claim, now)
    if held is None:
        return None
    if held.fingerprint != request_fingerprint:
        count("IdempotencyKeyReused")
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key} was used for a different request; send a new key for a new request"
        )
    if held.status != "COMPLETED" or held.response is None:
        count("RequestsInProgress")
        raise RequestInProgress(
            f"The first request with Idempotency-Key {key} is still running; retry in a few seconds"
        )
    count("IdempotentReplays")
    logger.info("idempotent replay", extra={"idempotencyKey": key, "firstRequestId": held.requestId})
    return held.response


@dataclass
class Claim:
    """A key this request holds while a route runs; `recorded` once the route's write
    carries the answer (so the answer needs no record of its own)."""

    key: str
    requestId: str
    recorded: bool = False

    def answer(self, status: int) -> Callable[[BaseModel], Completion | None]:
        """What a write stores on this claim: `status` and the written model as the body."""

        def completion_for(model: BaseModel) -> Completion | None:
            self.recorded = True
            return completion(self.key, self.requestId, status, model.model_dump(mode="json"))

        return completion_for


def completion(key: str | None, request_id: str, status: int, document: Any) -> Completion | None:
    """What a keyed request's write stores on its claim: its answer (None without a key)."""
    if key is None:
        return None
    return Completion(
        key=key, requestId=request_id, response=StoredResponse(statusCode=status, body=json_text(document))
    )


def stored_answer(store: RegistrationStore, key: str) -> Any:
    """The body a keyed request's earlier, committed write stored (a retried task's
    answer); `key` is the claim's (`scoped_key`)."""
    record = store.get_request(key)
    if record is None or record.response is None:
        raise RequestInProgress(
            "The request with this Idempotency-Key has no answer yet; retry in a few seconds"
        )
    return record.response.document()


def finish(store: RegistrationStore, key: str, request_id: str, response: StoredResponse) -> None:
    """Store the answer for replays, or release the claim when the failure was ours."""
    if response.statusCode >= RETRYABLE_STATUS:
        store.release_request(key, request_id)
        return
    if not store.complete_request(key, request_id, response, now_iso()):
        # Only after our lease ran out and the same request took the claim over.
        logger.warning("idempotency claim taken over", extra={"idempotencyKey": key, "requestId": request_id})


# --- workflows ---------------------------------------------------------------------------


def claim_request(
    store: RegistrationStore,
    key: str,
    caller_id: str,
    operation: str,
    event_id: str,
    user_id: str,
    request_id: str,
) -> ClaimResult:
    stored = begin(store, key, caller_id, workflow_fingerprint(operation, event_id, user_id), request_id)
    if stored is None:
        return ClaimResult(replay=False)
    if stored.error is None:
        return ClaimResult(replay=True, succeeded=True, output=stored.document())
    return ClaimResult(replay=True, succeeded=False, error=stored.error, cause=stored.cause or "")


def record_failure(
    store: RegistrationStore, key: str, request_id: str, operation: str, error: CaughtError
) -> StoredResponse:
    """How a keyed execution failed, stored for its replays (the `RecordFailure` state;
    a success is stored by the write that produced it)."""
    response = failure_response(operation, error)
    finish(store, key, request_id, response)
    return response


def failure_response(operation: str, error: CaughtError) -> StoredResponse:
    """What the HTTP caller got from a failed execution, in storable form."""
    status, body = outcomes.workflow_response(operation, "FAILED", None, error.Error, error.Cause)
    return StoredResponse(statusCode=status, body=json_text(body), error=error.Error, cause=error.Cause or "")


# --- the API Lambda ----------------------------------------------------------------------

_KEY = TypeAdapter(IdempotencyKey)


def header_value(headers: Iterable[tuple[str, Any]]) -> str | None:
    """The `Idempotency-Key` header among (name, value) pairs: the name matched
    case-insensitively, as API Gateway does, and the last one sent."""
    found = None
    for name, value in headers:
        if str(name).lower() == HEADER.lower():
            found = value
    return None if found is None else str(found)


def parse_key(value: str | None) -> str | None:
    """The `Idempotency-Key` header's value: None when absent or empty (API Gateway's
    request templates cannot tell the two apart), a ValidationError naming the header
    when malformed."""
    if not value:
        return None
    try:
        return _KEY.validate_python(value)
    except PydanticValidationError as exc:
        fields = [{**field, "field": HEADER} for field in field_errors(exc)]
        summary = "; ".join(f"{HEADER}: {f['message']}" for f in fields)
        raise ValidationError(f"Invalid input: {summary}", fields=fields) from None


def request_fingerprint(
    method: str, route: str, path_parameters: dict[str, str] | None, body: str | None
) -> str:
    """What an HTTP request asks for: method, route, path ids and body. A JSON body counts
    as its value (spacing and key order do not matter), any other body as its text."""
    content: Any = None
    if body:
        try:
            content = ["json", json.loads(body)]
        except ValueError:
            content = ["text", body]
    return fingerprint("http", method.upper(), route, dict(path_parameters or {}), content)
