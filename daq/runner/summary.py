"""Per-step results and the per-cycle summary a technician reads after a test.

A cycle's figures add up the steps that ran in it (cycle = the plan's cycle index, see
``daq.profiles.plan``). Coulombic efficiency is discharge Ah / charge Ah of the cycle, energy
efficiency discharge Wh / charge Wh (None when the cycle charged nothing). End-of-charge and
end-of-discharge voltages are the cycler voltages at the end of the cycle's last step that
mainly charged, respectively discharged. ``capacity_ah`` is the discharge Ah of the cycle's
step tagged ``capacity_measurement`` if it has one, else the cycle's discharge Ah.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from daq.runner.integrator import Totals

CAPACITY_TAG = "capacity_measurement"


def _finite_or_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else value


@dataclass(slots=True)
class StepResult:
    """What one finished step did."""

    step: int  # running step number in the run (records carry it), 1-based
    number: str  # the program step, e.g. "1.3"
    label: str
    kind: str
    cycle: int
    reason: str  # why it ended: voltage_above, current_below, time, ... or aborted/paused
    started_ns: int
    ended_ns: int
    duration_s: float  # step time: pauses and crash gaps excluded
    totals: Totals
    end_voltage_v: float
    end_current_a: float
    max_temperature_c: float
    tags: tuple[str, ...] = ()

    @property
    def direction(self) -> str:
        """'charge', 'discharge' or 'rest', by the charge the step moved (1 mAh dead band).

        A rest step is a rest whatever its edges booked: on an accelerated bench a stalled poll at the
        switch to the next charge can put several mAh into it, which made its voltage (a rested,
        discharged pack's) the cycle's end-of-charge voltage."""
        if self.kind == "rest":
            return "rest"
        t = self.totals
        if max(t.charge_ah, t.discharge_ah) < 1e-3:
            return "rest"
        return "charge" if t.charge_ah >= t.discharge_ah else "discharge"

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "number": self.number,
            "label": self.label,
            "kind": self.kind,
            "cycle": self.cycle,
            "reason": self.reason,
            "started_ns": self.started_ns,
            "ended_ns": self.ended_ns,
            "duration_s": self.duration_s,
            **self.totals.to_dict(),
            "end_voltage_v": _finite_or_none(self.end_voltage_v),
            "end_current_a": _finite_or_none(self.end_current_a),
            "max_temperature_c": _finite_or_none(self.max_temperature_c),
            "tags": list(self.tags),
        }


@dataclass(slots=True)
class CycleAccumulator:
    """The steps of one cycle so far; ``summary()`` when the cycle is over."""

    cycle: int
    started_ns: int = 0
    steps: int = 0
    totals: Totals = field(default_factory=Totals)
    duration_s: float = 0.0
    max_temperature_c: float = math.nan
    end_of_charge_v: float = math.nan
    end_of_discharge_v: float = math.nan
    capacity_ah: float | None = None
    last_ended_ns: int = 0

    def add(self, result: StepResult) -> None:
        if self.steps == 0:
            self.started_ns = result.started_ns
        self.steps += 1
        self.totals.add_totals(result.totals)
        self.duration_s += result.duration_s
        if math.isfinite(result.max_temperature_c):
            self.max_temperature_c = (
                result.max_temperature_c
                if math.isnan(self.max_temperature_c)
                else max(self.max_temperature_c, result.max_temperature_c)
            )
        direction = result.direction
        if direction == "charge":
            self.end_of_charge_v = result.end_voltage_v
        elif direction == "discharge":
            self.end_of_discharge_v = result.end_voltage_v
        if CAPACITY_TAG in result.tags:
            self.capacity_ah = result.totals.discharge_ah
        self.last_ended_ns = result.ended_ns

    def summary(self) -> dict[str, Any]:
        t = self.totals
        return {
            "cycle": self.cycle,
            "steps": self.steps,
            "started_ns": self.started_ns,
            "ended_ns": self.last_ended_ns,
            "duration_s": self.duration_s,
            **t.to_dict(),
            "capacity_ah": self.capacity_ah if self.capacity_ah is not None else t.discharge_ah,
            "coulombic_efficiency": t.discharge_ah / t.charge_ah if t.charge_ah > 1e-9 else None,
            "energy_efficiency": t.discharge_wh / t.charge_wh if t.charge_wh > 1e-9 else None,
            "max_temperature_c": _finite_or_none(self.max_temperature_c),
            "end_of_charge_v": _finite_or_none(self.end_of_charge_v),
            "end_of_discharge_v": _finite_or_none(self.end_of_discharge_v),
        }

    def to_dict(self) -> dict[str, Any]:
        """Persisted with the run so a resumed test finishes the cycle with the right figures."""
        return {
            "cycle": self.cycle,
            "started_ns": self.started_ns,
            "steps": self.steps,
            "totals": self.totals.to_dict(),
            "duration_s": self.duration_s,
            "max_temperature_c": _finite_or_none(self.max_temperature_c),
            "end_of_charge_v": _finite_or_none(self.end_of_charge_v),
            "end_of_discharge_v": _finite_or_none(self.end_of_discharge_v),
            "capacity_ah": self.capacity_ah,
            "last_ended_ns": self.last_ended_ns,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CycleAccumulator:
        def num(key: str) -> float:
            value = data.get(key)
            return math.nan if value is None else float(value)

        return cls(
            cycle=int(data["cycle"]),
            started_ns=int(data.get("started_ns", 0)),
            steps=int(data.get("steps", 0)),
            totals=Totals.from_dict(data.get("totals", {})),
            duration_s=float(data.get("duration_s", 0.0)),
            max_temperature_c=num("max_temperature_c"),
            end_of_charge_v=num("end_of_charge_v"),
            end_of_discharge_v=num("end_of_discharge_v"),
            capacity_ah=None if data.get("capacity_ah") is None else float(data["capacity_ah"]),
            last_ended_ns=int(data.get("last_ended_ns", 0)),
        )


def format_summary_table(summaries: list[dict[str, Any]]) -> list[str]:
    """The cycle summary as fixed-width text lines (for ``daq test status`` and the end of a test)."""
    if not summaries:
        return ["no cycle completed yet"]

    def f(value: Any, spec: str) -> str:
        return "—" if value is None else format(value, spec)

    lines = [
        f"{'cycle':>5} {'chg Ah':>8} {'dis Ah':>8} {'chg Wh':>9} {'dis Wh':>9} {'CE %':>6} {'EE %':>6} "
        f"{'Tmax degC':>9} {'EoC V':>7} {'EoD V':>7}"
    ]
    for s in summaries:
        ce = None if s.get("coulombic_efficiency") is None else 100 * s["coulombic_efficiency"]
        ee = None if s.get("energy_efficiency") is None else 100 * s["energy_efficiency"]
        lines.append(
            f"{s['cycle']:>5} {f(s['charge_ah'], '8.3f')} {f(s['discharge_ah'], '8.3f')} "
            f"{f(s['charge_wh'], '9.1f')} {f(s['discharge_wh'], '9.1f')} {f(ce, '6.1f')} {f(ee, '6.1f')} "
            f"{f(s.get('max_temperature_c'), '9.1f')} {f(s.get('end_of_charge_v'), '7.2f')} "
            f"{f(s.get('end_of_discharge_v'), '7.2f')}"
        )
    return lines
