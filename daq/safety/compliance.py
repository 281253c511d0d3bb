"""After-the-fact compliance: would this recorded run have stayed inside a limit set?

The run's records (in time order across devices) are fed through the same ``Evaluator`` the
live monitor uses, with ``check_stale`` at every record's time, so the verdict means exactly
"what the live monitor would have done with these limits". Every interval beyond a threshold
that lasted the limit's persistence time is an excursion.

Verdict rule: the run FAILS if any excursion reached a trip threshold. Warning-level
excursions are listed but do not fail the run, unless ``strict`` is set (then any excursion
fails it). Per-step limits: with ``switches`` (the ``safety.step_limits`` events of the run, see
``daq.safety.step_limits``) each record is judged by the limits the live monitor had switched to by
its time. Runs recorded before those events carried the active set fall back to ``step_names``:
a record's step number maps to a name in ``limits.steps`` (without it, the number itself is the
name). Each excursion is reported with the step it started in and the active limits' label.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from daq.records import Record
from daq.safety.evaluator import Evaluator
from daq.safety.events import TRIP, WARNING, Excursion
from daq.safety.limits import LimitSet
from daq.safety.step_limits import LimitSwitch

_RULE = "fail on any trip-level excursion; warnings are listed but pass"
_STRICT_RULE = "strict: fail on any excursion, warnings included"


@dataclass(frozen=True, slots=True)
class StepContext:
    """Where an excursion started: the record's step number and the active limits' label."""

    step: int
    limits: str  # which layers were active: 'global', 'steps.rest', 'profile', 'steps.charge+profile'


@dataclass(frozen=True, slots=True)
class CheckResult:
    limits_name: str
    excursions: tuple[Excursion, ...]  # by start time, then limit, device, channel, level
    strict: bool
    records: int
    start_ns: int  # first record's time (0 if there were none)
    end_ns: int
    contexts: tuple[StepContext, ...] = ()  # one per excursion, same order (empty: unknown)

    def context(self, index: int) -> StepContext | None:
        return self.contexts[index] if index < len(self.contexts) else None

    @property
    def trips(self) -> tuple[Excursion, ...]:
        return tuple(e for e in self.excursions if e.level == TRIP)

    @property
    def warnings(self) -> tuple[Excursion, ...]:
        return tuple(e for e in self.excursions if e.level == WARNING)

    @property
    def passed(self) -> bool:
        return not (self.excursions if self.strict else self.trips)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def rule(self) -> str:
        return _STRICT_RULE if self.strict else _RULE

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict with stable keys; times in ns (absolute) and s (from the run start)."""
        excursions = []
        for i, e in enumerate(self.excursions):
            item = e.to_dict()
            item["start_s"] = (e.start_ns - self.start_ns) / 1e9
            item["end_s"] = (e.end_ns - self.start_ns) / 1e9
            context = self.context(i)
            if context is not None:
                item["step"] = context.step
                item["step_limits"] = context.limits
            excursions.append(item)
        return {
            "verdict": self.verdict,
            "rule": self.rule,
            "strict": self.strict,
            "limits": self.limits_name,
            "records": self.records,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "trips": len(self.trips),
            "warnings": len(self.warnings),
            "excursions": excursions,
        }


