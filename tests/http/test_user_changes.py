"""`PATCH /users/{id}`: a user changes their name and email (a merge patch), over HTTP."""

from __future__ import annotations

import pytest

from tests.http.client import ORGANIZERS, Client, uid

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("http")]


def test_a_user_changes_their_name_and_email_and_a_null_removes_the_email(client: Client) -> None:
    user_id = client.user()
    me = client.as_caller(user_id)

    changed = me.request("PATCH", f"/users/{user_id}", {"name": "Ada King", "email": "ada@example.org"})

    assert changed.status == 200, changed.raw
    assert (changed.body["name"], changed.body["email"]) == ("Ada King", "ada@example.org")
    assert me.get(f"/users/{user_id}").body == changed.body
    removed = me.request("PATCH", f"/users/{user_id}", {"email": None})
    assert removed.body["email"] is None and removed.body["name"] == "Ada King"
    assert me.request("PATCH", f"/users/{user_id}", {}).body == removed.body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"email": "not an address"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"email": 7}, "email"),
        ({"userId": "someone-else"}, "userId"),
    ],
)
def test_an_impossible_change_is_a_422_and_changes_nothing(
    client: Client, body: dict[str, object], field: str
) -> None:
    user_id = client.user()
    before = client.get(f"/users/{user_id}").body

    error = client.request("PATCH", f"/users/{user_id}", body).error(422, "ValidationError")

    assert field in str(error), error
    assert client.get(f"/users/{user_id}").body == before


def test_only_the_user_and_admins_change_a_user(client: Client) -> None:
    user_id = client.user()

    client.as_caller(client.user()).request("PATCH", f"/users/{user_id}", {"name": "X"}).error(
        403, "Forbidden"
    )
    client.as_caller(client.user(), ORGANIZERS).request("PATCH", f"/users/{user_id}", {"name": "X"}).error(
        403, "Forbidden"
    )
    client.request("PATCH", f"/users/{uid('nobody')}", {"name": "X"}).error(404, "UserNotFound")
    assert client.request("PATCH", f"/users/{user_id}", {"name": "Renamed"}).body["name"] == "Renamed"
