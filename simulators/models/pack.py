"""Simulated battery pack: equivalent-circuit cells in series, vectorised with numpy.

Every series element is one equivalent-circuit cell (a parallel group of ``parallel_cells``
identical cells is lumped into one element with Np times the capacity and 1/Np the resistance):

    V    = OCV(SOC) + I*R0(SOC, T) + V1 + offset        (I + = charge, as everywhere public)
    dV1  = I/C1 - V1/(R1*C1)                            exact exponential update per sub-step
    dSOC = (I - I_leak) / (3600*Q)
    C_th*dT = I^2*R0 + V1^2/R1 - hA*(T - T_amb)         exact exponential update per sub-step

Seeded random spread in capacity, R0 and initial SOC makes the cells drift apart by themselves.
``PackModel`` is pure (no clock); ``SimPack`` puts it on the bench clock and advances it lazily
whenever somebody looks, with the current chosen by whatever load is attached (the cycler).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from daq.clock import Clock
from simulators.faults import FaultPlan
from simulators.models.cells import CellTable, Chemistry, FloatArray, cell_table
from simulators.models.snapshot import PackSnapshot

# Sub-step when nothing drives SOC: relaxation and cooling are integrated exactly, so long
# steps at rest stay accurate and a six-hour rest costs tens of steps, not thousands.
_REST_SUBSTEP_S = 600.0
_MIN_CAPACITY_FRACTION = 0.05  # ageing never takes a cell below this
_SLOPE_DSOC = 1e-4


@dataclass(frozen=True, slots=True)
class CellSpread:
    """Cell-to-cell manufacturing spread: standard deviations (clipped at 3 sigma)."""

    capacity_rel: float = 0.015
    r0_rel: float = 0.05
    initial_soc: float = 0.01  # absolute SOC


NO_SPREAD = CellSpread(capacity_rel=0.0, r0_rel=0.0, initial_soc=0.0)


@dataclass(frozen=True, slots=True)
class PackParams:
    """Parameters of a simulated pack. Defaults are the demo pack: NMC 14s1p 27 Ah (48 V)."""

    chemistry: Chemistry = Chemistry.NMC
    series_cells: int = 14
    parallel_cells: int = 1
    capacity_ah: float = 27.0  # nameplate capacity of one cell
    ambient_c: float = 25.0
    initial_soc: float = 0.5
    initial_temperature_c: float | None = None  # None: start at ambient
    spread: CellSpread = field(default_factory=CellSpread)
    seed: int = 0
    fade_per_cycle: float = 0.0  # capacity fraction lost per equivalent full cycle (ageing)
    balance_threshold_v: float = 0.010  # flag cells this far above the mean while charging
    balance_current_a: float = 0.0  # bleed current of a flagged cell; 0: flag only
    max_substep_s: float = 1.0  # integration step while current flows

    def __post_init__(self) -> None:
        object.__setattr__(self, "chemistry", Chemistry(self.chemistry))
        problems = []
        if self.series_cells < 1:
            problems.append(f"series_cells must be >= 1, got {self.series_cells}")
        if self.parallel_cells < 1:
            problems.append(f"parallel_cells must be >= 1, got {self.parallel_cells}")
        if not self.capacity_ah > 0:
            problems.append(f"capacity_ah must be > 0, got {self.capacity_ah}")
        if not 0.0 <= self.initial_soc <= 1.0:
            problems.append(f"initial_soc must be within 0..1, got {self.initial_soc}")
        if not 0.0 <= self.fade_per_cycle < 1.0:
            problems.append(f"fade_per_cycle must be within 0..1, got {self.fade_per_cycle}")
        if not self.max_substep_s > 0:
            problems.append(f"max_substep_s must be > 0, got {self.max_substep_s}")
        if self.balance_current_a < 0:
            problems.append(f"balance_current_a must be >= 0, got {self.balance_current_a}")
        if problems:
            raise ValueError("PackParams: " + "; ".join(problems))

    @property
    def nominal_ah(self) -> float:
        return self.capacity_ah * self.parallel_cells


def demo_pack(**overrides: object) -> PackParams:
    """The demo bench's pack: NMC, 14 series cells (a 48 V module), 27 Ah, SOC 0.5."""
    return dataclasses.replace(PackParams(), **overrides)  # type: ignore[arg-type]


