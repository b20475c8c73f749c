"""What the functions read from their environment, in one place: the stack sets it on AWS,
the local twin from the synthesized template."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

# The variables, by name.
TABLE_NAME = "TABLE_NAME"
# The secret pagination tokens are signed with (`registration.data.pages`).
PAGE_TOKEN_SECRET = "PAGE_TOKEN_SECRET"
# The API function's environment names each workflow's state machine (`GET /health`).
WORKFLOW_ARNS = {
    "register": "REGISTER_STATE_MACHINE_ARN",
    "unregister": "UNREGISTER_STATE_MACHINE_ARN",
    "cancel": "CANCEL_STATE_MACHINE_ARN",
    "erase": "ERASE_STATE_MACHINE_ARN",
}
# The API function's: how long an erasure waits for registrations that read the user
# before it was marked (longer than a register execution may run; the stack sets it).
ERASURE_SETTLE = "ERASURE_SETTLE_S"
DEFAULT_ERASURE_SETTLE_S = 30
# The webhook functions' deliveries queue (the fan-out sends to it, the delivery function
# changes the visibility of its messages).
WEBHOOK_DELIVERY_QUEUE_URL = "WEBHOOK_DELIVERY_QUEUE_URL"
SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
# Set locally only (botocore reads it too): DynamoDB Local's endpoint.
DYNAMODB_ENDPOINT = "AWS_ENDPOINT_URL_DYNAMODB"
REGION = "AWS_DEFAULT_REGION"
# Set by the local stack only: webhook subscriptions may also name http://127.0.0.1 and
# http://localhost (a receiver on the developer's machine); on AWS only https://.
WEBHOOK_LOOPBACK_HTTP = "WEBHOOK_ALLOW_LOOPBACK_HTTP"
# Set by the local stack only: the waits (whole seconds, comma-separated) after each failed
# webhook delivery, instead of AWS's 30 s doubling to an hour, so that a receiver restarted
# during development gets its messages at once.
WEBHOOK_RETRY_SCHEDULE = "WEBHOOK_RETRY_SCHEDULE_S"

# A process without PAGE_TOKEN_SECRET (tests, the local stack) signs with this.
DEVELOPMENT_PAGE_TOKEN_SECRET = "local-development-page-token-secret"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    table_name: str
    page_token_secret: str
    workflow_arns: dict[str, str]
    service_name: str
    metrics_namespace: str
    dynamodb_endpoint: str
    region: str
    webhook_loopback_http: bool = False
    webhook_retry_schedule: tuple[int, ...] = ()
    erasure_settle_s: int = DEFAULT_ERASURE_SETTLE_S

    @classmethod
    def read(cls, environment: Mapping[str, str] | None = None) -> Settings:
        """The settings in `environment` (the process's, read now: tests change it)."""
        env = os.environ if environment is None else environment
        return cls(
            table_name=env.get(TABLE_NAME, ""),
            page_token_secret=env.get(PAGE_TOKEN_SECRET) or DEVELOPMENT_PAGE_TOKEN_SECRET,
            workflow_arns={
                name: env[variable] for name, variable in WORKFLOW_ARNS.items() if env.get(variable)
            },
            service_name=env.get(SERVICE_NAME, "event-registration"),
            metrics_namespace=env.get(METRICS_NAMESPACE, "EventRegistration"),
            dynamodb_endpoint=env.get(DYNAMODB_ENDPOINT, ""),
            region=env.get(REGION, ""),
            webhook_loopback_http=env.get(WEBHOOK_LOOPBACK_HTTP) == "1",
            webhook_retry_schedule=tuple(
                int(wait) for wait in env.get(WEBHOOK_RETRY_SCHEDULE, "").split(",") if wait.strip()
            ),
            erasure_settle_s=int(env.get(ERASURE_SETTLE) or DEFAULT_ERASURE_SETTLE_S),
        )
