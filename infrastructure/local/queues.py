"""SQS in the twin: the template's queues, kept on disk, under SQS's rules.

moto's SQS forgets its queues with the process and drops a duplicate only while the
first copy is still queued; a local stack that is restarted during development should
neither lose a webhook nor send one twice. So each queue of the template is a
:class:`LocalQueue` whose every change is appended to its journal (a file of JSON lines,
rewritten whole, renamed over the old one, once it has grown to several times what it
describes), so a killed server finds every change but one it was writing; and it obeys
what the code relies on in SQS:

* a FIFO queue hands out a message group's messages in order, and none of a group while
  one of its messages is in flight (received, neither deleted nor visible again);
* a message sent with a deduplication id already used in the last five minutes is
  accepted and dropped, whether the first copy is still queued or long deleted;
* a received message stays invisible for the visibility timeout (the queue's, the
  receive's, or what ``ChangeMessageVisibility`` set), then comes back;
* a queue with a redrive policy moves a message that has been received
  ``maxReceiveCount`` times to its dead-letter queue when it would be received again.

The handlers reach the queues through boto3 as on AWS: a botocore ``before-call`` hook
answers ``SendMessage``, ``ChangeMessageVisibility`` and
``DeleteMessage`` for a queue URL of an installed :class:`LocalQueues` (after the IAM
check, which happens before botocore builds the request), and leaves every other call
to whatever answers it otherwise (moto, in the tests of the handlers themselves).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from botocore.awsrequest import AWSResponse
from botocore.handlers import BUILTIN_HANDLERS

from infrastructure.local.files import replace_whole
from infrastructure.local.template_specs import QueueSpec

DEDUPLICATION_WINDOW_S = 300.0
MAX_VISIBILITY_TIMEOUT_S = 12 * 3600
# A queue's journal is rewritten whole once it has this many lines (and four times as
# many as it describes).
COMPACT_AFTER_LINES = 2000


class QueueError(Exception):
    """A call SQS refuses: its error code and message."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass
class QueuedMessage:
    messageId: str
    body: str
    sentAt: float
    sequenceNumber: str
    groupId: str | None = None
    deduplicationId: str | None = None
    receiveCount: int = 0
    firstReceivedAt: float | None = None
    visibleAt: float = 0.0
    receipt: str | None = None
    # In a dead-letter queue: where it came from, and when.
    deadLetterSourceArn: str | None = None
    deadLetteredAt: float | None = None

    def in_flight(self, now: float) -> bool:
        return self.receipt is not None and self.visibleAt > now


