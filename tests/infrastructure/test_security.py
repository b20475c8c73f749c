"""Security baseline of the synthesized stack: cdk-nag, least privilege, cfn-lint, ASL.

* cdk-nag's AwsSolutions and Serverless packs run on the app: zero findings that are
  not acknowledged in `infrastructure.nag`, every acknowledgement with its reason.
* Least privilege across every role in the template: no wildcard action, database
  actions on the table and its index only (the per-function and per-state machine
  checks live in test_template.py and test_api.py).
* cfn-lint passes on the template; asl-validator passes on every state machine's ASL.

The nag figures go to `.local/reliability-nag.json` for docs/reliability.md, whose cdk-nag
table must be this run's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infrastructure import names
from tests.fixtures import figures as figure_files
from tests.infrastructure.conftest import Synthesized

pytestmark = [pytest.mark.infrastructure, pytest.mark.xdist_group("security")]

REPO_ROOT = Path(__file__).resolve().parents[2]
ASL_VALIDATOR = REPO_ROOT / "node_modules" / ".bin" / "asl-validator"
NAG_PACKS = ("AwsSolutions", "Serverless")
# cfn-lint checks left out, each with its reason.
CFN_LINT_IGNORED = {
    # CDK adds an explicit DependsOn on a function's role (and its default policy) next
    # to the GetAtt of the role, so the policy is attached before the function exists.
    "W3005": "CDK's explicit DependsOn on a role that a GetAtt already implies",
}


@dataclass(frozen=True)
class NagRun:
    violations: list[dict[str, Any]]
    acknowledged: list[Any]  # infrastructure.nag.Acknowledged
    error: str | None
    reported: bool  # the plugins ran (CDK writes the report, empty when all pass)


@pytest.fixture(scope="module")
def nag_run(tmp_path_factory: pytest.TempPathFactory) -> NagRun:
    """The app synthesized once more, with cdk-nag's packs as validation plugins."""
    from aws_cdk import Validations
    from cdk_nag import AwsSolutionsChecks, ServerlessChecks

    from infrastructure.app import build_app
    from infrastructure.nag import acknowledge_findings

    outdir = tmp_path_factory.mktemp("nag.out")
    app, stack = build_app(outdir=outdir)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
    error = None
    try:
        app.synth()
    except RuntimeError as exc:  # a failed validation raises after writing its report
        error = str(exc)
    report = outdir / "validation-report.json"
    violations: list[dict[str, Any]] = []
    if report.exists():
        for plugin in json.loads(report.read_text()).get("pluginReports", []):
            violations.extend(plugin.get("violations", []))
    # What build_app acknowledged (the same calls, listed without applying them twice).
    acknowledged = _acknowledgements(stack, acknowledge_findings)
    return NagRun(violations, acknowledged, error, report.exists())


def _acknowledgements(stack: Any, acknowledge: Any) -> list[Any]:
    from aws_cdk import Validations

    calls: list[Any] = []
    original = Validations.acknowledge

    def record(self: Any, *rules: Any) -> None:
        calls.extend(rules)

    Validations.acknowledge = record  # type: ignore[method-assign]
    try:
        return list(acknowledge(stack))
    finally:
        Validations.acknowledge = original  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, Any]]:
    collected: dict[str, Any] = {}
    yield collected
    if collected:
        figure_files.merge("nag", collected)


def _finding_lines(violations: list[dict[str, Any]]) -> list[str]:
    return [
        f"{v['ruleName']} at {c['constructPath']}: {v['description'][:120]}"
        for v in violations
        for c in v.get("violatingConstructs", [])
    ]


def _nag_figures(nag_run: NagRun) -> dict[str, Any]:
    """What docs/reliability.md shows of a nag run: the acknowledgements by rule and reason."""
    grouped = Counter((a.rule.split("[")[0], a.reason) for a in nag_run.acknowledged)
    return {
        "packs": list(NAG_PACKS),
        "unacknowledgedFindings": 0,
        "acknowledgements": len(nag_run.acknowledged),
        "byRule": [
            {"rule": rule, "count": count, "reason": reason}
            for (rule, reason), count in sorted(grouped.items())
        ],
        "cfnLintIgnored": CFN_LINT_IGNORED,
    }


