"""The local stack: the operator endpoints of the running local server (`make run`)."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from infrastructure import names
from infrastructure.ops.backend import NotFound, OpsError
from infrastructure.ops.executions import ExecutionQuery

DEFAULT_URL = f"http://127.0.0.1:{names.LOCAL_API_PORT}"
TIMEOUT_S = 30.0


class LocalBackend:
    def __init__(self, url: str = DEFAULT_URL, timeout: float = TIMEOUT_S) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise OpsError(f"--url must look like {DEFAULT_URL}, not {url!r}")
        self.url = f"http://{parts.netloc}"
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        payload = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            connection.request(method, names.LOCAL_OPS_PREFIX + path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except TimeoutError:
            raise OpsError(f"The local stack at {self.url} did not answer within {self.timeout:g}s") from None
        except (OSError, http.client.HTTPException):
            raise OpsError(
                f"No local stack at {self.url} — start it with `make run` (or pass --url)"
            ) from None
        finally:
            connection.close()
        try:
            document = json.loads(raw) if raw else None
        except ValueError:
            raise OpsError(f"{self.url} answered {response.status} with something that is not JSON") from None
        if response.status == 404 and isinstance(document, dict) and document.get("error") == "RouteNotFound":
            raise OpsError(
                f"{self.url} has no operator endpoints: is it the local stack (`make run`) of this version?"
            )
        if response.status == 404:
            raise NotFound(_message(document, response.status))
        if response.status >= 400:
            raise OpsError(_message(document, response.status))
        return document

    def list_executions(self, query: ExecutionQuery) -> list[dict[str, Any]]:
        document = self._request("GET", f"/executions?{urlencode(query.as_params())}")
        return list(document["executions"])

    def execution(self, name: str, *, history: bool = True, since: str | None = None) -> dict[str, Any]:
        suffix = "" if history else "?history=0"
        return dict(self._request("GET", f"/executions/{quote(name, safe='')}{suffix}"))

    def event(self, event_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/events/{quote(event_id, safe='')}"))

    def start_reconcile(self, event_id: str | None) -> dict[str, Any]:
        return dict(self._request("POST", "/reconcile", {"eventId": event_id} if event_id else {}))

    def domain_events(
        self, cursor: str | None, event_id: str | None, wait: float
    ) -> tuple[list[dict[str, Any]], str]:
        """The bus's events after `cursor` (None: from now on), waiting up to `wait` seconds
        for one; and the cursor to ask after next."""
        params: dict[str, Any] = {"wait": f"{wait:g}"}
        params.update({"after": cursor} if cursor is not None else {"from": "now"})
        if event_id:
            params["eventId"] = event_id
        document = self._request("GET", f"/domain-events?{urlencode(params)}")
        return list(document["events"]), str(document["next"])

    def oldest_cursor(self) -> str:
        return "0"

    def failed_webhooks(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/webhooks/failed")["failed"])

    def redrive_webhooks(self, webhook_id: str | None) -> int:
        body = {"webhookId": webhook_id} if webhook_id else {}
        return int(self._request("POST", "/webhooks/redrive", body)["redriven"])

    def token(self, user_id: str, groups: list[str]) -> str:
        """An ID token of the local user pool for the user, in exactly these groups."""
        document = self._request("POST", "/token", {"userId": user_id, "groups": groups})
        return str(document["token"])


def _message(document: Any, status: int) -> str:
    if isinstance(document, dict) and document.get("message"):
        return str(document["message"])
    return f"the local stack answered HTTP {status}"
