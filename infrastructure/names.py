"""Every name shared by the CDK app, the local engine, the API and the tests lives here."""

from __future__ import annotations

from typing import Any

from registration import access, domain_events
from registration import settings as function_settings

STACK_NAME = "EventRegistration"
TEMPLATE_FILE = f"{STACK_NAME}.template.json"
CDK_OUT_DIR = "cdk.out"

# Local table name (on AWS CloudFormation names the table; the stack outputs it).
LOCAL_TABLE_NAME = "event-registration"
LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT = "123456789012"

# Workflow identifiers (used by the engine, the API and the CLI) and the stack output
# that carries each state machine's ARN.
REGISTER_WORKFLOW = "register"
UNREGISTER_WORKFLOW = "unregister"
RECONCILE_WORKFLOW = "reconcile"
CANCEL_WORKFLOW = "cancel"
ERASE_WORKFLOW = "erase"
WORKFLOW_OUTPUTS = {
    REGISTER_WORKFLOW: "RegisterStateMachineArn",
    UNREGISTER_WORKFLOW: "UnregisterStateMachineArn",
    RECONCILE_WORKFLOW: "ReconcileStateMachineArn",
    CANCEL_WORKFLOW: "CancelStateMachineArn",
    ERASE_WORKFLOW: "EraseStateMachineArn",
}
TABLE_OUTPUT = "TableName"

# Task functions: construct id -> handler (module path inside the lambdas/ asset).
TASK_HANDLERS = {
    "Validate": "handlers.validate.handler",
    "CheckCapacity": "handlers.check_capacity.handler",
    "WriteRegistration": "handlers.write_registration.handler",
    "CheckRegistration": "handlers.check_registration.handler",
    "WriteUnregistration": "handlers.write_unregistration.handler",
    "PromoteFromWaitlist": "handlers.promote_from_waitlist.handler",
    "ClaimRequest": "handlers.claim_request.handler",
    "RecordOutcome": "handlers.record_outcome.handler",
}

# Environment variables the functions read (`registration.settings` names them).
ENV_TABLE_NAME = function_settings.TABLE_NAME
ENV_PAGE_TOKEN_SECRET = function_settings.PAGE_TOKEN_SECRET
ENV_WORKFLOW_ARNS = function_settings.WORKFLOW_ARNS
ENV_SERVICE_NAME = function_settings.SERVICE_NAME
ENV_METRICS_NAMESPACE = function_settings.METRICS_NAMESPACE
POWERTOOLS_SERVICE_NAME = "event-registration"
METRICS_NAMESPACE = "EventRegistration"

# The HTTP API. Workflow routes start an Express execution directly (StartSyncExecution);
# every other route goes to the one API Lambda.
API_HANDLER = "handlers.api.handler"
API_FUNCTION_ID = "Api"
API_URL_OUTPUT = "ApiUrl"
LOCAL_API_PORT = 3000
# The local stack's operator endpoints (what `regctl` talks to) live under this path.
LOCAL_OPS_PREFIX = "/_ops"
# `cdk deploy -c apiGatewayCloudWatchRole=true` also creates API Gateway's account-wide
# CloudWatch role (the region's account setting); off by default.
API_GATEWAY_CLOUDWATCH_ROLE_CONTEXT = "apiGatewayCloudWatchRole"
WORKFLOW_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/events/{eventId}/register"): REGISTER_WORKFLOW,
    ("DELETE", "/events/{eventId}/register/{userId}"): UNREGISTER_WORKFLOW,
}
LAMBDA_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/users"),
    ("GET", "/users"),
    ("GET", "/users/{userId}"),
    ("PATCH", "/users/{userId}"),
    ("DELETE", "/users/{userId}"),
    ("GET", "/users/{userId}/registrations"),
    ("POST", "/events"),
    ("GET", "/events"),
    ("GET", "/events/{eventId}"),
    ("PATCH", "/events/{eventId}"),
    ("POST", "/events/{eventId}/cancel"),
    ("GET", "/events/{eventId}/registrations"),
    ("GET", "/events/{eventId}/registrations/{userId}"),
    ("GET", "/events/{eventId}/waitlist"),
    ("POST", "/webhooks"),
    ("GET", "/webhooks"),
    ("DELETE", "/webhooks/{webhookId}"),
    ("GET", "/health"),
)
# Routes anyone may call, signed in or not (load balancers and monitors call the health
# check). Every other route of the API, present or future, is guarded by the user pool's
# Cognito authorizer: it wants an ID token in AUTHORIZATION_HEADER.
OPEN_ROUTES: tuple[tuple[str, str], ...] = (("GET", "/health"),)
AUTHORIZATION_HEADER = "Authorization"
AUTHORIZER_CONSTRUCT_ID = "Authorizer"
# The workflow routes put the signed-in caller, read from the authorizer's claims only,
# into the execution input under CALLER_INPUT_KEY: `{"userId": <USERNAME_CLAIM>,
# "groups": <GROUPS_CLAIM>}` ("" when the caller is in no group).
CALLER_INPUT_KEY = "caller"
USERNAME_CLAIM = access.USERNAME_CLAIM
GROUPS_CLAIM = access.GROUPS_CLAIM

