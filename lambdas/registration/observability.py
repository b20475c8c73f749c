"""Logger, Tracer and Metrics, created once and imported everywhere."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from registration.settings import Settings

_settings = Settings.read()
SERVICE = _settings.service_name
NAMESPACE = _settings.metrics_namespace

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def count(name: str) -> None:
    """One more occurrence of a business outcome (a registration, a conflict, a refusal)."""
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


def outcome_metric(error: Exception) -> str:
    """The metric a failed write counts under: conflicts by their own name, refusals by code."""
    code = getattr(error, "code", type(error).__name__)
    return "TransactionConflicts" if code == "DecisionStale" else f"Refused{code}"
