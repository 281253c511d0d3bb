"""The live safety monitor: the evaluator on the bench's hot path, the action ladder and the latch.

Wiring (``Bench.start`` creates it when the bench file has ``safety:``):

- ``hook(record)`` is the bench's FIRST record hook, so every record is judged before the journal
  and long before any sink. It is synchronous: it evaluates, queues alarm events on the journal
  (``alarm.<kind>``) and, on a trip, wakes the action task. It never awaits.
- ``safety:actions`` runs the action ladder (``actions.bring_to_safe_state``) for every cycler at
  once, journals each step (``safety.action``) and the outcome (``safety.safe_state``), stores the
  trip in the run's kv (``safety``) and flushes the journal so the evidence survives a crash.
- ``safety:stale`` calls ``Evaluator.check_stale`` every ``stale_check_period_s`` of bench time, so
  a device that went silent trips even though it sends no record.
- ``safety:ack`` polls the journal for ``daq ack`` requests of this run (see ``daq.safety.ack``).

The latch: from the first trip until an acknowledgement, ``tripped`` is true, the cyclers' drivers
refuse to switch the output on (``interlock``), and a record showing a cycler's output on runs the
ladder again. Besides the evaluator's trips the monitor latches two of its own: the cycler's own
protection firing (limit ``device_alarm``) and trips restored from the journal when a run resumes.
A run that tripped ends "aborted" with the first trip's message (``abort_reason``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from daq.channels import OUTPUT_ON
from daq.config.bench import SafetyConfig
from daq.errors import DaqError
from daq.journal import JournalReader
from daq.records import Record
from daq.safety.ack import ACK_RESULT, AckRequestReader, answered_request_seq, latched_trips
from daq.safety.actions import ActionStep, SafeStateOutcome, bring_to_safe_state
from daq.safety.device_limits import DeviceLimitsResult, device_limit_values, push_device_limits
from daq.safety.evaluator import Evaluator
from daq.safety.events import TRIP, TRIPPED, AlarmEvent
from daq.safety.interlock import InterlockedDriver
from daq.safety.limits import LimitSet, load_limits

if TYPE_CHECKING:
    from daq.bench import Bench

log = logging.getLogger(__name__)

DEVICE_ALARM = "device_alarm"  # the cycler's own protection fired
MONITOR_ERROR = "monitor_error"  # the evaluator raised on a record: fail safe
STEP_NAMES_KEY = "step_names"  # run kv: {step number: step-limits name}, for daq check
_ALARM = "alarm"
_ALARM_CODE = "alarm_code"
_OUTPUT_ENABLE = "output_enable"


class _CyclerWatch:
    """Where a cycler's schema keeps its output and alarm state (indices, -1 if absent)."""

    __slots__ = ("alarm", "alarm_code", "alarm_on", "output", "schema")

    def __init__(self, record: Record) -> None:
        index = record.schema.index
        self.schema = record.schema
        self.output = index.get(OUTPUT_ON, index.get(_OUTPUT_ENABLE, -1))
        self.alarm = index.get(_ALARM, -1)
        self.alarm_code = index.get(_ALARM_CODE, -1)
        self.alarm_on = False


