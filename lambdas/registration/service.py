"""The registration rules, as the workflow tasks apply them. Knows the domain, not DynamoDB.

Fairness: a seat is taken only while nobody waits; otherwise a registrant joins the
waitlist, and a seat freed while anyone waits is handed to the head in the same
transaction that frees it.
"""

from __future__ import annotations

import random
import time
from typing import Any, TypeVar

from registration import access, idempotency, outcomes, schedule
from registration.data import RegistrationStore
from registration.data.dynamo import now_iso
from registration.errors import (
    AlreadyRegistered,
    ContentionLimitExceeded,
    DecisionStale,
    EventNotFound,
    UserNotFound,
)
from registration.models import (
    CapacityAction,
    CapacityCheck,
    Completion,
    EventState,
    RegisterResult,
    RegisterState,
    RegistrationAction,
    RegistrationCheck,
    UnregisterResult,
    UnregisterState,
    ValidateInput,
    WorkflowRequest,
)

ResultT = TypeVar("ResultT", RegisterResult, UnregisterResult)

# How many times one execution may re-decide after losing a race. Every lost race means
# another request made progress, so this bounds latency, not correctness. The Express
# workflow's own timeout bounds the loop in time too (workflows/common.py).
MAX_DECISIONS = 25
# Before re-deciding, wait a random time up to BASE * 2**(re-decisions so far), at most
# CAP ("full jitter"): requests that lost a race on the same event spread out instead
# of colliding again, so a burst on one event costs few cancelled transactions.
REDECIDE_BACKOFF_BASE_S = 0.01
REDECIDE_BACKOFF_CAP_S = 0.25
# The waitlist's tail and head are contended by every concurrent join and promotion on
# the event; the write tasks re-decide those races themselves, within these bounds
# (then DecisionStale sends the execution back to its decision step). The time budget is
# a share of the time the function has left (`in_task_budget`), so that the last
# transaction and the answer fit in the rest; IN_TASK_BUDGET_S without a Lambda context.
IN_TASK_REDECISIONS = 40
TAIL_BACKOFF_FIRST_S = 0.25
TAIL_BACKOFF_DECAY = 0.85
TAIL_BACKOFF_FLOOR_S = 0.01
IN_TASK_BUDGET_S = 0.5
IN_TASK_BUDGET_SHARE = 0.5


def in_task_budget(remaining_ms: int) -> float:
    """Seconds a write task may spend re-deciding its races, given its function's time left."""
    return max(0.0, remaining_ms / 1000 * IN_TASK_BUDGET_SHARE)


def _action(operation: str, request: WorkflowRequest) -> str:
    return f"{operation} {request.userId} for event {request.eventId}"


def authorize(store: RegistrationStore, request: WorkflowRequest, operation: str) -> None:
    """The caller may register or unregister `userId` (`registration.access`); the event
    is read only when that depends on who organizes it."""
    if not access.acts_for_others(request.caller, request.userId):
        return
    event = store.find_event(request.eventId)
    organizer_id = event.organizerId if event is not None else None
    access.require_may_act_for(request.caller, request.userId, organizer_id, _action(operation, request))


def validate(store: RegistrationStore, request: ValidateInput) -> EventState:
    """The caller may do this, and both ids exist (the user only matters when
    registering); returns the event as read. A refusal comes before any not-found, so it
    tells nothing about what exists."""
    user_exists = True
    if request.operation == "register":
        user, event = store.get_user_and_event(request.userId, request.eventId)
        user_exists = user is not None
    else:
        event = store.find_event(request.eventId)
    access.require_may_act_for(
        request.caller,
        request.userId,
        event.organizerId if event is not None else None,
        _action(request.operation, request),
    )
    if event is None:
        raise EventNotFound(f"Event {request.eventId} does not exist")
    if not user_exists:
        raise UserNotFound(f"User {request.userId} does not exist")
    return event


def _next_attempt(previous: int | None) -> int:
    attempt = (previous or 0) + 1
    if attempt > MAX_DECISIONS:
        raise ContentionLimitExceeded(
            f"Gave up after {MAX_DECISIONS} concurrent changes to the event; try again"
        )
    return attempt


def redecide_backoff(attempt: int) -> float:
    """Seconds to wait before decision number `attempt` (none before the first)."""
    if attempt <= 1:
        return 0.0
    ceiling = min(REDECIDE_BACKOFF_CAP_S, REDECIDE_BACKOFF_BASE_S * 2 ** (attempt - 2))
    return random.uniform(0, ceiling)


def tail_backoff(retry: int, attempt: int = 1) -> float:
    """Seconds to wait before an in-task retry for the waitlist's tail or head.

    The reverse of exponential backoff: the first retry waits longest and each later
    one less, so a request that has lost many races is the likeliest to win the next
    (close to first come, first served) instead of starving behind newcomers. A later
    decision (`attempt`) keeps the priority its execution earned.
    """
    earned = retry - 1 + (attempt - 1) * IN_TASK_REDECISIONS
    ceiling = max(TAIL_BACKOFF_FLOOR_S, TAIL_BACKOFF_FIRST_S * TAIL_BACKOFF_DECAY**earned)
    return random.uniform(0, ceiling)


