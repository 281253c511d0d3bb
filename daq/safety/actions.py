"""The action ladder after a trip: bring one cycler to a safe state and prove it by reading back.

Per attempt, in the order ``CyclerControl.safe_state`` uses (so the output is never switched
under load): zero the current setpoint, REST mode, output off, then read the output state back.
A step that fails (device unreachable, exception) does not stop the next one: switching the
output off matters most. If no attempt reads back "off", the ladder escalates (``contactor``:
open the cycler's contactor and read it back). Every step is reported to ``on_step`` (the monitor
journals it as a ``safety.action`` event), so an incident can be reconstructed from the journal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from daq.channels import CyclerMode
from daq.cycler import CyclerControl

log = logging.getLogger(__name__)

Escalation = Literal["contactor", "none"]


@dataclass(frozen=True, slots=True)
class ActionStep:
    """One command or read-back of the ladder. ``what``: zero_current, rest, output_off,
    verify_output_off, open_contactor or give_up."""

    cycler: str
    what: str
    attempt: int
    ok: bool
    result: str

    def to_dict(self) -> dict[str, object]:
        return {"cycler": self.cycler, "what": self.what, "attempt": self.attempt, "ok": self.ok, "result": self.result}


@dataclass(slots=True)
class SafeStateOutcome:
    cycler: str
    safe: bool
    how: str  # "output verified off", "contactor opened", or why it is not safe
    attempts: int = 0
    steps: list[ActionStep] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"safe": self.safe, "how": self.how, "attempts": self.attempts}


async def _step(action: Callable[[], Awaitable[object]]) -> tuple[bool, str, object]:
    """Run one command; (ok, result text, returned value). Never raises except on cancellation."""
    try:
        value = await action()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # any failure is a result to journal; the ladder must go on
        return False, f"failed: {exc}", None
    return True, "done", value


async def bring_to_safe_state(
    ctl: CyclerControl,
    *,
    escalation: Escalation,
    attempts: int = 3,
    retry_delay_s: float = 0.05,
    on_step: Callable[[ActionStep], None] | None = None,
) -> SafeStateOutcome:
    """Zero current, rest, output off, verify; retry; escalate. Returns how it ended."""
    outcome = SafeStateOutcome(ctl.name, safe=False, how="")

    def report(what: str, attempt: int, ok: bool, result: str) -> None:
        step = ActionStep(ctl.name, what, attempt, ok, result)
        outcome.steps.append(step)
        if on_step is not None:
            on_step(step)

    for attempt in range(1, attempts + 1):
        outcome.attempts = attempt
        if ctl.has("current_setpoint_a"):
            ok, text, _ = await _step(lambda: ctl.driver.write("current_setpoint_a", 0.0))
            report("zero_current", attempt, ok, text)
        if ctl.has("mode_setpoint"):
            ok, text, _ = await _step(lambda: ctl.driver.write("mode_setpoint", int(CyclerMode.REST)))
            report("rest", attempt, ok, text)
        ok, text, _ = await _step(ctl.output_off)
        report("output_off", attempt, ok, text)
        ok, text, is_off = await _step(ctl.output_is_off)
        if ok and is_off:
            report("verify_output_off", attempt, True, "read back: output off")
            outcome.safe, outcome.how = True, "output verified off"
            return outcome
        report("verify_output_off", attempt, False, "read back: output still ON" if ok else text)
        log.error("%s: output not verified off after attempt %d of %d", ctl.name, attempt, attempts)
        if attempt < attempts:
            await asyncio.sleep(retry_delay_s * attempt)

    if escalation == "contactor":
        if not ctl.has("contactor_closed"):
            report("open_contactor", attempts, False, "no contactor_closed channel in the register map")
        else:
            ok, text, opened = await _step(ctl.open_contactor)
            if ok and opened:
                report("open_contactor", attempts, True, "read back: contactor open")
                outcome.safe, outcome.how = True, "contactor opened (output did not read back off)"
                return outcome
            report("open_contactor", attempts, False, "read back: contactor still CLOSED" if ok else text)
    outcome.how = f"NOT SAFE: output not verified off after {attempts} attempts" + (
        "" if escalation == "none" else " and the contactor did not open"
    )
    report("give_up", attempts, False, outcome.how + "; operator must intervene")
    log.critical("%s: %s; operator must intervene", ctl.name, outcome.how)
    return outcome
