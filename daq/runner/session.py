"""One test on one bench, start to end: validate, start the bench and the run, run, stop.

``prepare_test`` checks a profile against a bench (raises ConfigError naming file, step and
reason, before anything starts). ``TestSession`` owns the bench and the runner for one process;
``open_resume`` builds one for ``daq test resume`` from what the run stored: the bench and
profile files, the runner state and the journal's records of the interrupted step.

Resume after a crash (``kill -9``): the cycler is commanded to its safe state and must read back
output off before anything else happens (else the resume is refused); the gap between the last
record and now is journaled as ``runner.gap`` with the charge the cycler's own counter saw during
it (booked to the interrupted step, which continues with its step time and Ah so far).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daq.bench import Bench
from daq.config.loader import LoadedBench, load_bench
from daq.errors import ConfigError, DaqError, DriverError
from daq.journal import JournalReader, RunInfo
from daq.profiles import Plan, Profile, load_profile
from daq.runner.control import process_alive, serve_journal_commands
from daq.runner.integrator import NS

if TYPE_CHECKING:
    from daq.runner.mqtt_commands import MqttCommandListener
from daq.runner.recovery import replay_step
from daq.runner.runner import Outcome, ResumePoint, TestRunner
from daq.runner.state import (
    COMPLETED,
    RESUMABLE_PHASES,
    STATE_KEY,
    STOPPED,
    SUMMARY_KEY,
    TEST_KEY,
    RunnerState,
)
from daq.runner.step_limits import require_plan_limits
from daq.runner.target import TestTarget, require_profile_fits, resolve_target

log = logging.getLogger(__name__)

EventObserver = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class PreparedTest:
    loaded: LoadedBench
    profile: Profile
    plan: Plan
    target: TestTarget
    overrides: dict[str, Any]  # --cycler, --series-cells, --capacity-ah as given


def prepare_test(
    loaded: LoadedBench,
    profile_path: str | Path,
    *,
    cycler: str | None = None,
    series_cells: int | None = None,
    capacity_ah: float | None = None,
) -> PreparedTest:
    """Load the profile and check it against the bench; ConfigError lists every problem."""
    profile = load_profile(profile_path)
    target = resolve_target(loaded, profile, cycler=cycler, series_cells=series_cells, capacity_ah=capacity_ah)
    require_profile_fits(profile, target)
    plan = Plan(profile, series_cells=target.series_cells, capacity_ah=target.capacity_ah)
    require_plan_limits(plan, loaded.limits, bench=str(loaded.path))
    overrides = {"cycler": cycler, "series_cells": series_cells, "capacity_ah": capacity_ah}
    return PreparedTest(loaded, profile, plan, target, overrides)


def _sha256(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


class TestSession:
    """The bench, the run and the runner of one test in this process."""

    __test__ = False

    def __init__(
        self,
        prepared: PreparedTest,
        *,
        journal_path: Path | None = None,
        metadata: dict[str, Any] | None = None,
        on_event: EventObserver | None = None,
    ) -> None:
        self.prepared = prepared
        self.metadata = metadata or {}
        self.bench = Bench(prepared.loaded, journal_path=journal_path, metadata={"test": self.metadata})
        self.on_event = on_event
        self.runner: TestRunner | None = None
        self._resume: ResumePoint | None = None
        self._resume_run: str | None = None

    @property
    def run_id(self) -> str:
        return self.bench.run_id

    async def start(self) -> str:
        """Start the bench and a new run; store what was started so it can be resumed."""
        await self.bench.start()
        try:
            p = self.prepared
            self.bench.journal.set_run_value(
                self.run_id,
                TEST_KEY,
                {
                    "bench_file": str(p.loaded.path.resolve()),
                    "profile_file": str(p.profile.source_path.resolve()) if p.profile.source_path else "",
                    "profile_name": p.profile.name,
                    "profile_sha256": _sha256(p.profile.source_path),
                    "fingerprint": p.plan.fingerprint,
                    "journal": str(self.bench.journal.path.resolve()),
                    "target": p.target.to_dict(),
                    "overrides": p.overrides,
                    **self.metadata,
                },
            )
            self._make_runner()
        except BaseException:
            await self.bench.stop(status="aborted", reason="the test could not start")
            raise
        return self.run_id

    def _make_runner(self) -> None:
        self.runner = TestRunner(
            self.bench, self.prepared.plan, self.prepared.target, resume=self._resume, on_event=self.on_event
        )
        self.bench.add_task(
            serve_journal_commands(self.bench.journal.path, self.run_id, self.runner.deliver), "runner:commands"
        )

    async def run(self) -> Outcome:
        assert self.runner is not None, "start() first"
        return await self.runner.run()

    def enable_mqtt_commands(self, listener: MqttCommandListener) -> None:
        """Take pause/resume/abort over MQTT too (after ``start``); see ``mqtt_command_listener``."""
        assert self.runner is not None, "start() first"
        bench, run_id = self.bench, self.run_id
        listener.attach(
            run_id=run_id,
            deliver=self.runner.deliver,
            journal=lambda kind, data: bench.journal.append_event(run_id, bench.clock.wall_ns(), kind, data),
        )
        bench.add_task(listener.run(), "runner:mqtt-commands")

    async def close(self, outcome: Outcome | None) -> None:
        if outcome is None:
            await self.bench.stop(status="aborted", reason="the test process failed")
        else:
            await self.bench.stop(status=outcome.run_status, reason=outcome.reason)


def mqtt_command_listener(loaded: LoadedBench, sink_name: str, allowed_users: set[str]) -> MqttCommandListener:
    """A listener on the broker of the bench's MQTT sink ``sink_name``; ConfigError before anything starts."""
    from daq.config.sinks import MqttSinkConfig
    from daq.runner.mqtt_commands import MqttCommandListener

    sinks = [s for s in getattr(loaded.config, "sinks", []) if isinstance(s, MqttSinkConfig)]
    config = next((s for s in sinks if s.name == sink_name), None)
    if config is None:
        names = ", ".join(s.name for s in sinks) or "none"
        raise ConfigError(f"{loaded.path}: no MQTT sink named {sink_name!r} for --mqtt-commands; MQTT sinks: {names}")
    return MqttCommandListener(
        config, bench_id=loaded.config.bench.id, allowed_users=allowed_users, where=f"{loaded.path}: sinks({sink_name})"
    )


