"""A deployed stack: found through its CloudFormation outputs, read with boto3.

* The state machines' ARNs and the table come from the stack's outputs
  (`names.WORKFLOW_OUTPUTS`, `names.TABLE_OUTPUT`); region and credentials from the usual
  AWS settings (`AWS_PROFILE`, `AWS_REGION`, ...).
* Standard executions (reconcile): `ListExecutions`, `DescribeExecution`,
  `GetExecutionHistory`.
* Express executions (register, unregister) have no `ListExecutions` and no history API:
  they are read from the state machine's CloudWatch log group (level ALL, with execution
  data), within a time window (`--since`, default the last 24 hours).
* Events through the data layer (`RegistrationStore`) on the stack's table.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

from infrastructure import execution_names, names
from infrastructure.ops import executions
from infrastructure.ops.backend import NotFound, OpsError
from infrastructure.ops.events import EventMissing, event_report
from infrastructure.ops.executions import ExecutionQuery

# Express history is scanned in this window unless the query says otherwise.
DEFAULT_LOOKBACK = dt.timedelta(hours=24)
SHOW_LOOKBACK = dt.timedelta(days=7)
# The most log records one command reads (a guard against scanning a huge window).
MAX_LOG_RECORDS = 50_000
# CloudWatch Logs has no long poll: a tail asks again this often.
LOG_POLL_S = 2.0
# Matches the records that start or end an Express execution (other records are ignored
# client-side too, so a service that ignores the pattern still gives the right answer).
EXPRESS_LIST_PATTERN = (
    "?ExecutionStarted ?ExecutionSucceeded ?ExecutionFailed ?ExecutionTimedOut ?ExecutionAborted"
)
_ENDS = {
    "ExecutionSucceeded": "SUCCEEDED",
    "ExecutionFailed": "FAILED",
    "ExecutionTimedOut": "TIMED_OUT",
    "ExecutionAborted": "ABORTED",
}


# How long a listing holds the dead letters it reads (they are released at once after),
# and how many it reads at most.
DEAD_LETTER_HOLD_S = 30
MAX_DEAD_LETTERS = 1000


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def express_name(execution_arn: str) -> str:
    """`arn:aws:states:<region>:<account>:express:<machine>:<name>:<id>` -> name."""
    parts = execution_arn.split(":")
    return parts[7] if len(parts) > 7 else execution_arn


class AwsBackend:
    def __init__(self, session: Any | None = None, stack_name: str = names.STACK_NAME) -> None:
        if session is None:
            import boto3

            session = boto3.Session()
        self.session = session
        self.stack_name = stack_name
        self._clients: dict[str, Any] = {}
        self._outputs: dict[str, str] | None = None
        self._machines: dict[str, dict[str, Any]] = {}

    # Discovery ------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service)
        return self._clients[service]

    def _call(self, service: str, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

        try:
            return getattr(self.client(service), operation)(**kwargs)
        except NoRegionError:
            raise OpsError(
                "No AWS region: set AWS_REGION (or a profile's region) to reach the stack"
            ) from None
        except NoCredentialsError:
            raise OpsError("No AWS credentials: set AWS_PROFILE or the usual AWS variables") from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("ExecutionDoesNotExist", "ResourceNotFoundException"):
                raise NotFound(str(error.get("Message") or code)) from None
            raise OpsError(f"{service} {operation}: {code}: {error.get('Message', '')}".strip()) from None
        except BotoCoreError as exc:
            raise OpsError(f"{service} {operation}: {exc}") from None

    @property
    def outputs(self) -> dict[str, str]:
        if self._outputs is None:
            try:
                stacks = self._call("cloudformation", "describe_stacks", StackName=self.stack_name)["Stacks"]
            except OpsError as exc:
                if "does not exist" in str(exc):
                    region = self.session.region_name or "the default region"
                    raise OpsError(
                        f"No stack {self.stack_name} in {region}: deploy it, or set AWS_REGION/AWS_PROFILE"
                    ) from None
                raise
            self._outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        return self._outputs

    @property
    def workflows(self) -> list[str]:
        return sorted(w for w, key in names.WORKFLOW_OUTPUTS.items() if key in self.outputs)

    def state_machine_arn(self, workflow: str) -> str:
        key = names.WORKFLOW_OUTPUTS.get(workflow)
        if key is None or key not in self.outputs:
            raise OpsError(f"unknown workflow {workflow!r}; the stack has: {', '.join(self.workflows)}")
        return self.outputs[key]

    def machine(self, workflow: str) -> dict[str, Any]:
        """`DescribeStateMachine` of the workflow (type, logging configuration)."""
        if workflow not in self._machines:
            self._machines[workflow] = self._call(
                "stepfunctions", "describe_state_machine", stateMachineArn=self.state_machine_arn(workflow)
            )
        return self._machines[workflow]

    def is_express(self, workflow: str) -> bool:
        return self.machine(workflow).get("type") == "EXPRESS"

    def log_group(self, workflow: str) -> str:
        for destination in self.machine(workflow).get("loggingConfiguration", {}).get("destinations", []):
            arn = destination.get("cloudWatchLogsLogGroup", {}).get("logGroupArn", "")
            if ":log-group:" in arn:
                return str(arn.split(":log-group:", 1)[1].removesuffix(":*"))
        raise OpsError(f"the {workflow} state machine logs nowhere: its executions cannot be read")

    @property
    def table_name(self) -> str:
        name = self.outputs.get(names.TABLE_OUTPUT)
        if not name:
            raise OpsError(f"stack {self.stack_name} has no {names.TABLE_OUTPUT} output")
        return name

    # Executions -----------------------------------------------------------------------

    def list_executions(self, query: ExecutionQuery) -> list[dict[str, Any]]:
        workflows = [query.workflow] if query.workflow else self.workflows
        if query.workflow:
            self.state_machine_arn(query.workflow)
        found: list[dict[str, Any]] = []
        for workflow in workflows:
            if self.is_express(workflow):
                found.extend(self._express_list(workflow, query))
            else:
                found.extend(self._standard_list(workflow, query))
        found.sort(key=lambda s: s["startDate"] or "", reverse=True)
        return found[: query.limit]

    def _standard_list(self, workflow: str, query: ExecutionQuery) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"stateMachineArn": self.state_machine_arn(workflow), "maxResults": 100}
        if query.status:
            kwargs["statusFilter"] = query.status
        found: list[dict[str, Any]] = []
        while len(found) < query.limit:
            page = self._call("stepfunctions", "list_executions", **kwargs)
            for item in page.get("executions", []):
                start = executions.iso(item["startDate"])
                if query.since and start and start < query.since:
                    return found  # newest first: the rest is older still
                if not query.in_window(start) or not query.name_may_match(item["name"], self.workflows):
                    continue
                described = self._call(
                    "stepfunctions", "describe_execution", executionArn=item["executionArn"]
                )
                execution_input = _loads(described.get("input"))
                if not query.input_matches(execution_input):
                    continue
                found.append(self._standard_summary(workflow, described))
                if len(found) >= query.limit:
                    break
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
        return found

    def _standard_summary(self, workflow: str, described: dict[str, Any]) -> dict[str, Any]:
        return executions.summary(
            name=described["name"],
            workflow=workflow,
            status=described["status"],
            start=described["startDate"],
            stop=described.get("stopDate"),
            execution_arn=described["executionArn"],
            execution_input=_loads(described.get("input")),
            error=described.get("error"),
            cause=described.get("cause"),
            workflows=self.workflows,
        )

    def _log_records(
        self, log_group: str, start: dt.datetime, end: dt.datetime | None, pattern: str
    ) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "logGroupName": log_group,
            "startTime": _ms(start),
            "filterPattern": pattern,
        }
        if end is not None:
            kwargs["endTime"] = _ms(end)
        read = 0
        while True:
            page = self._call("logs", "filter_log_events", **kwargs)
            for event in page.get("events", []):
                read += 1
                if read > MAX_LOG_RECORDS:
                    raise OpsError(
                        f"more than {MAX_LOG_RECORDS} log records in {log_group} for this window: "
                        "narrow it with --since/--until"
                    )
                record = _loads(event.get("message"))
                if isinstance(record, dict) and "type" in record and "execution_arn" in record:
                    yield record
            token = page.get("nextToken")
            if not token:
                return
            kwargs["nextToken"] = token

    def _window(
        self, query: ExecutionQuery, lookback: dt.timedelta
    ) -> tuple[dt.datetime, dt.datetime | None]:
        start = executions.parse_time(query.since) or _now() - lookback
        return start, executions.parse_time(query.until)

    def _express_list(self, workflow: str, query: ExecutionQuery) -> list[dict[str, Any]]:
        start, end = self._window(query, DEFAULT_LOOKBACK)
        runs: dict[str, dict[str, Any]] = {}
        for record in self._log_records(self.log_group(workflow), start, end, EXPRESS_LIST_PATTERN):
            kind = record["type"]
            if kind != "ExecutionStarted" and kind not in _ENDS:
                continue
            run = runs.setdefault(record["execution_arn"], {"status": "RUNNING"})
            details = record.get("details") or {}
            if kind == "ExecutionStarted":
                run["start"] = record.get("event_timestamp")
                run["input"] = _loads(details.get("input"))
            else:
                run["status"] = _ENDS[kind]
                run["stop"] = record.get("event_timestamp")
                run["error"], run["cause"] = details.get("error"), details.get("cause")
        found = []
        for arn, run in runs.items():
            name = express_name(arn)
            if "start" not in run:
                continue  # started before the window
            summary = executions.summary(
                name=name,
                workflow=workflow,
                status=run["status"],
                start=run["start"],
                stop=run.get("stop"),
                execution_arn=arn,
                execution_input=run.get("input"),
                error=run.get("error"),
                cause=run.get("cause"),
                workflows=self.workflows,
            )
            if (
                (query.status is None or summary["status"] == query.status)
                and query.in_window(summary["startDate"])
                and query.name_may_match(name, self.workflows)
                and query.input_matches(run.get("input"))
            ):
                found.append(summary)
        return found

    def execution(self, name: str, *, history: bool = True, since: str | None = None) -> dict[str, Any]:
        parts = execution_names.parse(name, self.workflows)
        order = self.workflows
        if parts is not None:
            order = [parts.workflow, *[w for w in self.workflows if w != parts.workflow]]
        for workflow in order:
            document = (
                self._express_execution(workflow, name, history, since)
                if self.is_express(workflow)
                else self._standard_execution(workflow, name, history)
            )
            if document is not None:
                return document
        raise NotFound(
            f"No execution named {name} (Express executions are searched in their logs of the last 7 days; use --since)"
        )

    def _standard_execution(self, workflow: str, name: str, history: bool) -> dict[str, Any] | None:
        machine_arn = self.state_machine_arn(workflow)
        arn = machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name
        try:
            described = self._call("stepfunctions", "describe_execution", executionArn=arn)
        except NotFound:
            return None
        execution = self._standard_summary(workflow, described)
        execution["input"] = _loads(described.get("input"))
        execution["output"] = _loads(described.get("output"))
        document: dict[str, Any] = {"execution": execution}
        if history:
            events: list[dict[str, Any]] = []
            kwargs: dict[str, Any] = {"executionArn": arn, "maxResults": 1000}
            while True:
                page = self._call("stepfunctions", "get_execution_history", **kwargs)
                events.extend(page.get("events", []))
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
            document["events"] = executions.normalize_history(events)
        return document

    def _express_execution(
        self, workflow: str, name: str, history: bool, since: str | None
    ) -> dict[str, Any] | None:
        start, _ = self._window(ExecutionQuery(since=since), SHOW_LOOKBACK)
        records = [
            r
            for r in self._log_records(self.log_group(workflow), start, None, f'"{name}"')
            if express_name(r["execution_arn"]) == name
        ]
        if not records:
            return None
        arn = records[0]["execution_arn"]
        records = [r for r in records if r["execution_arn"] == arn]
        events = executions.normalize_log_events(records)
        started = next((e for e in events if e["type"] == "ExecutionStarted"), None)
        ended = next((e for e in events if e["type"] in _ENDS), None)
        details = ended["details"] if ended else {}
        execution = executions.summary(
            name=name,
            workflow=workflow,
            status=_ENDS[ended["type"]] if ended else "RUNNING",
            start=started["timestamp"] if started else events[0]["timestamp"],
            stop=ended["timestamp"] if ended else None,
            execution_arn=arn,
            execution_input=_loads(started["details"].get("input")) if started else None,
            error=details.get("error"),
            cause=details.get("cause"),
            workflows=self.workflows,
        )
        execution["input"] = _loads(started["details"].get("input")) if started else None
        execution["output"] = _loads(details.get("output"))
        document: dict[str, Any] = {"execution": execution}
        if history:
            document["events"] = events
        return document

    # Events and reconciliation --------------------------------------------------------

    def _store(self) -> Any:
        from registration.data import RegistrationStore

        return RegistrationStore(self.table_name, self.client("dynamodb"))

    def _last_reconciliation(self, event_id: str) -> dict[str, Any] | None:
        workflow = names.RECONCILE_WORKFLOW
        if workflow not in self.workflows:
            return None
        page = self._call(
            "stepfunctions",
            "list_executions",
            stateMachineArn=self.state_machine_arn(workflow),
            maxResults=50,
        )
        for item in page.get("executions", []):
            parts = execution_names.parse(item["name"], self.workflows)
            if (
                parts is None
                or parts.middle.startswith(execution_names.ALL_EVENTS + "-")
                or execution_names.matches(item["name"], self.workflows, event_id=event_id)
            ):
                summary = executions.summary(
                    name=item["name"],
                    workflow=workflow,
                    status=item["status"],
                    start=item["startDate"],
                    stop=item.get("stopDate"),
                    execution_arn=item["executionArn"],
                    workflows=self.workflows,
                )
                # The run's newest execution: a long run continues in more of them.
                described = self._call(
                    "stepfunctions", "describe_execution", executionArn=item["executionArn"]
                )
                return executions.last_run(
                    summary, _loads(described.get("input")), _loads(described.get("output"))
                )
        return None

    def event(self, event_id: str) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return event_report(self._store(), event_id, last_run=self._last_reconciliation(event_id))
        except EventMissing as exc:
            raise NotFound(str(exc)) from None
        except (ClientError, BotoCoreError) as exc:
            raise OpsError(f"reading the table {self.table_name}: {exc}") from None

    def domain_events(
        self, cursor: str | None, event_id: str | None, wait: float
    ) -> tuple[list[dict[str, Any]], str]:
        """From the log group the bus's rule copies every event to. The cursor is the
        newest log time read and the ids read at that time (the group keeps no offsets)."""
        log_group = self.outputs.get(names.EVENT_LOG_GROUP_OUTPUT)
        if not log_group:
            raise OpsError(f"The stack {self.stack_name} has no domain events log group: deploy this version")
        if cursor is None:
            since, seen = _ms(_now()), []
        else:
            state = json.loads(cursor)
            since, seen = int(state["since"]), list(state["seen"])
        deadline = time.monotonic() + wait
        while True:
            found: list[dict[str, Any]] = []
            kwargs: dict[str, Any] = {"logGroupName": log_group, "startTime": since}
            if event_id:
                kwargs["filterPattern"] = domain_events_filter(event_id)
            while True:
                page = self._call("logs", "filter_log_events", **kwargs)
                for record in page.get("events", []):
                    event = _loads(record.get("message"))
                    if not isinstance(event, dict) or event.get("id") in seen:
                        continue
                    stamp = int(record.get("timestamp", since))
                    if stamp > since:
                        since, seen = stamp, []
                    seen.append(str(event.get("id")))
                    found.append(event)
                if not page.get("nextToken") or len(found) >= MAX_LOG_RECORDS:
                    break
                kwargs["nextToken"] = page["nextToken"]
            if found or time.monotonic() >= deadline:
                return found, json.dumps({"since": since, "seen": seen})
            time.sleep(min(LOG_POLL_S, max(0.0, deadline - time.monotonic())))

    # Webhook dead letters ------------------------------------------------------------------

    def _dead_letter_queue(self) -> str:
        url = self.outputs.get(names.WEBHOOK_DELIVERIES_DLQ_OUTPUT)
        if not url:
            raise OpsError(
                f"The stack {self.stack_name} has no webhook deliveries dead-letter queue: deploy this version"
            )
        return url

    def _source_queue(self, dead_letter_url: str) -> tuple[str, int | None]:
        """The queue whose redrive policy names the dead-letter queue, and its maxReceiveCount."""
        sources = self._call("sqs", "list_dead_letter_source_queues", QueueUrl=dead_letter_url).get(
            "queueUrls", []
        )
        if not sources:
            raise OpsError(f"No queue sends its dead letters to {dead_letter_url}")
        attributes = self._call(
            "sqs", "get_queue_attributes", QueueUrl=sources[0], AttributeNames=["RedrivePolicy"]
        )
        policy = _loads(attributes.get("Attributes", {}).get("RedrivePolicy"))
        count = policy.get("maxReceiveCount") if isinstance(policy, dict) else None
        return str(sources[0]), int(count) if count is not None else None

    def _held_dead_letters(self, url: str) -> list[dict[str, Any]]:
        """Every message of the dead-letter queue, received (held for DEAD_LETTER_HOLD_S:
        on a FIFO queue a group's messages come in order while they are held)."""
        held: list[dict[str, Any]] = []
        while len(held) < MAX_DEAD_LETTERS:
            answer = self._call(
                "sqs",
                "receive_message",
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=DEAD_LETTER_HOLD_S,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"],
            )
            messages = answer.get("Messages", [])
            if not messages:
                break
            held.extend(messages)
        return held

    def _release(self, url: str, messages: list[dict[str, Any]]) -> None:
        """Makes held messages visible again at once."""
        for start in range(0, len(messages), 10):
            entries = [
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for n, m in enumerate(messages[start : start + 10])
            ]
            self._call("sqs", "change_message_visibility_batch", QueueUrl=url, Entries=entries)

    def failed_webhooks(self) -> list[dict[str, Any]]:
        """The deliveries' dead letters, read and left in place. SQS keeps a message's first
        enqueue time, not when it was moved, so `deadLetteredAt` is unknown here."""
        url = self._dead_letter_queue()
        _, attempts = self._source_queue(url)
        held = self._held_dead_letters(url)
        try:
            return [_dead_letter_summary(m, attempts) for m in held]
        finally:
            self._release(url, held)

    def redrive_webhooks(self, webhook_id: str | None) -> int:
        """The dead letters (one subscription's, or all) sent back to the deliveries queue in
        their order, each under its group and a new deduplication id (SQS would drop one it
        saw in the last five minutes), then deleted; the others are left as they were."""
        url = self._dead_letter_queue()
        source, _ = self._source_queue(url)
        held = self._held_dead_letters(url)
        moved: list[dict[str, Any]] = []
        kept: list[dict[str, Any]] = []
        for message in held:
            body = _loads(message.get("Body"))
            mine = webhook_id is None or (isinstance(body, dict) and body.get("webhookId") == webhook_id)
            (moved if mine else kept).append(message)
        try:
            stamp = int(time.time())
            for message in moved:
                attributes = message.get("Attributes", {})
                deduplication = (
                    f"{attributes.get('MessageDeduplicationId', message['MessageId'])}#redrive-{stamp}"
                )
                self._call(
                    "sqs",
                    "send_message",
                    QueueUrl=source,
                    MessageBody=message["Body"],
                    MessageGroupId=attributes.get("MessageGroupId", message["MessageId"]),
                    MessageDeduplicationId=deduplication[-128:],
                )
                self._call("sqs", "delete_message", QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        finally:
            self._release(url, kept)
        return len(moved)

    def oldest_cursor(self) -> str:
        return json.dumps({"since": 0, "seen": []})

    def start_reconcile(self, event_id: str | None) -> dict[str, Any]:
        if event_id is not None and self._store().find_event(event_id) is None:
            raise NotFound(f"Event {event_id} does not exist")
        workflow = names.RECONCILE_WORKFLOW
        name = execution_names.reconcile_name(workflow, event_id, execution_names.STARTED_BY_CLI)
        execution_input: dict[str, Any] = {"eventIds": [event_id]} if event_id else {}
        response = self._call(
            "stepfunctions",
            "start_execution",
            stateMachineArn=self.state_machine_arn(workflow),
            name=name,
            input=json.dumps(execution_input),
        )
        return {
            "name": name,
            "workflow": workflow,
            "executionArn": response["executionArn"],
            "input": execution_input,
        }


def _dead_letter_summary(message: dict[str, Any], attempts: int | None) -> dict[str, Any]:
    body = _loads(message.get("Body"))
    delivery: dict[str, Any] = body if isinstance(body, dict) else {}
    found = delivery.get("event")
    event: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        "webhookId": str(delivery.get("webhookId")),
        "eventId": str(event.get("eventId")),
        "messageId": str(event.get("id")),
        "type": str(event.get("type")),
        "attempts": attempts,
        "deadLetteredAt": None,
    }


def domain_events_filter(event_id: str | None) -> str:
    """The log group's filter pattern for one event's domain events (all without one)."""
    return f'{{ $.detail.eventId = "{event_id}" }}' if event_id else ""


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text
