"""What a profile runs against: pack size, cell window and the current the bench allows.

Sources, most specific first:
    series cells   --series-cells, profile ``metadata.series_cells``, the simulated pack
    capacity       profile ``capacity_ah``, --capacity-ah, the simulated pack (x parallel cells)
    cell window    the narrowest of: profile ``metadata.cell_voltage_min_v/max_v``, the chemistry's
                   window (simulated pack, or profile ``metadata.chemistry``), the trip thresholds
                   of ``cell_voltage_min_v/max_v`` in the bench's and the profile's limit sets
    currents       the cycler register map's ``current_setpoint_a`` range, tightened by the trip
                   thresholds of ``charge/discharge_current_max_a`` in those limit sets; a cv step
                   without its own current limit is held to the warning thresholds
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from daq.config.loader import LoadedBench
from daq.errors import ConfigError
from daq.profiles import Profile, require_valid_profile
from daq.runner.steps import CurrentLimits
from daq.safety import LimitSet, load_limits

# Chemistry windows for profiles on real benches that name their chemistry (per cell, V).
_CHEMISTRY_WINDOWS = {"nmc": (3.0, 4.2), "lfp": (2.5, 3.65)}


@dataclass(frozen=True, slots=True)
class TestTarget:
    cycler: str
    series_cells: int
    capacity_ah: float | None
    cell_voltage_min_v: float
    cell_voltage_max_v: float
    currents: CurrentLimits

    def to_dict(self) -> dict[str, Any]:
        return {
            "cycler": self.cycler,
            "series_cells": self.series_cells,
            "capacity_ah": self.capacity_ah,
            "cell_voltage_min_v": self.cell_voltage_min_v,
            "cell_voltage_max_v": self.cell_voltage_max_v,
            "max_charge_current_a": self.currents.max_charge_a,
            "max_discharge_current_a": self.currents.max_discharge_a,
            "cv_current_limit_a": self.currents.cv_limit_a,
        }


def choose_cycler(loaded: LoadedBench, name: str | None) -> str:
    cyclers = [d.name for d in loaded.config.devices if d.role == "cycler" and d.enabled]
    if name is not None:
        if name not in cyclers:
            known = ", ".join(cyclers) or "none"
            raise ConfigError(f"{loaded.path}: no enabled cycler named {name!r}; use one of: {known}")
        return name
    if not cyclers:
        raise ConfigError(f"{loaded.path}: the bench has no enabled device with role: cycler; a test needs one")
    if len(cyclers) > 1:
        names = ", ".join(cyclers)
        raise ConfigError(f"{loaded.path}: the bench has several cyclers ({names}); pick one with --cycler")
    return cyclers[0]


def _limit_sets(loaded: LoadedBench, profile: Profile) -> list[tuple[str, LimitSet]]:
    sets: list[tuple[str, LimitSet]] = []
    safety = loaded.config.safety
    if safety is not None:
        path = loaded.resolve(safety.limits, "limits")
        sets.append((str(path), load_limits(path)))
    path = profile.limits_path()
    if path is not None:
        sets.append((str(path), load_limits(path)))
    elif isinstance(profile.limits, dict):
        try:
            sets.append((f"{profile.source_name}: limits", LimitSet.model_validate(profile.limits)))
        except ValidationError as exc:
            message = exc.errors()[0]["msg"]
            raise ConfigError(f"{profile.source_name}: limits: {message}; fix the inline limit set") from exc
    return sets


def _threshold(limit: Any, *, prefer_warn: bool = False) -> float | None:
    if limit is None:
        return None
    if prefer_warn and limit.warn is not None:
        return float(limit.warn)
    return float(limit.trip) if limit.trip is not None else float(limit.warn)


def _metadata_float(profile: Profile, key: str) -> float | None:
    value = profile.metadata.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{profile.source_name}: metadata.{key} = {value!r} is not a number; fix it") from None


def resolve_target(
    loaded: LoadedBench,
    profile: Profile,
    *,
    cycler: str | None = None,
    series_cells: int | None = None,
    capacity_ah: float | None = None,
) -> TestTarget:
    name = choose_cycler(loaded, cycler)
    sim = loaded.config.simulation
    pack = sim.pack if sim is not None else None

    if series_cells is None:
        meta_cells = _metadata_float(profile, "series_cells")
        series_cells = int(meta_cells) if meta_cells is not None else (pack.series_cells if pack else None)
    if series_cells is None:
        raise ConfigError(
            f"{profile.source_name}: the pack's series cell count is unknown on bench {loaded.config.bench.id}; "
            "pass --series-cells N or set metadata.series_cells in the profile"
        )
    if capacity_ah is None and pack is not None:
        capacity_ah = pack.capacity_ah * pack.parallel_cells

    lo, hi = -math.inf, math.inf
    chemistry = pack.chemistry if pack is not None else str(profile.metadata.get("chemistry", "")).lower()
    if chemistry in _CHEMISTRY_WINDOWS:
        lo, hi = _CHEMISTRY_WINDOWS[chemistry]
    meta_lo, meta_hi = _metadata_float(profile, "cell_voltage_min_v"), _metadata_float(profile, "cell_voltage_max_v")
    lo = max(lo, meta_lo) if meta_lo is not None else lo
    hi = min(hi, meta_hi) if meta_hi is not None else hi

    regmap = loaded.regmaps[name]
    setpoint = regmap.by_name.get("current_setpoint_a")
    if setpoint is None or setpoint.range is None:
        raise ConfigError(
            f"{loaded.path}: cycler {name}'s register map has no current_setpoint_a with a range; a test needs one"
        )
    max_charge, max_discharge = max(setpoint.range[1], 0.0), max(-setpoint.range[0], 0.0)
    cv_charge, cv_discharge = max_charge, max_discharge
    for _source, limits in _limit_sets(loaded, profile):
        if (t := _threshold(limits.cell_voltage_min_v)) is not None:
            lo = max(lo, t)
        if (t := _threshold(limits.cell_voltage_max_v)) is not None:
            hi = min(hi, t)
        if (t := _threshold(limits.charge_current_max_a)) is not None:
            max_charge = min(max_charge, t)
            cv_charge = min(cv_charge, _threshold(limits.charge_current_max_a, prefer_warn=True) or t)
        if (t := _threshold(limits.discharge_current_max_a)) is not None:
            max_discharge = min(max_discharge, t)
            cv_discharge = min(cv_discharge, _threshold(limits.discharge_current_max_a, prefer_warn=True) or t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(
            f"{profile.source_name}: no cell voltage window is known for bench {loaded.config.bench.id}; set "
            "metadata.chemistry (nmc, lfp) or metadata.cell_voltage_min_v/max_v in the profile, or give the bench "
            "a safety limit set"
        )
    return TestTarget(
        cycler=name,
        series_cells=series_cells,
        capacity_ah=capacity_ah,
        cell_voltage_min_v=lo,
        cell_voltage_max_v=hi,
        currents=CurrentLimits(
            max_charge_a=max_charge, max_discharge_a=max_discharge, cv_limit_a=min(cv_charge, cv_discharge)
        ),
    )


def require_profile_fits(profile: Profile, target: TestTarget) -> None:
    """ConfigError listing every reason the profile cannot run on the target (file, step, reason)."""
    require_valid_profile(
        profile,
        series_cells=target.series_cells,
        max_charge_current_a=target.currents.max_charge_a,
        max_discharge_current_a=target.currents.max_discharge_a,
        cell_voltage_min_v=target.cell_voltage_min_v,
        cell_voltage_max_v=target.cell_voltage_max_v,
        capacity_ah=target.capacity_ah,  # type: ignore[arg-type]  # None: C-rates are reported by the plan
    )