class LocalQueue:
    """One queue: send, receive, delete, change visibility; see the module's rules."""

    def __init__(
        self,
        spec: QueueSpec,
        *,
        path: Path | None = None,
        max_receive_count: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.path = path
        # What the twin uses instead of the template's maxReceiveCount (a shorter local
        # retry schedule), None: the template's.
        self.max_receive_count = (
            max_receive_count if max_receive_count is not None else spec.max_receive_count
        )
        self.dead_letter: LocalQueue | None = None
        self._clock = clock
        self._lock = threading.RLock()
        self.messages: list[QueuedMessage] = []
        self._deduplication: dict[str, tuple[float, str]] = {}
        self._sequence = 0
        # Called when a message may have become receivable (a consumer long-polling).
        self._listeners: list[Callable[[], None]] = []
        self._journal: TextIO | None = None
        self._journal_lines = 0
        self._load()

    def on_arrival(self, listener: Callable[[], None]) -> None:
        """Calls ``listener`` whenever a message is sent or put back, or made visible at
        once, as a long poll returns at once when a message arrives."""
        self._listeners.append(listener)

    def _arrived(self) -> None:
        for listener in list(self._listeners):
            listener()

    # --- state -------------------------------------------------------------------------

    def _load(self) -> None:
        """Replays the queue's journal: each line is a message's whole state, its removal,
        or a deduplication id; a line cut short by a crash is dropped."""
        if self.path is None or not self.path.exists():
            return
        found: dict[str, QueuedMessage] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "m" in entry:
                found[entry["m"]["messageId"]] = QueuedMessage(**entry["m"])
            elif "gone" in entry:
                found.pop(entry["gone"], None)
            elif "dedup" in entry:
                key, at, message_id = entry["dedup"]
                self._deduplication[key] = (float(at), str(message_id))
        self.messages = sorted(found.values(), key=lambda m: m.sequenceNumber)
        self._sequence = max((int(m.sequenceNumber) for m in self.messages if m.sequenceNumber), default=0)
        self._compact()

    def _write(self, entries: list[dict[str, Any]]) -> None:
        """Appends ``entries`` to the journal (a new, whole file when it has grown to
        several times what it describes)."""
        if self.path is None or not entries:
            return
        if self._journal is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._journal = self.path.open("a", encoding="utf-8")
        self._journal.write("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
        self._journal.flush()
        self._journal_lines += len(entries)
        if self._journal_lines > COMPACT_AFTER_LINES and self._journal_lines > 4 * (
            len(self.messages) + len(self._deduplication)
        ):
            self._compact()

    def _compact(self) -> None:
        if self.path is None:
            return
        self._forget_old_deduplication(self._clock())
        entries: list[dict[str, Any]] = [
            {"dedup": [k, at, message_id]} for k, (at, message_id) in self._deduplication.items()
        ]
        entries += [{"m": asdict(m)} for m in self.messages]
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        replace_whole(self.path, "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
        self._journal_lines = len(entries)

    def close(self) -> None:
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None

    # --- the calls ---------------------------------------------------------------------

    def send(
        self, body: str, group_id: str | None = None, deduplication_id: str | None = None
    ) -> QueuedMessage:
        """Queues one message; a duplicate within the window answers the first one."""
        if not body:
            raise QueueError("InvalidParameterValue", "The message body must not be empty")
        if self.spec.fifo:
            if not group_id:
                raise QueueError("MissingParameter", "The request must contain the parameter MessageGroupId.")
            if not deduplication_id:
                if not self.spec.content_based_deduplication:
                    raise QueueError(
                        "InvalidParameterValue",
                        "The queue should either have ContentBasedDeduplication enabled or "
                        "MessageDeduplicationId provided explicitly",
                    )
                deduplication_id = hashlib.sha256(body.encode()).hexdigest()
        elif deduplication_id:
            raise QueueError("InvalidParameterValue", "MessageDeduplicationId is only valid for FIFO queues")
        with self._lock:
            now = self._clock()
            self._forget_old_deduplication(now)
            if deduplication_id and deduplication_id in self._deduplication:
                sent_at, message_id = self._deduplication[deduplication_id]
                for message in self.messages:
                    if message.messageId == message_id:
                        return copy.copy(message)
                return QueuedMessage(message_id, body, sent_at, "", group_id, deduplication_id)
            self._sequence += 1
            message = QueuedMessage(
                messageId=str(uuid.uuid4()),
                body=body,
                sentAt=now,
                sequenceNumber=f"{self._sequence:020d}",
                groupId=group_id,
                deduplicationId=deduplication_id,
            )
            self.messages.append(message)
            entries: list[dict[str, Any]] = [{"m": asdict(message)}]
            if deduplication_id:
                self._deduplication[deduplication_id] = (now, message.messageId)
                entries.insert(0, {"dedup": [deduplication_id, now, message.messageId]})
            self._write(entries)
        self._arrived()
        return copy.copy(message)

    def _forget_old_deduplication(self, now: float) -> None:
        for key in [k for k, (at, _) in self._deduplication.items() if now - at >= DEDUPLICATION_WINDOW_S]:
            del self._deduplication[key]

    def receive(self, max_messages: int = 1, visibility_timeout: int | None = None) -> list[QueuedMessage]:
        """Up to ``max_messages`` visible messages, now in flight (copies)."""
        timeout = self.spec.visibility_timeout_s if visibility_timeout is None else visibility_timeout
        received: list[QueuedMessage] = []
        with self._lock:
            now = self._clock()
            changed: list[dict[str, Any]] = self._expire(now)
            blocked = {m.groupId for m in self.messages if self.spec.fifo and m.in_flight(now)}
            for message in list(self.messages):
                if len(received) >= max_messages:
                    break
                if message.in_flight(now):
                    continue
                if self.spec.fifo and message.groupId in blocked:
                    continue
                if (
                    self.dead_letter is not None
                    and self.max_receive_count is not None
                    and message.receiveCount >= self.max_receive_count
                ):
                    self._move_to_dead_letter(message, now)
                    changed.append({"gone": message.messageId})
                    continue
                message.receiveCount += 1
                message.firstReceivedAt = message.firstReceivedAt or now
                message.receipt = str(uuid.uuid4())
                message.visibleAt = now + timeout
                received.append(copy.copy(message))
                changed.append({"m": asdict(message)})
            self._write(changed)
        return received

    def _move_to_dead_letter(self, message: QueuedMessage, now: float) -> None:
        assert self.dead_letter is not None
        self.messages.remove(message)
        moved = copy.copy(message)
        moved.receipt, moved.visibleAt = None, 0.0
        moved.deadLetterSourceArn, moved.deadLetteredAt = self.spec.arn, now
        self.dead_letter.put_back([moved])

    def _expire(self, now: float) -> list[dict[str, Any]]:
        """Drops the messages older than the queue's retention; their journal entries."""
        kept = [m for m in self.messages if now - m.sentAt < self.spec.retention_s]
        if len(kept) == len(self.messages):
            return []
        gone = [{"gone": m.messageId} for m in self.messages if m not in kept]
        self.messages = kept
        return gone

    def _by_receipt(self, receipt: str) -> QueuedMessage:
        for message in self.messages:
            if message.receipt == receipt:
                return message
        raise QueueError(
            "ReceiptHandleIsInvalid", f'The input receipt handle "{receipt}" is not a valid receipt handle.'
        )

    def delete(self, receipt: str) -> None:
        with self._lock:
            try:
                message = self._by_receipt(receipt)
            except QueueError:
                if self.spec.fifo:
                    raise
                return  # a standard queue accepts a stale receipt
            self.messages.remove(message)
            self._write([{"gone": message.messageId}])

    def change_visibility(self, receipt: str, timeout: int) -> None:
        if not 0 <= timeout <= MAX_VISIBILITY_TIMEOUT_S:
            raise QueueError(
                "InvalidParameterValue",
                f"Value {timeout} for parameter VisibilityTimeout is invalid. "
                f"Reason: Must be between 0 and {MAX_VISIBILITY_TIMEOUT_S}.",
            )
        with self._lock:
            now = self._clock()
            message = self._by_receipt(receipt)
            if not message.in_flight(now):
                raise QueueError("MessageNotInflight", "The message referred to isn't in flight.")
            message.visibleAt = now + timeout
            self._write([{"m": asdict(message)}])
        if timeout == 0:
            self._arrived()

    # --- what operators do -------------------------------------------------------------

    def peek(self) -> list[QueuedMessage]:
        """Every message, in order, without receiving any."""
        with self._lock:
            return [copy.copy(m) for m in self.messages]

    def put_back(self, messages: list[QueuedMessage]) -> None:
        """Messages moved here whole (a redrive; a dead letter), at the end, in order."""
        with self._lock:
            for message in messages:
                self._sequence += 1
                message.sequenceNumber = f"{self._sequence:020d}"
                self.messages.append(message)
            self._write([{"m": asdict(m)} for m in messages])
        self._arrived()

    def take(self, wanted: Callable[[QueuedMessage], bool]) -> list[QueuedMessage]:
        """Removes and answers the messages ``wanted`` picks (none in flight)."""
        with self._lock:
            now = self._clock()
            taken = [m for m in self.messages if not m.in_flight(now) and wanted(m)]
            if taken:
                self.messages = [m for m in self.messages if m not in taken]
                self._write([{"gone": m.messageId} for m in taken])
            return taken

    def __len__(self) -> int:
        with self._lock:
            return len(self.messages)


class LocalQueues:
    """The template's queues, each with its dead-letter queue wired, by URL and by ARN."""

    def __init__(
        self,
        queues: Mapping[str, QueueSpec],
        *,
        directory: Path | None = None,
        max_receive_counts: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        limits = dict(max_receive_counts or {})
        self.by_arn: dict[str, LocalQueue] = {}
        for spec in queues.values():
            path = directory / f"{spec.name}.json" if directory is not None else None
            self.by_arn[spec.arn] = LocalQueue(
                spec, path=path, max_receive_count=limits.get(spec.name), clock=clock
            )
        for queue in self.by_arn.values():
            if queue.spec.dead_letter_arn is not None:
                queue.dead_letter = self.by_arn.get(queue.spec.dead_letter_arn)
        self.by_url = {q.spec.url: q for q in self.by_arn.values()}

    def close(self) -> None:
        for queue in self.by_arn.values():
            queue.close()

    def named(self, name: str) -> LocalQueue:
        for queue in self.by_arn.values():
            if queue.spec.name == name:
                return queue
        raise KeyError(name)

    def source_of(self, dead_letter: LocalQueue) -> LocalQueue | None:
        """The queue whose redrive policy names ``dead_letter``."""
        for queue in self.by_arn.values():
            if queue.dead_letter is dead_letter:
                return queue
        return None

    def answer(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """SQS's answer to a call on one of these queues (None: not one of these)."""
        queue = self.by_url.get(str(params.get("QueueUrl", "")))
        if queue is None:
            return None
        if operation == "SendMessage":
            message = queue.send(
                str(params.get("MessageBody", "")),
                params.get("MessageGroupId"),
                params.get("MessageDeduplicationId"),
            )
            return _sent(message, str(params.get("MessageBody", "")))
        if operation == "ChangeMessageVisibility":
            queue.change_visibility(str(params["ReceiptHandle"]), int(params["VisibilityTimeout"]))
            return {}
        if operation == "DeleteMessage":
            queue.delete(str(params["ReceiptHandle"]))
            return {}
        raise QueueError("UnsupportedOperation", f"{operation} is not available on the local stack's queues")


def _sent(message: QueuedMessage, body: str) -> dict[str, Any]:
    answer = {"MessageId": message.messageId, "MD5OfMessageBody": hashlib.md5(body.encode()).hexdigest()}
    if message.sequenceNumber:
        answer["SequenceNumber"] = message.sequenceNumber
    return answer


# --- the botocore hook ------------------------------------------------------------------

_INSTALLED: list[LocalQueues] = []
_INSTALL_LOCK = threading.Lock()


def _before_call(
    model: Any, params: Mapping[str, Any], **_: Any
) -> tuple[AWSResponse, dict[str, Any]] | None:
    with _INSTALL_LOCK:
        installed = list(_INSTALLED)
    if not installed:
        return None
    body = params.get("body") or b"{}"
    api_params = json.loads(body.decode() if isinstance(body, bytes) else body)
    for queues in reversed(installed):
        try:
            answer = queues.answer(model.name, api_params)
        except QueueError as error:
            parsed = {
                "Error": {"Code": error.code, "Message": str(error)},
                "ResponseMetadata": {"HTTPStatusCode": error.status, "RequestId": str(uuid.uuid4())},
            }
            return AWSResponse(str(params.get("url", "")), error.status, {}, None), parsed
        if answer is not None:
            answer["ResponseMetadata"] = {"HTTPStatusCode": 200, "RequestId": str(uuid.uuid4())}
            return AWSResponse(str(params.get("url", "")), 200, {}, None), answer
    return None


# Every botocore session created from now on answers these queues' calls here (a session
# copies the built-in handlers when it is created; the handlers' clients come later).
BUILTIN_HANDLERS.append(("before-call.sqs", _before_call))


def install(queues: LocalQueues) -> None:
    with _INSTALL_LOCK:
        if queues not in _INSTALLED:
            _INSTALLED.append(queues)


def uninstall(queues: LocalQueues) -> None:
    with _INSTALL_LOCK:
        if queues in _INSTALLED:
            _INSTALLED.remove(queues)


@contextlib.contextmanager
def serving(queues: LocalQueues) -> Iterator[LocalQueues]:
    install(queues)
    try:
        yield queues
    finally:
        uninstall(queues)