# -- resume ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class StoredTest:
    """What a run says about its test (kv ``test``, ``runner_state``, ``cycle_summary``)."""

    run: RunInfo
    test: dict[str, Any]
    state: RunnerState
    summaries: list[dict[str, Any]]

    @property
    def alive(self) -> bool | None:
        return process_alive(self.state.process)


def read_stored_test(reader: JournalReader, run: RunInfo) -> StoredTest:
    test = reader.run_value(run.run_id, TEST_KEY)
    raw_state = reader.run_value(run.run_id, STATE_KEY)
    if test is None or raw_state is None:
        raise DaqError(f"run {run.run_id} is not a test run (no runner state); it was recorded by 'daq run'")
    return StoredTest(run, test, RunnerState.from_dict(raw_state), list(reader.run_value(run.run_id, SUMMARY_KEY, [])))


def open_resume(
    reader: JournalReader,
    stored: StoredTest,
    *,
    bench_path: str | Path | None = None,
    profile_path: str | Path | None = None,
    on_event: EventObserver | None = None,
) -> ResumeSession:
    """A session that continues ``stored`` in this process (the runner process must be gone)."""
    run_id = stored.run.run_id
    if stored.state.phase not in RESUMABLE_PHASES:
        raise DaqError(f"run {run_id} has {stored.state.phase}; it cannot be resumed, start a new test")
    if stored.state.position.finished:
        raise DaqError(f"run {run_id} has no step left to run; start a new test")
    bench_file = bench_path or stored.test.get("bench_file")
    profile_file = profile_path or stored.test.get("profile_file")
    if not bench_file or not Path(bench_file).exists():
        raise ConfigError(f"run {run_id}: bench file {bench_file or '(none stored)'} not found; pass --bench FILE")
    if not profile_file or not Path(profile_file).exists():
        raise ConfigError(
            f"run {run_id}: profile file {profile_file or '(none stored)'} not found; pass --profile FILE"
        )
    overrides = dict(stored.test.get("overrides") or {})
    prepared = prepare_test(load_bench(bench_file), profile_file, **overrides)
    if prepared.plan.fingerprint != stored.test.get("fingerprint"):
        raise ConfigError(
            f"{profile_file}: the profile's steps changed shape since run {run_id} started; resume with the "
            "profile as it was (setpoints and end conditions may change, steps and loops may not)"
        )
    progress = stored.state.step
    replay = None
    if progress is not None:
        replay = replay_step(reader, run_id, prepared.target.cycler, progress)
    journal_path = Path(stored.test.get("journal") or reader.path)
    session = ResumeSession(prepared, stored, replay, journal_path=journal_path, on_event=on_event)
    return session


