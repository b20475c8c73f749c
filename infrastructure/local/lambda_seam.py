"""The one seam between moto's Step Functions interpreter and our Lambda handlers.

moto runs Lambda code only inside Docker. Every Lambda task of its interpreter, both
``arn:aws:states:::lambda:invoke`` (``StateTaskServiceLambda``) and a plain function
ARN as ``Resource`` (``StateTaskLambda``), ends in
``lambda_eval_utils.execute_lambda_function_integration``, which asks
``lambda_eval_utils.boto_client_for(service="lambda")`` for a client and calls
``invoke(FunctionName=..., Payload=...)`` on it. The seam replaces that one module
attribute: for service ``"lambda"`` it hands out a :class:`LocalLambdaClient` that
imports the function's handler and calls it in the calling thread; every other
service still gets moto's client. Skipping moto's Lambda backend and the boto3
client construction per task roughly halves the latency of a task.

What the interpreter then does with the response is AWS's contract and moto's
code: on ``FunctionError`` it reads ``errorType`` from the payload and uses it as the
Step Functions error name, so ``Catch``/``Retry`` match on the exception class name
(``UserNotFound``), with the JSON payload as the cause.

Each function's ``timeout`` (the template's ``Timeout``) is enforced as Lambda enforces
it: a handler still running when it elapses makes the invocation fail with error type
``Sandbox.Timedout`` ("Task timed out after N.NN seconds"), which Step Functions sees as
that error. A thread cannot be killed in-process, so the handler runs in a thread of its
own and the caller stops waiting at the deadline; the handler's thread may go on (where
Lambda would freeze and discard the execution environment) and its result is dropped.
The handler's thread runs in a copy of the caller's ``contextvars`` context, so
per-invocation state kept in context variables follows the call.
"""

from __future__ import annotations

import contextvars
import importlib
import io
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from botocore.exceptions import ClientError
from botocore.response import StreamingBody

from infrastructure.local import iam

PATCH_MODULE = "moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils"
PATCH_ATTRIBUTE = "boto_client_for"
# What Lambda reports for an invocation that ran out of time.
TIMED_OUT_ERROR = "Sandbox.Timedout"
POLL_S = 0.05

Handler = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class LocalFunction:
    """What the seam needs to run one function: its name and ``module.attr`` handler."""

    name: str
    handler: str
    timeout: float = 3  # seconds, as the template's Timeout (Lambda's default is 3)
    memory_size: int = 128
    region: str = "us-east-1"
    account: str = "123456789012"
    environment: Mapping[str, str] = field(default_factory=dict)
    # The execution role: every AWS call the handler makes is made as this role.
    role_arn: str | None = None

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{self.name}"

    @property
    def principal(self) -> iam.Principal | None:
        return iam.Principal(self.role_arn, self.name) if self.role_arn else None


class LambdaContext:
    """The attributes and method of the context object the Python runtime passes."""

    def __init__(self, function: LocalFunction, request_id: str) -> None:
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function.arn
        self.memory_limit_in_mb = function.memory_size
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function.name}"
        self.log_stream_name = f"local/{request_id}"
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline = time.monotonic() + function.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Invocation:
    """Record of one in-process invocation (for tests and diagnostics)."""

    function: str
    request_id: str
    event: Any
    error_type: str | None
    duration_ms: float


def _function_name(function_name: str) -> str:
    # Accepts a name, a partial ARN (123456789012:function:name) or a full ARN,
    # optionally with a :qualifier, like Lambda's own Invoke.
    if ":function:" in function_name:
        return function_name.split(":function:", 1)[1].split(":", 1)[0]
    return function_name.split(":", 1)[0]


def _client_error(code: str, message: str, status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": str(uuid.uuid4())},
        },
        "Invoke",
    )


def timed_out_message(request_id: str, timeout: float) -> str:
    """Lambda's errorMessage for an invocation that ran out of time."""
    return f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"


class ThreadedCall:
    """``target()`` in a daemon thread of its own (in a copy of the caller's context),
    so that the caller can stop waiting for it.

    ``started_at`` is set when ``target`` reports (by calling ``started()``) that the
    timed part begins; ``wait`` returns whether the call finished in time.
    """

    def __init__(self, target: Callable[[ThreadedCall], Any], name: str) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.started_at: float | None = None
        self._target = target
        self._done = threading.Event()
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._body,), name=name, daemon=True)
        self._thread.start()

    def _body(self) -> None:
        try:
            self.result = self._target(self)
        except BaseException as exc:
            self.error = exc
        finally:
            self._done.set()

    def started(self) -> None:
        self.started_at = time.monotonic()

    def wait(self, timeout: float, *, deadline: float | None = None) -> bool:
        """Whether the call ended before ``timeout`` seconds after it ``started()`` and
        before the absolute ``deadline`` (``time.monotonic()``), when one is given."""
        while True:
            limits = [] if deadline is None else [deadline]
            if self.started_at is not None:
                limits.append(self.started_at + timeout)
            remaining = min(limits) - time.monotonic() if limits else POLL_S
            if remaining <= 0:
                return self._done.is_set()
            if self.started_at is None:
                # Look again soon: the timed part may begin meanwhile.
                remaining = min(remaining, POLL_S)
            if self._done.wait(remaining):
                return True


