"""The REST API in the synthesized template, and the mapping templates it is built from."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrastructure import names, openapi
from infrastructure.constructs import api, api_mappings
from infrastructure.workflow_responses import workflow_headers
from registration import outcomes
from tests.fixtures.mapping_templates import REQUEST_ID, evaluate, evaluate_response
from tests.infrastructure.conftest import Synthesized
from tests.infrastructure.test_security import EVENTS_ONLY, USERS_ONLY, WEBHOOKS_ONLY
from tests.infrastructure.test_template import (
    IDEMPOTENCY_ONLY,
    POWERTOOLS_LAYER,
    join_to_text,
    policy_statements,
    table_id,
)

pytestmark = pytest.mark.infrastructure

METHOD = "AWS::ApiGateway::Method"
START_SYNC_URI = "arn:${AWS::Partition}:apigateway:${AWS::Region}:states:action/StartSyncExecution"
CODE_STATUS = re.compile(r'\$code == "([^"]+)"\)\n#set\(\$context\.responseOverride\.status = (\d+)\)')


# --- helpers -------------------------------------------------------------------------


def rest_api_id(synthesized: Synthesized) -> str:
    (logical_id,) = synthesized.resources("AWS::ApiGateway::RestApi")
    return logical_id


def resource_paths(synthesized: Synthesized) -> dict[str, str]:
    """Logical id of each API resource -> its full path."""
    resources = synthesized.resources("AWS::ApiGateway::Resource")
    paths: dict[str, str] = {}

    def path_of(logical_id: str) -> str:
        if logical_id not in paths:
            props = resources[logical_id]["Properties"]
            parent = props["ParentId"]
            prefix = "" if "Fn::GetAtt" in parent else path_of(parent["Ref"])
            paths[logical_id] = f"{prefix}/{props['PathPart']}"
        return paths[logical_id]

    for logical_id in resources:
        path_of(logical_id)
    return paths


@pytest.fixture(scope="module")
def methods(synthesized: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    """(HTTP method, path) -> the method's properties."""
    paths = resource_paths(synthesized)
    result: dict[tuple[str, str], dict[str, Any]] = {}
    for method in synthesized.resources(METHOD).values():
        props = method["Properties"]
        resource = props["ResourceId"]
        path = paths[resource["Ref"]] if "Ref" in resource else "/"
        result[(props["HttpMethod"], path)] = props
    return result


@pytest.fixture(scope="module")
def api_function_id(synthesized: Synthesized) -> str:
    (logical_id,) = [
        logical_id
        for logical_id, function in synthesized.resources("AWS::Lambda::Function").items()
        if function["Properties"]["Handler"] == names.API_HANDLER
    ]
    return logical_id


def stage(synthesized: Synthesized) -> dict[str, Any]:
    (resource,) = synthesized.resources("AWS::ApiGateway::Stage").values()
    props: dict[str, Any] = resource["Properties"]
    return props


# --- routes --------------------------------------------------------------------------


def test_the_api_serves_the_documented_routes_and_nothing_else(
    methods: dict[tuple[str, str], dict[str, Any]],
) -> None:
    # The document is built from the API function's resolver and the workflow routes.
    document = openapi.document()
    documented = {(m.upper(), path) for path, operations in document["paths"].items() for m in operations}
    assert set(methods) == documented


@pytest.mark.parametrize("route", sorted(names.LAMBDA_ROUTES))
def test_lambda_routes_proxy_to_the_api_function(
    methods: dict[tuple[str, str], dict[str, Any]], api_function_id: str, route: tuple[str, str]
) -> None:
    integration = methods[route]["Integration"]
    assert integration["Type"] == "AWS_PROXY"
    assert integration["IntegrationHttpMethod"] == "POST"
    uri = join_to_text(integration["Uri"])
    assert uri.endswith(f"/functions/${{{api_function_id}.Arn}}/invocations"), uri


@pytest.mark.parametrize("route", sorted(names.WORKFLOW_ROUTES))
def test_workflow_routes_start_their_state_machine_synchronously(
    methods: dict[tuple[str, str], dict[str, Any]],
    state_machine_ids: dict[str, str],
    route: tuple[str, str],
) -> None:
    workflow = names.WORKFLOW_ROUTES[route]
    integration = methods[route]["Integration"]
    assert integration["Type"] == "AWS"
    assert integration["IntegrationHttpMethod"] == "POST"
    assert join_to_text(integration["Uri"]) == START_SYNC_URI
    assert integration["PassthroughBehavior"] == "NEVER"
    (content_type,) = integration["RequestTemplates"]
    assert content_type == "application/json"
    request = join_to_text(integration["RequestTemplates"][content_type])
    # The state machine of this workflow, and no other.
    arns = re.findall(r'"stateMachineArn": "([^"]+)"', request)
    assert arns == [f"${{{state_machine_ids[workflow]}}}"]
    assert '\\"requestId\\": \\"${requestIdInput}\\"' in request
    assert '#set($requestId = "$context.requestId")' in request
    assert '\\"idempotencyKey\\": \\"${idempotencyKeyInput}\\"' in request
    assert f'"name": "{workflow}-' in request