# Identity: the Cognito user pool callers sign in to (`constructs/identity.py`). The stack
# creates one, or uses the pool and app client given as context
# (`cdk deploy -c userPoolId=... -c userPoolClientId=...`), whose groups must exist.
IDENTITY_CONSTRUCT_ID = "Identity"
USER_POOL_CONSTRUCT_ID = "UserPool"
USER_POOL_CLIENT_CONSTRUCT_ID = "UserPoolClient"
USER_POOL_ID_CONTEXT = "userPoolId"
USER_POOL_CLIENT_ID_CONTEXT = "userPoolClientId"
ORGANIZERS_GROUP = access.ORGANIZERS
ADMINS_GROUP = access.ADMINS
USER_GROUPS = (ORGANIZERS_GROUP, ADMINS_GROUP)
USER_POOL_ID_OUTPUT = "UserPoolId"
USER_POOL_CLIENT_ID_OUTPUT = "UserPoolClientId"
USER_POOL_ISSUER_OUTPUT = "UserPoolIssuerUrl"

# Cancelling an event: the API function marks it cancelled and starts CANCEL_WORKFLOW, a
# Standard workflow (`workflows.cancel`) whose functions are these (construct id -> handler).
CANCEL_HANDLERS = {
    "NextCancellationBatch": "handlers.next_cancellation_batch.handler",
    "ReleaseRegistrations": "handlers.release_registrations.handler",
}
# Its executions are named `cancel-<eventId>`: one per event (Standard names are unique).
CANCEL_EXECUTION_PREFIX = f"{CANCEL_WORKFLOW}-"

# Erasing a user: the API function marks the user erased and starts ERASE_WORKFLOW, a
# Standard workflow (`workflows.erase`) whose functions are these (construct id -> handler).
ERASE_HANDLERS = {
    "ReleaseUserRegistrations": "handlers.release_user_registrations.handler",
    "ForgetUser": "handlers.forget_user.handler",
}
ENV_ERASURE_SETTLE = function_settings.ERASURE_SETTLE