def ev_module_96s(**overrides: object) -> PackParams:
    """A 96-series NMC pack (about 355 V nominal), 27 Ah, for big-pack use."""
    return dataclasses.replace(PackParams(series_cells=96), **overrides)  # type: ignore[arg-type]


class PackModel:
    """Pure pack physics; time moves only through ``step``. Cell numbers in the fault API are
    1-based, like the ``cell{n}_v`` / ``temp{n}_c`` channels."""

    def __init__(self, params: PackParams) -> None:
        self.params = params
        self.table: CellTable = cell_table(params.chemistry)
        self.ambient_c = params.ambient_c  # settable: a climate chamber changing temperature
        ns = params.series_cells
        rng = np.random.default_rng(params.seed)

        def spread(sigma: float) -> FloatArray:
            return np.clip(rng.standard_normal(ns), -3.0, 3.0) * sigma

        group_ah = params.nominal_ah
        self._capacity0_as = group_ah * 3600.0 * (1.0 + spread(params.spread.capacity_rel))
        self._capacity_as = self._capacity0_as.copy()
        resistance_scale = self.table.reference_capacity_ah / group_ah
        self._r_scale = resistance_scale * np.maximum(1.0 + spread(params.spread.r0_rel), 0.2)
        thermal_scale = group_ah / self.table.reference_capacity_ah
        self._heat_capacity = self.table.heat_capacity_j_per_k * thermal_scale
        self._heat_transfer = self.table.heat_transfer_w_per_k * thermal_scale
        self._soc_lo, self._soc_hi = self.table.soc_limits
        self._soc = np.clip(params.initial_soc + spread(params.spread.initial_soc), 0.0, 1.0)
        self._v1 = np.zeros(ns)
        t0 = params.ambient_c if params.initial_temperature_c is None else params.initial_temperature_c
        self._temp = np.full(ns, float(t0))
        self._current = 0.0
        self._throughput_as = 0.0
        # fault state
        self._offset_v = np.zeros(ns)
        self._drift_v_per_s = np.zeros(ns)
        self._leak_a = np.zeros(ns)
        self._heat_rate_c_per_s = np.zeros(ns)
        self._sensor_open = np.zeros(ns, dtype=bool)
        self._faults_active = False  # any drift, leak or heating: skips their arithmetic when not
        self._table_arrays()
        self._refresh()

    def _table_arrays(self) -> None:
        t = self.table
        self._rc_soc = np.asarray(t.rc_soc)
        self._r0_tab = np.asarray(t.r0_ohm)
        self._r1_tab = np.asarray(t.r1_ohm)
        self._tau_tab = np.asarray(t.tau1_s)
        self._t_grid = np.asarray(t.r0_temperature_c)
        self._t_factor = np.asarray(t.r0_temperature_factor)
        self._ocv_soc = np.asarray(t.ocv_soc)
        self._ocv_tab = np.asarray(t.ocv_v)

    def _refresh(self) -> None:
        """Recompute the state-dependent parameters (OCV, R0, R1, tau) once per sub-step."""
        soc = self._soc
        self._ocv = np.interp(soc, self._ocv_soc, self._ocv_tab)
        self._r1 = np.interp(soc, self._rc_soc, self._r1_tab) * self._r_scale
        self._tau = np.interp(soc, self._rc_soc, self._tau_tab)
        self._r0 = (
            np.interp(soc, self._rc_soc, self._r0_tab)
            * self._r_scale
            * np.interp(self._temp, self._t_grid, self._t_factor)
        )

    # --- time -----------------------------------------------------------------------------

    def step(self, current_a: float, dt_s: float) -> None:
        """Apply ``current_a`` (+ = charge) for ``dt_s`` seconds, sub-stepping internally."""
        if dt_s < 0 or not math.isfinite(dt_s):
            raise ValueError(f"dt_s must be a finite number >= 0, got {dt_s}")
        if not math.isfinite(current_a):
            raise ValueError(f"current_a must be finite, got {current_a}")
        self._current = float(current_a)
        if dt_s == 0:
            return
        moving = current_a != 0 or self.params.balance_current_a > 0 or self._faults_active
        max_h = self.params.max_substep_s if moving else _REST_SUBSTEP_S
        n = max(1, math.ceil(dt_s / max_h - 1e-9))
        h = dt_s / n
        for _ in range(n):
            self._substep(self._current, h)

    def set_current(self, current_a: float) -> None:
        """Change the present current without time passing (it moves the terminal voltage)."""
        self.step(current_a, 0.0)

    def _substep(self, i: float, h: float) -> None:
        e = np.exp(-h / self._tau)
        v1_old = self._v1
        v1_new = v1_old * e + (i * (1.0 - e)) * self._r1
        # heat: Joule in R0 plus the RC branch (V1^2/R1, averaged over the step) plus faults
        heat_w = (i * i) * self._r0 + (0.5 * (v1_old * v1_old + v1_new * v1_new)) / self._r1
        if self._faults_active:
            heat_w += self._heat_capacity * self._heat_rate_c_per_s
            self._offset_v += self._drift_v_per_s * h
        t_final = self.ambient_c + heat_w / self._heat_transfer
        decay = math.exp(-h * self._heat_transfer / self._heat_capacity)
        self._temp = t_final + (self._temp - t_final) * decay
        self._v1 = v1_new
        cell_current = i - self._leak_a if self._faults_active else i
        if self.params.balance_current_a > 0:
            cell_current = cell_current - self.params.balance_current_a * self._balancing_mask()
        self._soc = (self._soc + cell_current * h / self._capacity_as).clip(self._soc_lo, self._soc_hi)
        self._throughput_as += abs(i) * h
        if self.params.fade_per_cycle:
            fade = self.params.fade_per_cycle * self.equivalent_full_cycles
            self._capacity_as = self._capacity0_as * max(_MIN_CAPACITY_FRACTION, 1.0 - fade)
        self._refresh()

    # --- what the pack looks like now ------------------------------------------------------

    @property
    def series_cells(self) -> int:
        return self.params.series_cells

    @property
    def current_a(self) -> float:
        return self._current

    @property
    def cell_voltages_v(self) -> FloatArray:
        return self._ocv + self._current * self._r0 + self._v1 + self._offset_v

    @property
    def pack_voltage_v(self) -> float:
        return float(self.cell_voltages_v.sum())

    @property
    def cell_ocvs_v(self) -> FloatArray:
        """Electrochemical open-circuit voltage of each cell (without fault offsets)."""
        return self._ocv.copy()

    @property
    def socs(self) -> FloatArray:
        """True state of charge per cell; leaves 0..1 when a cell is over-(dis)charged."""
        return self._soc.copy()

    @property
    def soc(self) -> float:
        return float(self._soc.mean())

    @property
    def temperatures_c(self) -> FloatArray:
        """True cell temperatures."""
        return self._temp.copy()

    @property
    def sensor_temperatures_c(self) -> FloatArray:
        """Temperatures as the BMS thermistors read them: NaN where a thermistor is open."""
        return np.where(self._sensor_open, np.nan, self._temp)

    @property
    def capacities_ah(self) -> FloatArray:
        """Present (possibly faded) capacity of each series element."""
        return self._capacity_as / 3600.0

    @property
    def nominal_ah(self) -> float:
        return self.params.nominal_ah

    @property
    def remaining_ah(self) -> float:
        return float(np.mean(np.clip(self._soc, 0.0, 1.0) * self._capacity_as) / 3600.0)

    @property
    def equivalent_full_cycles(self) -> float:
        return self._throughput_as / 3600.0 / (2.0 * self.params.nominal_ah)

    @property
    def resistances_ohm(self) -> tuple[FloatArray, FloatArray]:
        """Present (R0, R1) per cell."""
        return self._r0.copy(), self._r1.copy()

    def _balancing_mask(self) -> FloatArray:
        if self._current <= 0:
            return np.zeros(self.series_cells)
        v = self.cell_voltages_v
        return (v > v.mean() + self.params.balance_threshold_v).astype(float)

    @property
    def balancing(self) -> tuple[bool, ...]:
        """Passive balancing flags: while charging, cells above mean + threshold."""
        return tuple(bool(b) for b in self._balancing_mask())

    def open_circuit_voltage(self, soc: float) -> float:
        """Pack open-circuit voltage if every cell sat at ``soc`` (no spread, no offsets)."""
        return float(self.table.ocv(soc)) * self.series_cells

    def terminal_response(self, dt_s: float) -> tuple[float, float]:
        """Pack terminal voltage at the end of a step of ``dt_s`` at constant current I is
        ``v0 + r * I`` (to first order in the OCV change). Returns ``(v0, r)``; ``dt_s = 0``
        gives the instantaneous response (present OCV, V1 and R0)."""
        if dt_s <= 0:
            return float((self._ocv + self._v1 + self._offset_v).sum()), float(self._r0.sum())
        e = np.exp(-dt_s / self._tau)
        d_soc_per_a = dt_s / self._capacity_as
        # local dOCV/dSOC by a forward difference (exact inside a table segment)
        slope = (np.interp(self._soc + _SLOPE_DSOC, self._ocv_soc, self._ocv_tab) - self._ocv) / _SLOPE_DSOC
        v0 = self._ocv + self._v1 * e + self._offset_v
        if self._faults_active:
            v0 = v0 + self._drift_v_per_s * dt_s - slope * self._leak_a * d_soc_per_a
        r = self._r0 + self._r1 * (1.0 - e) + slope * d_soc_per_a
        return float(v0.sum()), float(r.sum())

    def current_for_voltage(self, target_v: float, dt_s: float = 0.0) -> float:
        """The current (+ = charge) that brings the pack terminal voltage to ``target_v``
        (at the end of a step of ``dt_s``; instantly when 0)."""
        v0, r = self.terminal_response(dt_s)
        return (target_v - v0) / r

    def snapshot(self, t_s: float) -> PackSnapshot:
        cell_v = self.cell_voltages_v
        socs = np.clip(self._soc, 0.0, 1.0)
        return PackSnapshot(
            t_s=t_s,
            voltage_v=float(cell_v.sum()),
            current_a=self._current,
            soc=float(socs.mean()),
            cell_voltages_v=tuple(cell_v.tolist()),
            cell_socs=tuple(socs.tolist()),
            cell_temperatures_c=tuple(self.sensor_temperatures_c.tolist()),
            ambient_c=self.ambient_c,
            remaining_ah=self.remaining_ah,
            nominal_ah=self.nominal_ah,
            balancing=self.balancing,
            cycles=self.equivalent_full_cycles,
        )

    # --- fault hooks (1-based cell / sensor numbers) ---------------------------------------

    def _index(self, number: int, what: str = "cell") -> int:
        if not 1 <= number <= self.series_cells:
            raise ValueError(f"{what} number {number} out of range 1..{self.series_cells}")
        return number - 1

    def drift_cell_voltage(self, cell: int, volts_per_s: float) -> None:
        """Ramp an offset onto one cell's voltage (seen by the BMS and in the pack voltage)."""
        self._drift_v_per_s[self._index(cell)] = volts_per_s
        self._update_faults_active()

    def set_cell_leak(self, cell: int, current_a: float) -> None:
        """Internal self-discharge of one cell (A); its SOC and voltage fall behind the others."""
        self._leak_a[self._index(cell)] = current_a
        self._update_faults_active()

    def set_thermistor_open(self, sensor: int, is_open: bool = True) -> None:
        """An open thermistor: that sensor reads NaN (the BMS encoder sends its sentinel)."""
        self._sensor_open[self._index(sensor, "sensor")] = is_open

    def set_cell_heating(self, cell: int, rate_c_per_s: float) -> None:
        """Extra heat in one cell, as the temperature rise rate it would cause alone."""
        self._heat_rate_c_per_s[self._index(cell)] = rate_c_per_s
        self._update_faults_active()

    def clear_faults(self) -> None:
        for array in (self._offset_v, self._drift_v_per_s, self._leak_a, self._heat_rate_c_per_s):
            array[:] = 0.0
        self._sensor_open[:] = False
        self._faults_active = False

    def _update_faults_active(self) -> None:
        self._faults_active = bool(self._drift_v_per_s.any() or self._leak_a.any() or self._heat_rate_c_per_s.any())


