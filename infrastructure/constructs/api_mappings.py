"""What API Gateway does for the workflow routes, as the text it runs: the request and
response mapping templates (VTL) of the StartSyncExecution integration, the register
route's request model, and the gateway responses, in the API's one error shape.

The request template puts the signed-in caller into the execution input (`caller`),
read from the Cognito authorizer's claims (`$context.authorizer.claims`) and from
nothing the client sends.

StartSyncExecution answers HTTP 200 whatever became of the execution, so the response
template reads the execution's `status`, `error` and `cause` and sets the HTTP status
itself, from the table in `registration.outcomes` the local server and the API Lambda
use too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from aws_cdk import aws_apigateway as apigateway

from infrastructure import execution_names, names
from infrastructure.workflow_responses import workflow_headers
from registration import outcomes
from registration.models import RegisterRequest

# The request header that makes a POST or DELETE run at most once per key.
IDEMPOTENCY_HEADER = "Idempotency-Key"

# Step Functions execution names: 1 to 80 characters; with CloudWatch logging on (our
# Express machines log everything) only letters, digits, '-' and '_' are safe. The
# shape and the rules are shared with the local server and the CLI (`execution_names`).
EXECUTION_NAME_MAX_LENGTH = execution_names.MAX_LENGTH
EXECUTION_NAME_UNSAFE = execution_names.UNSAFE
REQUEST_ID_LENGTH = execution_names.REQUEST_ID_LENGTH  # $context.requestId is a UUID

# Statuses for StartSyncExecution's own failures (the call failed, not the workflow).
THROTTLED_STATUS = 429
THROTTLED_ERROR = "TooManyRequests"
THROTTLED_MESSAGE = "Too many requests; retry after a short wait"
UNAVAILABLE_STATUS = outcomes.UNAVAILABLE_STATUS
UNAVAILABLE_ERROR = outcomes.UNAVAILABLE_ERROR
UNAVAILABLE_MESSAGE = "The workflow service is unavailable; retry later"
VALIDATION_ERROR = "ValidationError"
# A request without a valid ID token (the authorizer refused it), and one refused access.
UNAUTHORIZED_STATUS = outcomes.UNAUTHORIZED_STATUS
UNAUTHORIZED_ERROR = outcomes.UNAUTHORIZED_ERROR
UNAUTHORIZED_MESSAGE = outcomes.UNAUTHORIZED_MESSAGE
FORBIDDEN_STATUS = outcomes.FORBIDDEN_STATUS
FORBIDDEN_ERROR = outcomes.FORBIDDEN_ERROR
FORBIDDEN_MESSAGE = outcomes.FORBIDDEN_MESSAGE

# Velocity cannot call a JSON encoder; `$util.escapeJavaScript` is the nearest thing but
# it writes a single quote as `\'`, which JSON does not allow: undo that part.
_ESCAPE = '$util.escapeJavaScript({value}).replaceAll("\\\\\'", "\'")'


def _escaped(value: str) -> str:
    """VTL expression: `value` escaped for use inside a JSON string."""
    return _ESCAPE.format(value=value)


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))


# --- mapping templates ------------------------------------------------------------------


def path_parameters(path: str) -> list[str]:
    return re.findall(r"\{([^}]+)\}", path)


def execution_name_budget(workflow: str) -> int:
    """Characters each of eventId and userId may take in `<workflow>-<e>-<u>-<requestId>`."""
    return execution_names.budget(workflow)


# Claim names the template may read (quoted inside it, so never a quote of their own).
_CLAIM_NAME = re.compile(r"^[A-Za-z0-9_:.-]+$")


def _claim(name: str) -> str:
    """VTL expression: the authorizer's claim `name` as a string, "" when absent.

    AWS documents `$context.authorizer.claims.<name>`; a name with a character other
    than letters, digits and '_' (`cognito:username`) is read by index, in quotes.
    """
    if not _CLAIM_NAME.match(name):
        raise ValueError(f"claim name {name!r} cannot be read in a template")
    return f"\"$!context.authorizer.claims['{name}']\""


def workflow_request_template(workflow: str, state_machine_arn: str, *, path: str) -> str:
    """The StartSyncExecution request for one workflow route.

    `eventId` and `userId` (the user acted on) come from the path when it has them,
    otherwise from the JSON body. The request id is the execution's correlation id
    (`requestId` in its input) and the unique part of its name. `caller` is who asked:
    `{"userId": <cognito:username>, "groups": <cognito:groups>}`, read from the Cognito
    authorizer's claims only (never the body, the path or a header); `groups` is the
    claim's text as API Gateway gives it, "" when the caller is in no group. A non-empty
    `Idempotency-Key` header becomes `idempotencyKey` in the input (absent otherwise, so
    the workflow runs unwrapped). Values go into `input` (a JSON document inside a JSON
    string) escaped twice; the name keeps only characters Step Functions accepts and is
    trimmed so that it never exceeds 80 characters.
    """
    from_path = set(path_parameters(path))
    budget = execution_name_budget(workflow)
    lines = [
        f"## Generated by infrastructure.constructs.api: starts the {workflow} workflow synchronously.",
    ]
    for field in ("eventId", "userId"):
        source = f"$input.params('{field}')" if field in from_path else f"$input.path('$.{field}')"
        lines += [
            f"#set(${field}Value = {source})",
            f'#set(${field} = "$!{field}Value")',
        ]
    lines.append('#set($requestId = "$context.requestId")')
    # Who asked: the authorizer's claims, which only a valid ID token of the pool sets.
    for variable, claim in (("callerUserId", names.USERNAME_CLAIM), ("callerGroups", names.GROUPS_CLAIM)):
        lines += [
            f"#set(${variable} = {_claim(claim)})",
            f"#set(${variable}Input = {_escaped(_escaped('$' + variable))})",
        ]
    # The Idempotency-Key header, read from the headers only and its name matched
    # case-insensitively, as HTTP wants and as the API function does. Not
    # `$input.params(x)`: it would also take a query-string parameter of that name. Not
    # `$input.params().header.get(x)` either: that lookup depends on how the client
    # spelled the name (HTTP/2 clients send it in lower case). Absent and empty are the
    # same: no key.
    lines += [
        '#set($idempotencyKey = "")',
        "#foreach($headerName in $input.params().header.keySet())",
        f'#if($headerName.matches("(?i){IDEMPOTENCY_HEADER}"))',
        '#set($idempotencyKey = "$!input.params().header.get($headerName)")',
        "#end",
        "#end",
        f"#set($idempotencyKeyInput = {_escaped(_escaped('$idempotencyKey'))})",
    ]
    for field, limit in (("eventId", budget), ("userId", budget), ("requestId", REQUEST_ID_LENGTH)):
        name_var = f"$name{field[0].upper()}{field[1:]}"
        lines += [
            f'#set({name_var} = ${field}.replaceAll("{EXECUTION_NAME_UNSAFE}", ""))',
            f"#if({name_var}.length() > {limit})",
            f"#set({name_var} = {name_var}.substring(0, {limit}))",
            "#end",
        ]
        # Once for the input document, once more for the string that carries it.
        lines.append(f"#set(${field}Input = {_escaped(_escaped('$' + field))})")
    # Formal references (`${x}`): a Velocity identifier may contain '-'.
    # `idempotencyKey` only when the request has one: without it the input is unchanged.
    execution_input = (
        '{\\"eventId\\": \\"${eventIdInput}\\", '
        '\\"userId\\": \\"${userIdInput}\\", '
        '\\"requestId\\": \\"${requestIdInput}\\", '
        f'\\"{names.CALLER_INPUT_KEY}\\": '
        '{\\"userId\\": \\"${callerUserIdInput}\\", \\"groups\\": \\"${callerGroupsInput}\\"}'
        '#if($idempotencyKey != ""), \\"idempotencyKey\\": \\"${idempotencyKeyInput}\\"#end}'
    )
    lines += [
        "{",
        f'  "stateMachineArn": "{state_machine_arn}",',
        f'  "name": "{workflow}-${{nameEventId}}-${{nameUserId}}-${{nameRequestId}}",',
        f'  "input": "{execution_input}"',
        "}",
    ]
    return "\n".join(lines)


def _override_status(status: int) -> str:
    return f"#set($context.responseOverride.status = {status})"


def _internal_error_lines() -> list[str]:
    body = {"error": outcomes.INTERNAL_ERROR, "message": outcomes.INTERNAL_MESSAGE}
    return [_override_status(500), _json_text(body)]


def workflow_response_template(
    workflow: str,
    *,
    success_status: Mapping[str, int] = outcomes.SUCCESS_STATUS,
    error_status: Mapping[str, int] = outcomes.WORKFLOW_ERROR_STATUS,
) -> str:
    """Turns a StartSyncExecution result into the HTTP response `registration.outcomes` names.

    SUCCEEDED: the success status, the execution's output as the body. TIMED_OUT (the
    workflow ran out of its own time): 503 `ExecutionTimedOut` with `Retry-After`. FAILED
    with a code in `error_status`: that status and `{"error", "message"}` (a
    ValidationError also has `fields`), the message being the cause's `errorMessage` when
    the cause is a Lambda error document and the cause itself when a Fail state wrote it.
    Anything else (another code, ABORTED): 500 with a fixed body, so no cause ever leaks.
    """
    timed_out_headers = workflow_headers(outcomes.TIMED_OUT).items()
    lines = [
        "## Generated from registration.outcomes by infrastructure.constructs.api: do not edit.",
        _request_id_line(),
        "#set($execution = $input.path('$'))",
        '#set($executionStatus = "$!execution.status")',
        '#if($executionStatus == "SUCCEEDED")',
        _override_status(success_status[workflow]),
        '#set($output = "$!execution.output")',
        '#if($output == "")',
        "{}",
        "#else",
        "${output}",
        "#end",
        f'#elseif($executionStatus == "{outcomes.TIMED_OUT}")',
        _override_status(outcomes.EXECUTION_TIMED_OUT_STATUS),
        *(f'#set($context.responseOverride.header.{name} = "{value}")' for name, value in timed_out_headers),
        _json_text(
            {"error": outcomes.EXECUTION_TIMED_OUT_ERROR, "message": outcomes.EXECUTION_TIMED_OUT_MESSAGE}
        ),
        "#else",
        '#set($code = "")',
        '#if($executionStatus == "FAILED")',
        '#set($code = "$!execution.error")',
        "#end",
        '#set($cause = "$!execution.cause")',
        "#set($message = $cause)",
        '#if($cause.startsWith("{"))',
        "#set($causeDocument = $util.parseJson($cause))",
        '#set($errorMessage = "$!causeDocument.errorMessage")',
        '#if($errorMessage != "")',
        "#set($message = $errorMessage)",
        "#end",
        "#end",
        f"#set($message = {_escaped('$message')})",
    ]
    keyword = "#if"
    for code in sorted(error_status):
        status = error_status[code]
        if status == 500:
            continue  # the fallback below answers it, without the cause
        body = _json_text({"error": code, "message": "${message}"})
        if code == VALIDATION_ERROR:
            body = body[:-1] + ', "fields": []}'
        headers = [
            f'#set($context.responseOverride.header.{name} = "{value}")'
            for name, value in outcomes.error_headers(code).items()
        ]
        lines += [f'{keyword}($code == "{code}")', _override_status(status), *headers, body]
        keyword = "#elseif"
    lines += ["#else", *_internal_error_lines(), "#end", "#end"]
    return "\n".join(lines)


def service_error_template() -> str:
    """StartSyncExecution itself refused the call (4xx): throttling or our own mistake."""
    throttled = _json_text({"error": THROTTLED_ERROR, "message": THROTTLED_MESSAGE})
    return "\n".join(
        [
            "## Generated by infrastructure.constructs.api: StartSyncExecution refused the call.",
            _request_id_line(),
            "#set($errorType = \"$!input.path('$.__type')\")",
            '#if($errorType.contains("Throttling") || $errorType.contains("LimitExceeded"))',
            _override_status(THROTTLED_STATUS),
            throttled,
            "#else",
            *_internal_error_lines(),
            "#end",
        ]
    )


def service_unavailable_template() -> str:
    """StartSyncExecution failed on Step Functions' side: retry later, as the header says."""
    retry_after = [
        f'#set($context.responseOverride.header.{name} = "{value}")'
        for name, value in outcomes.error_headers(UNAVAILABLE_ERROR).items()
    ]
    return "\n".join(
        [
            _request_id_line(),
            *retry_after,
            _json_text({"error": UNAVAILABLE_ERROR, "message": UNAVAILABLE_MESSAGE}),
        ]
    )