# Reconciliation: a Standard workflow (RECONCILE_WORKFLOW) started by an EventBridge
# Scheduler schedule. Its functions: construct id -> handler.
RECONCILE_HANDLERS = {
    "ListEventsPage": "handlers.list_events_page.handler",
    "ReconcileEvent": "handlers.reconcile_event.handler",
    "TallyReconciliation": "handlers.tally_reconciliation.handler",
    "RecordReconciliation": "handlers.record_reconciliation.handler",
}
# A run continues in a fresh execution of the same state machine every few pages (a
# Standard execution's history holds at most 25,000 events): the next execution's input
# carries the run under RECONCILE_CONTINUATION_KEY; the output of the one that ended names
# its successor under RECONCILE_CONTINUED_AS_KEY.
RECONCILE_CONTINUATION_KEY = "continuation"
RECONCILE_CONTINUED_AS_KEY = "continuedAs"
# The reconcile state machine's name is `<stack name>-<this>` (fixed, so that its role
# may start it by ARN without referring to the state machine itself).
RECONCILE_STATE_MACHINE_SUFFIX = "reconcile"
# `cdk synth -c reconcileSchedule="rate(1 hour)"` (or the construct's argument) overrides it.
RECONCILE_SCHEDULE_CONTEXT = "reconcileSchedule"
DEFAULT_RECONCILE_SCHEDULE = "rate(15 minutes)"
# The metric every repair adds to (lambdas/registration/reconciliation.py emits it).
RECONCILIATION_REPAIRS_METRIC = "ReconciliationRepairs"

# The states a keyed workflow ends in when it answers as the first request with its
# `Idempotency-Key` did (workflows/common.py), which `regctl executions show` marks.
REPLAYED_SUCCESS_STATE = "ReplayedSuccess"
REPLAYED_FAILURE_STATE = "ReplayedFailure"

# Domain events (`constructs/domain_events.py`, `registration.domain_events`): an
# EventBridge pipe reads the table's stream, keeps exactly the INSERTs whose new image
# carries a domain event, and puts each on the project's bus (`<stack name>-<suffix>`)
# with the item's event text as the detail and its type as `detail-type`; a rule on the
# bus copies every event to a log group operators follow (`regctl events tail --aws`).
# The twin runs the same filter and templates, read from the synthesized template.
DOMAIN_EVENTS_CONSTRUCT_ID = "DomainEvents"
EVENT_BUS_CONSTRUCT_ID = "EventBus"
EVENT_PIPE_CONSTRUCT_ID = "Pipe"
EVENT_PIPE_ROLE_CONSTRUCT_ID = "PipeRole"
EVENT_PIPE_DLQ_CONSTRUCT_ID = "PipeDeadLetterQueue"
EVENT_LOG_RULE_CONSTRUCT_ID = "LogRule"
EVENT_LOG_RULE_DLQ_CONSTRUCT_ID = "LogRuleDeadLetterQueue"
EVENT_LOG_GROUP_CONSTRUCT_ID = "LogGroup"
EVENT_LOG_POLICY_CONSTRUCT_ID = "LogGroupPolicy"
EVENT_PIPE_DLQ_ALARM_CONSTRUCT_ID = "PipeDeadLetterAlarm"
EVENT_LOG_RULE_DLQ_ALARM_CONSTRUCT_ID = "LogRuleDeadLetterAlarm"
EVENT_BUS_SUFFIX = "domain-events"
# EventBridge's console lists only log groups under this prefix as a rule's targets.
EVENT_LOG_GROUP_PREFIX = "/aws/events/"
EVENT_SOURCE = domain_events.EVENT_SOURCE
EVENT_TYPES = domain_events.EVENT_TYPES
EVENT_BUS_NAME_OUTPUT = "EventBusName"
EVENT_BUS_ARN_OUTPUT = "EventBusArn"
EVENT_LOG_GROUP_OUTPUT = "DomainEventsLogGroupName"
# The pipe's one filter: the stream records that are domain events (an INSERT whose new
# image has the event's text; a MODIFY or a REMOVE never is one).
DOMAIN_EVENT_FILTER: dict[str, Any] = {
    "eventName": ["INSERT"],
    "dynamodb": {"NewImage": {domain_events.DETAIL_ATTRIBUTE: {"S": [{"exists": True}]}}},
}
# The event's detail is the item's text whole (a string placeholder that is the whole
# template inserts the string's content, unquoted); its detail-type is a dynamic path
# into the stream record (read before the input template applies).
DOMAIN_EVENT_INPUT_TEMPLATE = f"<$.dynamodb.NewImage.{domain_events.DETAIL_ATTRIBUTE}.S>"
DOMAIN_EVENT_DETAIL_TYPE_PATH = f"$.dynamodb.NewImage.{domain_events.TYPE_ATTRIBUTE}.S"
# The rule that copies the bus's events to the log group.
DOMAIN_EVENT_LOG_PATTERN: dict[str, Any] = {"source": [EVENT_SOURCE]}

