"""Register workflow: validate, decide (seat, waitlist or full), write transactionally.

Input: `{"eventId": str, "userId": str, "requestId": str, "caller": {"userId": str,
"groups": str}}` and, with an `Idempotency-Key`, `"idempotencyKey": str`. `userId` is the
user registered; `caller` is who asked, from the ID token's claims (`cognito:username`,
and `cognito:groups` as API Gateway gives it, "" for none), never from the request; the
API's route always sets it, and an execution started without it fails at its first state
(the path `$.caller` does not resolve) before anything is read or written. Output on success:
the write task's result. A stale decision (the transaction's conditions no longer held)
loops back to `CheckCapacity`; that task bounds the loop (`ContentionLimitExceeded`).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infrastructure import names
from registration.models import CapacityAction
from workflows import common

OPERATION = "register"


class RegisterWorkflow(Construct):
    """The Express state machine behind `POST /events/{eventId}/register`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Mapping[str, lambda_.IFunction],
    ) -> None:
        super().__init__(scope, construct_id)
        fails = common.FailStates(self)

        validate = common.express_task(
            self,
            "Validate",
            functions["Validate"],
            parameters={
                "eventId": sfn.JsonPath.string_at("$.eventId"),
                "userId": sfn.JsonPath.string_at("$.userId"),
                "requestId": sfn.JsonPath.string_at("$.requestId"),
                "caller": sfn.JsonPath.object_at(common.CALLER_PATH),
                "operation": OPERATION,
            },
            result_path="$.event",
        )
        common.catch_errors(
            validate,
            fails,
            [common.VALIDATION_ERROR, common.FORBIDDEN, common.USER_NOT_FOUND, common.EVENT_NOT_FOUND],
        )

        check_capacity = common.express_task(
            self, "CheckCapacity", functions["CheckCapacity"], result_path="$.decision"
        )
        common.catch_errors(
            check_capacity,
            fails,
            [
                common.ALREADY_REGISTERED,
                common.EVENT_CANCELLED,
                common.REGISTRATION_NOT_OPEN,
                common.REGISTRATION_CLOSED,
                common.EVENT_STARTED,
                common.CONTENTION_LIMIT_EXCEEDED,
            ],
        )

        take_seat = self._write_task("TakeSeat", functions, fails, decide_again=check_capacity)
        join_waitlist = self._write_task("JoinWaitlist", functions, fails, decide_again=check_capacity)

        event_full = fails.with_cause(common.EVENT_FULL, "The event is full and has no waitlist")
        unexpected = fails.with_cause(common.UNEXPECTED_DECISION, "CheckCapacity returned an unknown action")
        seat_or_waitlist = (
            sfn.Choice(self, "SeatOrWaitlist")
            .when(
                sfn.Condition.string_equals("$.decision.action", CapacityAction.SEAT),
                take_seat.next(sfn.Succeed(self, "Registered")),
            )
            .when(
                sfn.Condition.string_equals("$.decision.action", CapacityAction.WAITLIST),
                join_waitlist.next(sfn.Succeed(self, "Waitlisted")),
            )
            .when(sfn.Condition.string_equals("$.decision.action", CapacityAction.FULL), event_full)
            .otherwise(unexpected)
        )

        body = validate.next(check_capacity).next(seat_or_waitlist)
        definition = common.idempotent(self, OPERATION, functions, body=body)
        self.state_machine, self.log_group = common.express_state_machine(
            self,
            "StateMachine",
            workflow=names.REGISTER_WORKFLOW,
            definition=definition,
            comment=f"Workflow {names.REGISTER_WORKFLOW}: register a user for an event",
        )

    def _write_task(
        self,
        state_name: str,
        functions: Mapping[str, lambda_.IFunction],
        fails: common.FailStates,
        *,
        decide_again: sfn.IChainable,
    ) -> sfn.TaskStateBase:
        task = common.express_task(
            self,
            state_name,
            functions["WriteRegistration"],
            result_path="$.result",
            output_path="$.result",
        )
        common.catch_decision_stale(task, decide_again)
        common.catch_errors(task, fails, [common.ALREADY_REGISTERED, common.ALREADY_WAITLISTED])
        return task
