"""The ownership matrix of the workflow routes as API Gateway runs them on AWS.

Each signed-in cell renders the synthesized request template with the caller's claims as
the Cognito authorizer hands them on (`$context.authorizer.claims`), starts the real
workflow with the rendered input on the local engine, and renders the response template
with the execution's end: the status is the one API Gateway would answer. The cells
without a valid token never reach the template on AWS: the method's Cognito authorizer
refuses them with the template's UNAUTHORIZED gateway response. The expected statuses
are the requirement's table (`tests.fixtures.ownership_table`), and every route of the
template but the open ones must be in it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from infrastructure import names
from infrastructure.constructs import api_mappings
from infrastructure.local.engine import LocalEngine
from infrastructure.local.template_specs import ApiIntegration
from registration import outcomes
from registration.data import RegistrationStore
from registration.models import NewEvent, NewUser
from tests.fixtures.mapping_templates import evaluate
from tests.fixtures.ownership_table import CALLERS, EXPECTED, SIGNED_IN
from tests.fixtures.workflows import Workflows, fresh_id

COGNITO = "COGNITO_USER_POOLS"
ORGANIZERS, ADMINS = "organizers", "admins"
# A REST API's authorizer writes a list claim as "a,b"; an HTTP API's as "[a b]".
GROUP_FORMATS = {"rest": ",".join, "http": lambda groups: f"[{' '.join(groups)}]"}


def _integration(engine: LocalEngine, route: str) -> ApiIntegration:
    method, path = route.split(" ", 1)
    return engine.template.api_integrations[(method, path)]


def test_every_guarded_route_of_the_template_is_in_the_table(engine: LocalEngine) -> None:
    guarded = {
        f"{method} {path}"
        for (method, path), integration in engine.template.api_integrations.items()
        if integration.authorization == COGNITO
    }
    assert guarded == set(EXPECTED)
    workflow_routes = {route for route in guarded if _integration(engine, route).type == "AWS"}
    assert workflow_routes == {
        "POST /events/{eventId}/register",
        "DELETE /events/{eventId}/register/{userId}",
    }


def _claims(user_id: str, groups: tuple[str, ...], group_format: str) -> dict[str, str]:
    claims = {names.USERNAME_CLAIM: user_id, "token_use": "id", "sub": str(uuid.uuid4())}
    if groups:
        claims[names.GROUPS_CLAIM] = GROUP_FORMATS[group_format](groups)
    return claims


def _through_api_gateway(
    engine: LocalEngine, route: str, event_id: str, user_id: str, claims: dict[str, str]
) -> int:
    """The status API Gateway answers the workflow route, asked by `claims`."""
    integration = _integration(engine, route)
    params = {"eventId": event_id}
    body: dict[str, Any] = {}
    if "{userId}" in integration.path:
        params["userId"] = user_id
    else:
        body["userId"] = user_id
    _, rendered = evaluate(
        integration.request_templates["application/json"], json.dumps(body), params, claims=claims
    )
    request = json.loads(rendered)
    workflow = names.WORKFLOW_ROUTES[(integration.method, integration.path)]
    result = engine.run(workflow, json.loads(request["input"]), name=request["name"])
    answer: dict[str, Any] = {"status": result.status}
    if result.output is not None:
        answer["output"] = json.dumps(result.output)
    if result.error is not None:
        answer |= {"error": result.error, "cause": result.cause or ""}
    status, _ = evaluate(api_mappings.workflow_response_template(workflow), json.dumps(answer))
    assert status is not None, answer
    return status


@pytest.mark.parametrize("group_format", sorted(GROUP_FORMATS))
@pytest.mark.parametrize(
    "route", ["POST /events/{eventId}/register", "DELETE /events/{eventId}/register/{userId}"]
)
def test_every_caller_gets_the_status_the_table_gives(
    engine: LocalEngine, store: RegistrationStore, workflows: Workflows, route: str, group_format: str
) -> None:
    integration = _integration(engine, route)
    assert integration.authorization == COGNITO
    got = {caller: outcomes.UNAUTHORIZED_STATUS for caller in CALLERS if caller not in SIGNED_IN}

    other, organizer, other_organizer, admin = (fresh_id(name) for name in ("bob", "olga", "oscar", "root"))
    for user_id in (other, organizer, other_organizer, admin):
        store.create_user(NewUser(userId=user_id, name=user_id))
    callers = {
        "other": (other, ()),
        "organizer": (organizer, (ORGANIZERS,)),
        "other_organizer": (other_organizer, (ORGANIZERS,)),
        "admin": (admin, (ADMINS, ORGANIZERS)),
    }
    for caller in SIGNED_IN:
        target = fresh_id("ada")
        store.create_user(NewUser(userId=target, name="Ada"))
        event_id = store.create_event(
            NewEvent(eventId=fresh_id("e"), title="T", capacity=5, hasWaitlist=True), organizer_id=organizer
        ).eventId
        if route.startswith("DELETE"):
            assert workflows.register(event_id, target).ok
        before = store.get_event(event_id), store.list_registrations(event_id).items
        user_id, groups = (target, ()) if caller == "self" else callers[caller]
        got[caller] = _through_api_gateway(
            engine, route, event_id, target, _claims(user_id, groups, group_format)
        )
        if got[caller] >= 400:
            assert (store.get_event(event_id), store.list_registrations(event_id).items) == before, caller
    assert got == EXPECTED[route]
