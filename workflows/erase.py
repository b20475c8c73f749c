"""Erase workflow: release everything a user being erased holds, then forget them.

A Standard state machine started by `DELETE /users/{id}` once the user is marked erased
(their name and email are gone, and nothing registers them from then on). Input:
`{"userId", "requestId", "erasingSince", "settleSeconds"}` (`models.ErasureInput`).

    ReleaseNext -> More? -> ReleaseNext
                         -> Settle (Wait settleSeconds) -> ReleaseLate -> MoreLate? -> ReleaseLate
                                                                                -> Forget -> Erased

`ReleaseNext` reads where the user still holds a seat or a waitlist place (GSI1) and
releases a turn of them, each as leaving would (a seat goes to the waitlist's head).
`Settle` outlasts any register execution that read the user before the mark, and
`ReleaseLate` releases what such a one left. `Forget` deletes the user's idempotency
records and the user item. Each turn starts from the table, so a failed run redriven (or
started again) finds only what is left.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infrastructure import names
from workflows import common

RELEASE_TASK = "ReleaseUserRegistrations"
FORGET_TASK = "ForgetUser"
TASKS = (RELEASE_TASK, FORGET_TASK)
RUN_TIMEOUT = Duration.hours(6)
# What `Settle` must outlast: the longest a register execution may run (it read the user
# before the mark and may still commit until then), plus the index's propagation.
SETTLE_SECONDS = int(common.EXPRESS_WORKFLOW_TIMEOUT.to_seconds()) + 4
TASK_TIMEOUT = Duration.seconds(60)


class EraseWorkflow(Construct):
    """The Standard state machine behind `DELETE /users/{userId}`."""

    def __init__(
        self, scope: Construct, construct_id: str, *, functions: Mapping[str, lambda_.IFunction]
    ) -> None:
        super().__init__(scope, construct_id)
        run = {
            "userId": sfn.JsonPath.string_at("$.userId"),
            "requestId": sfn.JsonPath.string_at("$.requestId"),
            "erasingSince": sfn.JsonPath.string_at("$.erasingSince"),
            "settleSeconds": sfn.JsonPath.number_at("$.settleSeconds"),
        }
        release = common.invoke_task(
            self,
            "ReleaseNext",
            functions[RELEASE_TASK],
            parameters={**run, "late": False},
            result_path="$.progress",
            timeout=TASK_TIMEOUT,
        )
        release_late = common.invoke_task(
            self,
            "ReleaseLate",
            functions[RELEASE_TASK],
            parameters={**run, "late": True},
            result_path="$.progress",
            timeout=TASK_TIMEOUT,
        )
        forget = common.invoke_task(
            self,
            "Forget",
            functions[FORGET_TASK],
            parameters=run,
            result_path="$.forgotten",
            timeout=TASK_TIMEOUT,
        )
        settle = sfn.Wait(self, "Settle", time=sfn.WaitTime.seconds_path("$.settleSeconds"))
        more_late = (
            sfn.Choice(self, "MoreLate")
            .when(sfn.Condition.boolean_equals("$.progress.more", True), release_late)
            .otherwise(forget.next(sfn.Succeed(self, "Erased")))
        )
        more = (
            sfn.Choice(self, "More")
            .when(sfn.Condition.boolean_equals("$.progress.more", True), release)
            .otherwise(settle.next(release_late).next(more_late))
        )
        definition = release.next(more)

        self.state_machine, self.log_group = common.standard_state_machine(
            self,
            workflow=names.ERASE_WORKFLOW,
            definition=definition,
            comment=f"Workflow {names.ERASE_WORKFLOW}: release a user's seats and places, then forget them",
            timeout=RUN_TIMEOUT,
        )
