"""The API Lambda: every HTTP route that is not a workflow (users, events, listings).

Thin on purpose: Powertools validates the request against the shared models, the data
layer decides, and domain errors become the documented `{"error", "message"}` bodies.
The register and unregister routes never come here: API Gateway starts their
workflows directly (see `infrastructure.names.WORKFLOW_ROUTES`).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, NoReturn, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import (
    OpenAPIResponse,
    OpenAPIResponseContentModel,
    OpenAPIResponseContentSchema,
)
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from registration import (
    access,
    bounded_json,
    cancellation,
    erasure,
    event_changes,
    exports,
    health,
    idempotency,
    outcomes,
    webhooks,
)
from registration.api_responses import IDEMPOTENCY_ERRORS, error_responses
from registration.data import RegistrationStore, get_store
from registration.data.pages import MAX_PAGE
from registration.errors import DomainError, TransientDatabaseError, ValidationError, invalid_input
from registration.models import (
    CancelledEvent,
    Completion,
    CreatedWebhook,
    ErasureStarted,
    ErrorBody,
    Event,
    EventChange,
    EventId,
    EventPatch,
    EventState,
    Health,
    Identifier,
    Instant,
    NewEvent,
    NewUser,
    NewWebhook,
    Page,
    Registration,
    RegistrationView,
    StoredResponse,
    User,
    UserId,
    UserPatch,
    UserRegistration,
    WaitlistEntry,
    Webhook,
    scoped_key,
)
from registration.observability import logger, tracer
from registration.outcomes import INTERNAL_ERROR, INTERNAL_MESSAGE, UNRECORDED_ANSWER_MESSAGE
from registration.settings import Settings
from registration.validation import malformed_json

DEFAULT_PAGE = 25
ROUTE_NOT_FOUND = "RouteNotFound"
REQUEST_ID_HEADER = outcomes.REQUEST_ID_HEADER
# Methods that honour the `Idempotency-Key` header.
IDEMPOTENT_METHODS = frozenset({"POST", "DELETE"})

# Bodies are parsed within bounds (nesting, integer size): beyond them they are malformed JSON.
# Where `_idempotent` hands a route the key it holds (the resolver clears it after each request).
CLAIM_CONTEXT = "idempotencyClaim"
app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=bounded_json.loads)

# --- parameters ------------------------------------------------------------------------

UserIdPath = Annotated[UserId, Path()]
EventIdPath = Annotated[EventId, Path()]
WebhookIdPath = Annotated[Identifier, Path()]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Page size, 1 to {MAX_PAGE}")]
NextToken = Annotated[
    str | None,
    Query(min_length=1, max_length=4096, description="The `nextToken` of the previous page"),
]
EventT = TypeVar("EventT", bound=Event)
IfMatch = Annotated[
    str | None,
    Header(
        alias=event_changes.IF_MATCH_HEADER,
        max_length=1024,
        description='The ETag of the version changed (`"3"`); another current version is a 412',
    ),
]
StartsFrom = Annotated[
    Instant | None,
    Query(alias="from", description="Only events starting at or after this time (ISO 8601 with its offset)"),
]


def _responses(status: int, description: str, *codes: str) -> dict[int, OpenAPIResponse]:
    """The success response (documented from the return annotation) and the error ones."""
    errors = error_responses((*codes, "TransientDatabaseError"))
    body: dict[str, OpenAPIResponseContentSchema | OpenAPIResponseContentModel] = {
        content_types.APPLICATION_JSON: {"model": ErrorBody}
    }
    return {
        status: {"description": description},
        **{code: {"description": r["description"], "content": body} for code, r in errors.items()},
    }


def _with_csv(responses: dict[int, OpenAPIResponse], page: Any) -> dict[int, OpenAPIResponse]:
    """A listing's 200 also in CSV (`Accept: text/csv`)."""
    responses[200]["content"] = {
        content_types.APPLICATION_JSON: {"model": page},
        exports.CSV: {"schema": {"type": "string", "description": "A header line, then one line a row"}},
    }
    return responses


