"""The API these tests talk to.

By default a local server on a free port over DynamoDB Local (in memory), one per test
module. With `E2E_URL` set (`make e2e URL=...`) they talk to that API instead, a
deployed stage or a running `make run`, and no local server starts. Tests that reach
around the API (the table read or written directly, the engine's internals, injected
faults, the local stack's CLI and process) are marked `local_only` and skipped there.
A test in this folder that asks for a local-stack fixture must carry that marker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infrastructure.local.engine import LocalEngine
from infrastructure.local.http_server import LocalServer
from tests.http.client import BASE_URL_VARIABLE, Client, base_url

HERE = Path(__file__).resolve().parent
# Fixtures that are the local stack itself (tests/fixtures and this folder).
LOCAL_FIXTURES = frozenset(
    {
        "server",
        "engine",
        "store",
        "workflows",
        "local_engine",
        "local_store",
        "local_workflows",
        "handler_store",
        "dynamodb_local",
    }
)


def _in_this_folder(item: pytest.Item) -> bool:
    return HERE in item.path.parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    url = base_url()
    if url is None:
        return
    for item in items:
        marker = item.get_closest_marker("local_only")
        if marker is not None and _in_this_folder(item):
            why = marker.args[0] if marker.args else "needs the local stack"
            item.add_marker(pytest.mark.skip(reason=f"local only, {why} ({BASE_URL_VARIABLE}={url})"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if not _in_this_folder(item) or item.get_closest_marker("local_only") is not None:
        return
    local = sorted(LOCAL_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if local:
        pytest.fail(
            f"{item.nodeid} uses the local stack ({', '.join(local)}): mark it "
            "@pytest.mark.local_only(reason) so that `make e2e` skips it",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def server(local_engine: LocalEngine) -> Iterator[LocalServer]:
    with LocalServer(local_engine, port=0) as running:
        yield running


@pytest.fixture(scope="module")
def api_url(request: pytest.FixtureRequest) -> str:
    """`E2E_URL`, or the URL of this module's local server (started only then)."""
    url = base_url()
    if url is not None:
        return url
    running: LocalServer = request.getfixturevalue("server")
    return running.url


@pytest.fixture(scope="module")
def anonymous(api_url: str) -> Client:
    """A client that sends no token."""
    return Client(api_url)


@pytest.fixture(scope="module")
def client(anonymous: Client) -> Client:
    """A client signed in as an admin (see `tests.http.client.ADMIN_CALLER`)."""
    return anonymous.as_admin()
