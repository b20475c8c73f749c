"""The Step Functions client the API function uses (health checks, starting the cancel
workflow): one per region, created on first use and kept for the process."""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def client_for_region(region: str) -> Any:
    import boto3

    return boto3.client("stepfunctions", region_name=region)


def client_for(state_machine_arn: str) -> Any:
    """The client of the state machine's region (arn:aws:states:REGION:ACCOUNT:stateMachine:NAME)."""
    return client_for_region(state_machine_arn.split(":")[3])
