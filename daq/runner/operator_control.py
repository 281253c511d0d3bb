"""Operator control of a running test: pause (safe state), resume, stop (the process leaves, the run
stays resumable), abort and completion, and the answers to commands from other terminals.
``deliver`` and ``request_exit`` are the inputs: plain synchronous calls that queue and wake.
Part of ``TestRunner`` (``daq.runner.runner``).
"""

from __future__ import annotations

from daq.errors import DriverError
from daq.runner.base import Outcome, RunnerBase, SafetyTripped
from daq.runner.control import ACK_KEY, OperatorCommand
from daq.runner.state import (
    ABORTED,
    COMPLETED,
    PAUSED,
    RUNNING,
    STOPPED,
)
from daq.runner.steps import (
    command_at,
    commanded_current,
)


class OperatorControl(RunnerBase):
    """Pause, resume, stop, abort, complete; answers to operator commands."""

    def deliver(self, command: OperatorCommand) -> None:
        self._commands.append(command)
        self._wake.set()

    def request_exit(self, reason: str) -> None:
        """Ctrl-C / end of --duration: pause (safe state) and let ``run()`` return, resumable."""
        self._exit_reason = reason
        self._wake.set()

    async def _pause(self, reason: str, *, who: str, source: str) -> None:
        active = self._active
        if self.phase != RUNNING:
            return
        if active is not None:
            self._integrator.switch(self.clock.wall_ns(), active.totals, commanded_a=0.0)
        verified = await self._make_safe()
        self._to_paused(reason, who, verified, source=source)

    def _to_paused(self, reason: str, who: str, verified: bool, *, source: str = "runner") -> None:
        active = self._active
        if active is not None and active.active_since_mono is not None:
            active.progress.elapsed_before_s = self._elapsed(active)
            active.active_since_mono = None
            active.progress.active_since_ns = 0
        self.phase = PAUSED
        self.reason = reason
        self._paused_at_mono = self.clock.monotonic()
        self._set_step_limits(None)
        self._event(
            "runner.paused",
            {
                "reason": reason,
                "who": who,
                "source": source,
                "safe_state_verified": verified,
                **self._where(),
            },
        )
        self._persist()

    async def _while_paused(self) -> Outcome | None:
        """Wait for resume, abort, exit or a trip. None: resumed, go on with the step."""
        while True:
            if self._trip_reason is not None:
                raise SafetyTripped
            while self._commands:
                command = self._commands.popleft()
                if command.action == "abort":
                    return await self._abort(command.reason or "aborted by operator", who=command.who, command=command)
                if command.action == "pause":
                    self._ack(command, True, "already paused")
                    continue
                if self._tripped():
                    self._ack(command, False, "the safety monitor is tripped; acknowledge the alarm first")
                    continue
                if await self._resume_step(command.who):
                    self._ack(command, True, "resumed")
                    return None
                self._ack(command, False, f"could not resume: {self.reason}")
            if self._exit_reason is not None:
                return self._stop()
            await self._wake.wait()
            self._wake.clear()

    async def _resume_step(self, who: str) -> bool:
        active = self._active
        if active is None:
            return False
        paused_s = self.clock.monotonic() - self._paused_at_mono
        self._set_record_period(active.item)
        command = command_at(active.item.resolved, active.progress.elapsed_before_s, self._currents(active.item))
        t_sent = self.clock.wall_ns()
        try:
            await self._apply(command, active.item)
        except DriverError as exc:
            await self._make_safe()
            self.reason = f"cycler {self.target.cycler} did not take the step: {exc}"
            return False
        self._set_step_limits(active.item)
        t_ns = self.clock.wall_ns()
        self._integrator.switch((t_sent + t_ns) // 2, active.totals, commanded_a=commanded_current(command))
        if active.progress.started_ns == 0:
            active.progress.started_ns = t_ns
        active.progress.active_since_ns = t_ns
        active.active_since_mono = self.clock.monotonic()
        active.command = command
        active.end = None
        self.phase = RUNNING
        self.reason = ""
        self._event("runner.resumed", {"who": who, "paused_s": paused_s, **self._where()})
        self._persist()
        return True

    def _stop(self) -> Outcome:
        """The process leaves while paused: the run stays resumable."""
        reason = self._exit_reason or "stopped"
        self.phase = STOPPED
        self.reason = reason
        self._persist()
        return Outcome(STOPPED, reason)

    async def _abort(self, reason: str, *, who: str, command: OperatorCommand | None = None) -> Outcome:
        t_ns = self.clock.wall_ns()
        active = self._active
        if active is not None:
            self._integrator.switch(t_ns, None, commanded_a=0.0)
            # a step that had met its end (the abort came as the next one was starting) keeps its reason
            step_reason = active.end[0] if active.end is not None else "aborted"
            self._finish(active, step_reason, t_ns, next_item=None, aborting=True)
            self._active = None
        verified = await self._make_safe()
        self._set_step_limits(None)
        self.phase = ABORTED
        self.reason = reason
        self._event("runner.aborted", {"reason": reason, "who": who, "safe_state_verified": verified})
        self._persist()
        if command is not None:
            self._ack(command, True, "aborted")
        self._drain_commands("the test was aborted")
        return Outcome(ABORTED, reason)

    async def _complete(self, *, safe_verified: bool | None = None) -> Outcome:
        if safe_verified is None:
            safe_verified = await self._make_safe()
        self._set_step_limits(None)
        self.phase = COMPLETED
        self.reason = ""
        self._event(
            "runner.completed",
            {"cycles": len(self.summaries), "steps": self._steps_completed, "safe_state_verified": safe_verified},
        )
        self._persist()
        self._drain_commands("the test has completed")
        return Outcome(COMPLETED)

    def _drain_commands(self, why: str) -> None:
        while self._commands:
            self._ack(self._commands.popleft(), False, why)

    def _ack(self, command: OperatorCommand, ok: bool, message: str) -> None:
        if command.source == "terminal":
            return
        self.bench.journal.set_run_value(
            self.run_id, ACK_KEY, {"key": command.key, "ok": ok, "message": message, "phase": self.phase}
        )
