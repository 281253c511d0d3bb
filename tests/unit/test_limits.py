"""Limit-set files: validation, error messages with field paths, per-step tightening."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from daq.errors import ConfigError
from daq.safety import LimitSet, load_limits, tighten

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "limits"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "limits.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def config_problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_limits(path)
    assert all(line.startswith(f"{path}: ") for line in info.value.problems)
    return [line.removeprefix(f"{path}: ") for line in info.value.problems]


BASE = LimitSet(
    cell_voltage_max_v={"warn": 4.22, "trip": 4.25, "persistence_s": 1.0},
    cell_voltage_min_v={"warn": 2.9, "trip": 2.8},
    charge_current_max_a={"warn": 29.7, "trip": 32.4},
    data_age_max_s={"trip": 5.0},
    temperature_rise_max_c_per_s={"trip": 1.0, "window_s": 1.0},
)


def test_shipped_limit_sets_load():
    demo = load_limits(CONFIGS / "demo_nmc_14s.yaml")
    strict = load_limits(CONFIGS / "strict_spec.yaml")
    assert demo.cell_voltage_max_v is not None and demo.cell_voltage_max_v.trip == 4.25
    assert demo.cell_voltage_min_v is not None and demo.cell_voltage_min_v.trip == 2.8
    assert demo.temperature_rise_max_c_per_s is not None
    assert (demo.temperature_rise_max_c_per_s.trip, demo.temperature_rise_max_c_per_s.persistence_s) == (1.0, 3.0)
    assert demo.data_age_max_s is not None and demo.data_age_max_s.trip == 5.0
    assert strict.cell_voltage_max_v is not None and strict.cell_voltage_max_v.trip < 4.25
    charge = demo.for_step("charge")
    assert charge.cell_temperature_min_c is not None and charge.cell_temperature_min_c.trip == 0.0
    assert charge.cell_voltage_max_v == demo.cell_voltage_max_v  # inherited
    assert demo.for_step("no such step") is demo


def test_limit_sets_are_frozen():
    with pytest.raises(ValidationError):
        BASE.name = "other"  # type: ignore[misc]


def test_unknown_field_names_its_path_and_suggests(tmp_path):
    problems = config_problems(
        tmp_path, "cell_votlage_max_v: {trip: 4.25}\ncell_voltage_min_v: {trip: 2.8, persist_s: 1}\n"
    )
    hint = "unknown key; check the spelling"
    assert any(p.startswith(f"cell_votlage_max_v: {hint} (did you mean 'cell_voltage_max_v'?)") for p in problems)
    assert any(p.startswith(f"cell_voltage_min_v.persist_s: {hint} (did you mean 'persistence_s'?)") for p in problems)


def test_warning_must_come_before_trip(tmp_path):
    problems = config_problems(
        tmp_path, "cell_voltage_max_v: {warn: 4.3, trip: 4.25}\ncell_voltage_min_v: {warn: 2.7, trip: 2.8}\n"
    )
    assert problems == [
        "cell_voltage_max_v: warn 4.3 must be below trip 4.25: a warning comes first",
        "cell_voltage_min_v: warn 2.7 must be above trip 2.8: a warning comes first",
    ]


def test_min_must_be_below_max(tmp_path):
    problems = config_problems(
        tmp_path, "cell_temperature_max_c: {trip: 5}\ncell_temperature_min_c: {warn: 5, trip: 0}\n"
    )
    assert problems == ["cell_temperature_min_c (5.0) must be below cell_temperature_max_c (5.0)"]


def test_type_errors_and_empty_limits_name_the_field(tmp_path):
    problems = config_problems(
        tmp_path,
        "pack_voltage_max_v: {trip: lots}\ndata_age_max_s_per_device:\n  bms-1: {}\n"
        "temperature_rise_max_c_per_s: {trip: 1, window_s: 0}\n",
    )
    assert any(p.startswith("pack_voltage_max_v.trip: Input should be a valid number") for p in problems)
    assert "data_age_max_s_per_device.bms-1: give warn, trip or both" in problems
    assert any(p.startswith("temperature_rise_max_c_per_s.window_s: ") for p in problems)


def test_step_override_looser_than_global_is_an_error(tmp_path):
    problems = config_problems(
        tmp_path,
        """