# --- cdk-nag ---------------------------------------------------------------------------


def test_cdk_nag_finds_nothing_unacknowledged(nag_run: NagRun, figures: dict[str, Any]) -> None:
    assert nag_run.reported
    assert _finding_lines(nag_run.violations) == []
    assert nag_run.error is None

    figures["cdkNag"] = _nag_figures(nag_run)


def test_the_reliability_document_lists_these_acknowledgements(nag_run: NagRun) -> None:
    """docs/reliability.md's cdk-nag table (written by `make reliability`) is this run's."""
    from tests import reliability

    expected = [
        line
        for line in reliability._nag({"cdkNag": _nag_figures(nag_run)})
        if line.startswith(("cdk-nag packs", "| "))
    ]
    document = reliability.DOCUMENT.read_text(encoding="utf-8")
    section = document.split("## Security baseline", 1)[1].split("\n## ", 1)[0]
    written = [line for line in section.splitlines() if line.startswith(("cdk-nag packs", "| "))]
    assert written == expected, "docs/reliability.md is out of date: run `make reliability`"


def test_every_acknowledgement_has_a_reason(nag_run: NagRun) -> None:
    assert nag_run.acknowledged
    for ack in nag_run.acknowledged:
        assert ack.rule.split("-")[0] in NAG_PACKS, ack
        assert len(ack.reason.split()) >= 8, ack


