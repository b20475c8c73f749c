"""The registration rules, as the workflow tasks apply them. Knows the domain, not DynamoDB.

Fairness: a seat is taken only while nobody waits; otherwise a registrant joins the
waitlist, and a seat freed while anyone waits is handed to the head in the same
transaction that frees it.
"""

from __future__ import annotations

from registration.errors import (
    AlreadyRegistered,
    ContentionLimitExceeded,
    EventNotFound,
    UserNotFound,
)
from registration.models import (
    EventState,
    RegisterDecision,
    RegisterResult,
    RegisterState,
    UnregisterDecision,
    UnregisterResult,
    UnregisterState,
    ValidateInput,
)
from registration.store import RegistrationStore, now_iso, transaction_token

# How many times one execution may re-decide after losing a race. Every lost race means
# another request made progress, so this bounds latency, not correctness.
MAX_DECISIONS = 25


def validate(store: RegistrationStore, request: ValidateInput) -> EventState:
    """Both ids exist (the user only matters when registering); returns the event as read."""
    if request.operation == "register":
        user, event = store.get_user_and_event(request.userId, request.eventId)
        if event is None:
            raise EventNotFound(f"Event {request.eventId} does not exist")
        if user is None:
            raise UserNotFound(f"User {request.userId} does not exist")
        return event
    return store.get_event(request.eventId)


def _next_attempt(previous: int | None) -> int:
    attempt = (previous or 0) + 1
    if attempt > MAX_DECISIONS:
        raise ContentionLimitExceeded(
            f"Gave up after {MAX_DECISIONS} concurrent changes to the event; try again"
        )
    return attempt


def _current_event(store: RegistrationStore, state_event: EventState, attempt: int) -> EventState:
    # The first decision uses the snapshot Validate just read; a re-decision follows a
    # cancelled transaction, so it must read again.
    return state_event if attempt == 1 else store.get_event(state_event.eventId)


def decide_registration(store: RegistrationStore, state: RegisterState) -> RegisterDecision:
    attempt = _next_attempt(state.decision.attempt if state.decision else None)
    event = _current_event(store, state.event, attempt)
    if event.waitlistCount == 0 and event.registeredCount < event.capacity:
        action = "seat"
    elif event.hasWaitlist:
        action = "waitlist"
    else:
        # Refusing someone who already holds a seat as "full" would be misleading.
        membership = store.get_membership(event.eventId, state.userId)
        if membership is not None:
            raise AlreadyRegistered(f"User {state.userId} is already registered for event {event.eventId}")
        action = "full"
    return RegisterDecision(action=action, attempt=attempt, event=event, decidedAt=now_iso())


def write_registration(store: RegistrationStore, state: RegisterState) -> RegisterResult:
    decision = state.decision
    if decision is None or decision.action == "full":
        raise ValueError("write_registration needs a seat or waitlist decision")
    token = transaction_token(state.requestId, "register", decision.action, str(decision.attempt))
    if decision.action == "seat":
        store.take_seat(state.eventId, state.userId, state.requestId, decision.decidedAt, token)
        return RegisterResult(eventId=state.eventId, userId=state.userId, status="registered")

    applied_now = store.join_waitlist(
        decision.event, state.userId, state.requestId, decision.decidedAt, token
    )
    if applied_now:
        position = decision.event.waitlistCount + 1
    else:
        # A retry of a write that had committed: report where the user is now.
        membership = store.get_membership(state.eventId, state.userId)
        seq = membership.seq if membership and membership.seq else decision.event.waitlistSeq + 1
        position = store.waitlist_position(state.eventId, seq)
    return RegisterResult(eventId=state.eventId, userId=state.userId, status="waitlisted", position=position)


def decide_unregistration(store: RegistrationStore, state: UnregisterState) -> UnregisterDecision:
    attempt = _next_attempt(state.decision.attempt if state.decision else None)
    event = _current_event(store, state.event, attempt)
    membership = store.get_membership(event.eventId, state.userId)
    decided_at = now_iso()
    if membership is None:
        return UnregisterDecision(action="not_registered", attempt=attempt, event=event, decidedAt=decided_at)
    if membership.status == "waitlisted":
        return UnregisterDecision(
            action="leave_waitlist",
            attempt=attempt,
            event=event,
            decidedAt=decided_at,
            seq=membership.seq,
        )
    head = store.waitlist_head(event.eventId) if event.waitlistCount > 0 else None
    if head is not None:
        return UnregisterDecision(
            action="promote", attempt=attempt, event=event, decidedAt=decided_at, head=head
        )
    return UnregisterDecision(action="unregister", attempt=attempt, event=event, decidedAt=decided_at)


def write_unregistration(store: RegistrationStore, state: UnregisterState) -> UnregisterResult:
    decision = state.decision
    if decision is None or decision.action not in ("unregister", "leave_waitlist"):
        raise ValueError("write_unregistration needs an unregister or leave_waitlist decision")
    token = transaction_token(state.requestId, "unregister", decision.action, str(decision.attempt))
    if decision.action == "leave_waitlist":
        if decision.seq is None:
            raise ValueError("a leave_waitlist decision carries the slot's sequence")
        store.leave_waitlist(state.eventId, state.userId, decision.seq, token)
        return UnregisterResult(eventId=state.eventId, userId=state.userId, status="left_waitlist")
    store.release_seat(state.eventId, state.userId, token)
    return UnregisterResult(eventId=state.eventId, userId=state.userId, status="unregistered")


def promote_from_waitlist(store: RegistrationStore, state: UnregisterState) -> UnregisterResult:
    """The leaving user's seat goes to the head of the waitlist in one transaction."""
    decision = state.decision
    if decision is None or decision.action != "promote" or decision.head is None:
        raise ValueError("promote_from_waitlist needs a promote decision with the waitlist head")
    token = transaction_token(state.requestId, "unregister", "promote", str(decision.attempt))
    store.hand_over_seat(
        state.eventId, state.userId, decision.head, state.requestId, decision.decidedAt, token
    )
    return UnregisterResult(
        eventId=state.eventId,
        userId=state.userId,
        status="unregistered",
        promoted=decision.head.userId,
    )
