"""The process environment the in-process handlers run in.

The handlers run in this process, in moto's worker threads, and read their settings
from ``os.environ`` as they do on Lambda. Which variables they see (the template's,
the engine's, the caller's), which are scrubbed, and how the process gets its own
values back when the engine stops is one concern, kept apart from the engine that
applies it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from infrastructure import names
from infrastructure.local.template_specs import FunctionSpec, LocalTemplate
from registration import settings as function_settings

LOG = logging.getLogger(__name__)

# Variables that would send the handlers' boto3 clients somewhere else (or fail
# on a missing profile) while the engine runs.
CLEARED_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
)


def common_environment(functions: Mapping[str, FunctionSpec]) -> dict[str, str]:
    """Variables every function agrees on.

    ``os.environ`` is shared by all the threads that run handlers, so a variable can
    only be set once for all of them; one that differs between functions is left
    out (and reported) rather than set to one function's value.
    """
    values: dict[str, set[str]] = {}
    for function in functions.values():
        for key, value in function.environment.items():
            values.setdefault(key, set()).add(value)
    conflicting = sorted(k for k, v in values.items() if len(v) > 1)
    if conflicting:
        LOG.warning(
            "environment variables differ between functions and are not set locally: %s",
            ", ".join(conflicting),
        )
    return {k: next(iter(v)) for k, v in values.items() if len(v) == 1}


def handler_environment(
    template: LocalTemplate,
    *,
    region: str,
    table_name: str,
    dynamodb_endpoint: str | None,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """Variables the in-process handlers see (on top of the rest of os.environ)."""
    env = {
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        names.ENV_SERVICE_NAME: names.POWERTOOLS_SERVICE_NAME,
        names.ENV_METRICS_NAMESPACE: names.METRICS_NAMESPACE,
        # EMF lines on stdout for every invocation drown the local server's output.
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    env.update(common_environment(template.functions))
    env[names.ENV_TABLE_NAME] = table_name
    # No X-Ray daemon locally.
    env["POWERTOOLS_TRACE_DISABLED"] = "true"
    if dynamodb_endpoint:
        env["AWS_ENDPOINT_URL_DYNAMODB"] = dynamodb_endpoint
    # Webhook receivers on this machine (http://127.0.0.1, http://localhost) are allowed
    # here only: on AWS a subscription's URL is https://.
    env[function_settings.WEBHOOK_LOOPBACK_HTTP] = "1"
    env.update(extra)
    return env


class ProcessEnvironment:
    """``os.environ`` set for the handlers, and the values it held before, to put back."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def apply(self, env: Mapping[str, str]) -> None:
        """Scrub :data:`CLEARED_VARIABLES` and set ``env``; the first value of each key is
        the one :meth:`restore` puts back, however often this is called."""
        for key in (*CLEARED_VARIABLES, *env):
            if key not in self._saved:
                self._saved[key] = os.environ.get(key)
        for key in CLEARED_VARIABLES:
            os.environ.pop(key, None)
        os.environ.update(env)

    def restore(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()
