"""EventBridge Pipes in the twin: the template's pipes, from the table's stream to a bus
or a queue.

The pipe's definition is read from the synthesized template (``PipeSpec``) and run as
EventBridge Pipes runs it: records are read from the table's stream (DynamoDB Local's,
or moto's with ``DB=memory``) shard by shard in order, kept when one of the pipe's filter
patterns matches, shaped by its input template, and put on the bus with the bus
parameters (``DetailType`` and ``Source`` may be dynamic paths into the record) or sent
to the queue with the queue parameters (a FIFO queue's ``MessageGroupId`` and
``MessageDeduplicationId``, dynamic paths too). Every call is authorised against the
pipe's role from the template first, as AWS does with the role the pipe assumes: a role
that cannot read the stream or put on its target stops the pipe here as it would there.

A bus's log is its pipe's checkpoint (:mod:`infrastructure.local.event_bus`); a pipe to
a queue keeps its checkpoint in a file beside the queue's. A restarted pipe resumes
after the last record it put.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from infrastructure.event_patterns import matches
from infrastructure.local import iam
from infrastructure.local.event_bus import DEAD_LETTER, EVENT, LocalEventBus, StreamPosition, envelope
from infrastructure.local.files import replace_whole
from infrastructure.local.iam_policies import Request
from infrastructure.local.intrinsic_functions import TemplateError
from infrastructure.local.queues import LocalQueue, LocalQueues, QueueError
from infrastructure.local.template_specs import LocalTemplate, PipeSpec

LOGGER = logging.getLogger(__name__)

# How often a running pipe reads the stream when it found nothing (Pipes polls a
# DynamoDB stream about four times a second per shard).
POLL_INTERVAL_S = 0.25
# How long a pipe trusts its list of the stream's shards (new ones appear as DynamoDB
# splits or rolls shards over; a closed one is read to its end first).
SHARD_LIST_TTL_S = 10.0
# GetRecords answers at most this many records per call.
MAX_RECORDS_PER_CALL = 1000


class PipeError(Exception):
    """A record the pipe cannot put on its target (it goes to the pipe's dead letters)."""


# --- the transformation ----------------------------------------------------------------

_PLACEHOLDER = re.compile(r"<(\$[^<>]*|aws\.pipes\.[a-z.-]+)>")
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def json_path(document: Any, path: str) -> Any:
    """The value at a JSON path of the dot-and-index form Pipes accepts (``$.a.b[0]``);
    None when there is none."""
    if path == "$":
        return document
    if not path.startswith("$."):
        raise PipeError(f"unsupported JSON path {path!r}")
    value = document
    for name, index in _SEGMENT.findall(path[2:]):
        if index:
            if not isinstance(value, list) or int(index) >= len(value):
                return None
            value = value[int(index)]
        else:
            if not isinstance(value, dict) or name not in value:
                return None
            value = value[name]
    return value


def render_input_template(template: str, record: Mapping[str, Any], reserved: Mapping[str, str]) -> str:
    """The input template with each placeholder replaced by its value.

    Inside a JSON string a value is inserted as text (escaped for that string); elsewhere
    a string is inserted as it is and any other value as its JSON, so a template that is
    one placeholder of a string holding a JSON document yields that document.
    """
    out: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        out.append(template[position : match.start()])
        name = match.group(1)
        value = reserved.get(name) if name.startswith("aws.") else json_path(record, name)
        if value is None:
            raise PipeError(f"the input template's {match.group(0)} is not in the record")
        if _inside_string(template, match.start()):
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            out.append(json.dumps(text)[1:-1])
        else:
            out.append(value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
        position = match.end()
    out.append(template[position:])
    return "".join(out)


def _inside_string(template: str, index: int) -> bool:
    """Whether ``index`` of the template lies inside a JSON string literal."""
    inside = escaped = False
    for char in template[:index]:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = inside
        elif char == '"':
            inside = not inside
    return inside


def parameter(value: str | None, record: Mapping[str, Any]) -> str | None:
    """A target parameter: a dynamic JSON path into the record, or text as it is."""
    if value is None or not value.startswith("$."):
        return value
    found = json_path(record, value)
    if not isinstance(found, str) or not found:
        raise PipeError(f"the dynamic parameter {value} is not a string in the record")
    return found


def passes(spec: PipeSpec, record: Mapping[str, Any]) -> bool:
    """Whether the pipe's filter keeps ``record``."""
    return not spec.patterns or any(matches(pattern, record) for pattern in spec.patterns)


def render(spec: PipeSpec, record: Mapping[str, Any], *, region: str, account: str) -> str:
    """What the pipe sends its target for ``record``: its input template, filled in (the
    record itself, as JSON, without one)."""
    reserved = {
        "aws.pipes.pipe-arn": f"arn:aws:pipes:{region}:{account}:pipe/{spec.name}",
        "aws.pipes.pipe-name": spec.name,
        "aws.pipes.source-arn": spec.source_arn,
        "aws.pipes.target-arn": spec.target_arn,
    }
    if spec.input_template is None:
        return json.dumps(record)
    return render_input_template(spec.input_template, record, reserved)


def transform(
    spec: PipeSpec, record: Mapping[str, Any], *, region: str, account: str
) -> dict[str, Any] | None:
    """The event the pipe puts on its bus for ``record`` (None when its filter drops it)."""
    if not passes(spec, record):
        return None
    text = render(spec, record, region=region, account=account)
    try:
        detail = json.loads(text)
    except ValueError:
        raise PipeError("the input template did not yield JSON: EventBridge wants a JSON object") from None
    if not isinstance(detail, dict):
        raise PipeError("the event's detail is not a JSON object")
    detail_type = parameter(spec.detail_type, record)
    source = parameter(spec.event_source, record)
    if not detail_type or not source:
        raise PipeError("an event on a bus needs a detail-type and a source")
    return envelope(detail, detail_type, source, region=region, account=account)


def queue_message(
    spec: PipeSpec, record: Mapping[str, Any], *, region: str, account: str
) -> dict[str, Any] | None:
    """The message the pipe sends its queue for ``record`` (None when its filter drops it):
    its body and, for a FIFO queue, its group and deduplication ids."""
    if not passes(spec, record):
        return None
    return {
        "body": render(spec, record, region=region, account=account),
        "groupId": parameter(spec.message_group_id, record),
        "deduplicationId": parameter(spec.message_deduplication_id, record),
    }


# --- the targets ----------------------------------------------------------------------

Entry = tuple[str, dict[str, Any], StreamPosition | None]


class BusTarget:
    """A pipe's event bus: its log is the pipe's checkpoint."""

    action = "events:PutEvents"

    def __init__(self, bus: LocalEventBus) -> None:
        self.bus = bus

    def shape(
        self, spec: PipeSpec, record: Mapping[str, Any], *, region: str, account: str
    ) -> dict[str, Any] | None:
        return transform(spec, record, region=region, account=account)

    def checkpoint(self, stream: str) -> dict[str, str]:
        return self.bus.checkpoint(stream)

    def put(self, entries: list[Entry]) -> None:
        self.bus.put(entries)


class QueueTarget:
    """A pipe's SQS queue (and its dead-letter queue), with the pipe's checkpoint beside
    them: where in each shard the pipe has sent up to, written after each batch (a batch
    sent again after a crash is dropped by the FIFO queue's deduplication)."""

    action = "sqs:SendMessage"

    def __init__(self, queue: LocalQueue, dead_letter: LocalQueue | None, path: Path | None) -> None:
        self.queue = queue
        self.dead_letter = dead_letter
        self.path = path
        self._positions: dict[str, dict[str, str]] = {}
        if path is not None and path.exists():
            self._positions = json.loads(path.read_text(encoding="utf-8"))

    def shape(
        self, spec: PipeSpec, record: Mapping[str, Any], *, region: str, account: str
    ) -> dict[str, Any] | None:
        return queue_message(spec, record, region=region, account=account)

    def checkpoint(self, stream: str) -> dict[str, str]:
        return dict(self._positions.get(stream, {}))

    def put(self, entries: list[Entry]) -> None:
        for kind, body, position in entries:
            if kind == EVENT:
                try:
                    self.queue.send(body["body"], body["groupId"], body["deduplicationId"])
                except QueueError as error:
                    LOGGER.warning(
                        "pipe to %s: %s is a dead letter: %s", self.queue.spec.name, position, error
                    )
                    kind, body = DEAD_LETTER, {"error": str(error), "message": body}
            if kind == DEAD_LETTER and self.dead_letter is not None:
                self.dead_letter.send(json.dumps(body))
            if position is not None:
                self._positions.setdefault(position.stream, {})[position.shard] = position.sequence
        if self.path is not None and entries:
            replace_whole(self.path, json.dumps(self._positions))


Target = BusTarget | QueueTarget


# --- the runner -----------------------------------------------------------------------


def pipe_record(raw: Mapping[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record as Pipes hands it on: the source ARN added, times as epoch seconds."""
    record: dict[str, Any] = json.loads(json.dumps(raw, default=_epoch))
    record["eventSourceARN"] = stream_arn
    return record


def _epoch(value: Any) -> Any:
    if isinstance(value, datetime):
        return int(value.timestamp())
    raw = getattr(value, "value", value)  # boto3's Binary
    if isinstance(raw, bytes | bytearray):
        return base64.b64encode(bytes(raw)).decode()
    raise TypeError(type(value).__name__)


class PipeRunner:
    """Runs one pipe: ``poll`` reads what the stream has and puts it on the bus."""

    def __init__(
        self,
        spec: PipeSpec,
        *,
        streams: Any,
        table_stream_arn: Callable[[], str | None],
        stream_gone: Callable[[], None] = lambda: None,
        target: Target,
        authorizer: iam.Authorizer | None,
        region: str,
        account: str,
    ) -> None:
        self.spec = spec
        self._streams = streams
        self._table_stream_arn = table_stream_arn
        self._stream_gone = stream_gone
        self.target = target
        self._authorizer = authorizer
        self._principal = iam.Principal(spec.role_arn, spec.name)
        self.region = region
        self.account = account
        self._iterators: dict[str, str | None] = {}
        self._stream: str | None = None
        self._shard_ids: list[str] | None = None
        self._listed_at = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_error: str | None = None
        self.records_read = 0

    # AWS authorises the pipe's role for each call it makes on the pipe's behalf.
    def _authorize(self, action: str, resource: str) -> None:
        if self._authorizer is not None:
            self._authorizer.check(self._principal, [Request(action, resource)], action.split(":", 1)[1])

    def poll(self) -> int:
        """Reads every shard up to its end now; returns how many events it put."""
        with self._lock:
            stream = self._table_stream_arn()
            if stream is None:
                return 0
            if stream != self._stream:
                self._stream, self._iterators, self._shard_ids = stream, {}, None
            now = time.monotonic()
            if self._shard_ids is None or now - self._listed_at > SHARD_LIST_TTL_S:
                self._shard_ids, self._listed_at = self._shards(stream), now
            put = 0
            try:
                for shard in self._shard_ids:
                    put += self._read_shard(stream, shard)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                    raise
                self._stream = None  # the table was recreated: its new stream, next time
                self._stream_gone()
            self.last_error = None
            return put

    def _shards(self, stream: str) -> list[str]:
        """The stream's shards, parents before children (their records come first)."""
        self._authorize("dynamodb:DescribeStream", self.spec.source_arn)
        shards: list[dict[str, Any]] = []
        start: str | None = None
        while True:
            kwargs: dict[str, Any] = {"StreamArn": stream}
            if start:
                kwargs["ExclusiveStartShardId"] = start
            description = self._streams.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(description.get("Shards", []))
            start = description.get("LastEvaluatedShardId")
            if not start:
                break
        ids = {s["ShardId"] for s in shards}
        ordered: list[str] = []

        def visit(shard: Mapping[str, Any]) -> None:
            if shard["ShardId"] in ordered:
                return
            parent = shard.get("ParentShardId")
            if parent in ids:
                visit(next(s for s in shards if s["ShardId"] == parent))
            ordered.append(shard["ShardId"])

        for shard in shards:
            visit(shard)
        return ordered

    def _iterator(self, stream: str, shard: str) -> str | None:
        if shard in self._iterators:
            return self._iterators[shard]
        self._authorize("dynamodb:GetShardIterator", self.spec.source_arn)
        done = self.target.checkpoint(stream).get(shard)
        kwargs: dict[str, Any] = {"StreamArn": stream, "ShardId": shard}
        if done is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=done)
        else:
            kwargs["ShardIteratorType"] = self.spec.starting_position
        try:
            iterator: str = self._streams.get_shard_iterator(**kwargs)["ShardIterator"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TrimmedDataAccessException":
                raise
            # What the checkpoint names is older than the stream keeps: start at its oldest.
            kwargs = {"StreamArn": stream, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}
            iterator = self._streams.get_shard_iterator(**kwargs)["ShardIterator"]
        self._iterators[shard] = str(iterator)
        return str(iterator)

    def _read_shard(self, stream: str, shard: str) -> int:
        put = 0
        while True:
            iterator = self._iterator(stream, shard)
            if iterator is None:
                return put  # a closed shard read to its end
            self._authorize("dynamodb:GetRecords", self.spec.source_arn)
            try:
                answer = self._streams.get_records(ShardIterator=iterator, Limit=MAX_RECORDS_PER_CALL)
            except ClientError as exc:
                if exc.response["Error"]["Code"] in (
                    "ExpiredIteratorException",
                    "TrimmedDataAccessException",
                ):
                    self._iterators.pop(shard, None)
                    continue
                raise
            records = answer.get("Records", [])
            next_iterator = answer.get("NextShardIterator")
            for start in range(0, len(records), self.spec.batch_size):
                put += self._deliver(stream, shard, records[start : start + self.spec.batch_size])
            self._iterators[shard] = next_iterator
            if not records:
                return put

    def _deliver(self, stream: str, shard: str, batch: list[dict[str, Any]]) -> int:
        """One batch to the target, in order; a record that cannot be an event becomes a
        dead letter (as after the pipe's retries on AWS) so that the rest go on."""
        entries: list[Entry] = []
        for raw in batch:
            self.records_read += 1
            record = pipe_record(raw, self.spec.source_arn)
            position = StreamPosition(stream, shard, str(raw["dynamodb"]["SequenceNumber"]))
            try:
                event = self.target.shape(self.spec, record, region=self.region, account=self.account)
            except PipeError as error:
                LOGGER.warning("pipe %s: record %s is a dead letter: %s", self.spec.name, position, error)
                entries.append((DEAD_LETTER, {"error": str(error), "record": record}, position))
                continue
            if event is not None:
                entries.append((EVENT, event, position))
        if any(kind == EVENT for kind, _, _ in entries):
            self._authorize(self.target.action, self.spec.target_arn)
        if entries and any(kind == DEAD_LETTER for kind, _, _ in entries) and self.spec.dead_letter_arn:
            self._authorize("sqs:SendMessage", self.spec.dead_letter_arn)
        self.target.put(entries)
        return sum(1 for kind, _, _ in entries if kind == EVENT)

    # --- running in the background ---------------------------------------------------

    def drain(self, timeout: float = 10.0) -> int:
        """Polls until a poll finds nothing new (what was committed before is on the bus)."""
        deadline = time.monotonic() + timeout
        total = 0
        while True:
            read_before = self.records_read
            total += self.poll()
            if self.records_read == read_before or time.monotonic() > deadline:
                return total

    def start(self, interval: float = POLL_INTERVAL_S) -> PipeRunner:
        if self._thread is not None:
            return self
        self._stop.clear()

        def run() -> None:
            while not self._stop.is_set():
                try:
                    found = self.poll()
                except Exception as exc:  # the pipe keeps trying, as on AWS; the error is shown
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    LOGGER.warning("pipe %s: %s", self.spec.name, self.last_error)
                    found = 0
                if not found:
                    self._stop.wait(interval)

        self._thread = threading.Thread(target=run, name=f"pipe-{self.spec.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class LocalPipes:
    """The template's buses and the pipes that feed them or its queues, over the engine's
    table."""

    def __init__(
        self,
        template: LocalTemplate,
        *,
        dynamodb: Any,
        streams: Any,
        table_name: str,
        authorizer: iam.Authorizer | None,
        directory: Path | None = None,
        queues: LocalQueues | None = None,
    ) -> None:
        self._dynamodb = dynamodb
        self._table_name = table_name
        self._stream_arn: str | None = None
        self.buses: dict[str, LocalEventBus] = {}
        for logical_id, name in template.event_buses.items():
            arn = f"arn:aws:events:{template.region}:{template.account}:event-bus/{name}"
            path = directory / f"{name}.jsonl" if directory is not None else None
            self.buses[logical_id] = LocalEventBus(name, arn, path)
        by_arn = {bus.arn: bus for bus in self.buses.values()}
        self.runners: dict[str, PipeRunner] = {}
        for logical_id, spec in template.pipes.items():
            target: Target
            if spec.target_arn in by_arn:
                target = BusTarget(by_arn[spec.target_arn])
            elif queues is not None and spec.target_arn in queues.by_arn:
                dead_letter = queues.by_arn.get(spec.dead_letter_arn or "")
                path = directory / f"{spec.name}.checkpoint.json" if directory is not None else None
                target = QueueTarget(queues.by_arn[spec.target_arn], dead_letter, path)
            else:
                raise TemplateError(
                    f"{logical_id}: its target {spec.target_arn} is not one of the template's buses or queues"
                )
            self.runners[logical_id] = PipeRunner(
                spec,
                streams=streams,
                table_stream_arn=self.table_stream_arn,
                stream_gone=self.forget_stream,
                target=target,
                authorizer=authorizer,
                region=template.region,
                account=template.account,
            )

    def table_stream_arn(self) -> str | None:
        """The table's stream as the database names it (another after the table is
        recreated, which a pipe finds out when the one it reads is gone)."""
        if self._stream_arn is None:
            table = self._dynamodb.describe_table(TableName=self._table_name)["Table"]
            arn = table.get("LatestStreamArn")
            self._stream_arn = str(arn) if arn else None
        return self._stream_arn

    def forget_stream(self) -> None:
        self._stream_arn = None

    @property
    def bus(self) -> LocalEventBus:
        """The one bus (the template has one)."""
        (bus,) = self.buses.values()
        return bus

    def drain(self, timeout: float = 10.0) -> int:
        return sum(runner.drain(timeout) for runner in self.runners.values())

    def start(self, interval: float = POLL_INTERVAL_S) -> LocalPipes:
        for runner in self.runners.values():
            runner.start(interval)
        return self

    def stop(self) -> None:
        for runner in self.runners.values():
            runner.stop()