def _keyed_answer(status: int) -> Callable[[Any], Completion | None] | None:
    """With an `Idempotency-Key`, what the route's write stores as its answer (see `_idempotent`)."""
    claim: idempotency.Claim | None = app.context.get(CLAIM_CONTEXT)
    return claim.answer(status) if claim else None


def _caller(event: dict[str, Any] | None = None) -> access.Caller:
    """Who is calling: the claims API Gateway's Cognito authorizer verified (the local
    server verifies them the same way). `Unauthorized` without any."""
    raw = app.current_event.raw_event if event is None else event
    authorizer = (raw.get("requestContext") or {}).get("authorizer") or {}
    return access.caller_from_claims(authorizer.get("claims") if isinstance(authorizer, dict) else None)


def _request_id() -> str:
    """API Gateway's id of this request (the Lambda invocation's where there is none)."""
    raw = app.current_event.raw_event
    found = (raw.get("requestContext") or {}).get("requestId")
    return str(found or app.lambda_context.aws_request_id)


def _may_create_user(caller: access.Caller, user_id: str) -> None:
    access.require_self_or_admin(caller, user_id, f"create user {user_id}")


def _may_create_event(caller: access.Caller) -> None:
    access.require_organizer(caller, "create events")


def _refuse_before_claim(event: dict[str, Any]) -> access.Caller:
    """A keyed write's caller, refused (`Unauthorized`, `Forbidden`) before the key is
    claimed, so that a refused request writes nothing. A body too malformed to say
    which user it creates is left to the route (a 422, as without a key)."""
    caller = _caller(event)
    route = (str(event.get("httpMethod", "")).upper(), str(event.get("resource", "")))
    if route == ("POST", "/events"):
        _may_create_event(caller)
    elif route == ("DELETE", "/users/{userId}"):
        erased = str((event.get("pathParameters") or {}).get("userId") or "")
        access.require_self_or_admin(caller, erased, f"erase user {erased}")
    elif route == ("POST", "/events/{eventId}/cancel"):
        event_id = str((event.get("pathParameters") or {}).get("eventId") or "")
        _may_manage(caller, event_id, "cancel event")
    elif route == ("POST", "/webhooks"):
        _may_subscribe(caller, _event_id_in(_body_text(event)))
    elif route == ("POST", "/users"):
        try:
            body = bounded_json.loads(_body_text(event) or "null")
        except (ValueError, RecursionError):
            body = None
        user_id = body.get("userId") if isinstance(body, dict) else None
        if isinstance(user_id, str):
            _may_create_user(caller, user_id)
    return caller


def _may_subscribe(caller: access.Caller, event_id: str | None) -> None:
    """The caller may subscribe to `event_id`'s events (the event is read only when an
    organizer names one)."""
    organizer = None
    if caller.is_organizer and not caller.is_admin and event_id is not None:
        found = get_store().find_event(event_id)
        organizer = found.organizerId if found else None
    webhooks.require_may_subscribe(caller, event_id, organizer)


def _event_id_in(body: str | None) -> str | None:
    """The `eventId` a body names (None for a body too malformed to say: the route answers 422)."""
    try:
        document = bounded_json.loads(body or "null")
    except (ValueError, RecursionError):
        return None
    event_id = document.get("eventId") if isinstance(document, dict) else None
    return event_id if isinstance(event_id, str) else None


def _require_object_body() -> None:
    """Powertools validates the first element of a list body (a rule meant for form
    fields), so `[{...}]` would pass as `{...}`: refuse anything but an object."""
    if not isinstance(app.current_event.json_body, dict):
        message = "Input should be a JSON object"
        field = {"field": "body", "message": message, "type": "model_type"}
        raise ValidationError(f"Invalid input: body: {message}", fields=[field])


# --- users -----------------------------------------------------------------------------