def _current_event(store: RegistrationStore, state_event: EventState, attempt: int) -> EventState:
    # The first decision uses the snapshot Validate just read; a re-decision follows a
    # cancelled transaction, so it backs off, then must read again.
    if attempt == 1:
        return state_event
    time.sleep(redecide_backoff(attempt))
    return store.get_event(state_event.eventId)


def check_capacity(store: RegistrationStore, state: RegisterState) -> CapacityCheck:
    attempt = _next_attempt(state.decision.attempt if state.decision else None)
    event = _current_event(store, state.event, attempt)
    decided_at = now_iso()
    # The write is conditioned on the same window at the same time (a change to the
    # event's times between here and there sends the request back here).
    schedule.require_open(event, decided_at)
    if event.waitlistCount == 0 and event.registeredCount < event.capacity:
        action = CapacityAction.SEAT
    elif event.hasWaitlist:
        action = CapacityAction.WAITLIST
    else:
        # Refusing someone who already holds a seat as full would be misleading.
        membership = store.get_membership(event.eventId, state.userId)
        if membership is not None:
            raise AlreadyRegistered(f"User {state.userId} is already registered for event {event.eventId}")
        action = CapacityAction.FULL
    return CapacityCheck(action=action, attempt=attempt, event=event, decidedAt=decided_at)


def _joins_waitlist(event: EventState) -> bool:
    return event.hasWaitlist and (event.waitlistCount > 0 or event.registeredCount >= event.capacity)


def _completion(state: RegisterState | UnregisterState, operation: str, result: Any) -> Completion | None:
    """A keyed request's answer, stored on its claim by the write that produces it."""
    return idempotency.completion(
        state.claim_key,
        state.requestId,
        outcomes.SUCCESS_STATUS[operation],
        result.model_dump(mode="json"),
    )


def write_registration(
    store: RegistrationStore, state: RegisterState, budget_s: float = IN_TASK_BUDGET_S
) -> RegisterResult:
    """The `WriteRegistration` function, which both `TakeSeat` and `JoinWaitlist` run:
    the decision says which write it is."""
    decision = state.decision
    if decision is None or decision.action is CapacityAction.FULL:
        raise ValueError("write_registration needs a seat or waitlist decision")
    if decision.action is CapacityAction.SEAT:
        return take_seat(store, state, decision)
    return join_waitlist(store, state, decision, budget_s)


def take_seat(store: RegistrationStore, state: RegisterState, decision: CapacityCheck) -> RegisterResult:
    result = RegisterResult(eventId=state.eventId, userId=state.userId, status="registered")
    completion = _completion(state, outcomes.REGISTER, result)
    if not store.take_seat(state.eventId, state.userId, state.requestId, decision.decidedAt, completion):
        return _earlier_answer(store, state, RegisterResult, result)
    return result


def join_waitlist(
    store: RegistrationStore, state: RegisterState, decision: CapacityCheck, budget_s: float
) -> RegisterResult:
    event, joined_at = decision.event, decision.decidedAt
    deadline = time.monotonic() + budget_s
    for retry in range(IN_TASK_REDECISIONS + 1):
        waitlisted = RegisterResult(
            eventId=state.eventId, userId=state.userId, status="waitlisted", position=event.waitlistCount + 1
        )
        try:
            completion = _completion(state, outcomes.REGISTER, waitlisted)
            applied_now = store.join_waitlist(event, state.userId, state.requestId, joined_at, completion)
            break
        except DecisionStale:
            # Another join took the tail first. Re-decide here, milliseconds from the
            # write, instead of going around the workflow (a window so wide that a
            # burst on one event would lose most races).
            if retry == IN_TASK_REDECISIONS or time.monotonic() > deadline:
                raise
            if retry == 0:
                # A retried task whose first try committed (its answer was lost) fails
                # here too: the membership is this request's own.
                mine = store.get_membership(state.eventId, state.userId)
                if mine is not None and mine.requestId == state.requestId:
                    applied_now = False
                    break
                if mine is not None:
                    raise
            time.sleep(tail_backoff(retry + 1, decision.attempt))
            event = store.get_event(state.eventId)
            joined_at = now_iso()
            if not _joins_waitlist(event):
                raise
    if applied_now:
        return waitlisted
    if state.idempotencyKey is not None:
        return _earlier_answer(store, state, RegisterResult, waitlisted)
    # A retry of a write that had committed: report where the user is now.
    membership = store.get_membership(state.eventId, state.userId)
    seq = membership.seq if membership and membership.seq else decision.event.waitlistSeq + 1
    position = store.waitlist_position(state.eventId, seq)
    return RegisterResult(eventId=state.eventId, userId=state.userId, status="waitlisted", position=position)


