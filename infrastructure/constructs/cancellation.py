"""Cancelling events on AWS: the cancel workflow's two functions and its Standard state
machine (`workflows.cancel`). Each function has its own role, confined to the events'
partitions; the API function starts the state machine (`POST /events/{id}/cancel`)."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infrastructure import names
from infrastructure.constructs.task_functions import (
    EVENT_LEADING_KEYS,
    TIMEOUT,
    leading_keys_condition,
    workflow_functions,
)
from workflows import common
from workflows.cancel import NEXT_TASK, RELEASE_TASK, CancelWorkflow
from workflows.cancel import RELEASE_TASK_TIMEOUT as RELEASE_TIMEOUT

# DynamoDB actions per function, all within `EVENT#*` partitions (a transaction's actions
# are authorised one by one): the batch reads seats and places; a release deletes them,
# counts them off and puts the change item carrying its domain event, and reads the
# item back when its transaction was cancelled.
TABLE_ACTIONS: dict[str, tuple[str, ...]] = {
    NEXT_TASK: ("dynamodb:Query",),
    RELEASE_TASK: ("dynamodb:DeleteItem", "dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:GetItem"),
}


class Cancellation(Construct):
    """The cancel workflow with its functions."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        table: dynamodb.ITable,
        powertools_layer: lambda_.ILayerVersion,
    ) -> None:
        super().__init__(scope, construct_id)
        if set(names.CANCEL_HANDLERS) != set(TABLE_ACTIONS):
            raise ValueError("cancellation handlers and table grants disagree")
        self._functions = workflow_functions(
            self,
            names.CANCEL_HANDLERS,
            kind="cancellation",
            layer=powertools_layer,
            table=table,
            statements=lambda task: [
                iam.PolicyStatement(
                    actions=list(TABLE_ACTIONS[task]),
                    resources=[table.table_arn],
                    conditions=leading_keys_condition(EVENT_LEADING_KEYS),
                )
            ],
            timeout=lambda task: RELEASE_TIMEOUT if task == RELEASE_TASK else TIMEOUT,
        )
        self.workflow = CancelWorkflow(self, "Workflow", functions=self.functions)
        self.state_machine: sfn.StateMachine = self.workflow.state_machine
        self.failures_alarm = common.failed_runs_alarm(
            self,
            self.state_machine,
            "A cancel run failed: the event is cancelled (nothing takes a seat of it) but still holds "
            "seats or waitlist places; redrive the execution (cancel-<eventId>) once the cause is fixed",
        )

    @property
    def functions(self) -> Mapping[str, lambda_.IFunction]:
        return dict(self._functions)
