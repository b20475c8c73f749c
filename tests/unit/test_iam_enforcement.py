"""A grant removed from a copy of the synthesized template fails exactly the path that needs it.

The local engine authorises every call against the template's roles, so these are what
AWS would do after `cdk deploy` of such a template: the call is denied, the caller gets a
500, and every path that does not need the grant keeps working.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from infrastructure import names
from infrastructure.local.engine import LocalEngine
from infrastructure.local.local_api import LocalApi
from registration.data import RegistrationStore
from tests.fixtures.template_variants import (
    integration_role,
    role_of,
    synthesized_template,
    without_grant,
)
from tests.fixtures.tokens import bearer
from tests.fixtures.workflows import Workflows, new_event, new_users


@contextmanager
def running(template: dict[str, Any]) -> Iterator[tuple[LocalEngine, RegistrationStore, Workflows]]:
    with LocalEngine(template) as engine:
        yield engine, RegistrationStore(engine.table_name, engine.dynamodb_client()), Workflows(engine)


def _function_id(template: dict[str, Any], handler: str) -> str:
    return next(
        lid
        for lid, r in template["Resources"].items()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler") == handler
    )


def _get(api: LocalApi, target: str) -> tuple[int, Any]:
    reply = api.handle(method="GET", target=target, headers=[bearer(api.engine)], body=b"", request_id="r")
    return reply.status, json.loads(reply.body)


def test_the_synthesized_template_allows_every_path() -> None:
    template = synthesized_template()
    with running(template) as (engine, store, workflows):
        alice, bob = new_users(store, 2)
        event = new_event(store, capacity=1, waitlist=True)
        assert workflows.register(event, alice).ok
        assert workflows.register(event, bob).output["status"] == "waitlisted"  # type: ignore[index]
        promoted = workflows.unregister(event, alice)

    assert promoted.ok, promoted
    assert promoted.output["promoted"] == bob  # type: ignore[index]
    assert engine.authorizer is not None
    assert not any(role["denied"] for role in engine.authorizer.usage().values())


def test_a_workflow_may_not_invoke_a_task_its_role_does_not_grant() -> None:
    template = synthesized_template()
    promote = _function_id(template, names.TASK_HANDLERS["PromoteFromWaitlist"])
    variant = without_grant(
        template,
        role_of(template, state_machine="UnregisterWorkflow"),
        "lambda:InvokeFunction",
        on_resource_of=promote,
    )
    with running(variant) as (_, store, workflows):
        alice, bob, carol = new_users(store, 3)
        quiet = new_event(store, capacity=1, waitlist=True)
        busy = new_event(store, capacity=1, waitlist=True)
        assert workflows.register(quiet, alice).ok
        assert workflows.register(busy, bob).ok
        assert workflows.register(busy, carol).ok

        nobody_waiting = workflows.unregister(quiet, alice)
        someone_waiting = workflows.unregister(busy, bob)

    assert nobody_waiting.ok, nobody_waiting
    assert someone_waiting.status == "FAILED"
    # As AWS reports it; the workflow's Retry on it runs out, then the execution fails.
    assert someone_waiting.error == "Lambda.AWSLambdaException"
    cause = json.loads(someone_waiting.cause or "{}")["errorMessage"]
    assert "is not authorized to perform: lambda:InvokeFunction" in cause
    assert f"function:{promote}" in cause
    assert "Error Code: AccessDeniedException" in cause


def test_a_task_denied_a_database_action_fails_its_workflow_and_nothing_else() -> None:
    template = synthesized_template()
    variant = without_grant(
        template, role_of(template, handler=names.TASK_HANDLERS["Validate"]), "dynamodb:BatchGetItem"
    )
    with running(variant) as (engine, store, workflows):
        (alice,) = new_users(store, 1)
        event = new_event(store, capacity=5, waitlist=False)
        refused = workflows.register(event, alice)
        api = LocalApi(engine)
        listing = _get(api, f"/events/{event}/registrations")

    assert refused.status == "FAILED"
    assert refused.error == "ClientError"
    cause = json.loads(refused.cause or "{}")["errorMessage"]
    assert "AccessDeniedException" in cause
    assert "dynamodb:BatchGetItem" in cause
    assert listing == (200, {"items": [], "nextToken": None})


def test_the_api_function_denied_the_index_fails_only_the_index_listing() -> None:
    template = synthesized_template()
    api_role = role_of(template, handler=names.API_HANDLER)
    variant = without_grant(template, api_role, "dynamodb:Query", on_resource_of="/index/")
    with running(variant) as (engine, store, _):
        (alice,) = new_users(store, 1)
        event = new_event(store, capacity=5, waitlist=True)
        api = LocalApi(engine)
        by_user = _get(api, f"/users/{alice}/registrations")
        by_event = _get(api, f"/events/{event}/waitlist")

    assert by_user[0] == 500
    assert by_user[1]["error"] == "InternalError"
    assert by_event == (200, {"items": [], "nextToken": None})


def test_an_integration_role_that_may_not_start_its_workflow_is_a_500() -> None:
    template = synthesized_template()
    variant = without_grant(
        template, integration_role(template, "POST", "register"), "states:StartSyncExecution"
    )
    with running(variant) as (engine, store, _):
        (alice,) = new_users(store, 1)
        event = new_event(store, capacity=5, waitlist=False)
        api = LocalApi(engine)
        json_type = [("Content-Type", "application/json"), bearer(engine)]
        register = api.handle(
            method="POST",
            target=f"/events/{event}/register",
            headers=json_type,
            body=json.dumps({"userId": alice}).encode(),
            request_id="r1",
        )
        unregister = api.handle(
            method="DELETE",
            target=f"/events/{event}/register/{alice}",
            headers=json_type,
            body=b"",
            request_id="r2",
        )
        registered = store.get_membership(event, alice)

    assert register.status == 500
    assert registered is None  # the workflow never started
    assert unregister.status == 404  # the other route's role still starts its workflow
    assert json.loads(unregister.body)["error"] == "NotRegistered"