@app.post(
    "/users",
    status_code=201,
    summary="Create a user",
    operation_id="createUser",
    tags=["users"],
    responses=_responses(201, "The user as stored", "UserAlreadyExists", *IDEMPOTENCY_ERRORS),
)
def create_user(user: NewUser) -> User:
    _require_object_body()
    _may_create_user(_caller(), user.userId)
    created = get_store().create_user(user, _keyed_answer(201))
    logger.info("user created", extra={"userId": created.userId})
    return created


@app.get(
    "/users",
    summary="List users",
    operation_id="listUsers",
    tags=["users"],
    responses=_responses(200, "A page of users"),
)
def list_users(limit: Limit = DEFAULT_PAGE, nextToken: NextToken = None) -> Page[User]:
    access.require_admin(_caller(), "list users")
    return get_store().list_users(limit, nextToken)


@app.get(
    "/users/<userId>",
    summary="Read a user",
    operation_id="getUser",
    tags=["users"],
    responses=_responses(200, "The user", "UserNotFound"),
)
def get_user(userId: UserIdPath) -> User:
    access.require_self_or_admin(_caller(), userId, f"read user {userId}")
    return get_store().get_user(userId)


@app.patch(
    "/users/<userId>",
    summary="Change a user",
    description="A JSON merge patch of `name` and `email` (a null removes the email); for the user and admins.",
    operation_id="changeUser",
    tags=["users"],
    responses=_responses(200, "The user as changed", "UserNotFound"),
)
def change_user(userId: UserIdPath, patch: UserPatch) -> User:
    _require_object_body()
    access.require_self_or_admin(_caller(), userId, f"change user {userId}")
    changed = get_store().change_user(userId, patch.changes())
    logger.info("user changed", extra={"userId": userId, "fields": sorted(patch.changes())})
    return changed


@app.delete(
    "/users/<userId>",
    status_code=202,
    summary="Erase a user",
    description=(
        "The user's name and email are removed at once, and from then on the user reads as one that "
        "does not exist and nothing registers them. The erase workflow (a Standard execution named in "
        "the answer) then releases every seat (the waitlist's head gets it) and waitlist place they "
        "hold, each with `reason: user_erased`, deletes their idempotency records and, last, the user: "
        "the id may then be created again. Erasing again answers the same run. For the user and admins."
    ),
    operation_id="eraseUser",
    tags=["users"],
    responses=_responses(
        202, "The user, being erased, and the run erasing them", "UserNotFound", *IDEMPOTENCY_ERRORS
    ),
)
def erase_user(userId: UserIdPath) -> ErasureStarted:
    access.require_self_or_admin(_caller(), userId, f"erase user {userId}")
    since = erasure.mark(get_store(), userId)
    execution = erasure.start(userId, since, _request_id())
    logger.info("user erasure started", extra={"userId": userId, "execution": execution})
    return ErasureStarted(userId=userId, erasingSince=since, execution=execution)


@app.get(
    "/users/<userId>/registrations",
    summary="Events a user is registered or waitlisted for",
    operation_id="listUserRegistrations",
    tags=["users"],
    responses=_responses(200, "A page of the user's seats and waitlist places", "UserNotFound"),
)
def list_user_registrations(
    userId: UserIdPath, limit: Limit = DEFAULT_PAGE, nextToken: NextToken = None
) -> Page[UserRegistration]:
    access.require_self_or_admin(_caller(), userId, f"read the registrations of user {userId}")
    store = get_store()
    store.get_user(userId)  # 404 for an unknown user, even with nothing to list
    return store.list_user_registrations(userId, limit, nextToken)


# --- events ----------------------------------------------------------------------------


@app.post(
    "/events",
    status_code=201,
    summary="Create an event",
    description="The id is generated when absent; the event starts with no one registered.",
    operation_id="createEvent",
    tags=["events"],
    responses=_responses(201, "The event as stored", "EventAlreadyExists", *IDEMPOTENCY_ERRORS),
)
def create_event(event: NewEvent) -> Event:
    _require_object_body()
    caller = _caller()
    _may_create_event(caller)
    created = get_store().create_event(
        event, _keyed_answer(201), organizer_id=caller.userId, request_id=_request_id()
    )
    logger.info("event created", extra={"eventId": created.eventId, "capacity": created.capacity})
    return created