def _request_id_line() -> str:
    return f'#set($context.responseOverride.header.{outcomes.REQUEST_ID_HEADER} = "$context.requestId")'


def workflow_method_statuses(workflow: str) -> list[int]:
    statuses = {
        outcomes.SUCCESS_STATUS[workflow],
        500,
        THROTTLED_STATUS,
        UNAVAILABLE_STATUS,
        outcomes.EXECUTION_TIMED_OUT_STATUS,
    }
    statuses.update(outcomes.WORKFLOW_ERROR_STATUS.values())
    return sorted(statuses)


def workflow_method_headers(status: int) -> dict[str, bool]:
    """Response headers a workflow route's mapping template may set for `status`."""
    names = {outcomes.REQUEST_ID_HEADER}
    if status == outcomes.EXECUTION_TIMED_OUT_STATUS:
        names.update(workflow_headers(outcomes.TIMED_OUT))
    for code in outcomes.RETRY_LATER_CODES:
        if outcomes.WORKFLOW_ERROR_STATUS.get(code) == status:
            names.update(outcomes.error_headers(code))
    return {f"method.response.header.{name}": False for name in sorted(names)}


# --- request models and gateway responses --------------------------------------------------


def register_request_schema() -> dict[str, Any]:
    """The register body's JSON schema, from the shared model."""
    return RegisterRequest.model_json_schema()