cell_voltage_max_v: {warn: 4.22, trip: 4.25, persistence_s: 1.0}
cell_voltage_min_v: {trip: 2.8}
steps:
  charge:
    cell_voltage_max_v: {trip: 4.3, persistence_s: 2.0}
    cell_voltage_min_v: null
  rest:
    cell_voltage_max_v: {trip: 4.1}
""",
    )
    assert problems == [
        "steps.charge.cell_voltage_max_v.trip: 4.3 is higher than the global 4.25; a step may only tighten",
        "steps.charge.cell_voltage_max_v.persistence_s: 2.0 is longer than the global 1.0; a step may only tighten",
        "steps.charge.cell_voltage_min_v: removed; a step may only tighten the global limits",
        "steps.rest.cell_voltage_max_v: warn 4.22 must be below trip 4.1: a warning comes first;"
        " set warn in the step too (or warn: null)",
    ]


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "cell_voltage_max_v: {trip: 4.25\npack_voltage_max_v: {trip: 60}\n")
    with pytest.raises(ConfigError) as info:
        load_limits(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:2:") and "not valid YAML" in problem


def test_non_mapping_and_missing_file(tmp_path):
    assert config_problems(tmp_path, "- 1\n- 2\n") == [
        "a limit set must be a mapping of keys, not list; map limit names to limits"
    ]
    with pytest.raises(ConfigError, match=r"nope\.yaml: limit set not found"):
        load_limits(tmp_path / "nope.yaml")


def test_tighten_merges_field_by_field():
    step = tighten(BASE, {"cell_voltage_max_v": {"trip": 4.2, "warn": 4.15}, "step_duration_max_s": {"trip": 3600}})
    assert step.cell_voltage_max_v is not None
    assert (step.cell_voltage_max_v.warn, step.cell_voltage_max_v.trip) == (4.15, 4.2)
    assert step.cell_voltage_max_v.persistence_s == 1.0  # inherited
    assert step.step_duration_max_s is not None and step.step_duration_max_s.trip == 3600  # added: tighter
    assert step.cell_voltage_min_v == BASE.cell_voltage_min_v
    assert BASE.cell_voltage_max_v is not None and BASE.cell_voltage_max_v.trip == 4.25  # base untouched


def test_tighten_allows_dropping_a_warning_that_the_new_trip_covers():
    step = tighten(BASE, {"charge_current_max_a": {"trip": 1.0, "warn": None}})
    assert step.charge_current_max_a is not None
    assert (step.charge_current_max_a.warn, step.charge_current_max_a.trip) == (None, 1.0)
    with pytest.raises(ConfigError, match=r"charge_current_max_a\.warn: removed"):
        tighten(BASE, {"charge_current_max_a": {"trip": 31.0, "warn": None}})


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"cell_voltage_min_v": {"trip": 2.7, "warn": 2.85}},
            "cell_voltage_min_v.trip: 2.7 is lower than the global 2.8",
        ),
        ({"cell_voltage_max_v": {"warn": 4.24}}, "cell_voltage_max_v.warn: 4.24 is higher than the global warn 4.22"),
        ({"data_age_max_s": {"trip": 6.0}}, "data_age_max_s.trip: 6.0 is higher than the global 5.0"),
        (
            {"data_age_max_s_per_device": {"bms-1": {"trip": 8.0}}},
            "data_age_max_s_per_device.bms-1.trip: 8.0 is higher than the global 5.0",
        ),
        ({"temperature_rise_max_c_per_s": {"window_s": 3.0}}, "window_s: cannot change per step"),
        ({"temperature_sensor_fault": {"level": "warning"}}, "temperature_sensor_fault.level: 'warning' is weaker"),
        ({"name": "other"}, "name: cannot be set per step"),
        ({"charge_current_max_a": {"trip": 10.0}}, "warn 29.7 must be below trip 10.0"),
    ],
)
def test_tighten_rejects_loosening(overrides, expected):
    with pytest.raises(ConfigError) as info:
        tighten(BASE, overrides, source="profile step 3")
    assert any(line.startswith("profile step 3: ") and expected in line for line in info.value.problems), (
        info.value.problems
    )
