"""The Cognito User Pools authorizer in the synthesized template: every method of the
REST API is guarded by it except `GET /health`, with the pool the stack creates and
with an existing pool given as context.

The methods are found from the template itself (each Method's resource, walked up its
Resource `PathPart`s), not from the route tables in `infrastructure.names`: a method
the code forgot to list, or listed wrongly, is still checked.
"""

from __future__ import annotations

from typing import Any

import pytest

from infrastructure import names
from tests.infrastructure.conftest import EXISTING_POOL_ARN, Synthesized

pytestmark = pytest.mark.infrastructure

AUTHORIZER = "AWS::ApiGateway::Authorizer"
METHOD = "AWS::ApiGateway::Method"
RESOURCE = "AWS::ApiGateway::Resource"
REST_API = "AWS::ApiGateway::RestApi"
# The only method anyone may call without a token (written out: not names.OPEN_ROUTES).
HEALTH = ("GET", "/health")


def _of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == resource_type}


def method_routes(template: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(HTTP method, full path) -> properties of every Method in `template`, the path
    built from the Resource chain (`PathPart` up to the RestApi's root)."""
    (rest_api,) = _of_type(template, REST_API)
    resources = _of_type(template, RESOURCE)

    def path_of(resource_id: Any) -> str:
        # The root resource is the RestApi's `RootResourceId` attribute.
        if resource_id == {"Fn::GetAtt": [rest_api, "RootResourceId"]}:
            return ""
        props = resources[resource_id["Ref"]]["Properties"]
        return f"{path_of(props['ParentId'])}/{props['PathPart']}"

    routes: dict[tuple[str, str], dict[str, Any]] = {}
    for logical_id, method in _of_type(template, METHOD).items():
        props = method["Properties"]
        assert props["RestApiId"] == {"Ref": rest_api}, logical_id
        route = (props["HttpMethod"], path_of(props["ResourceId"]) or "/")
        assert route not in routes, route
        routes[route] = props
    return routes


def _authorizer(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ((logical_id, resource),) = _of_type(template, AUTHORIZER).items()
    return logical_id, resource["Properties"]


def _check_guarded(template: dict[str, Any], pool_arn: Any) -> None:
    authorizer_id, authorizer = _authorizer(template)
    (rest_api,) = _of_type(template, REST_API)
    assert authorizer["Type"] == "COGNITO_USER_POOLS"
    assert authorizer["ProviderARNs"] == [pool_arn]
    assert authorizer["IdentitySource"] == "method.request.header.Authorization"
    assert authorizer["RestApiId"] == {"Ref": rest_api}

    routes = method_routes(template)
    assert HEALTH in routes
    assert len(routes) > 2  # the walk found the API's methods, not just one
    for route, props in routes.items():
        if route == HEALTH:
            assert props["AuthorizationType"] == "NONE", route
            assert "AuthorizerId" not in props, route
        else:
            assert props["AuthorizationType"] == "COGNITO_USER_POOLS", route
            assert props["AuthorizerId"] == {"Ref": authorizer_id}, route
            # An ID token, not an access token: no OAuth scopes on the method.
            assert "AuthorizationScopes" not in props, route


def test_every_method_but_the_health_check_wants_a_token_of_the_created_pool(
    synthesized: Synthesized,
) -> None:
    (pool_id,) = synthesized.resources("AWS::Cognito::UserPool")
    _check_guarded(synthesized.raw, {"Fn::GetAtt": [pool_id, "Arn"]})


def test_every_method_but_the_health_check_wants_a_token_of_an_existing_pool(
    with_existing_pool: tuple[dict[str, Any], Any],
) -> None:
    template, _ = with_existing_pool
    _check_guarded(template, EXISTING_POOL_ARN)


def test_a_route_added_later_is_guarded_unless_listed_as_open() -> None:
    """The authorizer is the RestApi's default: a method added by other code, with no
    options of its own, is guarded; `_add_method` opens only the open routes."""
    from aws_cdk import aws_apigateway as apigateway
    from aws_cdk.assertions import Template

    from tests.infrastructure.test_api import api_only

    stack, registration_api = api_only({})
    mock = apigateway.MockIntegration()
    registration_api.rest_api.root.add_resource("later").add_method("GET", mock)
    registration_api.rest_api.root.resource_for_path("/events/{eventId}").add_method("PUT", mock)
    template = Template.from_stack(stack).to_json()
    routes = method_routes(template)
    authorizer_id, _ = _authorizer(template)
    for route in (("GET", "/later"), ("PUT", "/events/{eventId}")):
        assert routes[route]["AuthorizationType"] == "COGNITO_USER_POOLS", route
        assert routes[route]["AuthorizerId"] == {"Ref": authorizer_id}, route
    assert routes[HEALTH]["AuthorizationType"] == "NONE"


def test_an_open_route_the_api_does_not_serve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.infrastructure.test_api import api_only

    monkeypatch.setattr(names, "OPEN_ROUTES", (HEALTH, ("GET", "/nowhere")))
    with pytest.raises(ValueError, match="/nowhere"):
        api_only({})


def test_only_the_open_route_without_authorization_is_acknowledged_by_cdk_nag() -> None:
    """An unguarded method anywhere else stays a cdk-nag finding (APIG4, COG4)."""
    from aws_cdk import aws_apigateway as apigateway

    from infrastructure.nag import OPEN_ROUTE_REASON, _is_open_route, acknowledge_findings
    from tests.infrastructure.test_api import api_only

    stack, registration_api = api_only({})
    unguarded = registration_api.rest_api.root.add_resource("later").add_method(
        "GET", apigateway.MockIntegration(), authorization_type=apigateway.AuthorizationType.NONE
    )
    methods = [c for c in stack.node.find_all() if isinstance(c, apigateway.CfnMethod)]
    opened = [m for m in methods if _is_open_route(m)]
    assert [m.node.scope.resource.path for m in opened] == ["/health"]  # type: ignore[union-attr]
    assert not _is_open_route(unguarded.node.default_child)  # type: ignore[arg-type]

    acknowledged = [a for a in acknowledge_findings(stack) if a.reason == OPEN_ROUTE_REASON]
    assert sorted(a.rule for a in acknowledged) == ["AwsSolutions-APIG4", "AwsSolutions-COG4"]
    assert {a.path for a in acknowledged} == {opened[0].node.path}
