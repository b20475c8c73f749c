"""The EventRegistration stack: composes the table, the task functions, the workflows,
the API, the user pool, reconciliation, the domain events, webhook delivery and
monitoring.

Each capability is one construct; the stack only composes them, building each from the
attributes the others expose.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infrastructure import names
from infrastructure.constructs.api import RegistrationApi
from infrastructure.constructs.cancellation import Cancellation
from infrastructure.constructs.domain_events import DomainEvents
from infrastructure.constructs.erasure import Erasure
from infrastructure.constructs.identity import Identity
from infrastructure.constructs.monitoring import Monitoring
from infrastructure.constructs.reconciliation import Reconciliation
from infrastructure.constructs.table import RegistrationTable
from infrastructure.constructs.task_functions import TaskFunctions
from infrastructure.constructs.webhooks import Webhooks
from workflows.register import RegisterWorkflow
from workflows.unregister import UnregisterWorkflow


class RegistrationStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)

        self.table_construct = RegistrationTable(self, "Table")
        self.task_functions = TaskFunctions(self, "TaskFunctions", table=self.table)

        functions = self.task_functions.functions
        self.register_workflow = RegisterWorkflow(self, "RegisterWorkflow", functions=functions)
        self.unregister_workflow = UnregisterWorkflow(self, "UnregisterWorkflow", functions=functions)
        # The user pool (created, or the one given as context) whose ID tokens the API's
        # authorizer accepts: every route but the health check wants one.
        self.identity = Identity(self, names.IDENTITY_CONSTRUCT_ID)
        # Cancelled events' seats, released by a Standard workflow the API starts.
        self.cancellation = Cancellation(
            self, "Cancellation", table=self.table, powertools_layer=self.task_functions.powertools_layer
        )
        # Erased users' seats, places and records, released and deleted by a Standard workflow.
        self.erasure = Erasure(
            self, "Erasure", table=self.table, powertools_layer=self.task_functions.powertools_layer
        )
        self.api = RegistrationApi(
            self,
            "HttpApi",
            table=self.table,
            state_machines={
                **self.state_machines,
                names.CANCEL_WORKFLOW: self.cancellation.state_machine,
                names.ERASE_WORKFLOW: self.erasure.state_machine,
            },
            powertools_layer=self.task_functions.powertools_layer,
            user_pool=self.identity.user_pool,
        )
        self.reconciliation = Reconciliation(
            self,
            "Reconciliation",
            table=self.table,
            powertools_layer=self.task_functions.powertools_layer,
            # A cancelled event still holding registrations gets its cancel run from here.
            cancel_state_machine=self.cancellation.state_machine,
        )

        # The table's stream, filtered to its domain events, onto the project's bus.
        self.domain_events = DomainEvents(self, names.DOMAIN_EVENTS_CONSTRUCT_ID, table=self.table)
        # The same stream, through a second pipe and FIFO queues, to the webhook subscriptions.
        self.webhooks = Webhooks(
            self,
            names.WEBHOOKS_CONSTRUCT_ID,
            table=self.table,
            powertools_layer=self.task_functions.powertools_layer,
        )

        self.page_token_secret = self._page_token_secret(
            [self.api.function, self.reconciliation.functions["ListEventsPage"]]
        )

        self.monitoring = Monitoring(
            self,
            "Monitoring",
            express_workflows={
                names.REGISTER_WORKFLOW: (self.register_state_machine, self.register_workflow.log_group),
                names.UNREGISTER_WORKFLOW: (
                    self.unregister_state_machine,
                    self.unregister_workflow.log_group,
                ),
            },
            standard_workflows={
                names.RECONCILE_WORKFLOW: self.reconcile_state_machine,
                names.CANCEL_WORKFLOW: self.cancellation.state_machine,
                names.ERASE_WORKFLOW: self.erasure.state_machine,
            },
            functions={
                **self.task_functions.functions,
                **self.reconciliation.functions,
                **self.cancellation.functions,
                **self.erasure.functions,
                names.API_FUNCTION_ID: self.api.function,
                **self.webhooks.functions,
            },
            # Task functions raise refusals as errors (for Catch): only these are alarmed on Errors.
            error_alarmed_functions=[
                names.API_FUNCTION_ID,
                *self.reconciliation.functions,
                *self.cancellation.functions,
                *self.erasure.functions,
                *self.webhooks.functions,
            ],
            table=self.table,
            rest_api=self.api.rest_api,
            existing_alarms=[
                self.reconciliation.failures_alarm,
                self.cancellation.failures_alarm,
                self.erasure.failures_alarm,
                self.reconciliation.repairs_alarm,
                *self.domain_events.alarms,
                *self.webhooks.alarms,
            ],
        )

        CfnOutput(
            self,
            names.TABLE_OUTPUT,
            value=self.table.table_name,
            description="DynamoDB table holding users, events, registrations and waitlists",
        )
        for workflow, state_machine in self.state_machines.items():
            CfnOutput(
                self,
                names.WORKFLOW_OUTPUTS[workflow],
                value=state_machine.state_machine_arn,
                description=f"ARN of the {workflow} Express state machine",
            )
        CfnOutput(
            self,
            names.WORKFLOW_OUTPUTS[names.RECONCILE_WORKFLOW],
            value=self.reconciliation.state_machine.state_machine_arn,
            description="ARN of the reconcile Standard state machine (scheduled; start it by hand too)",
        )
        CfnOutput(
            self,
            names.WORKFLOW_OUTPUTS[names.CANCEL_WORKFLOW],
            value=self.cancellation.state_machine.state_machine_arn,
            description="ARN of the cancel Standard state machine (POST /events/{id}/cancel starts it)",
        )
        CfnOutput(
            self,
            names.WORKFLOW_OUTPUTS[names.ERASE_WORKFLOW],
            value=self.erasure.state_machine.state_machine_arn,
            description="ARN of the erase Standard state machine (DELETE /users/{id} starts it)",
        )
        CfnOutput(
            self,
            names.EVENT_BUS_NAME_OUTPUT,
            value=self.domain_events.bus.event_bus_name,
            description="EventBridge bus the domain events are put on",
        )
        CfnOutput(
            self,
            names.EVENT_BUS_ARN_OUTPUT,
            value=self.domain_events.bus.event_bus_arn,
            description="ARN of the domain events' bus (rules of other consumers go on it)",
        )
        CfnOutput(
            self,
            names.EVENT_LOG_GROUP_OUTPUT,
            value=self.domain_events.log_group.log_group_name,
            description="Log group every domain event is copied to (regctl events tail --aws)",
        )
        CfnOutput(
            self,
            names.WEBHOOK_DELIVERIES_DLQ_OUTPUT,
            value=self.webhooks.deliveries_dead_letter_queue.queue_url,
            description="Dead-letter queue of the webhook messages their receivers refused for a day",
        )

    @property
    def table(self) -> dynamodb.Table:
        return self.table_construct.table

    @property
    def register_state_machine(self) -> sfn.StateMachine:
        return self.register_workflow.state_machine

    @property
    def unregister_state_machine(self) -> sfn.StateMachine:
        return self.unregister_workflow.state_machine

    @property
    def reconcile_state_machine(self) -> sfn.StateMachine:
        """The scheduled Standard workflow (not in `state_machines`: no API route starts it)."""
        return self.reconciliation.state_machine

    @property
    def state_machines(self) -> dict[str, sfn.StateMachine]:
        """Workflow identifier (as in `names`) -> state machine."""
        return {
            names.REGISTER_WORKFLOW: self.register_state_machine,
            names.UNREGISTER_WORKFLOW: self.unregister_state_machine,
        }

    def _page_token_secret(self, listers: list[lambda_.IFunction]) -> secretsmanager.Secret:
        """The secret pagination tokens are signed with (`registration.data.pages`): generated
        once per stack, the same for every function that lists and every instance of it,
        kept across deploys and restarts. CloudFormation resolves it into each function's
        environment at deploy time (a dynamic reference: the template never holds it)."""
        secret = secretsmanager.Secret(
            self,
            "PageTokenSecret",
            description="Signs the API's pagination tokens (nextToken)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True
            ),
        )
        for function in listers:
            if not isinstance(function, lambda_.Function):
                raise TypeError(f"{function.node.path} is not a function this stack defines")
            function.add_environment(names.ENV_PAGE_TOKEN_SECRET, secret.secret_value.unsafe_unwrap())
        return secret