def test_only_wildcards_that_cannot_be_narrowed_are_acknowledged() -> None:
    """A policy with a wildcard on any other action is not acknowledged (it stays a finding)."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_iam as iam

    from infrastructure.nag import _policy_findings

    stack = Stack(App(), "Probe")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_policy(iam.PolicyStatement(actions=["xray:PutTraceSegments"], resources=["*"]))
    tracing = role.node.find_child("DefaultPolicy").node.default_child
    assert [rule for rule, _ in _policy_findings(stack, tracing)] == ["AwsSolutions-IAM5[Resource::*]"]

    role.add_to_policy(
        iam.PolicyStatement(actions=["dynamodb:Scan", "xray:PutTraceSegments"], resources=["*"])
    )
    assert _policy_findings(stack, tracing) == []


# --- least privilege across the template ------------------------------------------------


def _policies(synthesized: Synthesized) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in synthesized.resources("AWS::IAM::Policy").items():
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            yield logical_id, statement


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_no_role_has_a_wildcard_action(synthesized: Synthesized) -> None:
    for logical_id, statement in _policies(synthesized):
        assert statement["Effect"] == "Allow", (logical_id, statement)
        for action in _list(statement["Action"]):
            assert not action.endswith("*"), (logical_id, action)


def test_database_actions_name_only_the_table_and_its_index(synthesized: Synthesized) -> None:
    (table_id,) = synthesized.resources("AWS::DynamoDB::Table")
    allowed = [
        {"Fn::GetAtt": [table_id, "Arn"]},
        {"Fn::Join": ["", [{"Fn::GetAtt": [table_id, "Arn"]}, "/index/GSI1"]]},
    ]
    # The table's stream, for the stream-reading actions only (the domain events' pipe).
    stream = {"Fn::GetAtt": [table_id, "StreamArn"]}
    seen = 0
    for logical_id, statement in _policies(synthesized):
        if not any(a.startswith("dynamodb:") for a in _list(statement["Action"])):
            continue
        seen += 1
        assert all(a.startswith("dynamodb:") for a in _list(statement["Action"])), statement
        for resource in _list(statement["Resource"]):
            if resource == stream:
                assert set(_list(statement["Action"])) <= STREAM_READ_ACTIONS, (logical_id, statement)
                continue
            assert resource in allowed, (logical_id, resource)
        assert "dynamodb:Scan" not in _list(statement["Action"]), logical_id
    assert seen >= len(names.TASK_HANDLERS)


STREAM_READ_ACTIONS = {
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
}

# Actions whose request always names its item's partition key: with `ForAllValues`, a
# `dynamodb:LeadingKeys` condition on a request without keys would match anything.
KEYED_ITEM_ACTIONS = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
IDEMPOTENCY_ONLY = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["IDEMPOTENCY#*"]}}
EVENTS_ONLY = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["EVENT#*"]}}
USERS_ONLY = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["USER#*"]}}
# Never a Scan, a BatchWriteItem or anything beyond an event's own items.
CANCELLATION_ACTIONS = {
    "dynamodb:Query",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
}
# Subscription items: the delivery function reads them, the API function removes them;
# the fan-out lists them (a Query on GSI1's WEBHOOKS partition: a Query always names its
# partition key's value).
WEBHOOK_ITEMS_ONLY = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["WEBHOOK#*"]}}
WEBHOOK_LISTING_ONLY = {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["WEBHOOKS"]}}
WEBHOOKS_ONLY = WEBHOOK_ITEMS_ONLY


def test_leading_keys_conditions_confine_single_item_actions(synthesized: Synthesized) -> None:
    confined = []
    for logical_id, statement in _policies(synthesized):
        if "Condition" not in statement:
            continue
        confined.append(logical_id)
        actions = set(_list(statement["Action"]))
        if statement["Condition"] == WEBHOOK_LISTING_ONLY:
            assert actions == {"dynamodb:Query"} and "WebhookFanOut" in logical_id, (logical_id, statement)
            assert statement["Resource"]["Fn::Join"][1][-1] == "/index/GSI1", (logical_id, statement)
            continue
        # A Query is confined by its partition key too: the cancel workflow's batch reads
        # one event's seats and places, nothing else of the table; the erase workflow's
        # release reads a waitlist's head, its forgetting one user's idempotency records.
        # A BatchGetItem names every item's key: the release reads a user's seat and place.
        erases = "Erasure" in logical_id
        queries_one_partition = (
            "Cancellation" in logical_id and statement["Condition"] == EVENTS_ONLY
        ) or erases
        allowed = (
            KEYED_ITEM_ACTIONS
            | ({"dynamodb:Query"} if queries_one_partition else set())
            | ({"dynamodb:BatchGetItem"} if erases and statement["Condition"] == EVENTS_ONLY else set())
        )
        assert actions <= allowed, (logical_id, statement)
        if statement["Condition"] == WEBHOOK_ITEMS_ONLY:
            # The delivery function reads a subscription; `DELETE /webhooks/{id}` removes
            # one (the API function's only delete outside the idempotency records).
            reads = actions == {"dynamodb:GetItem"} and "WebhookDelivery" in logical_id
            removes = actions == {"dynamodb:DeleteItem"} and "HttpApiApiRole" in logical_id
            assert reads or removes, (logical_id, statement)
        elif statement["Condition"] == EVENTS_ONLY:
            # ClaimRequest reads who organizes an event (the ownership rule), nothing it
            # could change; the API function changes events (`PATCH /events/{id}`, with
            # the seats it adds), in the events' partitions only.
            reads = actions == {"dynamodb:GetItem"} and "ClaimRequest" in logical_id
            changes = (
                actions == {"dynamodb:UpdateItem", "dynamodb:DeleteItem"} and "HttpApiApiRole" in logical_id
            )
            # The cancel workflow's functions read and release one event's entries, the
            # erase workflow's release a user's seat or place at one event.
            cancels = "Cancellation" in logical_id and actions <= CANCELLATION_ACTIONS
            releases = "ErasureReleaseUserRegistrations" in logical_id
            assert reads or changes or cancels or releases, (logical_id, statement)
        elif statement["Condition"] == USERS_ONLY:
            # `PATCH /users/{id}` and the erasure's mark: the API function updates a user,
            # never deletes one; only the erase workflow's last step does.
            updates = actions == {"dynamodb:UpdateItem"} and "HttpApiApiRole" in logical_id
            forgets = actions == {"dynamodb:DeleteItem"} and "ErasureForgetUser" in logical_id
            assert updates or forgets, (logical_id, statement)
        else:
            assert statement["Condition"] == IDEMPOTENCY_ONLY, (logical_id, statement)
            # Only the erase workflow's forgetting lists records (one caller's partition).
            assert "dynamodb:Query" not in actions or "ErasureForgetUser" in logical_id, (
                logical_id,
                statement,
            )
    # ClaimRequest's (twice) and RecordOutcome's roles, the API function's updates and
    # deletes of idempotency records, of subscriptions and in events' partitions, its
    # updates of users, the two webhook functions', the two cancellation functions' and
    # the erasure functions' three (events; idempotency records and users).
    assert len(confined) == 14, confined


# Table encryption and point-in-time recovery (test_template.py), stage throttling and
# the API function's role (test_api.py), each task's and each state machine's role
# (test_template.py) are checked where those resources are.


# --- linters ---------------------------------------------------------------------------


def test_cfn_lint_passes(synthesized: Synthesized, figures: dict[str, Any]) -> None:
    template = synthesized.outdir / names.TEMPLATE_FILE
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "cfn-lint"),
            "--ignore-checks",
            *CFN_LINT_IGNORED,
            "--",
            str(template),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures["cfnLint"] = {"templates": 1, "findings": 0}


def test_asl_validator_passes_on_every_state_machine(
    synthesized: Synthesized, tmp_path: Path, figures: dict[str, Any]
) -> None:
    if not ASL_VALIDATOR.exists() or shutil.which("node") is None:
        pytest.fail("asl-validator is missing: run `npm ci` (make deps)")
    machines = synthesized.resources("AWS::StepFunctions::StateMachine")
    assert len(machines) >= len(names.WORKFLOW_OUTPUTS)
    arguments: list[str] = []
    for logical_id in machines:
        path = tmp_path / f"{logical_id}.asl.json"
        path.write_text(synthesized.definition_string(logical_id))
        arguments += ["--json-path", str(path)]
    result = subprocess.run(
        [str(ASL_VALIDATOR), *arguments], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("is valid") == len(machines), result.stdout
    figures["aslValidator"] = {"stateMachines": len(machines), "invalid": 0}


# --- the pagination token secret --------------------------------------------------------


def test_every_listing_function_signs_tokens_with_one_generated_secret(synthesized: Synthesized) -> None:
    (secret_id,) = synthesized.resources("AWS::SecretsManager::Secret")
    generated = synthesized.raw["Resources"][secret_id]["Properties"]["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32
    reference = {"Fn::Join": ["", ["{{resolve:secretsmanager:", {"Ref": secret_id}, ":SecretString:::}}"]]}
    holders = {
        logical_id
        for logical_id, function in synthesized.resources("AWS::Lambda::Function").items()
        if names.ENV_PAGE_TOKEN_SECRET in function["Properties"].get("Environment", {}).get("Variables", {})
    }
    api_function = next(
        logical_id
        for logical_id, function in synthesized.resources("AWS::Lambda::Function").items()
        if function["Properties"]["Handler"] == names.API_HANDLER
    )
    assert api_function in holders and any("ListEventsPage" in h for h in holders), holders
    for logical_id in holders:
        variables = synthesized.raw["Resources"][logical_id]["Properties"]["Environment"]["Variables"]
        # A deploy-time reference: the template never holds the secret itself.
        assert variables[names.ENV_PAGE_TOKEN_SECRET] == reference


def test_the_local_stack_resolves_the_secret_to_its_development_default(synthesized: Synthesized) -> None:
    from infrastructure.local.template import parse_template

    local = parse_template(synthesized.raw)
    values = {
        spec.environment[names.ENV_PAGE_TOKEN_SECRET]
        for spec in local.functions.values()
        if names.ENV_PAGE_TOKEN_SECRET in spec.environment
    }
    assert values == {""}