@app.get(
    "/events",
    summary="List events",
    description=(
        "Events with a start time by start time, then the others by id; `from` keeps the "
        "events starting then or later."
    ),
    operation_id="listEvents",
    tags=["events"],
    responses=_responses(200, "A page of events"),
)
def list_events(
    limit: Limit = DEFAULT_PAGE,
    nextToken: NextToken = None,
    from_: StartsFrom = None,
) -> Page[Event]:
    _caller()  # any signed-in caller
    return get_store().list_events(limit, nextToken, starts_from=from_)


@app.get(
    "/events/<eventId>",
    summary="Read an event",
    operation_id="getEvent",
    tags=["events"],
    responses=_responses(200, "The event with its registered and waitlist counts", "EventNotFound"),
)
def get_event(eventId: EventIdPath) -> Response[Event]:
    _caller()  # any signed-in caller
    event = get_store().get_event(eventId)
    return _with_etag(event.public(), event)


@app.patch(
    "/events/<eventId>",
    summary="Change an event",
    description=(
        "A JSON merge patch of the event's own fields (a null removes an optional one). "
        "Added seats go to the waitlist's heads at once, in order; lowering the capacity "
        "evicts nobody. With `If-Match`, only the version it names is changed. For the "
        "event's organizer and admins."
    ),
    operation_id="changeEvent",
    tags=["events"],
    responses=_responses(
        200,
        "The event as changed, with its new ETag, and who got the added seats",
        "EventNotFound",
        "EventCancelled",
        "WaitlistNotEmpty",
        "PreconditionFailed",
        "ContentionLimitExceeded",
    ),
)
def change_event(eventId: EventIdPath, patch: EventPatch, if_match: IfMatch = None) -> Response[EventChange]:
    _require_object_body()
    expected = event_changes.versions_matching(if_match)
    store = _managed_event(eventId, "change event")
    outcome = event_changes.change_event(store, eventId, patch, expected, _request_id())
    logger.info(
        "event changed",
        extra={"eventId": eventId, "fields": sorted(patch.changes()), "promoted": len(outcome.promoted)},
    )
    answer = EventChange(**outcome.event.public().model_dump(), promoted=outcome.promoted)
    return _with_etag(answer, outcome.event)


def _with_etag(body: EventT, event: EventState) -> Response[EventT]:
    """200 with the event's version as its ETag (what `If-Match` names)."""
    headers = {"ETag": event_changes.entity_tag(event)}
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=body, headers=headers)


@app.get(
    "/events/<eventId>/registrations",
    summary="Users registered for an event",
    operation_id="listRegistrations",
    tags=["registrations"],
    description="With `Accept: text/csv`, every seat in one CSV answer (an export).",
    responses=_with_csv(
        _responses(
            200, "A page of the event's seats (or all of them as CSV)", "EventNotFound", "ExportTooLarge"
        ),
        Page[Registration],
    ),
)
def list_registrations(
    eventId: EventIdPath, limit: Limit = DEFAULT_PAGE, nextToken: NextToken = None
) -> Page[Registration]:
    store = _managed_event(eventId, "list the seats of event")
    if _wants_csv():
        rows = exports.every_page(lambda token: store.list_registrations(eventId, exports.EXPORT_PAGE, token))
        _export(eventId, "registrations", rows, list(Registration.model_fields))
    return store.list_registrations(eventId, limit, nextToken)