@pytest.mark.parametrize("route", sorted(names.WORKFLOW_ROUTES))
def test_workflow_routes_declare_the_idempotency_header_optional(
    synthesized: Synthesized, methods: dict[tuple[str, str], dict[str, Any]], route: tuple[str, str]
) -> None:
    method = methods[route]
    path_parameters = {f"method.request.path.{p}": True for p in api_mappings.path_parameters(route[1])}
    assert path_parameters  # every workflow route names its event
    assert method["RequestParameters"] == {
        **path_parameters,
        "method.request.header.Idempotency-Key": False,
    }
    # The validator (register only) still checks the body and the required path
    # parameters; an optional header is never required by it.
    if "RequestValidatorId" in method:
        validator = synthesized.raw["Resources"][method["RequestValidatorId"]["Ref"]]["Properties"]
        assert validator["ValidateRequestBody"] is True
        assert validator["ValidateRequestParameters"] is True
    else:
        assert names.WORKFLOW_ROUTES[route] == names.UNREGISTER_WORKFLOW


@pytest.mark.parametrize("route", sorted(names.WORKFLOW_ROUTES))
def test_workflow_credentials_allow_only_start_sync_execution_on_that_machine(
    synthesized: Synthesized,
    methods: dict[tuple[str, str], dict[str, Any]],
    state_machine_ids: dict[str, str],
    route: tuple[str, str],
) -> None:
    workflow = names.WORKFLOW_ROUTES[route]
    role_id = methods[route]["Integration"]["Credentials"]["Fn::GetAtt"][0]
    role = synthesized.raw["Resources"][role_id]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "apigateway.amazonaws.com"},
        }
    ]
    assert "ManagedPolicyArns" not in role
    assert policy_statements(synthesized, role_id) == [
        {
            "Action": "states:StartSyncExecution",
            "Effect": "Allow",
            "Resource": {"Ref": state_machine_ids[workflow]},
        }
    ]


@pytest.mark.parametrize("route", sorted(names.WORKFLOW_ROUTES))
def test_workflow_response_mapping_is_generated_from_outcomes(
    methods: dict[tuple[str, str], dict[str, Any]], route: tuple[str, str]
) -> None:
    workflow = names.WORKFLOW_ROUTES[route]
    method = methods[route]
    responses = {r.get("SelectionPattern"): r for r in method["Integration"]["IntegrationResponses"]}
    assert set(responses) == {None, r"4\d{2}", r"5\d{2}"}
    default = responses[None]
    assert default["StatusCode"] == str(outcomes.SUCCESS_STATUS[workflow])
    assert default["ResponseTemplates"] == {
        "application/json": api_mappings.workflow_response_template(workflow)
    }
    assert (
        responses[r"4\d{2}"]["ResponseTemplates"]["application/json"] == api_mappings.service_error_template()
    )
    assert responses[r"5\d{2}"]["StatusCode"] == "503"
    # Step Functions' own failure is a "retry later" (ServiceUnavailable): with Retry-After.
    unavailable_template = responses[r"5\d{2}"]["ResponseTemplates"]["application/json"]
    assert '#set($context.responseOverride.header.Retry-After = "1")' in unavailable_template
    # Every status the templates can set is a declared method response.
    declared = {int(r["StatusCode"]) for r in method["MethodResponses"]}
    assert declared >= {outcomes.SUCCESS_STATUS[workflow], 404, 409, 422, 429, 500, 503}
    # And the header the timed-out answer carries.
    (unavailable,) = [r for r in method["MethodResponses"] if r["StatusCode"] == "503"]
    request_id = {"method.response.header.X-Request-Id": False}
    assert unavailable["ResponseParameters"] == {"method.response.header.Retry-After": False, **request_id}
    (conflict,) = [r for r in method["MethodResponses"] if r["StatusCode"] == "409"]
    assert conflict["ResponseParameters"] == {"method.response.header.Retry-After": False, **request_id}
    # Every answer names its request id.
    assert all(
        r["ResponseParameters"].get("method.response.header.X-Request-Id") is False
        for r in method["MethodResponses"]
    )


def test_register_body_is_validated_against_the_shared_model(
    synthesized: Synthesized, methods: dict[tuple[str, str], dict[str, Any]]
) -> None:
    (register_route,) = [r for r, w in names.WORKFLOW_ROUTES.items() if w == names.REGISTER_WORKFLOW]
    method = methods[register_route]
    validator = synthesized.raw["Resources"][method["RequestValidatorId"]["Ref"]]["Properties"]
    assert validator["ValidateRequestBody"] is True
    model = synthesized.raw["Resources"][method["RequestModels"]["application/json"]["Ref"]]["Properties"]
    schema = model["Schema"]
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert schema["required"] == ["userId"]
    assert schema["additionalProperties"] is False
    user_id = schema["properties"]["userId"]
    assert user_id["type"] == "string"
    assert (user_id["minLength"], user_id["maxLength"]) == (1, 64)
    assert re.fullmatch(user_id["pattern"], "user_1-A")
    assert not re.fullmatch(user_id["pattern"], "user 1")