class ResumeSession(TestSession):
    """``TestSession`` continuing a stored run: safe-state check, gap event, restored counters."""

    def __init__(
        self, prepared: PreparedTest, stored: StoredTest, replay: Any, *, journal_path: Path, on_event
    ) -> None:
        super().__init__(prepared, journal_path=journal_path, on_event=on_event)
        self.stored = stored
        self.replay = replay
        self.gap: dict[str, Any] | None = None

    async def start(self) -> str:
        stored, replay = self.stored, self.replay
        run_id = stored.run.run_id
        progress = stored.state.step
        if progress is not None:  # records from now on carry the interrupted step until it goes on
            self.bench.context.step, self.bench.context.cycle = progress.step, progress.cycle
        await self.bench.start(run_id=run_id)
        try:
            await self._confirm_safe_and_book_gap()
            totals = replay.totals if replay is not None else None
            self._resume = ResumePoint(
                state=stored.state,
                summaries=stored.summaries,
                step_totals=totals,
                step_elapsed_s=replay.elapsed_s if replay is not None else None,
                max_temperature_c=replay.max_temperature_c if replay is not None else math.nan,
            )
            self._make_runner()
        except BaseException:
            await self.bench.stop(status="interrupted", reason="resume refused: the cycler was not confirmed safe")
            raise
        return run_id

    async def _confirm_safe_and_book_gap(self) -> None:
        cycler_name = self.prepared.target.cycler
        control = self.bench.cyclers[cycler_name]
        was_on: bool | None = None
        counter_now: float | None = None
        uptime_now: float | None = None
        try:
            if control.has("output_on") or control.has("output_enable"):
                was_on = not await control.output_is_off()
            if control.has("charge_ah"):
                counter_now = await control.driver.read_channel("charge_ah")
            if control.has("uptime_s"):
                uptime_now = await control.driver.read_channel("uptime_s")
        except DriverError as exc:
            raise DaqError(f"cycler {cycler_name} does not answer ({exc}); check it and resume again") from exc
        if not await control.safe_state():
            raise DaqError(
                f"cycler {cycler_name}: output did not read back off after the safe-state command; "
                "not resuming. Check the cycler by hand, then resume again"
            )
        cleared = await self._clear_watchdog_alarm(control)
        safety = getattr(self.bench, "safety", None)
        if getattr(safety, "tripped", False):
            raise DaqError(
                f"run {self.stored.run.run_id}: the safety monitor is tripped; acknowledge with "
                f"daq ack {self.stored.run.run_id}, then resume again"
            )
        stored, replay = self.stored, self.replay
        now_ns = self.bench.clock.wall_ns()
        last_ns = replay.last_t_ns if replay is not None and replay.last_t_ns else stored.state.saved_ns
        crashed = stored.state.phase != STOPPED
        gap_s = max(0.0, (now_ns - last_ns) / NS)
        gap_ah: float | None = None
        if replay is not None and counter_now is not None and replay.last_charge_counter_ah is not None:
            restarted = (
                uptime_now is not None and replay.last_uptime_s is not None and uptime_now < replay.last_uptime_s
            )
            delta = counter_now - replay.last_charge_counter_ah  # net, + = into the battery
            most = max(self.prepared.target.currents.max_charge_a, self.prepared.target.currents.max_discharge_a)
            # a restarted device counts from zero again: its counter says nothing about the gap
            if not restarted and abs(delta) <= most * gap_s / 3600 * 1.1 + 1e-6:
                gap_ah = delta
        data = {
            "from_ns": last_ns,
            "to_ns": now_ns,
            "gap_s": gap_s,
            "cause": "crash" if crashed else "stopped",
            "previous_phase": stored.state.phase,
            "output_was_on": was_on,
            "gap_ah": gap_ah,
            "step": stored.state.step.step if stored.state.step else None,
            "cycle": stored.state.step.cycle if stored.state.step else None,
            "cleared_watchdog_alarm": cleared,
        }
        if gap_ah is not None and abs(gap_ah) > 0 and replay is not None:
            voltage = replay.last_voltage_v if math.isfinite(replay.last_voltage_v) else 0.0
            replay.totals.add_constant(gap_ah * 3600.0, voltage, 1.0)
            assert stored.state.step is not None
            stored.state.step.extra.add_constant(gap_ah * 3600.0, voltage, 1.0)
            data["booked_to_step"] = True
        self.gap = data
        self.bench.journal.append_event(
            stored.run.run_id, now_ns, "runner.gap" if crashed else "runner.restarted", data
        )

    async def _clear_watchdog_alarm(self, control: Any) -> bool:
        """A crash leaves the cycler's communication watchdog tripped (that is its job); clear that
        latch, and only that one: any other device alarm stops the resume."""
        name = control.name
        if not control.has("alarm"):
            return False
        try:
            if not await control.driver.read_channel("alarm"):
                return False
            watchdog = control.has("watchdog_tripped") and bool(await control.driver.read_channel("watchdog_tripped"))
            other = control.has("limit_tripped") and bool(await control.driver.read_channel("limit_tripped"))
            code = await control.driver.read_channel("alarm_code") if control.has("alarm_code") else math.nan
            if not watchdog or other or not control.has("clear_alarm"):
                raise DaqError(
                    f"cycler {name} reports alarm code {code:g}, not only its communication watchdog; "
                    "find the cause and clear the alarm on the cycler, then resume again"
                )
            await control.driver.write("clear_alarm", 1)
            if await control.driver.read_channel("alarm"):
                raise DaqError(f"cycler {name}: its watchdog alarm did not clear; clear it on the cycler, then resume")
        except DriverError as exc:
            raise DaqError(f"cycler {name} does not answer ({exc}); check it and resume again") from exc
        return True


def describe_phase(stored: StoredTest) -> str:
    """'running (pid 123)', 'crashed (runner gone)', 'paused', 'stopped', 'completed', 'aborted: ...'."""
    state = stored.state
    alive = stored.alive
    if state.phase == COMPLETED:
        return "completed"
    if state.phase in ("running", "paused"):
        if alive is False:
            return f"interrupted (runner process gone while {state.phase}; resume with daq test resume)"
        where = f"pid {state.process.get('pid')}" + ("" if alive else f" on {state.process.get('host')}")
        return f"{state.phase} ({where})" + (f": {state.reason}" if state.reason and state.phase == "paused" else "")
    if state.phase == STOPPED:
        return f"stopped while paused ({state.reason}); resume with daq test resume"
    return f"{state.phase}" + (f": {state.reason}" if state.reason else "")
