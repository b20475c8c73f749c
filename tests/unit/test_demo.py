"""The README's demo runs: one registration story through the engine, with histories."""

from __future__ import annotations

import pytest

from infrastructure.local import demo


def test_demo_tells_the_story(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--in-memory"]) == 0
    out = capsys.readouterr().out
    assert '"status": "registered"' in out
    assert '"status": "waitlisted", "position": 1' in out
    assert '"promoted": "grace"' in out
    assert "PromoteFromWaitlist" in out and "ExecutionSucceeded" in out
    assert "registeredCount=1 waitlistCount=0" in out