def test_schema_conversion_refuses_what_api_gateway_would_not_check() -> None:
    with pytest.raises(ValueError, match="anyOf"):
        api_mappings.api_gateway_schema(
            {"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}]}}}
        )


# --- response mapping (generator) ----------------------------------------------------------


@pytest.mark.parametrize("workflow", sorted(outcomes.SUCCESS_STATUS))
def test_generated_template_maps_every_code_to_its_status(workflow: str) -> None:
    template = api_mappings.workflow_response_template(workflow)
    mapped = dict(CODE_STATUS.findall(template))
    expected = {code: str(status) for code, status in outcomes.WORKFLOW_ERROR_STATUS.items() if status != 500}
    assert mapped == expected
    assert {"404", "409", "422"} <= set(mapped.values())
    success = template.split('#if($executionStatus == "SUCCEEDED")\n', 1)[1]
    assert success.startswith(f"#set($context.responseOverride.status = {outcomes.SUCCESS_STATUS[workflow]})")
    # The fallback: 500 with a fixed body that says nothing of the cause.
    fallback = template.rsplit("#else\n", 1)[1]
    internal = json.dumps({"error": outcomes.INTERNAL_ERROR, "message": outcomes.INTERNAL_MESSAGE})
    assert fallback.startswith("#set($context.responseOverride.status = 500)\n")
    assert json.loads(fallback.splitlines()[1]) == json.loads(internal)
    assert "$message" not in fallback and "$cause" not in fallback


def test_generated_template_follows_the_mapping_it_is_given() -> None:
    template = api_mappings.workflow_response_template(
        "register", success_status={"register": 202}, error_status={"Teapot": 418, "Crash": 500}
    )
    assert dict(CODE_STATUS.findall(template)) == {"Teapot": "418"}
    assert "#set($context.responseOverride.status = 202)" in template


def test_execution_names_fit_step_functions_limit() -> None:
    for workflow in outcomes.SUCCESS_STATUS:
        longest = (
            len(workflow)
            + 3
            + 2 * api_mappings.execution_name_budget(workflow)
            + api_mappings.REQUEST_ID_LENGTH
        )
        assert longest <= 80
    with pytest.raises(ValueError):
        api_mappings.execution_name_budget("w" * 60)


# --- response mapping (evaluated) ----------------------------------------------------------
def _execution_results() -> list[tuple[str, str | None, str | None]]:
    cases: list[tuple[str, str | None, str | None]] = []
    for code in [
        *outcomes.WORKFLOW_ERROR_STATUS,
        "UnexpectedDecision",
        "States.Runtime",
        "States.TaskFailed",
    ]:
        lambda_error = {"errorType": code, "errorMessage": f'Refused: "{code}" isn\'t é/ok', "stackTrace": []}
        cases.append(("FAILED", code, json.dumps(lambda_error)))
        cases.append(("FAILED", code, "The event is full and has no waitlist"))
    cases += [("FAILED", None, None), ("TIMED_OUT", None, None), ("ABORTED", None, None)]
    return cases


@pytest.mark.parametrize("workflow", sorted(outcomes.SUCCESS_STATUS))
def test_evaluated_template_agrees_with_outcomes(workflow: str) -> None:
    template = api_mappings.workflow_response_template(workflow)
    output = {"eventId": "e1", "userId": "u1", "status": "waitlisted", "position": 2}
    result = json.dumps({"status": "SUCCEEDED", "output": json.dumps(output)})
    status, body = evaluate(template, result)
    assert (status, json.loads(body)) == (outcomes.SUCCESS_STATUS[workflow], output)
    for execution_status, code, cause in _execution_results():
        result_document: dict[str, Any] = {"status": execution_status}
        if code is not None:
            result_document["error"] = code
        if cause is not None:
            result_document["cause"] = cause
        status, headers, body = evaluate_response(template, json.dumps(result_document))
        expected = outcomes.workflow_response(workflow, execution_status, None, code, cause)
        assert (status, json.loads(body)) == expected, (execution_status, code, cause)
        expected_headers = {**workflow_headers(execution_status, code), "X-Request-Id": REQUEST_ID}
        assert headers == expected_headers, (execution_status, code)


@pytest.mark.parametrize("workflow", sorted(outcomes.SUCCESS_STATUS))
def test_a_timed_out_execution_is_a_503_with_retry_after(workflow: str) -> None:
    """StartSyncExecution answers HTTP 200 with status TIMED_OUT: the mapping makes it a
    definite, retryable answer, never the 500 of an unknown failure."""
    template = api_mappings.workflow_response_template(workflow)
    status, headers, body = evaluate_response(template, json.dumps({"status": "TIMED_OUT"}))
    assert status == 503
    assert int(headers["Retry-After"]) >= 1
    assert json.loads(body)["error"] == "ExecutionTimedOut"


@pytest.mark.parametrize("workflow", sorted(outcomes.SUCCESS_STATUS))
def test_a_request_whose_first_still_runs_is_a_409_with_retry_after(workflow: str) -> None:
    template = api_mappings.workflow_response_template(workflow)
    failed = {"status": "FAILED", "error": "RequestInProgress", "cause": "The first request is still running"}
    status, headers, body = evaluate_response(template, json.dumps(failed))
    assert (status, json.loads(body)["error"]) == (409, "RequestInProgress")
    assert int(headers["Retry-After"]) >= 1
    refused = {**failed, "error": "AlreadyRegistered"}
    assert evaluate_response(template, json.dumps(refused))[1] == {
        "X-Request-Id": REQUEST_ID
    }  # final: no retry


def test_evaluated_service_errors() -> None:
    throttled = {
        "__type": "com.amazonaws.swf.service.v2.model#ThrottlingException",
        "message": "Rate exceeded",
    }
    status, body = evaluate(api_mappings.service_error_template(), json.dumps(throttled))
    assert (status, json.loads(body)["error"]) == (429, api_mappings.THROTTLED_ERROR)
    status, body = evaluate(api_mappings.service_error_template(), json.dumps({"__type": "InvalidName"}))
    assert (status, json.loads(body)["error"]) == (500, outcomes.INTERNAL_ERROR)


# A signed-in caller: the claims the Cognito authorizer gives, and the `caller` they make.
CLAIMS = {
    "sub": "2f8b6c1e-0d4a-4f3e-9b7a-5c6d7e8f9a0b",
    names.USERNAME_CLAIM: "organizer-1",
    names.GROUPS_CLAIM: "organizers,admins",
    "token_use": "id",
}
CALLER = {"userId": "organizer-1", "groups": "organizers,admins"}


@pytest.mark.parametrize(
    ("event_id", "user_id"),
    [
        ("evt-1", "user_1"),
        ("e" * 64, "u" * 64),
        ("we\"ird/'id\\ é\n", "x\"y'z"),
        ("", ""),
    ],
)
def test_evaluated_request_templates(event_id: str, user_id: str) -> None:
    arn = f"arn:aws:states:{names.LOCAL_REGION}:{names.LOCAL_ACCOUNT}:stateMachine:Machine"
    for (_, path), workflow in names.WORKFLOW_ROUTES.items():
        template = api_mappings.workflow_request_template(workflow, arn, path=path)
        params = {"eventId": event_id}
        body = {}
        if "{userId}" in path:
            params["userId"] = user_id
        else:
            body["userId"] = user_id
        _, text = evaluate(template, json.dumps(body), params, claims=CLAIMS)
        request = json.loads(text)
        assert request["stateMachineArn"] == arn
        assert json.loads(request["input"]) == {
            "eventId": event_id,
            "userId": user_id,
            "requestId": REQUEST_ID,
            "caller": CALLER,
        }
        name = request["name"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", name), name
        assert name.startswith(f"{workflow}-") and name.endswith(REQUEST_ID)


def _start_request(
    route: tuple[str, str],
    *,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    claims: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The StartSyncExecution request a workflow route makes, for event e1 and user u1,
    asked by the caller of `claims` (CLAIMS unless given); `body` adds to the JSON body."""
    (_, path), workflow = route, names.WORKFLOW_ROUTES[route]
    arn = f"arn:aws:states:{names.LOCAL_REGION}:{names.LOCAL_ACCOUNT}:stateMachine:Machine"
    template = api_mappings.workflow_request_template(workflow, arn, path=path)
    params = {"eventId": "e1"}
    document = dict(body or {})
    if "{userId}" in path:
        params["userId"] = "u1"
    else:
        document["userId"] = "u1"
    _, text = evaluate(
        template,
        json.dumps(document),
        params,
        headers=headers,
        query=query,
        claims=CLAIMS if claims is None else claims,
    )
    request: dict[str, Any] = json.loads(text)
    return request


WITHOUT_KEY = {"eventId": "e1", "userId": "u1", "requestId": REQUEST_ID, "caller": CALLER}


@pytest.mark.parametrize("route", sorted(names.WORKFLOW_ROUTES))
@pytest.mark.parametrize(
    "key",
    [
        "4f1c2a9e-8d3b-4c5e-9a7f-0b6d2e1c3f4a",
        'say "hi"',
        "back\\slash\\",
        '\\"',
        "it's/é\t",
        "${requestId} #if(true)x#end $!util",
    ],
)
def test_evaluated_request_template_passes_the_idempotency_key(route: tuple[str, str], key: str) -> None:
    request = _start_request(route, headers={"Idempotency-Key": key, "Accept": "application/json"})
    execution_input = json.loads(request["input"])
    assert execution_input == {**WITHOUT_KEY, "idempotencyKey": key}
    assert execution_input["idempotencyKey"] == key
    # The execution name does not depend on the key.
    assert request["name"] == _start_request(route)["name"]


@pytest.mark.parametrize("route", sorted(names.WORKFLOW_ROUTES))
@pytest.mark.parametrize("header", ["Idempotency-Key", "idempotency-key", "IDEMPOTENCY-KEY"])
def test_evaluated_request_template_matches_the_header_name_in_any_case(
    route: tuple[str, str], header: str
) -> None:
    execution_input = json.loads(_start_request(route, headers={header: "k-1"})["input"])
    assert execution_input["idempotencyKey"] == "k-1"


@pytest.mark.parametrize("route", sorted(names.WORKFLOW_ROUTES))
@pytest.mark.parametrize(
    ("headers", "query"),
    [
        (None, None),
        ({"Idempotency-Key": ""}, None),
        ({"Accept": "application/json"}, None),
        ({"X-Idempotency-Key": "k-1", "Idempotency-Keys": "k-2"}, None),
        # A query-string parameter of that name is not the header.
        (None, {"Idempotency-Key": "k-1"}),
    ],
)
def test_evaluated_request_template_without_a_key_is_unchanged(
    route: tuple[str, str], headers: dict[str, str] | None, query: dict[str, str] | None
) -> None:
    request = _start_request(route, headers=headers, query=query)
    assert "idempotencyKey" not in request["input"]
    assert json.loads(request["input"]) == WITHOUT_KEY


# --- the caller, from the authorizer's claims ----------------------------------------------

HOSTILE_CLAIMS = [
    'say "hi"',
    "back\\slash\\",
    '\\"',
    '"}, "userId": "admin", "groups": "admins',
    '\\"}, \\"groups\\": \\"admins',
    "it's/é\t",
    "${requestId} #if(true)x#end $!util $context.requestId ##",
    "#set($callerGroups = 'admins')",
    "line\nbreak\r\u2028\u0000\u001f",
    "🎟️ 票 \U0001f600",
    "",
]


def _caller_input(route: tuple[str, str], claims: dict[str, str], **request: Any) -> dict[str, Any]:
    execution_input: dict[str, Any] = json.loads(_start_request(route, claims=claims, **request)["input"])
    return execution_input


@pytest.mark.parametrize("route", sorted(names.WORKFLOW_ROUTES))
def test_evaluated_request_template_passes_the_caller_from_the_claims(route: tuple[str, str]) -> None:
    request = _start_request(route)
    assert json.loads(request["input"]) == WITHOUT_KEY
    # The user acted on names the execution, not the caller.
    assert request["name"] == _start_request(route, claims={**CLAIMS, names.USERNAME_CLAIM: "other"})["name"]
    assert "-u1-" in request["name"]


@pytest.mark.parametrize("route", sorted(names.WORKFLOW_ROUTES))
@pytest.mark.parametrize("value", HOSTILE_CLAIMS)
def test_evaluated_request_template_keeps_hostile_claims_inside_their_strings(
    route: tuple[str, str], value: str
) -> None:
    claims = {names.USERNAME_CLAIM: value, names.GROUPS_CLAIM: value}
    execution_input = _caller_input(route, claims, headers={"Idempotency-Key": "k-1"})
    assert execution_input == {
        "eventId": "e1",
        "userId": "u1",
        "requestId": REQUEST_ID,
        "caller": {"userId": value, "groups": value},
        "idempotencyKey": "k-1",
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    user_id=st.text(max_size=40),
    groups=st.text(max_size=40),
    route=st.sampled_from(sorted(names.WORKFLOW_ROUTES)),
)
def test_evaluated_request_template_passes_any_claim_text_unchanged(
    user_id: str, groups: str, route: tuple[str, str]
) -> None:
    claims = {**CLAIMS, names.USERNAME_CLAIM: user_id, names.GROUPS_CLAIM: groups}
    execution_input = _caller_input(route, claims)
    assert execution_input == {**WITHOUT_KEY, "caller": {"userId": user_id, "groups": groups}}


@pytest.mark.parametrize("route", sorted(names.WORKFLOW_ROUTES))
def test_a_caller_in_no_group_has_empty_groups(route: tuple[str, str]) -> None:
    claims = {names.USERNAME_CLAIM: "attendee-1", "sub": "x"}
    assert _caller_input(route, claims)["caller"] == {"userId": "attendee-1", "groups": ""}


@pytest.mark.parametrize("route", sorted(names.WORKFLOW_ROUTES))
def test_nothing_the_client_sends_changes_the_caller(route: tuple[str, str]) -> None:
    """Only the verified token's claims name the caller: not the body, the path, the query
    string or a header, whatever they are called."""
    forged = {"userId": "admin", "groups": "admins"}
    execution_input = _caller_input(
        route,
        CLAIMS,
        body={"caller": forged, "callerUserId": "admin", "groups": "admins", names.USERNAME_CLAIM: "admin"},
        headers={"caller": json.dumps(forged), names.USERNAME_CLAIM: "admin", names.GROUPS_CLAIM: "admins"},
        query={"caller": "admin", names.USERNAME_CLAIM: "admin", names.GROUPS_CLAIM: "admins"},
    )
    assert execution_input["caller"] == CALLER
    assert execution_input["userId"] == "u1"
    # A user id that tries to close its string and add a caller stays a user id.
    injected = 'u1", "caller": {"userId": "admin", "groups": "admins"}, "x": "'
    arn = f"arn:aws:states:{names.LOCAL_REGION}:{names.LOCAL_ACCOUNT}:stateMachine:Machine"
    (_, path), workflow = route, names.WORKFLOW_ROUTES[route]
    template = api_mappings.workflow_request_template(workflow, arn, path=path)
    params = {"eventId": "e1", **({"userId": injected} if "{userId}" in path else {})}
    body = {} if "{userId}" in path else {"userId": injected}
    _, text = evaluate(template, json.dumps(body), params, claims=CLAIMS)
    execution_input = json.loads(json.loads(text)["input"])
    assert execution_input == {"eventId": "e1", "userId": injected, "requestId": REQUEST_ID, "caller": CALLER}


@pytest.mark.parametrize("route", sorted(names.WORKFLOW_ROUTES))
def test_the_template_reads_the_caller_from_the_claims_only(route: tuple[str, str]) -> None:
    (_, path), workflow = route, names.WORKFLOW_ROUTES[route]
    template = api_mappings.workflow_request_template(workflow, "arn", path=path)
    reads = re.findall(r"#set\(\$(caller\w*) = (.*)\)$", template, flags=re.MULTILINE)
    sources = {variable: source for variable, source in reads if not variable.endswith("Input")}
    assert sources == {
        "callerUserId": "\"$!context.authorizer.claims['cognito:username']\"",
        "callerGroups": "\"$!context.authorizer.claims['cognito:groups']\"",
    }
    # Nothing of the request is read under those names.
    assert not re.search(r"\$input\.[^\n]*(caller|cognito)", template)


# --- errors API Gateway answers itself ------------------------------------------------------


def test_gateway_responses_have_the_error_shape(synthesized: Synthesized) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synthesized.resources("AWS::ApiGateway::GatewayResponse").values()
    }
    assert {"BAD_REQUEST_BODY", "MISSING_AUTHENTICATION_TOKEN", "DEFAULT_4XX", "DEFAULT_5XX"} <= set(
        responses
    )
    for response_type, props in responses.items():
        # `$context.error.messageString` arrives quoted: substitute it as API Gateway would.
        text = props["ResponseTemplates"]["application/json"].replace(
            "$context.error.messageString", '"Forbidden"'
        )
        body = json.loads(text)
        assert set(body) >= {"error", "message"}, response_type
        assert "$" not in json.dumps(body), response_type
    bad_body = responses["BAD_REQUEST_BODY"]
    assert bad_body["StatusCode"] == "422"
    body = json.loads(bad_body["ResponseTemplates"]["application/json"])
    assert body["error"] == "ValidationError"
    assert body["fields"][0]["field"] == "userId"
    not_found = responses["MISSING_AUTHENTICATION_TOKEN"]
    assert not_found["StatusCode"] == "404"
    assert json.loads(not_found["ResponseTemplates"]["application/json"])["error"] == "RouteNotFound"
    assert json.loads(responses["DEFAULT_5XX"]["ResponseTemplates"]["application/json"]) == {
        "error": outcomes.INTERNAL_ERROR,
        "message": outcomes.INTERNAL_MESSAGE,
    }
    # The authorizer's refusals, in the same shape; the 401 names the scheme it wants.
    unauthorized = responses["UNAUTHORIZED"]
    assert unauthorized["StatusCode"] == str(outcomes.UNAUTHORIZED_STATUS) == "401"
    assert json.loads(unauthorized["ResponseTemplates"]["application/json"]) == {
        "error": "Unauthorized",
        "message": "Sign in and send the ID token as Authorization: Bearer <token>",
    }
    assert unauthorized["ResponseParameters"] == {"gatewayresponse.header.WWW-Authenticate": "'Bearer'"}
    denied = responses["ACCESS_DENIED"]
    assert denied["StatusCode"] == str(outcomes.FORBIDDEN_STATUS) == "403"
    denied_body = json.loads(denied["ResponseTemplates"]["application/json"])
    assert denied_body["error"] == outcomes.FORBIDDEN_ERROR == "Forbidden"
    assert set(denied_body) == {"error", "message"} and denied_body["message"]
    assert "ResponseParameters" not in denied
    assert responses["THROTTLED"]["ResponseParameters"] == {"gatewayresponse.header.Retry-After": "'1'"}
    # API Gateway's own 29 s limit: the same answer as the local server's.
    timeout = responses["INTEGRATION_TIMEOUT"]
    assert timeout["StatusCode"] == str(outcomes.INTEGRATION_TIMEOUT_STATUS) == "504"
    assert json.loads(timeout["ResponseTemplates"]["application/json"]) == {
        "error": outcomes.INTEGRATION_TIMEOUT_ERROR,
        "message": outcomes.INTEGRATION_TIMEOUT_MESSAGE,
    }


# --- API function ------------------------------------------------------------------------


def test_api_function(synthesized: Synthesized, api_function_id: str) -> None:
    props = synthesized.raw["Resources"][api_function_id]["Properties"]
    assert props["Runtime"] == "python3.13"
    assert props["TracingConfig"] == {"Mode": "Active"}
    layers = [join_to_text(layer) for layer in props["Layers"]]
    assert len(layers) == 1 and POWERTOOLS_LAYER.match(layers[0]), layers
    assert props["Environment"]["Variables"][names.ENV_TABLE_NAME] == {"Ref": table_id(synthesized)}
    log_group = synthesized.raw["Resources"][props["LoggingConfig"]["LogGroup"]["Ref"]]
    assert log_group["Properties"]["RetentionInDays"] > 0
    assert api_function_id.startswith("HttpApi")


def test_api_function_role_is_least_privilege(synthesized: Synthesized, api_function_id: str) -> None:
    props = synthesized.raw["Resources"][api_function_id]["Properties"]
    role_id = props["Role"]["Fn::GetAtt"][0]
    table = table_id(synthesized)
    grants: dict[str, set[str]] = {}
    confined: list[tuple[str, set[str]]] = []
    for statement in policy_statements(synthesized, role_id):
        assert statement["Effect"] == "Allow", statement
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        listed = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in (join_to_text(r) for r in listed):
            if "Condition" in statement:
                assert statement["Condition"] in (IDEMPOTENCY_ONLY, WEBHOOKS_ONLY, EVENTS_ONLY, USERS_ONLY), (
                    statement
                )
                keys_ = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
                confined.append((resource, tuple(keys_), set(actions)))
                continue
            grants.setdefault(resource, set()).update(actions)
    # Updates and deletes only on idempotency records (`IDEMPOTENCY#...` partition keys),
    # in events' partitions (`EVENT#...`: `PATCH /events/{id}` and the seats it adds),
    # updates of users (`PATCH /users/{id}`) and deletes of webhook subscriptions
    # (`WEBHOOK#...`): never a user deleted.
    assert sorted(confined, key=str) == sorted(
        [
            (f"${{{table}.Arn}}", ("IDEMPOTENCY#*",), {"dynamodb:UpdateItem", "dynamodb:DeleteItem"}),
            (f"${{{table}.Arn}}", ("WEBHOOK#*",), {"dynamodb:DeleteItem"}),
            (f"${{{table}.Arn}}", ("EVENT#*",), {"dynamodb:UpdateItem", "dynamodb:DeleteItem"}),
            (f"${{{table}.Arn}}", ("USER#*",), {"dynamodb:UpdateItem"}),
        ],
        key=str,
    )
    assert grants[f"${{{table}.Arn}}"] == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "dynamodb:BatchGetItem",
    }
    assert grants[f"${{{table}.Arn}}/index/GSI1"] == {"dynamodb:Query"}
    log_group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
    assert grants[f"${{{log_group_id}.Arn}}"] == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert grants["*"] == {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    # `GET /health` describes the four workflows the API starts, and the API starts the
    # cancel and erase workflows itself (the other two API Gateway starts): nothing else of
    # Step Functions.
    machines = {r for r, actions in grants.items() if any(a.startswith("states:") for a in actions)}
    assert len(machines) == 4
    started_here = {
        f"${{{synthesized.output_ref(names.WORKFLOW_OUTPUTS[workflow])}}}"
        for workflow in (names.CANCEL_WORKFLOW, names.ERASE_WORKFLOW)
    }
    for machine in machines:
        assert (
            synthesized.raw["Resources"][machine.strip("${}")]["Type"] == "AWS::StepFunctions::StateMachine"
        )
        started = {"states:StartExecution"} if machine in started_here else set()
        assert grants[machine] == {"states:DescribeStateMachine", *started}, machine
    assert len(grants) == 8
    assert "ManagedPolicyArns" not in synthesized.raw["Resources"][role_id]["Properties"]


# --- stage and output -------------------------------------------------------------------


def test_stage_logs_access_throttles_and_traces(synthesized: Synthesized) -> None:
    props = stage(synthesized)
    log_group_id = props["AccessLogSetting"]["DestinationArn"]["Fn::GetAtt"][0]
    log_group = synthesized.raw["Resources"][log_group_id]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"]["RetentionInDays"] > 0
    log_format = json.loads(props["AccessLogSetting"]["Format"])
    assert log_format["requestId"] == "$context.requestId"
    assert log_format["status"] == "$context.status"
    assert log_format["responseLatency"] == "$context.responseLatency"
    assert props["TracingEnabled"] is True
    (settings,) = props["MethodSettings"]
    assert (settings["HttpMethod"], settings["ResourcePath"]) == ("*", "/*")
    assert settings["ThrottlingRateLimit"] == api.THROTTLING_RATE_LIMIT
    assert settings["ThrottlingBurstLimit"] == api.THROTTLING_BURST_LIMIT
    assert settings["MetricsEnabled"] is True
    assert settings["DataTraceEnabled"] is False


def test_the_account_wide_cloudwatch_role_only_when_asked_for(synthesized: Synthesized) -> None:
    """API Gateway's CloudWatch role is a setting of the account (one per region): the
    stack leaves it alone unless deployed with `-c apiGatewayCloudWatchRole=true`."""
    assert not synthesized.resources("AWS::ApiGateway::Account")
    trusted = [
        r
        for r in synthesized.resources("AWS::IAM::Role").values()
        if "apigateway.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])
        and "AmazonAPIGatewayPushToCloudWatchLogs" in json.dumps(r["Properties"].get("ManagedPolicyArns"))
    ]
    assert trusted == []

    for value, created in (("true", True), (True, True), ("false", False), (None, False)):
        template = _api_only_template(
            {} if value is None else {names.API_GATEWAY_CLOUDWATCH_ROLE_CONTEXT: value}
        )
        accounts = template.find_resources("AWS::ApiGateway::Account")
        assert bool(accounts) is created, value
    with pytest.raises(ValueError, match=names.API_GATEWAY_CLOUDWATCH_ROLE_CONTEXT):
        _api_only_template({names.API_GATEWAY_CLOUDWATCH_ROLE_CONTEXT: "yes please"})


def _api_only_template(context: dict[str, Any]) -> Any:
    """The API construct alone, in a stack of its own built with `context`."""
    from aws_cdk.assertions import Template

    stack, _ = api_only(context)
    return Template.from_stack(stack)


def api_only(context: dict[str, Any]) -> tuple[Any, api.RegistrationApi]:
    """(stack, API construct): the API alone, in a stack of its own built with `context`."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_cognito as cognito
    from aws_cdk import aws_dynamodb as dynamodb
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk import aws_stepfunctions as sfn

    stack = Stack(App(context=context), "ApiOnly")
    machines = {
        workflow: sfn.StateMachine.from_state_machine_arn(
            stack, workflow, f"arn:aws:states:us-east-1:123456789012:stateMachine:{workflow}"
        )
        for workflow in {*names.WORKFLOW_ROUTES.values(), names.CANCEL_WORKFLOW, names.ERASE_WORKFLOW}
    }
    layer = lambda_.LayerVersion.from_layer_version_arn(
        stack,
        "Layer",
        "arn:aws:lambda:us-east-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python313-x86_64:1",
    )
    registration_api = api.RegistrationApi(
        stack,
        "HttpApi",
        table=dynamodb.Table.from_table_name(stack, "Table", "t"),
        state_machines=machines,
        powertools_layer=layer,
        user_pool=cognito.UserPool.from_user_pool_id(stack, "UserPool", "us-east-1_Example1"),
    )
    return stack, registration_api


def test_the_api_is_named_after_the_stack_and_so_are_its_metrics(synthesized: Synthesized) -> None:
    name = synthesized.raw["Resources"][rest_api_id(synthesized)]["Properties"]["Name"]
    assert name == names.STACK_NAME
    # The 5XX alarm and the dashboard's graphs select the API by that name.
    dimensions = [
        d
        for r in synthesized.resources("AWS::CloudWatch::Alarm").values()
        if r["Properties"].get("Namespace") == "AWS/ApiGateway"
        for d in r["Properties"]["Dimensions"]
    ]
    assert dimensions and all(d == {"Name": "ApiName", "Value": name} for d in dimensions), dimensions
    (dashboard,) = synthesized.resources("AWS::CloudWatch::Dashboard").values()
    body = join_to_text(dashboard["Properties"]["DashboardBody"])
    graphed = re.findall(r'"AWS/ApiGateway","[^"]+","ApiName","([^"]*)"', body)
    assert graphed and set(graphed) == {name}, graphed


def test_url_is_a_stack_output(synthesized: Synthesized) -> None:
    url = join_to_text(synthesized.raw["Outputs"][names.API_URL_OUTPUT]["Value"])
    (stage_id,) = synthesized.resources("AWS::ApiGateway::Stage")
    assert url == (
        f"https://${{{rest_api_id(synthesized)}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/${{{stage_id}}}/"
    )
    # The only output pointing at the API (RestApi's own `Endpoint` output is removed).
    api_outputs = [k for k, v in synthesized.raw["Outputs"].items() if "execute-api" in json.dumps(v)]
    assert api_outputs == [names.API_URL_OUTPUT]
