"""Operator controls from the page, through the same journal command channel as the CLI.

``pause``/``resume``/``abort`` post a runner command with ``daq.runner.control.JournalControl``
(what ``daq test pause|resume|abort`` does) and wait for the runner's answer; ``ack`` records an
acknowledgement request with ``daq.safety.ack.request_acknowledge`` (what ``daq ack`` does) and
waits for the safety monitor's answer. Both block on SQLite, so they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from daq.runner.control import JournalControl
from daq.safety.ack import AckRequestReader, request_acknowledge
from daq.web.auth import ControlRefused

TEST_ACTIONS = ("pause", "resume", "abort")
ANSWER_TIMEOUT_S = 10.0


def _test_command(journal: Path, run_id: str, action: str, *, who: str, reason: str) -> dict[str, Any] | None:
    with JournalControl(journal) as control:
        key = control.post(run_id, action, reason=reason, who=who, source="web")
        return control.wait_ack(run_id, key, timeout_s=ANSWER_TIMEOUT_S)


def _acknowledge(journal: Path, run_id: str, *, who: str, note: str) -> tuple[int, dict[str, Any] | None]:
    seq = request_acknowledge(journal, run_id, who=who, note=note)
    answers = AckRequestReader(journal, run_id)
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while (answer := answers.answer(seq)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return seq, answer


async def test_command(journal: Path, run_id: str, action: str, *, who: str, reason: str) -> dict[str, Any]:
    ack = await asyncio.to_thread(_test_command, journal, run_id, action, who=who, reason=reason)
    if ack is None:
        raise ControlRefused(
            504, f"the test did not answer {action} within {ANSWER_TIMEOUT_S:g} s; the command stays queued"
        )
    if not ack.get("ok"):
        raise ControlRefused(409, f"{action} refused: {ack.get('message')}")
    return {"action": action, "who": who, "message": ack.get("message", ""), "phase": ack.get("phase", "")}


async def acknowledge(journal: Path, run_id: str, *, who: str, note: str) -> dict[str, Any]:
    seq, answer = await asyncio.to_thread(_acknowledge, journal, run_id, who=who, note=note)
    if answer is None:
        raise ControlRefused(504, f"the safety monitor did not answer within {ANSWER_TIMEOUT_S:g} s (request {seq})")
    return {
        "action": "ack",
        "who": who,
        "request_seq": seq,
        "acknowledged": answer.get("acknowledged", 0),
        "still_latched": bool(answer.get("still_latched")),
        "message": f"acknowledged {answer.get('acknowledged', 0)} trip(s)"
        + ("; a trip is still latched (it tripped again)" if answer.get("still_latched") else ""),
    }


test_command.__test__ = False  # type: ignore[attr-defined]  # pytest: not a test despite the name
