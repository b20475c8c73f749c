"""The synthesized pipe as the twin runs it: its filter and input template on stream
records, its role on every call, and its checkpoint across a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from infrastructure.local.engine import LocalEngine
from infrastructure.local.event_bus import DEAD_LETTER, LocalEventBus
from infrastructure.local.pipes import LocalPipes, PipeError, transform
from infrastructure.local.template import parse_template
from infrastructure.local.template_specs import PipeSpec
from registration import domain_events
from registration.data import get_store
from registration.models import NewEvent
from tests.fixtures.engines import SUITE_TIME_SCALE, pipes_over, synthesized_template_path
from tests.fixtures.template_variants import synthesized_template, without_grant


def _pipes(engine: LocalEngine) -> LocalPipes:
    assert engine.pipes is not None, "the template has no pipe"
    return engine.pipes


def _spec() -> PipeSpec:
    (spec,) = [
        pipe
        for pipe in parse_template(synthesized_template()).pipes.values()
        if ":event-bus/" in pipe.target_arn
    ]
    return spec


def _record(event_name: str, new: dict[str, Any] | None, old: dict[str, Any] | None = None) -> dict[str, Any]:
    dynamodb: dict[str, Any] = {"Keys": {"PK": {"S": "EVENT#e"}, "SK": {"S": "REG#a"}}, "SequenceNumber": "1"}
    if new is not None:
        dynamodb["NewImage"] = new
    if old is not None:
        dynamodb["OldImage"] = old
    return {"eventName": event_name, "eventSource": "aws:dynamodb", "dynamodb": dynamodb}


def _carrying(detail: str, event_type: str = "registration.registered") -> dict[str, Any]:
    return {
        "PK": {"S": "EVENT#e"},
        domain_events.DETAIL_ATTRIBUTE: {"S": detail},
        domain_events.TYPE_ATTRIBUTE: {"S": event_type},
    }


def test_only_an_insert_carrying_a_domain_event_passes_the_pipe() -> None:
    spec = _spec()
    detail = domain_events.domain_event(
        "registration.registered", "e", "r-1", "2026-01-01T00:00:00.000Z", "a"
    )
    carrying = _carrying(detail.text())
    put = transform(spec, _record("INSERT", carrying), region="r", account="1")
    assert put is not None
    assert (put["detail-type"], put["source"], put["detail"]) == (
        "registration.registered",
        domain_events.EVENT_SOURCE,
        json.loads(detail.text()),
    )
    # A counter moved on an item that carries one, its removal, an item that carries none.
    assert transform(spec, _record("MODIFY", carrying, carrying), region="r", account="1") is None
    assert transform(spec, _record("REMOVE", None, carrying), region="r", account="1") is None
    assert transform(spec, _record("INSERT", {"PK": {"S": "EVENT#e"}}), region="r", account="1") is None
    # A carried text that is no JSON object cannot be an event's detail.
    with pytest.raises(PipeError):
        transform(spec, _record("INSERT", _carrying("not json")), region="r", account="1")


def test_a_pipe_whose_role_cannot_put_on_the_bus_puts_nothing(tmp_path: Path) -> None:
    template = synthesized_template()
    pipe_role = next(
        r["Properties"]["RoleArn"]["Fn::GetAtt"][0]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Pipes::Pipe"
    )
    variant = without_grant(template, pipe_role, "events:PutEvents")
    path = tmp_path / "template.json"
    path.write_text(json.dumps(variant))
    with LocalEngine(path, region="eu-central-1", time_scale=SUITE_TIME_SCALE) as denied:
        store = get_store()
        store.create_event(NewEvent(eventId="denied", title="Denied", capacity=1))
        with pytest.raises(ClientError) as raised:
            _pipes(denied).drain()
        assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
        assert "events:PutEvents" in str(raised.value)
        assert _pipes(denied).bus.events() == []


# --- the checkpoint -------------------------------------------------------------------------


def _restarted(local: LocalEngine, directory: Path) -> LocalPipes:
    """Another pipe over the same bus log and table, as after the stack restarted."""
    return pipes_over(local, directory)


def test_a_restarted_pipe_neither_loses_nor_repeats(tmp_path: Path) -> None:
    with LocalEngine(synthesized_template_path(), region="ap-south-1", events_dir=tmp_path) as local:
        store = get_store()
        pipes = _pipes(local)
        store.create_event(NewEvent(eventId="one", title="One", capacity=1))
        pipes.drain()
        store.create_event(NewEvent(eventId="two", title="Two", capacity=1))
        # Another pipe over the same log, as after a restart: it resumes after "one".
        restarted = _restarted(local, tmp_path)
        restarted.drain()
        assert [e["detail"]["eventId"] for e in restarted.bus.events()] == ["one", "two"]
        # A write cut short by a crash is not an entry: the record it held is put again.
        log = restarted.bus.path
        assert log is not None
        store.create_event(NewEvent(eventId="three", title="Three", capacity=1))
        restarted.drain()
        text = log.read_text()
        log.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1] + text.rsplit("\n", 2)[-2][:40])
        again = LocalEventBus(restarted.bus.name, restarted.bus.arn, log)
        assert [e["detail"]["eventId"] for e in again.events()] == ["one", "two"]
        third = _restarted(local, tmp_path)
        third.drain()
        assert [e["detail"]["eventId"] for e in third.bus.events()] == ["one", "two", "three"]
        assert third.bus.read(0, kind=DEAD_LETTER) == []
