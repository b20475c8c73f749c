"""CDK app entry point: `python -m infrastructure.app` writes cdk.out/ without the cdk CLI.

Synthesis needs no AWS account and no Docker: the stack is environment-agnostic and
the Lambda code is a plain directory asset.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aws_cdk import App

from infrastructure import names
from infrastructure.nag import acknowledge_findings
from infrastructure.stacks.registration_stack import RegistrationStack

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTDIR = REPO_ROOT / names.CDK_OUT_DIR

# Feature flags live here rather than in cdk.json so that synthesizing with or without
# the cdk CLI gives the same template.
FEATURE_FLAGS: dict[str, object] = {
    "@aws-cdk/aws-iam:minimizePolicies": True,
    "@aws-cdk/aws-lambda:recognizeLayerVersion": True,
    "@aws-cdk/core:enablePartitionLiterals": True,
}


def build_app(
    outdir: str | Path | None = None, context: Mapping[str, object] | None = None
) -> tuple[App, RegistrationStack]:
    """Build (but do not synthesize) the app and its one stack.

    `context` adds context values (as `cdk synth -c key=value` does, e.g. the user pool's
    `names.USER_POOL_ID_CONTEXT`); the constructs read what they take from it.
    """
    app = App(outdir=str(outdir or DEFAULT_OUTDIR), context={**FEATURE_FLAGS, **(context or {})})
    stack = RegistrationStack(
        app,
        names.STACK_NAME,
        stack_name=names.STACK_NAME,
        description="Event registration: Step Functions workflows over one DynamoDB table",
        analytics_reporting=False,
    )
    # cdk-nag runs in the infrastructure tests; what it may flag is decided here.
    acknowledge_findings(stack)
    return app, stack


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