def check_run(
    records: Iterable[Record],
    limits: LimitSet,
    *,
    strict: bool = False,
    step_names: Mapping[int, str] | None = None,
    switches: Sequence[LimitSwitch] | None = None,
) -> CheckResult:
    """Re-evaluate a recorded run against ``limits``; records must be in time order.

    ``switches`` (in time order) replay the live monitor's limit switches; without them the
    per-step limits come from ``step_names`` (see the module docstring)."""
    found: list[Excursion] = []
    evaluator = Evaluator(limits, on_excursion=found.append)
    count = 0
    start_ns = end_ns = 0
    active_step: str | None = None
    active_label = "global"
    last_step_key: tuple[str, int, int] | None = None
    pending = list(switches or ())[::-1]  # next switch last
    spans: list[tuple[int, int, str]] = []  # (from t_ns, step number, active limits label)
    for record in records:
        if count == 0:
            start_ns = record.t_ns
        count += 1
        end_ns = record.t_ns
        if switches is not None:
            while pending and pending[-1].t_ns <= record.t_ns:
                switch = pending.pop()
                evaluator.set_step_limits(switch.limits, record.t_ns)
                active_label = switch.label
        else:
            step_key = (record.run_id, record.cycle, record.step)
            if step_key != last_step_key:
                last_step_key = step_key
                name = _step_name(record, step_names)
                step = name if name in limits.steps else None
                if step != active_step:
                    active_step = step
                    step_limits = limits if step is None else limits.for_step(step)
                    evaluator.set_step_limits(step_limits, record.t_ns)
                    active_label = "global" if step is None else f"steps.{step}"
        if not spans or spans[-1][1:] != (record.step, active_label):
            spans.append((record.t_ns, record.step, active_label))
        evaluator.evaluate(record)
        evaluator.check_stale(record.t_ns)
    if count:
        evaluator.close_excursions(end_ns)
    found.sort(key=lambda e: (e.start_ns, e.limit, e.device, e.channel, e.level != WARNING))
    return CheckResult(
        limits_name=limits.name,
        excursions=tuple(found),
        strict=strict,
        records=count,
        start_ns=start_ns,
        end_ns=end_ns,
        contexts=tuple(_context(spans, e.start_ns) for e in found),
    )


def _context(spans: list[tuple[int, int, str]], t_ns: int) -> StepContext:
    """The span a time falls in (``spans`` sorted by start; before the first: the first)."""
    i = max(bisect.bisect_right(spans, t_ns, key=lambda span: span[0]) - 1, 0)
    _, step, label = spans[i]
    return StepContext(step, label)


def format_table(result: CheckResult, *, wall_start_ns: int | None = None, time_scale: float = 1.0) -> str:
    """Human-readable report: one row per excursion, then the verdict and its rule.

    ``wall_start_ns``: when the data began on the wall clock, for a simulated run whose record
    times are bench time (``time_scale`` > 1); excursion times stay bench seconds since then.
    """
    duration = _num((result.end_ns - result.start_ns) / 1e9)
    if time_scale != 1.0:
        start = _iso(result.start_ns if wall_start_ns is None else wall_start_ns)
        when = f"data start: {start} (wall clock)   duration: {duration} s of bench time at ×{time_scale:g}"
    else:
        when = f"data start: {_iso(result.start_ns)}   duration: {duration} s"
    lines = [f"limits: {result.limits_name or '(unnamed)'}   records: {result.records}   {when}"]
    if result.excursions:
        header = ("level", "limit", "device", "channel", "start_s", "end_s", "dur_s", "peak", "threshold", "unit")
        header += ("step", "step_limits")
        rows = [header]
        for i, e in enumerate(result.excursions):
            context = result.context(i)
            rows.append(
                (
                    e.level,
                    e.limit,
                    e.device,
                    e.channel,
                    _num((e.start_ns - result.start_ns) / 1e9),
                    _num((e.end_ns - result.start_ns) / 1e9) + ("" if e.ended else "+"),
                    _num(e.duration_s),
                    _num(e.peak),
                    _num(e.threshold),
                    e.unit,
                    "" if context is None else str(context.step),
                    "" if context is None else context.limits,
                )
            )
        widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
        numeric = {4, 5, 6, 7, 8}
        for row in rows:
            cells = [
                cell.rjust(widths[col]) if col in numeric else cell.ljust(widths[col]) for col, cell in enumerate(row)
            ]
            lines.append("  ".join(cells).rstrip())
        if any(not e.ended for e in result.excursions):
            lines.append("(+ = still beyond the threshold when the data ended)")
    else:
        lines.append("no excursions")
    lines.append(
        f"verdict: {result.verdict.upper()}  ({len(result.trips)} trip, {len(result.warnings)} warning; "
        f"rule: {result.rule})"
    )
    return "\n".join(lines)


def _step_name(record: Record, step_names: Mapping[int, str] | None) -> str:
    if step_names is not None and record.step in step_names:
        return step_names[record.step]
    return str(record.step)


def _num(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.6g}"


def _iso(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")