# Webhook delivery on AWS (`constructs/webhooks.py`, `registration.webhook_fanout`,
# `registration.webhook_delivery`): a second pipe from the table's stream (the same filter
# and input template as the domain events') fills an SQS FIFO queue, one message group
# per event; a fan-out function turns each domain event into one message per matching
# subscription on a second FIFO queue (one group per subscription and event), whose
# delivery function POSTs it, signed. The twin runs the same path (`infrastructure.local.queues`,
# `infrastructure.local.event_sources`), with shorter retries.
WEBHOOKS_CONSTRUCT_ID = "Webhooks"
WEBHOOK_PIPE_CONSTRUCT_ID = "Pipe"
WEBHOOK_PIPE_ROLE_CONSTRUCT_ID = "PipeRole"
WEBHOOK_EVENTS_QUEUE_CONSTRUCT_ID = "EventsQueue"
WEBHOOK_EVENTS_DLQ_CONSTRUCT_ID = "EventsDeadLetterQueue"
WEBHOOK_DELIVERIES_QUEUE_CONSTRUCT_ID = "DeliveriesQueue"
WEBHOOK_DELIVERIES_DLQ_CONSTRUCT_ID = "DeliveriesDeadLetterQueue"
WEBHOOK_EVENTS_DLQ_ALARM_CONSTRUCT_ID = "EventsDeadLetterAlarm"
WEBHOOK_DELIVERIES_DLQ_ALARM_CONSTRUCT_ID = "DeliveriesDeadLetterAlarm"
# Queue names: `<stack name>-<suffix>.fifo` (a FIFO queue's name ends in `.fifo`).
WEBHOOK_EVENTS_QUEUE_SUFFIX = "webhook-events"
WEBHOOK_DELIVERIES_QUEUE_SUFFIX = "webhook-deliveries"
DEAD_LETTER_QUEUE_SUFFIX = "-dlq"
FIFO_QUEUE_SUFFIX = ".fifo"


def webhook_queue_name(suffix: str, *, dead_letter: bool = False, stack_name: str = STACK_NAME) -> str:
    """`<stack name>-<suffix>[-dlq].fifo`."""
    tail = DEAD_LETTER_QUEUE_SUFFIX if dead_letter else ""
    return f"{stack_name}-{suffix}{tail}{FIFO_QUEUE_SUFFIX}"


# The two functions: construct id -> handler.
WEBHOOK_FAN_OUT_FUNCTION_ID = "WebhookFanOut"
WEBHOOK_DELIVERY_FUNCTION_ID = "WebhookDelivery"
WEBHOOK_HANDLERS = {
    WEBHOOK_FAN_OUT_FUNCTION_ID: "handlers.webhook_fan_out.handler",
    WEBHOOK_DELIVERY_FUNCTION_ID: "handlers.webhook_delivery.handler",
}
ENV_WEBHOOK_DELIVERY_QUEUE_URL = function_settings.WEBHOOK_DELIVERY_QUEUE_URL
# The pipe's SQS parameters, dynamic paths into the stream record: the message group is
# the event (every item that carries a domain event has `eventId`), the deduplication id
# the stream record's own id (a record the pipe reads twice is sent once).
WEBHOOK_EVENTS_GROUP_ID_PATH = "$.dynamodb.NewImage.eventId.S"
WEBHOOK_EVENTS_DEDUPLICATION_ID_PATH = "$.eventID"
# Stack outputs.
WEBHOOK_DELIVERIES_DLQ_OUTPUT = "WebhookDeliveriesDeadLetterQueueUrl"
