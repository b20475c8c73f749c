"""Monitoring in the synthesized template: the alarms, their actions, the dashboard, the
fault filter on the Express logs, tracing everywhere, and the local schedule's rate."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from infrastructure import names
from infrastructure.constructs import monitoring
from infrastructure.local.operator_endpoints import schedule_seconds
from tests.infrastructure.conftest import Synthesized

pytestmark = pytest.mark.infrastructure

ALARM = "AWS::CloudWatch::Alarm"
LAMBDAS = Path(__file__).resolve().parents[2] / "lambdas"


def _alarms(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    return {lid: r["Properties"] for lid, r in synthesized.resources(ALARM).items()}


def _alarm(synthesized: Synthesized, prefix: str) -> dict[str, Any]:
    found = [p for lid, p in _alarms(synthesized).items() if re.fullmatch(prefix + r"[0-9A-F]{8}", lid)]
    assert len(found) == 1, (prefix, sorted(_alarms(synthesized)))
    return found[0]


def _metric_names(props: dict[str, Any]) -> set[str]:
    if "MetricName" in props:
        return {props["MetricName"]}
    return {q["MetricStat"]["Metric"]["MetricName"] for q in props.get("Metrics", []) if "MetricStat" in q}


def _function_names(synthesized: Synthesized) -> dict[str, str]:
    """Function logical id -> the construct id the monitoring names its alarms after."""
    handlers = {
        **names.TASK_HANDLERS,
        **names.RECONCILE_HANDLERS,
        **names.CANCEL_HANDLERS,
        **names.ERASE_HANDLERS,
        names.API_FUNCTION_ID: names.API_HANDLER,
        **names.WEBHOOK_HANDLERS,
    }
    by_handler = {h: task for task, h in handlers.items()}
    return {
        lid: by_handler[r["Properties"]["Handler"]]
        for lid, r in synthesized.resources("AWS::Lambda::Function").items()
        if r["Properties"].get("Handler") in by_handler
    }


def test_faults_of_the_express_workflows_are_alarmed_not_refusals(synthesized: Synthesized) -> None:
    filters = [r["Properties"] for r in synthesized.resources("AWS::Logs::MetricFilter").values()]
    assert len(filters) == 2
    for props in filters:
        pattern = props["FilterPattern"]
        assert '($.type = "ExecutionFailed")' in pattern
        for code in ("AlreadyRegistered", "EventFull", "NotRegistered", "ValidationError", "UserNotFound"):
            assert f'($.details.error != "{code}")' in pattern
        assert "TransientDatabaseError" not in pattern  # a 503 is a fault
    for workflow in (names.REGISTER_WORKFLOW, names.UNREGISTER_WORKFLOW):
        title = workflow.capitalize()
        alarm = _alarm(synthesized, f"Monitoring{title}ExecutionsFailed")
        assert _metric_names(alarm) == {
            monitoring.unexpected_failures_metric(workflow),
            "ExecutionsTimedOut",
            "ExecutionsAborted",
        }
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")


def test_failed_standard_runs_and_repairs_keep_their_one_alarm(synthesized: Synthesized) -> None:
    """One failed-runs alarm per Standard workflow (reconcile, cancel, erase), one repairs alarm."""
    failed = [p for p in _alarms(synthesized).values() if "ExecutionsFailed" in _metric_names(p)]
    repairs = [
        p for p in _alarms(synthesized).values() if names.RECONCILIATION_REPAIRS_METRIC in _metric_names(p)
    ]
    machines = {d["Value"]["Ref"] for p in failed for d in p["Dimensions"]}
    assert machines == {
        synthesized.output_ref(names.WORKFLOW_OUTPUTS[names.RECONCILE_WORKFLOW]),
        synthesized.output_ref(names.WORKFLOW_OUTPUTS[names.CANCEL_WORKFLOW]),
        synthesized.output_ref(names.WORKFLOW_OUTPUTS[names.ERASE_WORKFLOW]),
    }
    assert len(failed) == 3 and len(repairs) == 1


def test_every_state_machine_has_a_throttle_alarm(synthesized: Synthesized) -> None:
    for workflow in names.WORKFLOW_OUTPUTS:
        alarm = _alarm(synthesized, f"Monitoring{workflow.capitalize()}ExecutionsThrottled")
        assert _metric_names(alarm) == {"ExecutionThrottled"}


def test_lambda_throttles_everywhere_errors_where_no_refusals_are_raised(synthesized: Synthesized) -> None:
    functions = _function_names(synthesized)
    assert len(functions) == (
        len(names.TASK_HANDLERS)
        + len(names.RECONCILE_HANDLERS)
        + len(names.CANCEL_HANDLERS)
        + len(names.ERASE_HANDLERS)
        + 1
        + len(names.WEBHOOK_HANDLERS)
    )
    by_metric: dict[str, set[str]] = {"Throttles": set(), "Errors": set()}
    for props in _alarms(synthesized).values():
        if props.get("Namespace") == "AWS/Lambda":
            (dimension,) = props["Dimensions"]
            by_metric[props["MetricName"]].add(functions[dimension["Value"]["Ref"]])
    assert by_metric["Throttles"] == set(functions.values())
    assert by_metric["Errors"] == {
        names.API_FUNCTION_ID,
        *names.RECONCILE_HANDLERS,
        *names.CANCEL_HANDLERS,
        *names.ERASE_HANDLERS,
        *names.WEBHOOK_HANDLERS,
    }


def test_api_and_table_alarms(synthesized: Synthesized) -> None:
    assert _alarm(synthesized, "MonitoringApi5xx")["MetricName"] == "5XXError"
    assert _metric_names(_alarm(synthesized, "MonitoringTableThrottledRequests")) == {"ThrottledRequests"}
    assert _metric_names(_alarm(synthesized, "MonitoringTableSystemErrors")) == {"SystemErrors"}


def test_every_alarm_notifies_the_topic_which_is_an_output(synthesized: Synthesized) -> None:
    (topic_id,) = synthesized.resources("AWS::SNS::Topic")
    assert synthesized.output_ref(monitoring.ALARM_TOPIC_OUTPUT) == topic_id
    for lid, props in _alarms(synthesized).items():
        assert props.get("AlarmActions") == [{"Ref": topic_id}], lid


def test_one_dashboard_shows_every_alarm_and_the_business_metrics(synthesized: Synthesized) -> None:
    (dashboard,) = synthesized.resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for lid in _alarms(synthesized):
        assert lid in body, lid
    for metric in (*monitoring.BUSINESS_METRICS, *monitoring.RECONCILIATION_METRICS):
        assert metric in body, metric


def test_the_dashboard_metrics_are_the_ones_the_handlers_emit() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in LAMBDAS.rglob("*.py"))
    for metric in (*monitoring.BUSINESS_METRICS, *monitoring.RECONCILIATION_METRICS):
        if metric == "TransactionConflicts":
            assert '"TransactionConflicts"' in source
        else:
            assert f'"{metric}"' in source, metric
    assert 'f"Refused{code}"' in source


def test_state_machines_and_functions_are_traced(synthesized: Synthesized) -> None:
    for lid, machine in synthesized.resources("AWS::StepFunctions::StateMachine").items():
        assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}, lid
    for lid, function in synthesized.resources("AWS::Lambda::Function").items():
        if function["Properties"].get("Handler") in (*names.TASK_HANDLERS.values(), names.API_HANDLER):
            assert function["Properties"]["TracingConfig"] == {"Mode": "Active"}, lid


def test_the_local_schedule_runs_at_the_deployed_rate(synthesized: Synthesized) -> None:
    (schedule,) = synthesized.resources("AWS::Scheduler::Schedule").values()
    expression = schedule["Properties"]["ScheduleExpression"]
    assert expression == names.DEFAULT_RECONCILE_SCHEDULE
    assert schedule_seconds(expression) == 15 * 60 == schedule_seconds()
    assert schedule_seconds("rate(1 hour)") == 3600
    assert schedule_seconds("cron(0 * * * ? *)") == 0