class SafetyMonitor:
    """Safety for one running bench. ``start`` before the pollers; the bench cancels its tasks."""

    def __init__(
        self,
        bench: Bench,
        config: SafetyConfig,
        *,
        limits: LimitSet | None = None,
        ack_poll_s: float = 0.25,
        attempts: int = 3,
        unsafe_retry_s: float = 5.0,
    ) -> None:
        self._bench = bench
        self.config = config
        self.limits_path = bench.loaded.resolve(config.limits, "limits")
        if limits is None:
            limits = getattr(bench.loaded, "limits", None) or load_limits(self.limits_path)
        self.limits: LimitSet = limits
        self.evaluator = Evaluator(limits, clock_ns=bench.clock.wall_ns)
        self.on_trip: list[Callable[[AlarmEvent], None]] = []
        self.abort_reason = ""
        self.step_name: str | None = None
        self.ack_poll_s = ack_poll_s
        self.attempts = attempts
        self.unsafe_retry_s = unsafe_retry_s  # real seconds between re-runs of a ladder that failed
        self.ladder_runs = 0
        self.last_outcomes: dict[str, SafeStateOutcome] = {}
        self.device_limits: dict[str, DeviceLimitsResult] = {}
        self._own_latched: dict[tuple[str, str, str], AlarmEvent] = {}
        self._watches: dict[int, _CyclerWatch] = {}
        self._wake = asyncio.Event()
        self._ladder_running = False
        self._ladder_pending = False
        self._ladder_done_ns = -1
        self._ladder_done_real = -math.inf
        self._answered_seq = 0
        # step number -> step-limits name, as applied live (``daq check`` replays it)
        self.step_names: dict[int, str] = {}
        self._mapped_step = -1

    # --- state ---------------------------------------------------------------------------

    @property
    def tripped(self) -> bool:
        """True from the first trip until it is acknowledged: outputs stay off meanwhile."""
        return self.evaluator.tripped or bool(self._own_latched)

    def trip_reasons(self) -> list[AlarmEvent]:
        events = self.evaluator.trip_reasons() + list(self._own_latched.values())
        events.sort(key=lambda e: e.t_ns)
        return events

    def active_alarms(self) -> list[AlarmEvent]:
        """Raised warnings and latched trips, oldest first."""
        events = self.evaluator.active_alarms() + list(self._own_latched.values())
        events.sort(key=lambda e: e.t_ns)
        return events

    @property
    def run_id(self) -> str:
        return self._bench.run_id

    def status(self) -> dict[str, dict[str, Any]]:
        """The ``safety`` section of ``daq status``: the monitor, then one entry per active alarm."""
        out: dict[str, dict[str, Any]] = {
            "monitor": {
                "tripped": self.tripped,
                "limits": self.limits.name,
                "step": self.step_name,
                "active_alarms": len(self.active_alarms()),
                "safe_state_runs": self.ladder_runs,
                "abort_reason": self.abort_reason,
            }
        }
        for event in self.active_alarms():
            out[f"{event.device}:{event.channel}:{event.limit}:{event.level}"] = {
                "level": event.level,
                "message": event.message,
            }
        return out

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore a latch of a resumed run, install the interlock, push device limits, hook in,
        start the tasks. DeviceLimitError if the device limits do not read back."""
        bench = self._bench
        self._event(
            "safety.limits",
            {
                "file": str(self.limits_path),
                "name": self.limits.name,
                "stale_check_period_s": self.config.stale_check_period_s,
                "push_device_limits": self.config.push_device_limits,
                "escalation": self.config.escalation,
                "limits": self.limits.model_dump(mode="json"),
            },
        )
        restored = self._restore()
        for ctl in bench.cyclers.values():
            if not isinstance(ctl.driver, InterlockedDriver):
                ctl.driver = InterlockedDriver(
                    ctl.driver, is_latched=lambda: self.tripped, reason=self._reason, on_refused=self._refused
                )
        if self.config.push_device_limits:
            values = device_limit_values(self.limits)
            for name, ctl in bench.cyclers.items():
                result = await push_device_limits(ctl, values)
                self.device_limits[name] = result
                self._event("safety.device_limits", result.to_dict())
        bench.hooks.insert(0, self.hook)
        bench.status_providers["safety"] = self.status
        bench.add_task(self._action_loop(), "safety:actions")
        bench.add_task(self._stale_loop(), "safety:stale")
        bench.add_task(self._ack_loop(), "safety:ack")
        if restored:
            self._wake.set()  # a resumed run with a latched trip: make sure the outputs are off

    def _restore(self) -> list[AlarmEvent]:
        """Trips of this run left latched by an earlier process (crash, resume) stay latched."""
        with JournalReader(self._bench.journal.path) as reader:
            events = reader.run_events(self.run_id)
        self._answered_seq = answered_request_seq(events)
        restored = latched_trips(events)
        for trip in restored:
            self._own_latched[trip.key] = trip
        if restored:
            self.abort_reason = self.abort_reason or restored[0].message
            self._event("safety.latch_restored", {"trips": [t.to_dict() for t in restored]})
            log.warning("%s: %d trip(s) still latched from before; run daq ack", self.run_id, len(restored))
        return restored

    # --- hot path ----------------------------------------------------------------------------

    def hook(self, record: Record) -> None:
        """Judge one record (the bench calls this first, synchronously, for every record)."""
        try:
            events = self.evaluator.evaluate(record)
        except Exception as exc:  # an unjudged record leaves the pack unprotected: fail safe
            log.exception("safety evaluation of a %s record failed", record.schema.device)
            self._publish([self._internal_trip(record, exc)])
            return
        if events:
            self._publish(events)
        if record.step != self._mapped_step:
            self._map_step(record.step)
        watch = self._watches.get(id(record.schema))
        if watch is None or watch.schema is not record.schema:
            if record.schema.device not in self._bench.cyclers:
                return
            watch = self._watches[id(record.schema)] = _CyclerWatch(record)
        self._watch_cycler(watch, record)

    def _watch_cycler(self, watch: _CyclerWatch, record: Record) -> None:
        values, quality = record.values, record.quality
        i = watch.alarm
        if i >= 0 and not quality[i]:
            on = values[i] != 0
            if on and not watch.alarm_on:
                self._device_alarm(watch, record)
            watch.alarm_on = on
        i = watch.output
        if (
            i >= 0
            and not quality[i]
            and values[i] != 0
            and self.tripped
            and not self._ladder_running
            and not self._ladder_pending
            and record.t_ns > self._ladder_done_ns
        ):
            failed_before = any(not o.safe for o in self.last_outcomes.values())
            if failed_before and time.monotonic() - self._ladder_done_real < self.unsafe_retry_s:
                return
            self._event(
                "safety.interlock",
                {"cycler": record.schema.device, "what": "output on while a trip is latched", "action": "safe state"},
            )
            self._wake_ladder()

    def _internal_trip(self, record: Record, exc: Exception) -> AlarmEvent:
        device = record.schema.device
        trip = AlarmEvent(
            t_ns=record.t_ns,
            kind=TRIPPED,
            limit=MONITOR_ERROR,
            level=TRIP,
            device=device,
            channel="",
            value=math.nan,
            threshold=math.nan,
            message=f"{device}: safety evaluation failed ({exc!r}); tripped to be safe",
        )
        self._own_latched.setdefault(trip.key, trip)
        return trip

    def _device_alarm(self, watch: _CyclerWatch, record: Record) -> None:
        """The cycler's own protection (device limits, watchdog) fired: latch it like a trip."""
        device = record.schema.device
        i = watch.alarm_code
        code = record.values[i] if i >= 0 and not record.quality[i] else math.nan
        trip = AlarmEvent(
            t_ns=record.t_ns,
            kind=TRIPPED,
            limit=DEVICE_ALARM,
            level=TRIP,
            device=device,
            channel=_ALARM_CODE,
            value=code,
            threshold=math.nan,
            message=f"{device}: the device's own protection tripped (alarm_code {code:g}); output off",
        )
        self._own_latched.setdefault(trip.key, trip)
        self._publish([trip])

    def _publish(self, events: list[AlarmEvent]) -> None:
        journal, run_id = self._bench.journal, self.run_id
        trips = []
        for event in events:
            journal.append_event(run_id, event.t_ns, f"alarm.{event.kind}", event.to_dict())
            if event.kind == TRIPPED:
                trips.append(event)
        if not trips:
            return
        self._wake_ladder()
        for trip in trips:
            log.error("safety trip: %s", trip.message)
            if not self.abort_reason:
                self.abort_reason = trip.message
            for callback in self.on_trip:
                try:
                    callback(trip)
                except Exception:  # an observer must not stop the others
                    log.exception("on_trip callback %r failed", callback)

    def _map_step(self, step: int) -> None:
        """Remember which step-limits name the records of ``step`` were judged with (runs only
        when the step number or the step limits change)."""
        self._mapped_step = step
        name = self.step_name
        if name is None:
            return  # between steps the global limits apply; set_step_limits(name) comes next
        if self.step_names.get(step) != name:
            self.step_names[step] = name
            names = {str(k): v for k, v in self.step_names.items()}
            self._bench.journal.queue_run_value(self.run_id, STEP_NAMES_KEY, names)

    def _wake_ladder(self) -> None:
        self._ladder_pending = True
        self._wake.set()

    # --- runner API --------------------------------------------------------------------------

    def set_step_limits(self, step_name: str | None) -> list[AlarmEvent]:
        """Switch to the limits of the named step (``limits.steps``), or back to the global ones."""
        limits = self.limits if step_name is None else self.limits.for_step(step_name)
        events = self.evaluator.set_step_limits(limits)
        self.step_name = step_name
        self._mapped_step = -1  # re-learn the step number -> name pair on the next record
        self._event("safety.step_limits", {"step": step_name, "tightened": step_name in self.limits.steps})
        if events:
            self._publish(events)
        return events

    def acknowledge(self, who: str, *, note: str = "", request_seq: int = 0) -> list[AlarmEvent]:
        """Release every latched trip (an operator's decision); journals who, when and the note."""
        if not who:
            raise ValueError("acknowledge needs the name of who acknowledges")
        events = self.evaluator.acknowledge(who)
        t = self._bench.clock.wall_ns()
        for trip in self._own_latched.values():
            events.append(trip.acknowledged_by(who, t))
        self._own_latched.clear()
        journal = self._bench.journal
        extra = {"note": note, "request_seq": request_seq}
        for event in events:
            journal.append_event(self.run_id, event.t_ns, "alarm.acknowledged", {**event.to_dict(), **extra})
        self._event(
            ACK_RESULT,
            {
                "request_seq": request_seq,
                "who": who,
                "note": note,
                "acknowledged": len(events),
                "still_latched": self.tripped,
            },
        )
        if events:
            log.warning("%d trip(s) acknowledged by %s", len(events), who)
        return events

    # --- tasks -------------------------------------------------------------------------------

    async def _action_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._ladder_pending = False
            await self.run_ladder()

    async def run_ladder(self) -> dict[str, SafeStateOutcome]:
        """Bring every cycler to a safe state now (the action task calls this after a trip)."""
        bench = self._bench
        self._ladder_running = True
        reasons = [t.message for t in self.trip_reasons()]
        try:
            cyclers = list(bench.cyclers.values())
            results = await asyncio.gather(
                *(
                    bring_to_safe_state(
                        ctl, escalation=self.config.escalation, attempts=self.attempts, on_step=self._journal_step
                    )
                    for ctl in cyclers
                ),
                return_exceptions=True,
            )
            outcomes: dict[str, SafeStateOutcome] = {}
            for ctl, result in zip(cyclers, results, strict=True):
                if isinstance(result, BaseException):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    log.error("%s: safe-state ladder failed: %r", ctl.name, result)
                    result = SafeStateOutcome(ctl.name, safe=False, how=f"NOT SAFE: ladder failed: {result!r}")
                outcomes[ctl.name] = result
            self.last_outcomes = outcomes
            self.ladder_runs += 1
            safe = all(o.safe for o in outcomes.values())
            summary = {
                "reasons": reasons,
                "safe": safe,
                "cyclers": {name: o.to_dict() for name, o in outcomes.items()},
            }
            self._event("safety.safe_state", summary)
            self._bench.journal.queue_run_value(
                self.run_id, "safety", {"tripped": True, "abort_reason": self.abort_reason, **summary}
            )
            await asyncio.to_thread(self._flush)
            return outcomes
        finally:
            self._ladder_running = False
            self._ladder_done_ns = bench.clock.wall_ns()
            self._ladder_done_real = time.monotonic()

    def _flush(self) -> None:
        """Commit the trip's evidence now instead of with the next batch (a crash may follow)."""
        try:
            self._bench.journal.flush()
        except DaqError as exc:
            log.error("could not commit the trip record: %s", exc)

    async def _stale_loop(self) -> None:
        clock, period = self._bench.clock, self.config.stale_check_period_s
        while True:
            await clock.sleep(period)
            events = self.evaluator.check_stale(clock.wall_ns())
            if events:
                self._publish(events)

    async def _ack_loop(self) -> None:
        reader = AckRequestReader(self._bench.journal.path, self.run_id, after_seq=self._answered_seq)
        while True:
            try:
                requests = await asyncio.to_thread(reader.pending)
            except DaqError as exc:
                log.warning("cannot read acknowledgement requests: %s", exc)
                requests = []
            for request in requests:
                self.acknowledge(request.who, note=request.note, request_seq=request.seq)
            await asyncio.sleep(self.ack_poll_s)  # real time: this is about the operator, not the battery

    # --- journal helpers ---------------------------------------------------------------------

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        self._bench.journal.append_event(self.run_id, self._bench.clock.wall_ns(), kind, data)

    def _journal_step(self, step: ActionStep) -> None:
        self._event("safety.action", step.to_dict())

    def _reason(self) -> str:
        trips = self.trip_reasons()
        return trips[0].message if trips else "no trip"

    def _refused(self, cycler: str, channel: str, value: float) -> None:
        self._event("safety.interlock", {"cycler": cycler, "what": f"refused {channel}={value:g}", "action": "refused"})
