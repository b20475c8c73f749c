"""Unregister workflow: validate, decide what to remove, write transactionally.

Input: `{"eventId": str, "userId": str, "requestId": str, "caller": {"userId": str,
"groups": str}}` and, with an `Idempotency-Key`, `"idempotencyKey": str`. `userId` is the
user unregistered; `caller` is who asked, from the ID token's claims (`cognito:username`,
and `cognito:groups` as API Gateway gives it, "" for none), never from the request; the
API's route always sets it, and an execution started without it fails at its first state
(the path `$.caller` does not resolve) before anything is read or written. A registered user's
seat goes to the head of the waitlist when there is one (`PromoteFromWaitlist`, in the
same transaction); a waitlisted user leaves the waitlist. A stale decision loops back to
`CheckRegistration`, which bounds the loop (`ContentionLimitExceeded`).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infrastructure import names
from registration.models import RegistrationAction
from workflows import common

OPERATION = "unregister"


class UnregisterWorkflow(Construct):
    """The Express state machine behind `DELETE /events/{eventId}/register/{userId}`."""

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
            validate, fails, [common.VALIDATION_ERROR, common.FORBIDDEN, common.EVENT_NOT_FOUND]
        )

        check_registration = common.express_task(
            self, "CheckRegistration", functions["CheckRegistration"], result_path="$.decision"
        )
        common.catch_errors(check_registration, fails, [common.CONTENTION_LIMIT_EXCEEDED])

        def write_task(state_name: str, function_name: str) -> sfn.TaskStateBase:
            task = common.express_task(
                self,
                state_name,
                functions[function_name],
                result_path="$.result",
                output_path="$.result",
            )
            common.catch_decision_stale(task, check_registration)
            return task

        unregister = write_task("Unregister", "WriteUnregistration")
        leave_waitlist = write_task("LeaveWaitlist", "WriteUnregistration")
        promote = write_task("PromoteFromWaitlist", "PromoteFromWaitlist")

        not_registered = fails.with_cause_from(
            common.NOT_REGISTERED,
            "User {} is neither registered nor waitlisted for event {}",
            "$.userId",
            "$.eventId",
        )
        unexpected = fails.with_cause(
            common.UNEXPECTED_DECISION, "CheckRegistration returned an unknown action"
        )
        action = "$.decision.action"
        what_to_remove = (
            sfn.Choice(self, "WhatToRemove")
            .when(
                sfn.Condition.string_equals(action, RegistrationAction.UNREGISTER),
                unregister.next(sfn.Succeed(self, "Unregistered")),
            )
            .when(
                sfn.Condition.string_equals(action, RegistrationAction.LEAVE_WAITLIST),
                leave_waitlist.next(sfn.Succeed(self, "LeftWaitlist")),
            )
            .when(
                sfn.Condition.string_equals(action, RegistrationAction.PROMOTE),
                promote.next(sfn.Succeed(self, "Promoted")),
            )
            .when(sfn.Condition.string_equals(action, RegistrationAction.NOT_REGISTERED), not_registered)
            .otherwise(unexpected)
        )

        body = validate.next(check_registration).next(what_to_remove)
        definition = common.idempotent(self, OPERATION, functions, body=body)
        self.state_machine, self.log_group = common.express_state_machine(
            self,
            "StateMachine",
            workflow=names.UNREGISTER_WORKFLOW,
            definition=definition,
            comment=f"Workflow {names.UNREGISTER_WORKFLOW}: unregister a user from an event",
        )
