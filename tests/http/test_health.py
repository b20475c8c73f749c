"""`GET /health` through the API as deployed: the API function, with its role, reads the
table and describes the workflows."""

from __future__ import annotations

import pytest

from tests.http.client import Client

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("http")]


def test_health_reports_the_table_and_every_workflow(client: Client) -> None:
    answer = client.get("/health")
    assert answer.status == 200, answer.raw
    assert answer.body == {
        "status": "ok",
        "database": {"status": "ok", "detail": None},
        "workflows": {
            "register": {"status": "ok", "detail": None},
            "unregister": {"status": "ok", "detail": None},
            "cancel": {"status": "ok", "detail": None},
            "erase": {"status": "ok", "detail": None},
        },
    }