def _earlier_answer(
    store: RegistrationStore,
    state: RegisterState | UnregisterState,
    model: type[ResultT],
    fallback: ResultT,
) -> ResultT:
    """The answer of this request's own earlier, committed write (a retried task whose
    first try's answer was lost): the one stored on its claim when it has a key."""
    key = state.claim_key
    if key is None:
        return fallback
    return model.model_validate(idempotency.stored_answer(store, key))


def check_registration(store: RegistrationStore, state: UnregisterState) -> RegistrationCheck:
    attempt = _next_attempt(state.decision.attempt if state.decision else None)
    event = _current_event(store, state.event, attempt)
    membership = store.get_membership(event.eventId, state.userId)
    decided_at = now_iso()
    if membership is None:
        return RegistrationCheck(
            action=RegistrationAction.NOT_REGISTERED, attempt=attempt, event=event, decidedAt=decided_at
        )
    if membership.status == "waitlisted":
        return RegistrationCheck(
            action=RegistrationAction.LEAVE_WAITLIST,
            attempt=attempt,
            event=event,
            decidedAt=decided_at,
            seq=membership.seq,
        )
    # Once the event has started, a freed seat stays free: nobody is promoted into it. Nor
    # while the event holds more seats than its (lowered) capacity: this one is not free.
    head = store.waitlist_head(event.eventId) if schedule.seats_a_waiter(event, decided_at) else None
    if head is not None:
        return RegistrationCheck(
            action=RegistrationAction.PROMOTE, attempt=attempt, event=event, decidedAt=decided_at, head=head
        )
    return RegistrationCheck(
        action=RegistrationAction.UNREGISTER, attempt=attempt, event=event, decidedAt=decided_at
    )


def write_unregistration(store: RegistrationStore, state: UnregisterState) -> UnregisterResult:
    """The `WriteUnregistration` function, which both `Unregister` and `LeaveWaitlist`
    run: the decision says which write it is."""
    decision = state.decision
    if decision is None or decision.action not in (
        RegistrationAction.UNREGISTER,
        RegistrationAction.LEAVE_WAITLIST,
    ):
        raise ValueError("write_unregistration needs an unregister or leave_waitlist decision")
    if decision.action is RegistrationAction.LEAVE_WAITLIST:
        return leave_waitlist(store, state, decision)
    return unregister(store, state)


def leave_waitlist(
    store: RegistrationStore, state: UnregisterState, decision: RegistrationCheck
) -> UnregisterResult:
    if decision.seq is None:
        raise ValueError("a leave_waitlist decision carries the slot's sequence")
    left = UnregisterResult(eventId=state.eventId, userId=state.userId, status="left_waitlist")
    completion = _completion(state, outcomes.UNREGISTER, left)
    left_at = decision.decidedAt
    if not store.leave_waitlist(
        state.eventId, state.userId, decision.seq, state.requestId, left_at, completion
    ):
        return _earlier_answer(store, state, UnregisterResult, left)
    return left


def unregister(store: RegistrationStore, state: UnregisterState) -> UnregisterResult:
    freed = UnregisterResult(eventId=state.eventId, userId=state.userId, status="unregistered")
    completion = _completion(state, outcomes.UNREGISTER, freed)
    decided_at = state.decision.decidedAt if state.decision else now_iso()
    if not store.release_seat(state.eventId, state.userId, state.requestId, decided_at, completion):
        return _earlier_answer(store, state, UnregisterResult, freed)
    return freed


def promote_from_waitlist(
    store: RegistrationStore, state: UnregisterState, budget_s: float = IN_TASK_BUDGET_S
) -> UnregisterResult:
    """The leaving user's seat goes to the head of the waitlist in one transaction."""
    decision = state.decision
    if decision is None or decision.action is not RegistrationAction.PROMOTE or decision.head is None:
        raise ValueError("promote_from_waitlist needs a promote decision with the waitlist head")
    head, at = decision.head, decision.decidedAt
    deadline = time.monotonic() + budget_s
    for retry in range(IN_TASK_REDECISIONS + 1):
        promoted = UnregisterResult(
            eventId=state.eventId, userId=state.userId, status="unregistered", promoted=head.userId
        )
        try:
            # A retried task whose first try committed (its answer lost) is recognised by
            # the data layer; it answers with what that try stored, or the head it promoted.
            completion = _completion(state, outcomes.UNREGISTER, promoted)
            if not store.hand_over_seat(state.eventId, state.userId, head, state.requestId, at, completion):
                return _earlier_answer(store, state, UnregisterResult, promoted)
            break
        except DecisionStale:
            # Another unregistration took this head first: take the next one here
            # (as write_registration does for the waitlist's tail). Anything else
            # (the seat is gone, nobody waits any more) goes back to the workflow.
            if retry == IN_TASK_REDECISIONS or time.monotonic() > deadline:
                raise
            time.sleep(tail_backoff(retry + 1, decision.attempt))
            membership = store.get_membership(state.eventId, state.userId)
            next_head = store.waitlist_head(state.eventId)
            if membership is None or membership.status != "registered" or next_head is None:
                raise
            head, at = next_head, now_iso()
    return promoted