@app.get(
    "/events/<eventId>/waitlist",
    summary="An event's waitlist, first come first served",
    operation_id="listWaitlist",
    tags=["registrations"],
    description="With `Accept: text/csv`, the whole waitlist in one CSV answer (an export).",
    responses=_with_csv(
        _responses(
            200,
            "A page of the waitlist in FIFO order; positions are 1-based (or all of it as CSV)",
            "EventNotFound",
            "ExportTooLarge",
        ),
        Page[WaitlistEntry],
    ),
)
def list_waitlist(
    eventId: EventIdPath, limit: Limit = DEFAULT_PAGE, nextToken: NextToken = None
) -> Page[WaitlistEntry]:
    store = _managed_event(eventId, "list the waitlist of event")
    if _wants_csv():
        rows = exports.every_page(lambda token: store.list_waitlist(eventId, exports.EXPORT_PAGE, token))
        _export(eventId, "waitlist", rows, list(WaitlistEntry.model_fields))
    return store.list_waitlist(eventId, limit, nextToken)


@app.post(
    "/events/<eventId>/cancel",
    status_code=202,
    summary="Cancel an event",
    description=(
        "No registration is taken from now on; every seat and waitlist place is released by the "
        "cancel workflow (a Standard execution named in the answer), each a "
        "`registration.unregistered` with `reason: event_cancelled`. Cancelling again answers "
        "the same run. For the event's organizer and admins."
    ),
    operation_id="cancelEvent",
    tags=["events"],
    responses=_responses(
        202, "The event, cancelled, and the run releasing its seats", "EventNotFound", *IDEMPOTENCY_ERRORS
    ),
)
def cancel_event(eventId: EventIdPath) -> CancelledEvent:
    store = _managed_event(eventId, "cancel event")
    event = cancellation.cancel(store, eventId)
    execution = cancellation.start_release(eventId, _request_id())
    logger.info("event cancelled", extra={"eventId": eventId, "execution": execution})
    return CancelledEvent(
        eventId=eventId,
        status=event.status,
        cancelledAt=event.cancelledAt or "",
        registeredCount=event.registeredCount,
        waitlistCount=event.waitlistCount,
        execution=execution,
    )


class _Exported(Exception):
    """A CSV answer of a listing route, whose return annotation (and so its response
    validation) is the JSON page: raised past the validation, answered as it is."""

    def __init__(self, response: Response[str]) -> None:
        super().__init__("exported")
        self.response = response


@app.exception_handler(_Exported)  # type: ignore[untyped-decorator]
def answer_export(exported: _Exported) -> Response[str]:
    return exported.response


def _wants_csv() -> bool:
    return exports.wants_csv(app.current_event.headers.get("accept"))


def _export(event_id: str, listing: str, rows: Iterator[Any], columns: list[str]) -> NoReturn:
    body = exports.to_csv(rows, columns, f"the {listing} of event {event_id}")
    logger.info("exported", extra={"eventId": event_id, "listing": listing, "bytes": len(body)})
    disposition = f'attachment; filename="{event_id}-{listing}.csv"'
    raise _Exported(
        Response(
            status_code=200,
            content_type=f"{exports.CSV}; charset=utf-8",
            body=body,
            headers={"Content-Disposition": disposition},
        )
    )


@app.get(
    "/events/<eventId>/registrations/<userId>",
    summary="Where one person stands at an event",
    description="Registered, or waitlisted with their position; for the person, the organizer and admins.",
    operation_id="getRegistration",
    tags=["registrations"],
    responses=_responses(200, "The person's seat or waitlist place", "EventNotFound", "NotRegistered"),
)
def get_registration(eventId: EventIdPath, userId: UserIdPath) -> RegistrationView:
    caller = _caller()
    store = get_store()
    organizer_id = None
    if access.acts_for_others(caller, userId):
        found = store.find_event(eventId)
        organizer_id = found.organizerId if found else None
    # A refusal comes before any not-found, so it tells nothing about what exists.
    access.require_may_act_for(
        caller, userId, organizer_id, f"read the registration of {userId} for event {eventId}"
    )
    return store.get_registration(eventId, userId)


def _managed_event(event_id: str, action: str) -> RegistrationStore:
    """The store, once the caller is found to manage the event (its organizer or an
    admin); a caller who could manage no event is refused before the event is read."""
    return _may_manage(_caller(), event_id, action)