def _error_payload(error_type: str, exc: BaseException, request_id: str) -> dict[str, Any]:
    return {
        "errorMessage": str(exc),
        "errorType": error_type,
        "requestId": request_id,
        # Like the Lambda runtime, show the handler's frames, not the invoker's.
        "stackTrace": traceback.format_list(
            [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
        ),
    }


class LocalLambdaClient:
    """Stands in for a boto3 Lambda client: ``invoke`` runs the handler in-process."""

    def __init__(self, functions: Mapping[str, LocalFunction]) -> None:
        self._functions = {f.name: f for f in functions.values()}
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self.invocations: list[Invocation] = []
        self.record_invocations = False

    @property
    def functions(self) -> Mapping[str, LocalFunction]:
        """The functions it runs, by name."""
        return dict(self._functions)

    def knows(self, function_name: str) -> bool:
        return _function_name(function_name) in self._functions

    def _handler(self, function: LocalFunction) -> Handler:
        handler = self._handlers.get(function.name)
        if handler is None:
            module_name, _, attribute = function.handler.rpartition(".")
            module = importlib.import_module(module_name)
            handler = getattr(module, attribute)
            if not callable(handler):
                raise AttributeError(f"{function.handler} is not callable")
            with self._lock:
                self._handlers[function.name] = handler
        return handler

    def invoke(
        self,
        FunctionName: str,
        Payload: bytes | str | None = None,
        InvocationType: str = "RequestResponse",
        **_: Any,
    ) -> dict[str, Any]:
        name = _function_name(FunctionName)
        function = self._functions.get(name)
        if function is None:
            raise _client_error("ResourceNotFoundException", f"Function not found: {FunctionName}", 404)
        if InvocationType == "DryRun":
            return {"StatusCode": 204, "Payload": StreamingBody(io.BytesIO(b""), 0)}
        event = json.loads(Payload) if Payload else {}
        if InvocationType == "Event":
            threading.Thread(target=self._run, args=(function, event), daemon=True).start()
            return {"StatusCode": 202, "Payload": StreamingBody(io.BytesIO(b""), 0)}
        body, error_type = self._run(function, event)
        response: dict[str, Any] = {
            "StatusCode": 200,
            "ExecutedVersion": "$LATEST",
            "Payload": StreamingBody(io.BytesIO(body), len(body)),
        }
        if error_type is not None:
            response["FunctionError"] = "Unhandled"
        return response

    def _run(self, function: LocalFunction, event: Any) -> tuple[bytes, str | None]:
        """Run the handler in a thread of its own; give up on it after ``function.timeout``."""
        request_id = str(uuid.uuid4())
        started = time.perf_counter()

        def call(this: ThreadedCall) -> tuple[bytes, str | None]:
            this.started()
            return self._call_handler(function, event, request_id)

        running = ThreadedCall(call, name=f"lambda-{function.name}")
        if running.wait(function.timeout):
            if running.error is not None:
                raise running.error
            body, error_type = running.result
        else:
            error_type = TIMED_OUT_ERROR
            document = {
                "errorType": error_type,
                "errorMessage": timed_out_message(request_id, function.timeout),
            }
            body = json.dumps(document).encode("utf-8")
        if self.record_invocations:
            self.invocations.append(
                Invocation(
                    function=function.name,
                    request_id=request_id,
                    event=event,
                    error_type=error_type,
                    duration_ms=(time.perf_counter() - started) * 1000,
                )
            )
        return body, error_type

    def _call_handler(self, function: LocalFunction, event: Any, request_id: str) -> tuple[bytes, str | None]:
        error_type: str | None = None
        try:
            try:
                handler = self._handler(function)
            except ImportError as exc:
                error_type = "Runtime.ImportModuleError"
                raise RuntimeError(
                    f"Unable to import module '{function.handler.rpartition('.')[0]}': {exc}"
                ) from exc
            except AttributeError as exc:
                error_type = "Runtime.HandlerNotFound"
                raise RuntimeError(f"Handler '{function.handler}' missing: {exc}") from exc
            with iam.acting_as(function.principal):
                result = handler(event, LambdaContext(function, request_id))
            try:
                body = json.dumps(result).encode("utf-8")
            except (TypeError, ValueError) as exc:
                error_type = "Runtime.MarshalError"
                raise RuntimeError(f"Unable to marshal response: {exc}") from exc
        except SystemExit as exc:
            error_type = "Runtime.ExitError"
            body = json.dumps(_error_payload(error_type, exc, request_id)).encode("utf-8")
        except Exception as exc:
            error_type = error_type or type(exc).__name__
            body = json.dumps(_error_payload(error_type, exc, request_id)).encode("utf-8")
        return body, error_type


class _Dispatcher:
    """The Lambda client moto gets while any seam is active.

    Several engines may be alive in one process (nested test fixtures); the newest
    seam that knows a function runs it.
    """

    def invoke(self, FunctionName: str, **kwargs: Any) -> dict[str, Any]:
        seams = list(_ACTIVE)
        for seam in reversed(seams):
            if seam.client.knows(FunctionName):
                return seam.client.invoke(FunctionName=FunctionName, **kwargs)
        raise _client_error("ResourceNotFoundException", f"Function not found: {FunctionName}", 404)


class _RoleDispatcher:
    """The Lambda client of a state machine's execution: Invoke is authorised against the
    state machine's role (it may invoke only what it is granted), then dispatched."""

    def __init__(self, principal: iam.Principal) -> None:
        self.principal = principal

    def invoke(self, FunctionName: str, **kwargs: Any) -> dict[str, Any]:
        try:
            iam.authorize(self.principal, "lambda", "Invoke", {"FunctionName": FunctionName})
        except ClientError as exc:
            return _invoke_refused(exc)
        return _DISPATCHER.invoke(FunctionName=FunctionName, **kwargs)


def _invoke_refused(exc: ClientError) -> dict[str, Any]:
    """A refused Invoke as Step Functions reports it: the task fails with
    `Lambda.AWSLambdaException`, Lambda's message and details in the cause. (moto's
    interpreter would name a ClientError `Lambda.<code>` or `Exception`; AWS does not.)"""
    error, meta = exc.response["Error"], exc.response["ResponseMetadata"]
    cause = (
        f"{error['Message']} (Service: AWSLambda; Status Code: {meta['HTTPStatusCode']}; "
        f"Error Code: {error['Code']}; Request ID: {meta['RequestId']}; Proxy: null)"
    )
    body = json.dumps({"errorType": "Lambda.AWSLambdaException", "errorMessage": cause}).encode("utf-8")
    return {
        "StatusCode": 200,
        "FunctionError": "Unhandled",
        "Payload": StreamingBody(io.BytesIO(body), len(body)),
    }


# The role session name AWS shows for calls Step Functions makes with a state machine's role.
STATES_SESSION = "StepFunctions"

_LOCK = threading.Lock()
_ACTIVE: list[LambdaSeam] = []
_DISPATCHER = _Dispatcher()
_original: Callable[..., Any] | None = None


def _patched_module() -> Any:
    return importlib.import_module(PATCH_MODULE)


def _client_for(region: str, service: str, state_credentials: Any = None) -> Any:
    role_arn = getattr(state_credentials, "role_arn", None)
    principal = iam.Principal(role_arn, STATES_SESSION) if isinstance(role_arn, str) else None
    if service == "lambda":
        return _DISPATCHER if principal is None else _RoleDispatcher(principal)
    original = _original
    if original is None:  # the seam was removed while an execution was running
        from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for

        original = boto_client_for
    client = original(region=region, service=service, state_credentials=state_credentials)
    return client if principal is None else iam.bind(client, principal)


def _install(seam: LambdaSeam) -> None:
    global _original
    with _LOCK:
        if seam in _ACTIVE:
            return
        if not _ACTIVE:
            module = _patched_module()
            current = getattr(module, PATCH_ATTRIBUTE)
            if current is not _client_for:
                _original = current
            setattr(module, PATCH_ATTRIBUTE, _client_for)
        _ACTIVE.append(seam)


def _uninstall(seam: LambdaSeam) -> None:
    global _original
    with _LOCK:
        if seam in _ACTIVE:
            _ACTIVE.remove(seam)
        if not _ACTIVE and _original is not None:
            setattr(_patched_module(), PATCH_ATTRIBUTE, _original)
            _original = None


class LambdaSeam:
    """Route moto's Step Functions Lambda tasks to in-process handlers while active."""

    def __init__(self, functions: Mapping[str, LocalFunction]) -> None:
        self.client = LocalLambdaClient(functions)

    @property
    def active(self) -> bool:
        return self in _ACTIVE

    def start(self) -> LambdaSeam:
        _install(self)
        return self

    def stop(self) -> None:
        _uninstall(self)

    def __enter__(self) -> LambdaSeam:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def is_installed() -> bool:
    """Whether moto's interpreter currently gets the local client for Lambda."""
    return getattr(_patched_module(), PATCH_ATTRIBUTE) is _client_for


@contextmanager
def lambda_seam(functions: Mapping[str, LocalFunction]) -> Iterator[LambdaSeam]:
    with LambdaSeam(functions) as seam:
        yield seam
