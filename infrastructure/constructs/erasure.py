"""Erasing users on AWS: the erase workflow's two functions and its Standard state machine
(`workflows.erase`). Each function has its own role: the release function writes only
events' partitions (and reads the users' index), the forget function only the user's
idempotency records and user item. The API function starts the state machine
(`DELETE /users/{id}`)."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infrastructure import names
from infrastructure.constructs.table import GSI1_NAME
from infrastructure.constructs.task_functions import (
    EVENT_LEADING_KEYS,
    IDEMPOTENCY_LEADING_KEYS,
    USER_LEADING_KEYS,
    leading_keys_condition,
    workflow_functions,
)
from workflows import common
from workflows.erase import FORGET_TASK, RELEASE_TASK, TASK_TIMEOUT, EraseWorkflow

# DynamoDB grants per function: (actions, partitions they are confined to), plus the
# index reads. A transaction's actions are authorised one by one. Releasing reads the
# user's seat or place and the event (BatchGetItem, GetItem), the waitlist's head
# (Query), and writes the release or hand-over with its change item; forgetting reads and
# deletes the user's idempotency records, then deletes the user item.
TABLE_GRANTS: dict[str, tuple[tuple[tuple[str, ...], list[str]], ...]] = {
    RELEASE_TASK: (
        (
            (
                "dynamodb:BatchGetItem",
                "dynamodb:GetItem",
                "dynamodb:Query",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
            ),
            EVENT_LEADING_KEYS,
        ),
    ),
    FORGET_TASK: (
        (("dynamodb:Query", "dynamodb:DeleteItem"), IDEMPOTENCY_LEADING_KEYS),
        (("dynamodb:DeleteItem",), USER_LEADING_KEYS),
    ),
}
# Where the user still holds seats and places: GSI1 (`USER#<id>`).
INDEX_READERS = frozenset({RELEASE_TASK})


class Erasure(Construct):
    """The erase workflow with its functions."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        table: dynamodb.ITable,
        powertools_layer: lambda_.ILayerVersion,
    ) -> None:
        super().__init__(scope, construct_id)
        if set(names.ERASE_HANDLERS) != set(TABLE_GRANTS):
            raise ValueError("erasure handlers and table grants disagree")
        self._functions = workflow_functions(
            self,
            names.ERASE_HANDLERS,
            kind="erasure",
            layer=powertools_layer,
            table=table,
            statements=lambda task: self._statements(task, table),
            timeout=lambda _task: TASK_TIMEOUT,
        )
        self.workflow = EraseWorkflow(self, "Workflow", functions=self.functions)
        self.state_machine: sfn.StateMachine = self.workflow.state_machine
        self.failures_alarm = common.failed_runs_alarm(
            self,
            self.state_machine,
            "An erase run failed: the user is marked erased (hidden, their name and email gone, "
            "nothing registers them) but may still hold seats, places or records; redrive the "
            "execution (erase-<userId>-...) once the cause is fixed",
        )

    @staticmethod
    def _statements(task: str, table: dynamodb.ITable) -> list[iam.PolicyStatement]:
        statements = [
            iam.PolicyStatement(
                actions=list(actions),
                resources=[table.table_arn],
                conditions=leading_keys_condition(partitions),
            )
            for actions, partitions in TABLE_GRANTS[task]
        ]
        if task in INDEX_READERS:
            statements.append(
                iam.PolicyStatement(
                    actions=["dynamodb:Query"], resources=[f"{table.table_arn}/index/{GSI1_NAME}"]
                )
            )
        return statements

    @property
    def functions(self) -> Mapping[str, lambda_.IFunction]:
        return dict(self._functions)