def _may_manage(caller: access.Caller, event_id: str, action: str) -> RegistrationStore:
    what = f"{action} {event_id}"
    store = get_store()
    if caller.is_admin:
        return store
    if not caller.is_organizer:
        access.require_event_manager(caller, None, what)
    access.require_event_manager(caller, store.get_event(event_id).organizerId, what)
    return store


# --- webhooks ---------------------------------------------------------------------------


@app.post(
    "/webhooks",
    status_code=201,
    summary="Subscribe to domain events",
    description=(
        "Signed deliveries (Standard Webhooks) of the domain events of the given types (all "
        "without) of one event (all without; an organizer names one of their own). The "
        "secret is shown once, here."
    ),
    operation_id="createWebhook",
    tags=["webhooks"],
    responses=_responses(201, "The subscription and its signing secret", *IDEMPOTENCY_ERRORS),
)
def create_webhook(webhook: NewWebhook) -> CreatedWebhook:
    _require_object_body()
    caller = _caller()
    if app.context.get(CLAIM_CONTEXT) is None:  # a keyed request was checked before its claim
        _may_subscribe(caller, webhook.eventId)
    problem = webhooks.url_problem(webhook.url, allow_loopback_http=Settings.read().webhook_loopback_http)
    if problem is not None:
        raise invalid_input([{"field": "url", "message": problem}])
    created = get_store().create_webhook(webhook, caller.userId, _keyed_answer(201))
    logger.info("webhook created", extra={"webhookId": created.webhookId, "eventId": created.eventId})
    return created


@app.get(
    "/webhooks",
    summary="List webhook subscriptions",
    description="An admin sees every subscription, an organizer their own.",
    operation_id="listWebhooks",
    tags=["webhooks"],
    responses=_responses(200, "A page of subscriptions (without their secrets)"),
)
def list_webhooks(limit: Limit = DEFAULT_PAGE, nextToken: NextToken = None) -> Page[Webhook]:
    caller = _caller()
    webhooks.require_may_list(caller)
    page = get_store().list_webhooks(limit, nextToken)
    if caller.is_admin:
        return page
    return Page[Webhook](
        items=[w for w in page.items if w.ownerId == caller.userId], nextToken=page.nextToken
    )


@app.delete(
    "/webhooks/<webhookId>",
    summary="Remove a webhook subscription",
    description="Nothing more is delivered to it, retries included.",
    operation_id="deleteWebhook",
    tags=["webhooks"],
    responses=_responses(200, "The removed subscription", "WebhookNotFound", *IDEMPOTENCY_ERRORS),
)
def delete_webhook(webhookId: WebhookIdPath) -> Webhook:
    caller = _caller()
    webhooks.require_may_list(caller)
    store = get_store()
    found = store.get_webhook(webhookId)
    webhooks.require_may_remove(caller, found)
    store.delete_webhook(webhookId)
    logger.info("webhook removed", extra={"webhookId": webhookId})
    return found


# --- operations ------------------------------------------------------------------------


@app.get(
    "/health",
    summary="Whether the table answers and the workflows are there to run",
    operation_id="health",
    tags=["operations"],
    responses={
        200: {"description": "Everything answers"},
        503: {
            "description": "The table or a workflow is down (the body says which)",
            "content": {content_types.APPLICATION_JSON: {"model": Health}},
        },
        500: {
            "description": error_responses(())[500]["description"],
            "content": {content_types.APPLICATION_JSON: {"model": ErrorBody}},
        },
    },
)
def get_health() -> Response[Health]:
    status, report = health.check(get_store())
    if status != 200:
        logger.warning("unhealthy", extra=report.model_dump())
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=report)


# --- errors ----------------------------------------------------------------------------


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[dict[str, Any]]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers
    )


def error_body(error: DomainError) -> dict[str, Any]:
    return outcomes.error_body(error.code, error.message, getattr(error, "fields", None))


def error_response(error: DomainError) -> Response[dict[str, Any]]:
    return _json(error.http_status, error_body(error), outcomes.error_headers(error.code) or None)