_SCHEMA_TYPES = {
    "object": apigateway.JsonSchemaType.OBJECT,
    "string": apigateway.JsonSchemaType.STRING,
    "integer": apigateway.JsonSchemaType.INTEGER,
    "number": apigateway.JsonSchemaType.NUMBER,
    "boolean": apigateway.JsonSchemaType.BOOLEAN,
    "array": apigateway.JsonSchemaType.ARRAY,
    "null": apigateway.JsonSchemaType.NULL,
}
# JSON Schema keywords with no meaning for validation (API Gateway speaks draft 4).
_ANNOTATIONS = {"examples", "default"}


def api_gateway_schema(schema: Mapping[str, Any], *, root: bool = True) -> apigateway.JsonSchema:
    """A pydantic-style JSON schema (a flat object of simple fields) as an API Gateway model.

    Keywords outside that subset raise: a model that validates less than the schema says
    would be worse than none.
    """
    kwargs: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key == "type":
            kwargs["type"] = _SCHEMA_TYPES[value]
        elif key == "properties":
            kwargs["properties"] = {name: api_gateway_schema(sub, root=False) for name, sub in value.items()}
        elif key == "additionalProperties":
            if not isinstance(value, bool):
                raise ValueError("only boolean additionalProperties are supported")
            kwargs["additional_properties"] = value
        elif key in ("required", "pattern", "title", "description", "enum"):
            kwargs[key] = value
        elif key in ("minLength", "maxLength", "minimum", "maximum"):
            kwargs[re.sub(r"([A-Z])", r"_\1", key).lower()] = value
        else:
            raise ValueError(f"JSON schema keyword {key!r} is not supported in an API Gateway model")
    if root:
        kwargs["schema"] = apigateway.JsonSchemaVersion.DRAFT4
    return apigateway.JsonSchema(**kwargs)


