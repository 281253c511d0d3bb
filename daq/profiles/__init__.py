"""Test profiles: load a profile file, check it against a bench, walk it as a resumable plan.

    profile = load_profile("configs/profiles/capacity_test.yaml")
    require_valid_profile(profile, series_cells=14, max_charge_current_a=300, max_discharge_current_a=300,
                          cell_voltage_min_v=3.0, cell_voltage_max_v=4.2, capacity_ah=27)
    plan = Plan(profile, series_cells=14, capacity_ah=27)
    cursor = plan.cursor(metrics=runner_metrics)        # or plan.cursor(PlanPosition.from_dict(saved))
    for item in cursor:                                 # item.resolved: signed pack-level setpoints
        save(cursor.position.to_dict()); run(item)

The file format and its conventions (sign, C-rates, voltage basis) are described in
``daq.profiles.model``; phrases in ``daq.profiles.phrases``.
"""

from daq.profiles.loader import (
    load_profile,
    profile_from_dict,
    read_series_csv,
    require_valid_profile,
    validate_profile,
)
from daq.profiles.model import (
    CccvStep,
    CcStep,
    CpStep,
    CurrentProfileStep,
    CvStep,
    CycleConditions,
    EndConditions,
    LeafStep,
    LoopStep,
    PowerProfileStep,
    Profile,
    PulseStep,
    RestStep,
    Step,
    TimeSeries,
    describe_step,
    direction_sign,
)
from daq.profiles.phrases import PhraseError, parse_phrase
from daq.profiles.plan import (
    CycleMetrics,
    EndLimits,
    Plan,
    PlanCursor,
    PlanItem,
    PlanPosition,
    PlanStep,
    ResolvedStep,
    Scale,
    Waveform,
    resolve_step,
)

__all__ = [
    "CcStep",
    "CccvStep",
    "CpStep",
    "CurrentProfileStep",
    "CvStep",
    "CycleConditions",
    "CycleMetrics",
    "EndConditions",
    "EndLimits",
    "LeafStep",
    "LoopStep",
    "PhraseError",
    "Plan",
    "PlanCursor",
    "PlanItem",
    "PlanPosition",
    "PlanStep",
    "PowerProfileStep",
    "Profile",
    "PulseStep",
    "ResolvedStep",
    "RestStep",
    "Scale",
    "Step",
    "TimeSeries",
    "Waveform",
    "describe_step",
    "direction_sign",
    "load_profile",
    "parse_phrase",
    "profile_from_dict",
    "read_series_csv",
    "require_valid_profile",
    "resolve_step",
    "validate_profile",
]