def request_fields(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Powertools' validation errors as the API's field list (`loc` minus its location)."""
    fields = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ())]
        where = loc.pop(0) if loc and loc[0] in ("body", "query", "path", "header", "cookie") else "body"
        fields.append(
            {
                "field": ".".join(loc) or where,
                "message": str(err.get("msg", "invalid")),
                "type": str(err.get("type", "value_error")),
            }
        )
    return fields


@app.exception_handler(DomainError)  # type: ignore[untyped-decorator]
def handle_domain_error(error: DomainError) -> Response[dict[str, Any]]:
    logger.info("refused", extra={"error": error.code, "reason": error.message})
    return error_response(error)


@app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
def handle_request_validation(error: RequestValidationError) -> Response[dict[str, Any]]:
    errors = list(error.errors())
    if len(errors) == 1 and errors[0].get("type") == "json_invalid":
        detail = (errors[0].get("ctx") or {}).get("error") or "JSON decode error"
        validation = malformed_json(str(detail))
    else:
        validation = invalid_input(request_fields(errors))
    logger.info("invalid request", extra={"fields": validation.fields})
    return error_response(validation)


@app.exception_handler(UnicodeDecodeError)  # type: ignore[untyped-decorator]
def handle_undecodable_body(error: UnicodeDecodeError) -> Response[dict[str, Any]]:
    return error_response(malformed_json("the body is not UTF-8 text"))


UNSUPPORTED_MEDIA = {"error": "UnsupportedMediaType", "message": "Send the request body as application/json"}


@app.exception_handler(RequestUnsupportedContentType)  # type: ignore[untyped-decorator]
def handle_content_type(error: RequestUnsupportedContentType) -> Response[dict[str, Any]]:
    return _json(415, dict(UNSUPPORTED_MEDIA))


def _media_type(event: dict[str, Any]) -> str:
    """The request's media type, lower case and without parameters ("" when not sent)."""
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _not_json(event: dict[str, Any]) -> bool:
    """A body sent as anything but JSON (Powertools would read a form body as fields)."""
    if not event.get("body"):
        return False
    return _media_type(event) not in ("", content_types.APPLICATION_JSON)


def _with_json_media_type(event: dict[str, Any]) -> dict[str, Any]:
    """Media types are case-insensitive and may carry parameters (`; charset=utf-8`);
    Powertools compares the header's text with `application/json` as sent. A JSON body
    reaches it with that exact header, whatever the caller's spelling."""
    if _media_type(event) != content_types.APPLICATION_JSON:
        return event
    event = dict(event)
    for key in ("headers", "multiValueHeaders"):
        headers = event.get(key)
        if not isinstance(headers, dict):
            continue
        json_value: Any = (
            content_types.APPLICATION_JSON if key == "headers" else [content_types.APPLICATION_JSON]
        )
        event[key] = {
            name: json_value if str(name).lower() == "content-type" else value
            for name, value in headers.items()
        }
    return event


@app.not_found
def handle_not_found(error: NotFoundError) -> Response[dict[str, Any]]:
    event = app.current_event
    return _json(
        404,
        {"error": ROUTE_NOT_FOUND, "message": f"No route {event.http_method} {event.path}"},
    )


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def handle_unexpected(error: Exception) -> Response[dict[str, Any]]:
    logger.exception("unexpected failure")
    return _json(500, {"error": INTERNAL_ERROR, "message": INTERNAL_MESSAGE})


# --- entry point -----------------------------------------------------------------------


def _proxy(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A proxy result outside the resolver (415, replays, a refused key)."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON, **(headers or {})},
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
    }


def _proxy_text(status: int, body: str) -> dict[str, Any]:
    """A stored answer, sent as the bytes it was first sent as."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": body,
        "isBase64Encoded": False,
    }


def _body_text(event: dict[str, Any]) -> str | None:
    body = event.get("body")
    if body and event.get("isBase64Encoded"):
        raw = base64.b64decode(body)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return str(body)  # not text: its encoded form stands for it
    return None if body is None else str(body)


def _idempotent(event: dict[str, Any], context: LambdaContext, key: str) -> dict[str, Any]:
    """Run the request once per `Idempotency-Key` (`registration.idempotency`): a replay
    gets the first answer, a 5xx releases the key."""
    store = get_store()
    request_id = str((event.get("requestContext") or {}).get("requestId") or context.aws_request_id)
    fingerprint = idempotency.request_fingerprint(
        str(event.get("httpMethod")),
        str(event.get("resource")),
        event.get("pathParameters"),
        _body_text(event),
    )
    try:
        caller = _refuse_before_claim(event)
        stored = idempotency.begin(store, key, caller.userId, fingerprint, request_id)
    except DomainError as error:
        logger.info("refused", extra={"error": error.code, "reason": error.message})
        return _proxy(error.http_status, error_body(error), outcomes.error_headers(error.code))
    except Exception:
        logger.exception("unexpected failure")
        return _proxy(500, {"error": INTERNAL_ERROR, "message": INTERNAL_MESSAGE})
    if stored is not None:
        return _proxy_text(stored.statusCode, stored.body)
    key = scoped_key(key, caller.userId)  # the claim's record
    claim = idempotency.Claim(key, request_id)
    app.context[CLAIM_CONTEXT] = claim
    try:
        result = app.resolve(event, context)
    except BaseException:
        with contextlib.suppress(Exception):
            store.release_request(key, request_id)
        raise
    status = int(result.get("statusCode", 500))
    if claim.recorded and status < 300:
        return result  # the write stored this answer with itself
    text = str(result.get("body") or "")
    try:
        body = json.loads(text or "null")
    except ValueError:
        body = None
    answer = (
        StoredResponse(statusCode=status, body=text)
        if isinstance(body, dict)
        # Not an answer we can replay: release the key, as for a failure of ours.
        else StoredResponse(statusCode=idempotency.RETRYABLE_STATUS, body="{}")
    )
    try:
        idempotency.finish(store, key, request_id, answer)
    except Exception:
        # An answer a retry would not get back is not given out (a refusal wrote nothing:
        # after the claim's lease a retry runs the request again).
        logger.exception("could not record the answer", extra={"idempotencyKey": key})
        unrecorded = TransientDatabaseError(UNRECORDED_ANSWER_MESSAGE)
        return _proxy(unrecorded.http_status, error_body(unrecorded), outcomes.error_headers(unrecorded.code))
    return result


def _answer(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if _not_json(event):
        return _proxy(415, dict(UNSUPPORTED_MEDIA))
    event = _with_json_media_type(event)
    if str(event.get("httpMethod", "")).upper() not in IDEMPOTENT_METHODS:
        return app.resolve(event, context)
    try:
        key = idempotency.parse_key(idempotency.header_value((event.get("headers") or {}).items()))
    except ValidationError as error:
        logger.info("invalid request", extra={"fields": error.fields})
        return _proxy(error.http_status, error_body(error))
    if key is None:
        return app.resolve(event, context)
    return _idempotent(event, context, key)


def _with_request_id(result: dict[str, Any], request_id: str) -> dict[str, Any]:
    """Every answer names API Gateway's request id (the one in its access log) in `X-Request-Id`."""
    if isinstance(result.get("multiValueHeaders"), dict):
        result["multiValueHeaders"][REQUEST_ID_HEADER] = [request_id]
    else:
        result["headers"] = {**(result.get("headers") or {}), REQUEST_ID_HEADER: request_id}
    return result


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Not re-entrant: Powertools keeps the current event on the resolver class, and a
    Lambda execution environment serves one request at a time.

    A POST or DELETE with an `Idempotency-Key` header runs at most once per key; GET
    ignores the header."""
    request_id = str((event.get("requestContext") or {}).get("requestId") or context.aws_request_id)
    return _with_request_id(_answer(event, context), request_id)
