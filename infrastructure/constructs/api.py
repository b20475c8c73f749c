"""The REST API: workflow routes start an Express execution directly, the rest go to one Lambda.

Register and unregister call Step Functions' `StartSyncExecution` from API Gateway (no
forwarding Lambda). StartSyncExecution answers HTTP 200 whatever became of the execution,
so the integration response reads the execution's `status`, `error` and `cause` and
sets the HTTP status itself. The table it follows is `registration.outcomes`, the same
one the local server and the API Lambda use: `api_mappings.py` generates the templates from it.

Every other route is a proxy integration to one Lambda (Powertools'
`APIGatewayRestResolver`), which validates its own input with the shared models.

Every method but the open routes (`names.OPEN_ROUTES`: `GET /health`) is guarded by one
Cognito User Pools authorizer over the stack's user pool: a request needs a valid ID
token of the pool in `Authorization` (else the 401 gateway response). The authorizer is
the RestApi's default for every method, so a route added later is guarded unless it is
listed as open; the workflow routes pass the caller's claims on to the execution.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infrastructure import names
from infrastructure.constructs import task_functions
from infrastructure.constructs.api_mappings import (
    IDEMPOTENCY_HEADER,
    UNAVAILABLE_STATUS,
    api_gateway_schema,
    gateway_response_headers,
    gateway_response_template,
    gateway_responses,
    path_parameters,
    register_request_schema,
    service_error_template,
    service_unavailable_template,
    workflow_method_headers,
    workflow_method_statuses,
    workflow_request_template,
    workflow_response_template,
)
from infrastructure.constructs.table import GSI1_NAME
from registration import keys, outcomes
from workflows import erase

JSON = "application/json"
STAGE_NAME = "v1"
# Stage-wide default for every method: steady requests per second and burst.
THROTTLING_RATE_LIMIT = 100
THROTTLING_BURST_LIMIT = 200
ACCESS_LOG_RETENTION = logs.RetentionDays.ONE_MONTH

# The API function reads and writes users and events and lists everything. Its one
# change to seats and the waitlist is `PATCH /events/{id}` seating waitlist heads in
# seats the change adds: UpdateItem and DeleteItem confined to the events' partitions
# (`EVENT#*`, EVENT_CHANGE_ACTIONS). `PATCH /users/{id}` updates a user (`USER#*`). For
# `Idempotency-Key` on its own POST routes it also claims (PutItem), completes
# (UpdateItem) and releases (DeleteItem) idempotency records: the update and delete are
# confined to those records by IAM's `dynamodb:LeadingKeys`, so it can never delete a
# user.
API_TABLE_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:BatchGetItem")
API_IDEMPOTENCY_ACTIONS = ("dynamodb:UpdateItem", "dynamodb:DeleteItem")
API_INDEX_ACTIONS = ("dynamodb:Query",)
EVENT_CHANGE_ACTIONS = ("dynamodb:UpdateItem", "dynamodb:DeleteItem")
# `DELETE /webhooks/{id}` removes a subscription, confined to the subscriptions' keys.
WEBHOOK_LEADING_KEYS = [f"{keys.WEBHOOK_PREFIX}*"]
# The API function's updates and deletes, each confined by `dynamodb:LeadingKeys` to the
# partitions it may change: (actions, leading keys).
API_CONFINED_WRITES: tuple[tuple[tuple[str, ...], list[str]], ...] = (
    (API_IDEMPOTENCY_ACTIONS, task_functions.IDEMPOTENCY_LEADING_KEYS),
    (("dynamodb:DeleteItem",), WEBHOOK_LEADING_KEYS),
    (EVENT_CHANGE_ACTIONS, task_functions.EVENT_LEADING_KEYS),
    (("dynamodb:UpdateItem",), task_functions.USER_LEADING_KEYS),
)

# --- access log -------------------------------------------------------------------------

ACCESS_LOG_FIELDS: dict[str, str] = {
    "requestId": apigateway.AccessLogField.context_request_id(),
    "extendedRequestId": apigateway.AccessLogField.context_extended_request_id(),
    "requestTime": apigateway.AccessLogField.context_request_time(),
    "ip": apigateway.AccessLogField.context_identity_source_ip(),
    "userAgent": apigateway.AccessLogField.context_identity_user_agent(),
    "httpMethod": apigateway.AccessLogField.context_http_method(),
    "resourcePath": apigateway.AccessLogField.context_resource_path(),
    "path": apigateway.AccessLogField.context_path(),
    "protocol": apigateway.AccessLogField.context_protocol(),
    "status": apigateway.AccessLogField.context_status(),
    "responseLength": apigateway.AccessLogField.context_response_length(),
    "responseLatency": apigateway.AccessLogField.context_response_latency(),
    "integrationStatus": apigateway.AccessLogField.context_integration_status(),
    "integrationLatency": apigateway.AccessLogField.context_integration_latency(),
    "integrationError": apigateway.AccessLogField.context_integration_error_message(),
    "errorType": apigateway.AccessLogField.context_error_response_type(),
    "errorMessage": apigateway.AccessLogField.context_error_message(),
    "xrayTraceId": apigateway.AccessLogField.context_xray_trace_id(),
}


# --- the construct ----------------------------------------------------------------------


def cloud_watch_role_wanted(scope: Construct) -> bool:
    """Whether to create API Gateway's account-wide CloudWatch role and set it as the
    region's account setting (`-c apiGatewayCloudWatchRole=true`; off by default, since
    the setting belongs to the account, not to this stack)."""
    value = scope.node.try_get_context(names.API_GATEWAY_CLOUDWATCH_ROLE_CONTEXT)
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError(
            f"context {names.API_GATEWAY_CLOUDWATCH_ROLE_CONTEXT} must be true or false, not {value!r}"
        )
    return text == "true"


class RegistrationApi(Construct):
    """REST API with one stage (access logs, throttling, tracing, metrics) and a URL output."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        table: dynamodb.ITable,
        state_machines: Mapping[str, sfn.IStateMachine],
        powertools_layer: lambda_.ILayerVersion,
        user_pool: cognito.IUserPool,
    ) -> None:
        super().__init__(scope, construct_id)

        # Checks the ID token in `Authorization` (signature, issuer, audience, expiry)
        # against the pool, created by the stack or given as context.
        self.authorizer = apigateway.CognitoUserPoolsAuthorizer(
            self,
            names.AUTHORIZER_CONSTRUCT_ID,
            cognito_user_pools=[user_pool],
            identity_source=apigateway.IdentitySource.header(names.AUTHORIZATION_HEADER),
        )
        self.access_log_group = logs.LogGroup(self, "AccessLogs", retention=ACCESS_LOG_RETENTION)
        self.rest_api = apigateway.RestApi(
            self,
            "RestApi",
            # Named after the stack: the API's metrics (alarms, dashboard) carry this name.
            rest_api_name=Stack.of(self).stack_name,
            description="Event registration HTTP API",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            # The stage's logging needs API Gateway's CloudWatch role, an account-wide
            # setting (one per region): created here only when asked for.
            cloud_watch_role=cloud_watch_role_wanted(self),
            # Every method is guarded unless it opts out (`_add_method`, names.OPEN_ROUTES).
            default_method_options=apigateway.MethodOptions(
                authorizer=self.authorizer, authorization_type=apigateway.AuthorizationType.COGNITO
            ),
            deploy_options=apigateway.StageOptions(
                stage_name=STAGE_NAME,
                access_log_destination=apigateway.LogGroupLogDestination(self.access_log_group),
                access_log_format=apigateway.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
                throttling_rate_limit=THROTTLING_RATE_LIMIT,
                throttling_burst_limit=THROTTLING_BURST_LIMIT,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
            ),
        )
        # RestApi adds an `Endpoint` output of its own; the stack's output is `ApiUrl`.
        self.rest_api.node.try_remove_child("Endpoint")

        self._register_schema = register_request_schema()
        self._add_gateway_responses()

        self.function = self._api_function(table, powertools_layer, state_machines)
        lambda_integration = apigateway.LambdaIntegration(self.function, proxy=True, allow_test_invoke=False)
        for method, path in names.LAMBDA_ROUTES:
            self._add_method(method, path, lambda_integration)

        self.start_roles: dict[str, iam.Role] = {}
        for (method, path), workflow in names.WORKFLOW_ROUTES.items():
            self._workflow_route(method, path, workflow, state_machines[workflow])

        routes = {*names.LAMBDA_ROUTES, *names.WORKFLOW_ROUTES}
        unknown = sorted(set(names.OPEN_ROUTES) - routes)
        if unknown:
            raise ValueError(f"open routes the API does not serve: {unknown}")

        url_output = CfnOutput(
            self,
            names.API_URL_OUTPUT,
            value=self.rest_api.url,
            description="Base URL of the HTTP API (its stage)",
        )
        url_output.override_logical_id(names.API_URL_OUTPUT)

    def _add_method(
        self, method: str, path: str, integration: apigateway.Integration, **options: Any
    ) -> apigateway.Method:
        """Adds `method` on `path`: guarded by the authorizer (the RestApi's default
        method options), or open to anyone when (method, path) is in names.OPEN_ROUTES."""
        if (method, path) in names.OPEN_ROUTES:
            options["authorization_type"] = apigateway.AuthorizationType.NONE
        return self.rest_api.root.resource_for_path(path).add_method(method, integration, **options)

    # Lambda routes -------------------------------------------------------------------

    def _api_function(
        self,
        table: dynamodb.ITable,
        layer: lambda_.ILayerVersion,
        state_machines: Mapping[str, sfn.IStateMachine],
    ) -> lambda_.Function:
        # `GET /health` describes the workflows the API starts.
        checked = {workflow: state_machines[workflow] for workflow in names.ENV_WORKFLOW_ARNS}
        function = task_functions.python_function(
            self,
            names.API_FUNCTION_ID,
            names.API_HANDLER,
            code=lambda_.Code.from_asset(
                str(task_functions.LAMBDA_ASSET_DIR), exclude=task_functions.ASSET_EXCLUDES
            ),
            layer=layer,
            statements=[
                iam.PolicyStatement(actions=list(API_TABLE_ACTIONS), resources=[table.table_arn]),
                *(
                    iam.PolicyStatement(
                        actions=list(actions),
                        resources=[table.table_arn],
                        conditions=task_functions.leading_keys_condition(leading_keys),
                    )
                    for actions, leading_keys in API_CONFINED_WRITES
                ),
                iam.PolicyStatement(
                    actions=list(API_INDEX_ACTIONS), resources=[f"{table.table_arn}/index/{GSI1_NAME}"]
                ),
            ],
            table=table,
            role_description="Runs the API function (users, events, listings, health)",
            description=f"HTTP API routes other than the workflows ({names.API_HANDLER})",
        )
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["states:DescribeStateMachine"],
                resources=[machine.state_machine_arn for machine in checked.values()],
            )
        )
        # `POST /events/{id}/cancel` and `DELETE /users/{id}` start their workflows themselves.
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["states:StartExecution"],
                resources=[
                    state_machines[workflow].state_machine_arn
                    for workflow in (names.CANCEL_WORKFLOW, names.ERASE_WORKFLOW)
                ],
            )
        )
        for workflow, machine in checked.items():
            function.add_environment(names.ENV_WORKFLOW_ARNS[workflow], machine.state_machine_arn)
        # How long an erasure waits for the registrations that read its user before the mark.
        function.add_environment(names.ENV_ERASURE_SETTLE, str(erase.SETTLE_SECONDS))
        return function

    # Workflow routes -----------------------------------------------------------------

    def _workflow_route(
        self, method: str, path: str, workflow: str, state_machine: sfn.IStateMachine
    ) -> None:
        prefix = workflow.capitalize()
        role = iam.Role(
            self,
            f"{prefix}StartRole",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            description=f"Lets API Gateway start the {workflow} workflow synchronously",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["states:StartSyncExecution"], resources=[state_machine.state_machine_arn]
            )
        )
        self.start_roles[workflow] = role

        success = outcomes.SUCCESS_STATUS[workflow]
        integration = apigateway.AwsIntegration(
            service="states",
            action="StartSyncExecution",
            integration_http_method="POST",
            options=apigateway.IntegrationOptions(
                credentials_role=role,
                passthrough_behavior=apigateway.PassthroughBehavior.NEVER,
                request_templates={
                    JSON: workflow_request_template(workflow, state_machine.state_machine_arn, path=path)
                },
                integration_responses=[
                    # Any execution, failed or not: the template decides the status.
                    apigateway.IntegrationResponse(
                        status_code=str(success),
                        response_templates={JSON: workflow_response_template(workflow)},
                    ),
                    apigateway.IntegrationResponse(
                        selection_pattern=r"4\d{2}",
                        status_code="500",
                        response_templates={JSON: service_error_template()},
                    ),
                    apigateway.IntegrationResponse(
                        selection_pattern=r"5\d{2}",
                        status_code=str(UNAVAILABLE_STATUS),
                        response_templates={JSON: service_unavailable_template()},
                    ),
                ],
            ),
        )

        request_parameters = {f"method.request.path.{p}": True for p in path_parameters(path)}
        # Optional: declared so it is documented; the request validator does not require it.
        request_parameters[f"method.request.header.{IDEMPOTENCY_HEADER}"] = False
        method_options: dict[str, Any] = {
            "request_parameters": request_parameters,
            "method_responses": [
                apigateway.MethodResponse(
                    status_code=str(status), response_parameters=workflow_method_headers(status)
                )
                for status in workflow_method_statuses(workflow)
            ],
        }
        if "userId" not in path_parameters(path):
            model = self.rest_api.add_model(
                f"{prefix}RequestModel",
                content_type=JSON,
                model_name=f"{prefix}Request",
                schema=api_gateway_schema(self._register_schema),
            )
            validator = self.rest_api.add_request_validator(
                f"{prefix}Validator",
                request_validator_name=f"{workflow}-body-and-parameters",
                validate_request_body=True,
                validate_request_parameters=True,
            )
            method_options.update(request_models={JSON: model}, request_validator=validator)
        self._add_method(method, path, integration, **method_options)

    # Errors API Gateway answers itself ----------------------------------------------

    def _add_gateway_responses(self) -> None:
        for response_type, (status, body) in gateway_responses(self._register_schema).items():
            headers = gateway_response_headers(response_type)
            self.rest_api.add_gateway_response(
                "".join(part.capitalize() for part in response_type.split("_")),
                type=apigateway.ResponseType.of(response_type),
                status_code=str(status) if status is not None else None,
                templates={JSON: gateway_response_template(body)},
                # Header values are mapping expressions: a literal is written in quotes.
                response_headers={name: f"'{value}'" for name, value in headers.items()} or None,
            )

    @property
    def url(self) -> str:
        return self.rest_api.url