class TerminalLoad(Protocol):
    """Whatever is connected to the pack terminals and decides the current (the cycler).

    ``SimPack`` calls it once per control step: ``choose_current`` before the step (with the
    step length, so a regulator can solve for the voltage at its end), ``on_stepped`` after it.
    Neither may call back into the ``SimPack``.
    """

    def max_step_s(self) -> float: ...

    def next_event_s(self) -> float: ...

    def choose_current(self, model: PackModel, dt_s: float) -> float: ...

    def on_stepped(self, model: PackModel, current_a: float, dt_s: float, t_s: float) -> None: ...


_EPS_S = 1e-9


class SimPack:
    """A ``PackModel`` on the bench clock, shared by every simulated device of one bench.

    It advances lazily to ``clock.monotonic()`` whenever it is read. The current comes from the
    attached ``TerminalLoad`` if there is one, else from ``set_current``. Scheduled faults in
    ``fault_plan`` are applied exactly at their simulated time.
    """

    def __init__(self, model: PackModel, clock: Clock, *, fault_plan: FaultPlan | None = None) -> None:
        self.model = model
        self.clock = clock
        self.fault_plan = fault_plan if fault_plan is not None else FaultPlan()
        self._t = clock.monotonic()
        self._held_current = 0.0
        self._load: TerminalLoad | None = None
        self._advancing = False

    @property
    def t_s(self) -> float:
        return self._t

    @property
    def applied_current_a(self) -> float:
        return self.model.current_a

    @property
    def load(self) -> TerminalLoad | None:
        return self._load

    def set_current(self, current_a: float) -> None:
        """Hold ``current_a`` (+ = charge) from now on; only without an attached load."""
        if self._load is not None:
            raise RuntimeError("SimPack.set_current: a load (cycler) is attached and sets the current")
        self.advance()
        self._held_current = float(current_a)
        self.model.set_current(self._held_current)

    def attach_load(self, load: TerminalLoad) -> None:
        if self._load is not None and self._load is not load:
            raise RuntimeError("SimPack.attach_load: another load is already attached to this pack")
        self.advance()
        self._load = load

    def detach_load(self) -> None:
        self.advance()
        self._load = None
        self.model.set_current(self._held_current)

    def advance(self) -> float:
        """Bring the pack to the clock's present time; returns that time."""
        return self.advance_to(self.clock.monotonic())

    def advance_to(self, t_s: float) -> float:
        if self._advancing:
            raise RuntimeError("SimPack.advance: re-entered from a load callback or fault action")
        self._advancing = True
        try:
            self.fault_plan.apply_due(self._t)
            while t_s - self._t > _EPS_S:
                self._advance_one(t_s)
        finally:
            self._advancing = False
        return self._t

    def _advance_one(self, t_s: float) -> None:
        load = self._load
        end = t_s
        for event in (self.fault_plan.next_at_s, load.next_event_s() if load else math.inf):
            if self._t + _EPS_S < event < end:
                end = event
        if load is None:
            self.model.step(self._held_current, end - self._t)
            self._t = end
        else:
            end = min(end, self._t + load.max_step_s())
            dt = end - self._t
            current = load.choose_current(self.model, dt)
            self.model.step(current, dt)
            self._t = end
            load.on_stepped(self.model, current, dt, end)
        self.fault_plan.apply_due(self._t)

    def reapply_load(self) -> None:
        """Let the load re-decide the current now, without time passing (after a setpoint
        change, so the output reacts before the next step)."""
        if self._load is None:
            return
        if self._advancing:
            raise RuntimeError("SimPack.reapply_load: called from inside advance")
        current = self._load.choose_current(self.model, 0.0)
        self.model.set_current(current)
        self._load.on_stepped(self.model, current, 0.0, self._t)

    def snapshot(self) -> PackSnapshot:
        return self.model.snapshot(self.advance())
