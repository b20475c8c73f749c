"""`/webhooks` over HTTP: which URLs a subscription may name, its secret shown once, the
listing without secrets, removal, and bad input refused with nothing written."""

from __future__ import annotations

import pytest

from tests.http.client import ORGANIZERS, Client, uid

pytestmark = pytest.mark.local_only("the local stack accepts loopback receivers over http")

RECEIVER = "http://127.0.0.1:9/hook"


def _ids(client: Client) -> set[str]:
    return {w["webhookId"] for w in client.all_items("/webhooks", 100)}


def test_a_subscription_shows_its_secret_once(client: Client) -> None:
    made = client.post("/webhooks", {"url": RECEIVER, "types": ["registration.promoted"]})
    assert made.status == 201, made.raw
    body = made.body
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 20
    assert (body["url"], body["types"], body.get("eventId")) == (RECEIVER, ["registration.promoted"], None)
    listed = [w for w in client.all_items("/webhooks", 100) if w["webhookId"] == body["webhookId"]]
    assert len(listed) == 1 and "secret" not in listed[0]
    removed = client.delete(f"/webhooks/{body['webhookId']}")
    assert removed.status == 200 and "secret" not in removed.body
    assert body["webhookId"] not in _ids(client)
    client.delete(f"/webhooks/{body['webhookId']}").error(404, "WebhookNotFound")


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://hooks.example.com/in", True),
        ("http://127.0.0.1:8080/in", True),
        ("http://localhost/in", True),
        ("http://example.com/in", False),
        ("http://10.0.0.1/in", False),
        ("ftp://127.0.0.1/in", False),
        ("https://user:pw@hooks.example.com/", False),
        ("https:///no-host", False),
        ("not a url", False),
    ],
)
def test_which_urls_a_subscription_may_name(client: Client, url: str, accepted: bool) -> None:
    before = _ids(client)
    answer = client.post("/webhooks", {"url": url})
    if accepted:
        assert answer.status == 201, answer.raw
        client.delete(f"/webhooks/{answer.body['webhookId']}")
        return
    body = answer.error(422, "ValidationError")
    assert [f["field"] for f in body["fields"]] == ["url"], body
    assert _ids(client) == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": RECEIVER, "types": []},
        {"url": RECEIVER, "types": ["registration.teleported"]},
        {"url": RECEIVER, "eventId": "not an id"},
        {"url": RECEIVER, "secret": "whsec_mine"},
        {"url": 5},
    ],
)
def test_a_bad_subscription_is_refused_and_nothing_is_written(
    client: Client, body: dict[str, object]
) -> None:
    before = _ids(client)
    client.post("/webhooks", body).error(422, "ValidationError")
    assert _ids(client) == before


def test_an_organizer_sees_and_removes_only_their_own(anonymous: Client, client: Client) -> None:
    olga, oscar = uid("olga"), uid("oscar")
    as_olga, as_oscar = anonymous.as_caller(olga, ORGANIZERS), anonymous.as_caller(oscar, ORGANIZERS)
    event_id = as_olga.event(capacity=1)
    as_olga.post("/webhooks", {"url": RECEIVER}).error(403, "Forbidden")  # which event?
    mine = as_olga.post("/webhooks", {"url": RECEIVER, "eventId": event_id})
    assert mine.status == 201, mine.raw
    assert _ids(as_olga) == {mine.body["webhookId"]}
    assert mine.body["webhookId"] not in _ids(as_oscar)
    as_oscar.delete(f"/webhooks/{mine.body['webhookId']}").error(403, "Forbidden")
    assert as_olga.delete(f"/webhooks/{mine.body['webhookId']}").status == 200


def test_a_keyed_subscription_replays_its_answer(client: Client) -> None:
    key = {"Idempotency-Key": uid("key")}
    first = client.post("/webhooks", {"url": RECEIVER}, headers=key)
    again = client.post("/webhooks", {"url": RECEIVER}, headers=key)
    assert first.status == 201 and (again.status, again.raw) == (first.status, first.raw)
    assert len([i for i in _ids(client) if i == first.body["webhookId"]]) == 1
    client.delete(f"/webhooks/{first.body['webhookId']}")
