"""Test-wide settings: no AWS account, no tracing daemon, no metrics flushed to stdout."""

from __future__ import annotations

import os

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_SERVICE_NAME": "event-registration",
        "POWERTOOLS_METRICS_NAMESPACE": "EventRegistration",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
)
os.environ.pop("AWS_PROFILE", None)

pytest_plugins = ["tests.fixtures.plugin", "tests.fixtures.engines", "tests.fixtures.iam_report"]

from hypothesis import HealthCheck, settings  # noqa: E402 - after the environment is set

# Executions on the local engine cost tens of milliseconds: `ci` keeps `make test` inside
# its budget, `thorough` is for `make test-thorough`. What the properties state is the same.
_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("dev", max_examples=10, **_common)
# CI derandomizes so a gate is reproducible; exploring new examples is `thorough`'s job.
settings.register_profile("ci", max_examples=25, derandomize=True, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
