"""Cancel workflow: release every seat and waitlist place of a cancelled event.

A Standard state machine started by `POST /events/{id}/cancel` once the event is marked
cancelled (nothing takes a seat of it from then on). Input: `{"eventId", "requestId"}`
(the request that cancelled it, named by every `registration.unregistered` it causes).

    NextBatch -> AnyLeft? -> ReleaseGroups (Distributed Map, one child per group) -> NextBatch
                          -> Released (Succeed)

`NextBatch` reads what the event still holds (at most 1,000 entries, in groups of 25), so
each turn of the loop starts from the table, not from a cursor: a run that failed, or
one redriven or started again, finds only what is left, and a user who left meanwhile
is simply not there. The Distributed Map runs each group in a child execution (its
history is the child's, not this one's: 100,000 registrants make 100 turns of about ten
events each, far below a Standard execution's 25,000). The children are Standard and
the groups are made by the task rather than an ItemBatcher: the local engine's
interpreter (moto's) parses neither Express children nor ItemBatcher, and what runs
here is what is deployed (`make bench` counts a cancellation's transitions).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infrastructure import names
from workflows import common

NEXT_TASK = "NextCancellationBatch"
RELEASE_TASK = "ReleaseRegistrations"
TASKS = (NEXT_TASK, RELEASE_TASK)
# Groups released at once (each a child execution, one Lambda invocation). Every release
# writes the event's own partition, about 8 write units (a transaction's items count
# twice): two groups at AWS's ~50 releases a second each stay under a partition's 1,000
# write units a second, and seldom collide on the event's counter.
MAX_CONCURRENCY = 2
RUN_TIMEOUT = Duration.hours(6)
RELEASE_TASK_TIMEOUT = Duration.seconds(60)


class CancelWorkflow(Construct):
    """The Standard state machine behind `POST /events/{eventId}/cancel`."""

    def __init__(
        self, scope: Construct, construct_id: str, *, functions: Mapping[str, lambda_.IFunction]
    ) -> None:
        super().__init__(scope, construct_id)
        request = {
            "eventId": sfn.JsonPath.string_at("$.eventId"),
            "requestId": sfn.JsonPath.string_at("$.requestId"),
        }
        next_batch = common.invoke_task(
            self, "NextBatch", functions[NEXT_TASK], parameters=request, result_path="$.batch"
        )
        release = common.invoke_task(
            self, "ReleaseGroup", functions[RELEASE_TASK], timeout=RELEASE_TASK_TIMEOUT
        )
        release_groups = sfn.DistributedMap(
            self,
            "ReleaseGroups",
            items_path="$.batch.groups",
            item_selector={
                "eventId": sfn.JsonPath.string_at("$.eventId"),
                "requestId": sfn.JsonPath.string_at("$.requestId"),
                "entries": sfn.JsonPath.object_at("$$.Map.Item.Value"),
            },
            max_concurrency=MAX_CONCURRENCY,
            map_execution_type=sfn.StateMachineType.STANDARD,
            label="Release",
            result_path=sfn.JsonPath.DISCARD,
        )
        release_groups.item_processor(release)
        any_left = (
            sfn.Choice(self, "AnyLeft")
            .when(sfn.Condition.is_present("$.batch.groups[0]"), release_groups.next(next_batch))
            .otherwise(sfn.Succeed(self, "Released"))
        )
        definition = next_batch.next(any_left)

        # CDK's Distributed Map gives the role what running its children takes: start
        # them, describe and stop them, redrive a map run (its `DistributedMapPolicy`).
        self.state_machine, self.log_group = common.standard_state_machine(
            self,
            workflow=names.CANCEL_WORKFLOW,
            definition=definition,
            comment=f"Workflow {names.CANCEL_WORKFLOW}: release every seat and waitlist place of a cancelled event",
            timeout=RUN_TIMEOUT,
        )
