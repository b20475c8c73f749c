"""The engine's table: created from the template's spec, or accepted when it exists.

The table lives in DynamoDB Local (which keeps it between runs) or in moto; either way
it must have the schema the synthesized template declares. Creating it, waiting for it,
and refusing one left behind with another schema are kept apart from the engine, which
only says when.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

from infrastructure.local.execution_results import EngineError
from infrastructure.local.template_specs import TableSpec

ACTIVE_TIMEOUT_S = 30


def create_table(client: Any, spec: TableSpec, table_name: str) -> None:
    """Create ``table_name`` as ``spec`` declares it, unless it exists with that schema."""
    try:
        existing = client.describe_table(TableName=table_name)["Table"]
    except client.exceptions.ResourceNotFoundException:
        existing = None
    if existing is not None:
        check_existing_table(existing, spec, table_name)
        _enable_stream(client, existing, spec, table_name)
        return
    client.create_table(**spec.create_table_kwargs(table_name))
    deadline = time.monotonic() + ACTIVE_TIMEOUT_S
    while client.describe_table(TableName=table_name)["Table"]["TableStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise EngineError(f"table {table_name} did not become ACTIVE")
        time.sleep(0.05)
    if spec.ttl_attribute:
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
        )


def _enable_stream(client: Any, existing: Mapping[str, Any], spec: TableSpec, table_name: str) -> None:
    """A table kept from before the template had its stream gets it (data stays)."""
    wanted = (spec.stream_specification or {}).get("StreamViewType")
    found = existing.get("StreamSpecification") or {}
    if not wanted or (found.get("StreamEnabled") and found.get("StreamViewType") == wanted):
        return
    if found.get("StreamEnabled"):
        client.update_table(TableName=table_name, StreamSpecification={"StreamEnabled": False})
    client.update_table(
        TableName=table_name, StreamSpecification={"StreamEnabled": True, "StreamViewType": wanted}
    )


def check_existing_table(existing: Mapping[str, Any], spec: TableSpec, table_name: str) -> None:
    """Raise :class:`EngineError` unless the table's keys and indexes are the spec's."""
    wanted_keys = {(k["AttributeName"], k["KeyType"]) for k in spec.key_schema}
    found_keys = {(k["AttributeName"], k["KeyType"]) for k in existing["KeySchema"]}
    wanted_indexes = {i["IndexName"] for i in spec.global_secondary_indexes}
    found_indexes = {i["IndexName"] for i in existing.get("GlobalSecondaryIndexes", [])}
    if wanted_keys != found_keys or wanted_indexes != found_indexes:
        raise EngineError(
            f"table {table_name} already exists with another schema "
            f"(keys {sorted(found_keys)}, indexes {sorted(found_indexes)}; the template "
            f"wants keys {sorted(wanted_keys)}, indexes {sorted(wanted_indexes)}): "
            "delete the local database (.local/dynamodb) or the table"
        )


def recreate_table(client: Any, spec: TableSpec, table_name: str) -> None:
    """Delete the table (if there is one) and create it empty."""
    with contextlib.suppress(client.exceptions.ResourceNotFoundException):
        client.delete_table(TableName=table_name)
    create_table(client, spec, table_name)
