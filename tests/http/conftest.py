"""A local server on a free port over DynamoDB Local (in memory), one per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infrastructure.local.engine import LocalEngine
from infrastructure.local.server import LocalServer
from tests.http.client import Client


@pytest.fixture(scope="module")
def server(local_engine: LocalEngine) -> Iterator[LocalServer]:
    with LocalServer(local_engine, port=0) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: LocalServer) -> Client:
    return Client(server.url)