def body_field_errors(schema: Mapping[str, Any]) -> list[dict[str, str]]:
    """What a refused register body must look like, one entry per field.

    A gateway response body is plain substitution, not Velocity: the validator's own
    detail (`$context.error.validationErrorString`) holds double quotes and the caller's
    input, so it cannot be placed inside a JSON string. Say what is expected instead.
    """
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    errors = []
    for name, sub in properties.items():
        expected = sub.get("description") or sub.get("type", "a value")
        presence = "required" if name in required else "optional"
        errors.append({"field": name, "message": f"{presence}: {expected}", "type": "invalid_body"})
    if schema.get("additionalProperties") is False:
        errors.append(
            {"field": "body", "message": "a JSON object with no other fields", "type": "invalid_body"}
        )
    return errors


def gateway_responses(register_schema: Mapping[str, Any]) -> dict[str, tuple[int | None, dict[str, Any]]]:
    """Response type -> (status or None to keep API Gateway's, body) for errors API Gateway
    answers itself. Bodies have the API's error shape; `$context.error.messageString` is
    already a quoted JSON string, so it is inserted as a value, not inside one."""
    validation = {
        "error": VALIDATION_ERROR,
        "message": "The request body is invalid",
        "fields": body_field_errors(register_schema),
    }
    return {
        "BAD_REQUEST_BODY": (422, validation),
        "BAD_REQUEST_PARAMETERS": (
            422,
            {"error": VALIDATION_ERROR, "message": "The request parameters are invalid", "fields": []},
        ),
        # The authorizer's refusals: no token, or one the pool did not issue, has expired or
        # is not an ID token (401); a caller refused access (403).
        "UNAUTHORIZED": (
            UNAUTHORIZED_STATUS,
            {"error": UNAUTHORIZED_ERROR, "message": UNAUTHORIZED_MESSAGE},
        ),
        "ACCESS_DENIED": (FORBIDDEN_STATUS, {"error": FORBIDDEN_ERROR, "message": FORBIDDEN_MESSAGE}),
        # No such route (API Gateway's own name for it speaks of a missing token).
        "MISSING_AUTHENTICATION_TOKEN": (
            404,
            {"error": "RouteNotFound", "message": "No route matches this method and path"},
        ),
        "UNSUPPORTED_MEDIA_TYPE": (
            415,
            {"error": "UnsupportedMediaType", "message": "Send the request body as application/json"},
        ),
        "REQUEST_TOO_LARGE": (413, {"error": "PayloadTooLarge", "message": "The request body is too large"}),
        "THROTTLED": (THROTTLED_STATUS, {"error": THROTTLED_ERROR, "message": THROTTLED_MESSAGE}),
        "INTEGRATION_TIMEOUT": (
            outcomes.INTEGRATION_TIMEOUT_STATUS,
            {"error": outcomes.INTEGRATION_TIMEOUT_ERROR, "message": outcomes.INTEGRATION_TIMEOUT_MESSAGE},
        ),
        "DEFAULT_4XX": (None, {"error": "RequestRefused", "message": "$context.error.messageString"}),
        "DEFAULT_5XX": (None, {"error": outcomes.INTERNAL_ERROR, "message": outcomes.INTERNAL_MESSAGE}),
    }


def gateway_response_headers(response_type: str) -> dict[str, str]:
    """Headers, beyond the content type, of the gateway response `response_type`."""
    if response_type == "UNAUTHORIZED":
        return dict(outcomes.UNAUTHORIZED_HEADERS)
    if response_type == "THROTTLED":
        return {"Retry-After": str(outcomes.RETRY_AFTER_S)}
    return {}


def gateway_response_template(body: Mapping[str, Any]) -> str:
    text = _json_text(body)
    return text.replace('"$context.error.messageString"', "$context.error.messageString")
