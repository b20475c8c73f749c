"""DynamoDB Local life cycle, and the engine running a workflow against it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from infrastructure.local import dynamodb_local as ddb
from infrastructure.local.dynamodb_local import (
    DynamoDBLocal,
    DynamoDBLocalError,
    JavaNotFoundError,
)
from infrastructure.local.engine import LocalEngine
from tests.fixtures.sample_template import SAMPLE_OUTPUTS, SAMPLE_WORKFLOW, sample_template

pytest_plugins = ["tests.fixtures.plugin"]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.integration
def test_engine_runs_the_workflow_against_dynamodb_local(
    sample_engine_on_dynamodb_local: LocalEngine, dynamodb_local: DynamoDBLocal
) -> None:
    engine = sample_engine_on_dynamodb_local

    ok = engine.run(SAMPLE_WORKFLOW, {"id": "a1"})
    refused = engine.run(SAMPLE_WORKFLOW, {"id": "a2", "fail": "check"})

    assert ok.status == "SUCCEEDED", ok
    assert refused.status == "FAILED"
    assert refused.error == "SampleError"
    # Read straight from DynamoDB Local, bypassing moto entirely.
    client = dynamodb_local.client()
    item = client.get_item(
        TableName=engine.table_name, Key={"PK": {"S": "ITEM#a1"}, "SK": {"S": "METADATA"}}
    ).get("Item")
    assert item is not None
    described = client.describe_table(TableName=engine.table_name)["Table"]
    assert [i["IndexName"] for i in described["GlobalSecondaryIndexes"]] == ["GSI1"]


@pytest.mark.integration
def test_in_memory_instance_starts_answers_and_stops() -> None:
    instance = DynamoDBLocal(in_memory=True)
    with instance:
        port = instance.port
        assert port is not None
        assert instance.running
        assert instance.endpoint_url == f"http://127.0.0.1:{port}"
        assert instance.client().list_tables()["TableNames"] == []
        process = instance._process
    assert not instance.running
    assert process is not None and process.poll() is not None
    assert not _port_open(port)


@pytest.mark.integration
def test_data_on_disk_survives_a_restart(tmp_path: Path) -> None:
    db_path = tmp_path / "dynamodb"
    template = sample_template()
    with (
        DynamoDBLocal(db_path=db_path) as instance,
        LocalEngine(
            template, workflow_outputs=SAMPLE_OUTPUTS, dynamodb_endpoint=instance.endpoint_url
        ) as engine,
    ):
        assert engine.run(SAMPLE_WORKFLOW, {"id": "kept"}).succeeded
    assert any(db_path.iterdir())

    with (
        DynamoDBLocal(db_path=db_path) as instance,
        LocalEngine(
            template, workflow_outputs=SAMPLE_OUTPUTS, dynamodb_endpoint=instance.endpoint_url
        ) as engine,
    ):
        item = engine.table().get_item(Key={"PK": "ITEM#kept", "SK": "METADATA"}).get("Item")
    assert item is not None


def test_missing_java_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)

    with pytest.raises(JavaNotFoundError) as raised:
        DynamoDBLocal(in_memory=True).start()

    message = str(raised.value)
    assert "apt-get install openjdk-17-jre-headless" in message
    assert "in-memory" in message
    assert message.count(". ") == 0  # one sentence


def test_missing_jar_says_to_run_npm_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DYNAMODB_LOCAL_DIR", raising=False)
    with pytest.raises(DynamoDBLocalError, match="npm ci"):
        ddb.find_jar_dir(tmp_path)


def test_in_memory_and_db_path_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DynamoDBLocal(db_path=tmp_path, in_memory=True)
