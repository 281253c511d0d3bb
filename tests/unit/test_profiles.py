"""Test profiles: phrases, signs, C-rates, loading, validation, plan walking and resume."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daq.errors import ConfigError
from daq.profiles import (
    CccvStep,
    CcStep,
    CpStep,
    CvStep,
    CycleMetrics,
    LoopStep,
    PhraseError,
    Plan,
    PlanPosition,
    Profile,
    PulseStep,
    RestStep,
    Scale,
    load_profile,
    parse_phrase,
    profile_from_dict,
    require_valid_profile,
    resolve_step,
    validate_profile,
)

PROFILES_DIR = Path(__file__).resolve().parents[2] / "configs" / "profiles"
DEMO_BENCH = {
    "series_cells": 14,
    "max_charge_current_a": 300.0,
    "max_discharge_current_a": 300.0,
    "cell_voltage_min_v": 3.0,
    "cell_voltage_max_v": 4.2,
    "capacity_ah": 27.0,
}
DEMO_SCALE = Scale(series_cells=14, capacity_ah=27.0)
# USABC DST as (seconds, % of peak power, + = discharge), restated from the domain notes
DST_TABLE = [
    (16, 0), (28, 12.5), (12, 25), (8, -12.5), (16, 0), (24, 12.5), (12, 25), (8, -12.5),
    (16, 0), (24, 12.5), (12, 25), (8, -12.5), (16, 0), (36, 12.5), (8, 100), (24, 62.5),
    (8, -25), (32, 25), (8, -50), (44, 0),
]  # fmt: skip


def write_profile(tmp_path: Path, body: str, name: str = "profile.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def resolved(step, scale: Scale = DEMO_SCALE):
    return resolve_step(step, scale, record_period_s=1.0)


# --- phrases ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phrase", "kind", "fields"),
    [
        ("Charge at 0.5C until 4.2 V", CcStep, {"direction": "charge", "c_rate": 0.5}),
        ("Hold at 4.2 V until C/20", CvStep, {"voltage_v": 4.2}),
        ("Rest for 30 minutes", RestStep, {"duration_s": 1800.0}),
        ("Discharge at 1C until 2.8 V", CcStep, {"direction": "discharge", "c_rate": 1.0}),
        (
            "Discharge at C/3 for 2 hours or until 2.5 V",
            CcStep,
            {"direction": "discharge", "c_rate": 1 / 3, "duration_s": 7200.0},
        ),
        ("Charge at 1 A until 4.2 V", CcStep, {"direction": "charge", "current_a": 1.0}),
        ("Discharge at 20 W for 10 minutes", CpStep, {"direction": "discharge", "power_w": 20.0, "duration_s": 600.0}),
        ("Charge at 500 mA until 4100 mV", CcStep, {"current_a": 0.5}),
        ("Discharge at 1500 mW for 90 seconds", CpStep, {"power_w": 1.5, "duration_s": 90.0}),
        ("Discharge at 2 kW for 1 hour", CpStep, {"power_w": 2000.0, "duration_s": 3600.0}),
        ("Rest for 2 hours", RestStep, {"duration_s": 7200.0}),
        ("Rest for 10 s", RestStep, {"duration_s": 10.0}),
        ("Hold at 4.2 V for 1 hour", CvStep, {"voltage_v": 4.2, "duration_s": 3600.0}),
        ("discharge  at 2C   until 3 V", CcStep, {"direction": "discharge", "c_rate": 2.0}),
    ],
)
def test_phrase_forms_parse_to_typed_steps(phrase: str, kind: type, fields: dict) -> None:
    step = parse_phrase(phrase)
    assert isinstance(step, kind)
    for name, value in fields.items():
        got = getattr(step, name)
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, name
    assert step.label == " ".join(phrase.split())


@pytest.mark.parametrize(
    ("phrase", "ends"),
    [
        ("Charge at 0.5C until 4.2 V", {"voltage_above_v": 4.2}),
        ("Discharge at 1C until 2.8 V", {"voltage_below_v": 2.8}),
        ("Charge at 500 mA until 4100 mV", {"voltage_above_v": 4.1}),
        ("Hold at 4.2 V until C/20", {"current_below_c_rate": 0.05}),
        ("Hold at 4.2 V until 50 mA", {"current_below_a": 0.05}),
        ("Discharge at 20 W until 3.0 V or 2 A", {"voltage_below_v": 3.0, "current_below_a": 2.0}),
        ("Discharge at C/3 for 2 hours or until 2.5 V", {"voltage_below_v": 2.5}),
    ],
)
def test_phrase_end_conditions_follow_the_direction(phrase: str, ends: dict[str, float]) -> None:
    until = parse_phrase(phrase).until
    set_fields = {k: v for k, v in until.model_dump().items() if v is not None}
    assert set_fields == pytest.approx(ends)


def test_record_period_suffix_sets_the_step_record_period() -> None:
    assert parse_phrase("Charge at 1C until 4.2 V (1 minute period)").record_period_s == 60.0
    assert parse_phrase("Rest for 1 hour (10 second period)").record_period_s == 10.0
    assert parse_phrase("Rest for 1 hour").record_period_s is None


@pytest.mark.parametrize(
    ("phrase", "fragment"),
    [
        ("Charge quickly", "is not a phrase this parser knows; write it like 'Charge at 0.5C until 4.2 V'"),
        ("Charge at -1 A until 4.2 V", "is negative"),
        ("Discharge at 4 Ohm for 1 hour", "constant-resistance"),
        ("Discharge at 1C until 1 hour", "put time in 'for'"),
        ("Charge at 1C until C/20", "cannot end on current"),
        ("Hold at 1 A until 4.2 V", "Hold takes a voltage"),
        ("Hold at 4.2 V until 4.1 V", "cannot end on a voltage"),
        ("Charge at 4.2 V", "to hold a voltage"),
        ("Charge at 1 parsec until 4.2 V", "not an amount"),
        ("Rest for 5 fortnights", "not a duration"),
    ],
)
def test_bad_phrases_say_what_and_how_to_fix(phrase: str, fragment: str) -> None:
    with pytest.raises(PhraseError) as info:
        parse_phrase(phrase)
    assert fragment in str(info.value)
    assert "; " in str(info.value)


# --- signs, C-rates, bases --------------------------------------------------------------------


def test_charge_is_positive_and_discharge_negative_unlike_pybamm() -> None:
    # PyBaMM counts "Discharge at 1 A" as +1 A; this project counts charge as positive.
    assert resolved(parse_phrase("Charge at 1 A until 4.2 V")).current_a == 1.0
    assert resolved(parse_phrase("Discharge at 1 A until 3.0 V")).current_a == -1.0
    assert resolved(parse_phrase("Discharge at 20 W for 10 minutes")).power_w == -20.0
    assert resolved(parse_phrase("Charge at 20 W for 10 minutes")).power_w == 20.0
    charge_pulse = PulseStep(direction="charge", c_rate=1, pulse_duration_s=10, rest_duration_s=40)
    assert resolved(charge_pulse).setpoint_at(5) == 27.0


def test_c_rates_become_amps_of_the_capacity() -> None:
    assert resolved(parse_phrase("Charge at 0.5C until 4.2 V")).current_a == pytest.approx(13.5)
    assert resolved(parse_phrase("Discharge at C/3 until 3.0 V")).current_a == pytest.approx(-9.0)
    assert resolved(parse_phrase("Hold at 4.2 V until C/20")).end.current_below_a == pytest.approx(1.35)
    assert CcStep(direction="charge", c_rate="C/3", until={"time_s": 1}).c_rate == pytest.approx(1 / 3)
    assert CcStep(direction="charge", c_rate="0.5C", until={"time_s": 1}).c_rate == 0.5


def test_profile_capacity_wins_over_the_bench_capacity() -> None:
    profile = Profile(name="p", capacity_ah=10.0, steps=[parse_phrase("Charge at 1C until 4.2 V")])
    plan = Plan(profile, series_cells=14, capacity_ah=27.0)
    assert plan.steps[0].resolved.current_a == pytest.approx(10.0)


def test_cell_voltages_are_scaled_by_series_count_and_pack_voltages_are_not() -> None:
    cccv = CccvStep(
        direction="charge", c_rate=1, voltage_v=4.2, until={"current_below_c_rate": 0.05}, record_on_delta_v=0.005
    )
    cell = resolved(cccv, Scale(series_cells=14, capacity_ah=27.0, voltage_basis="cell"))
    assert cell.voltage_v == pytest.approx(58.8)
    assert cell.record_on_delta_v == pytest.approx(0.07)
    pack = resolved(cccv, Scale(series_cells=14, capacity_ah=27.0, voltage_basis="pack"))
    assert pack.voltage_v == pytest.approx(4.2)
    discharge = resolved(parse_phrase("Discharge at 1C until 3.0 V"))
    assert discharge.end.voltage_below_v == pytest.approx(42.0)


def test_power_basis_cell_multiplies_powers() -> None:
    step = parse_phrase("Discharge at 10 W for 1 minute")
    assert resolved(step, Scale(14, 27.0, power_basis="cell")).power_w == pytest.approx(-140.0)
    assert resolved(step, Scale(14, 27.0, power_basis="pack")).power_w == pytest.approx(-10.0)


def test_pulse_waveform_and_its_natural_end() -> None:
    pulse = PulseStep(direction="discharge", c_rate=1, pulse_duration_s=10, rest_duration_s=40, count=2)
    step = resolved(pulse)
    assert [step.setpoint_at(t) for t in (0, 9.9, 10, 49.9, 50, 59, 60)] == [-27, -27, 0, 0, -27, -27, 0]
    assert step.end.time_s == 100


# --- loading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(PROFILES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_profiles_load_and_validate_on_the_demo_pack(path: Path) -> None:
    profile = load_profile(path)
    assert profile.source_path == path
    assert validate_profile(profile, **DEMO_BENCH) == []
    plan = Plan(profile, series_cells=14, capacity_ah=27.0)
    assert plan.steps, "a shipped profile has steps"
    assert path.read_text(encoding="utf-8").startswith("#"), "header comment on the source"


def test_shipped_profiles_are_all_there() -> None:
    names = {p.name for p in PROFILES_DIR.glob("*.yaml")}
    assert {"capacity_test.yaml", "cycle_life.yaml", "hppc.yaml", "dst_drive_cycle.yaml", "ci_cycle_3x.yaml"} <= names


def test_dst_csv_is_the_usabc_table_with_signs_converted() -> None:
    profile = load_profile(PROFILES_DIR / "dst_drive_cycle.yaml")
    dst = next(s for s in Plan(profile, series_cells=14, capacity_ah=27).steps if s.step.kind == "power_profile")
    waveform = dst.resolved.waveform
    assert waveform is not None and waveform.period_s == 360
    peak_w = 300 * 14
    # 8 s at 100 % discharge starting at 236 s; 8 s of 50 % regen starting at 308 s
    assert waveform.value_at(240) == pytest.approx(-peak_w)
    assert waveform.value_at(310) == pytest.approx(0.5 * peak_w)
    assert waveform.value_at(20) == pytest.approx(-0.125 * peak_w)
    assert waveform.value_at(360 + 240) == pytest.approx(-peak_w), "repeat: forever wraps around"
    # every segment of the USABC table (DOMAIN.md, + = discharge there) at its midpoint
    t = 0.0
    for duration_s, pct_discharge in DST_TABLE:
        assert waveform.value_at(t + duration_s / 2) == pytest.approx(-pct_discharge / 100 * peak_w), t
        t += duration_s
    assert t == 360
    assert dst.resolved.end.time_s == 36000


def test_unknown_phrase_names_file_step_phrase_and_an_example(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path,
        """
        name: t
        steps:
          - Rest for 1 minute
          - kind: loop
            repeat: 2
            steps:
              - Rest for 1 minute
              - Charge really fast
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    (line,) = info.value.problems
    assert line.startswith(f"{path}: step 2.2 (Charge really fast): ")
    assert "'Charge at 0.5C until 4.2 V'" in line


def test_form_errors_are_collected_one_line_each(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path,
        """
        name: t
        colour: blue
        voltage_basis: module
        steps:
          - kind: cc
            direction: charge
            c_rate: 1
            current_a: 5
            until: [voltage_above_v: 4.2]
          - kind: zap
          - kind: rest
            duraton_s: 5
          - kind: cc
            direction: charge
            until: [voltage_abov_v: 4.2]
          - 42
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    problems = info.value.problems
    expected = [
        f"{path}: step 1 (cc): both current_a and c_rate are set; keep one",
        f"{path}: step 2 (zap): unknown kind 'zap'; use kind: one of rest, cc,",
        f"{path}: step 3 (rest): duraton_s: unknown key; check the spelling (did you mean 'duration_s'?)",
        f"{path}: step 4 (cc): until.voltage_abov_v: unknown key; check the spelling (did you mean 'voltage_above_v'?)",
        f"{path}: step 5: 42 is neither a phrase nor a mapping;",
        f"{path}: colour: unknown key; check the spelling; allowed: name, description,",
        f"{path}: voltage_basis = 'module' is not valid; it should be 'cell' or 'pack'",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected)
    assert all("\n" not in p for p in problems)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write_profile(tmp_path, "name: t\nsteps:\n  - kind: rest\n   duration_s: 3\n")
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    assert str(info.value).startswith(f"{path}:4:")
    assert "YAML syntax error" in str(info.value)


def test_missing_profile_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="profile file not found; check the path"):
        load_profile(tmp_path / "nope.yaml")


def series_profile(tmp_path: Path, csv_text: str, quantity_kind: str = "current_profile") -> Path:
    (tmp_path / "drive.csv").write_text(textwrap.dedent(csv_text), encoding="utf-8")
    return write_profile(
        tmp_path,
        f"""
        name: t
        steps:
          - kind: {quantity_kind}
            label: drive
            file: drive.csv
        """,
    )


def test_csv_time_series_loads_relative_to_the_profile(tmp_path: Path) -> None:
    path = series_profile(tmp_path, "# comment\ntime_s,current_a\n0,-10\n10,10\n\n20,0\n")
    profile = load_profile(path)
    step = Plan(profile, series_cells=14, capacity_ah=27).steps[0].resolved
    assert step.setpoint_at(5) == pytest.approx(0.0), "linear interpolation by default"
    assert step.setpoint_at(15) == pytest.approx(5.0)
    assert step.end.time_s == 20


def test_csv_errors_name_file_and_line(tmp_path: Path) -> None:
    path = series_profile(tmp_path, "time_s,current_a\n0,1\n5,abc\n5,2\n4,1\n7,nan\n8,1,2\n")
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    csv_path = tmp_path / "drive.csv"
    problems = info.value.problems
    assert problems[0] == f"{csv_path}:3: 'abc' in current_a is not a finite number; fix the value"
    assert problems[1].startswith(f"{csv_path}:5: time_s 4 does not come after 5 (line 4); times must strictly")
    assert problems[2] == f"{csv_path}:6: 'nan' in current_a is not a finite number; fix the value"
    assert problems[3].startswith(f"{csv_path}:7: 3 columns;")
    assert len(problems) == 4


def test_csv_header_must_fit_the_step_kind(tmp_path: Path) -> None:
    path = series_profile(tmp_path, "time_s,power_w\n0,1\n5,1\n", quantity_kind="current_profile")
    with pytest.raises(ConfigError, match=r"drive.csv:1: header 'time_s,power_w' is not 'time_s,<quantity>'"):
        load_profile(path)


def test_missing_csv_file(tmp_path: Path) -> None:
    path = write_profile(tmp_path, "name: t\nsteps:\n  - {kind: power_profile, file: gone.csv}\n")
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    assert info.value.problems == [
        f"{tmp_path / 'gone.csv'}: time-series file not found; put the CSV next to the profile or fix the "
        "path (it is relative to the profile file)"
    ]


# --- validation against the bench -------------------------------------------------------------


def problems_for(tmp_path: Path, steps_yaml: str, header: str = "") -> tuple[Path, list[str]]:
    body = f"name: t\n{header}steps:\n" + textwrap.indent(textwrap.dedent(steps_yaml), "  ")
    path = write_profile(tmp_path, body)
    return path, validate_profile(load_profile(path), **DEMO_BENCH)


def test_too_much_current_names_step_amps_and_limit(tmp_path: Path) -> None:
    path, problems = problems_for(
        tmp_path,
        """
        - Charge at 12C until 4.2 V
        - kind: loop
          repeat: 2
          steps:
            - {kind: cc, direction: discharge, current_a: 301, label: big discharge, until: [time_s: 5]}
        - Discharge at 20 kW for 10 seconds
        """,
    )
    assert problems == [
        f"{path}: step 1 (Charge at 12C until 4.2 V): charges at 324 A (12C of 27 Ah) but the cycler and "
        "limit set allow 300 A; lower the current to at most 300 A (11.1C)",
        f"{path}: step 2.1 (big discharge): discharges at 301 A (11.1C of 27 Ah) but the cycler and limit "
        "set allow 300 A; lower the current to at most 300 A (11.1C)",
        f"{path}: step 3 (Discharge at 20 kW for 10 seconds): discharges at 340.1 A (12.6C of 27 Ah) but "
        "the cycler and limit set allow 300 A; lower the current to at most 300 A (11.1C)",
    ]


def test_time_series_peaks_are_checked_per_direction(tmp_path: Path) -> None:
    (tmp_path / "drive.csv").write_text("time_s,current_a\n0,-250\n10,310\n20,0\n", encoding="utf-8")
    path, problems = problems_for(tmp_path, "- {kind: current_profile, file: drive.csv}\n")
    assert problems == [
        f"{path}: step 1 (current_profile drive.csv): charges at 310 A (11.5C of 27 Ah) but the cycler and "
        "limit set allow 300 A; lower the current to at most 300 A (11.1C)"
    ]


def test_voltage_ends_outside_the_cell_window(tmp_path: Path) -> None:
    path, problems = problems_for(
        tmp_path,
        """
        - Charge at 1C until 4.3 V
        - Discharge at 1C until 2.5 V
        - Hold at 4.25 V until C/20
        - Charge at 1C until 4.2 V
        """,
    )
    assert problems == [
        f"{path}: step 1 (Charge at 1C until 4.3 V): until voltage_above_v 4.3 V per cell is outside the cell "
        "window 3-4.2 V per cell, so the limits would trip before the step ends; use a voltage inside the window",
        f"{path}: step 2 (Discharge at 1C until 2.5 V): until voltage_below_v 2.5 V per cell is outside the "
        "cell window 3-4.2 V per cell, so the limits would trip before the step ends; use a voltage inside "
        "the window",
        f"{path}: step 3 (Hold at 4.25 V until C/20): voltage_v 4.25 V per cell is outside the cell window "
        "3-4.2 V per cell, so the limits would trip before the step ends; use a voltage inside the window",
    ]


def test_pack_basis_voltages_are_checked_against_the_pack_window(tmp_path: Path) -> None:
    path, problems = problems_for(
        tmp_path, "- Charge at 1C until 60 V\n- Discharge at 1C until 42 V\n", header="voltage_basis: pack\n"
    )
    assert problems == [
        f"{path}: step 1 (Charge at 1C until 60 V): until voltage_above_v 60 V at the pack is outside the cell "
        "window 3-4.2 V per cell (42-58.8 V for 14 cells), so the limits would trip before the step ends; "
        "use a voltage inside the window"
    ]


def test_steps_that_can_never_end(tmp_path: Path) -> None:
    (tmp_path / "drive.csv").write_text("time_s,power_w\n0,-100\n10,0\n", encoding="utf-8")
    path, problems = problems_for(
        tmp_path,
        """
        - {kind: cc, direction: discharge, c_rate: 1}
        - {kind: cv, voltage_v: 4.2, until: [voltage_above_v: 4.2]}
        - {kind: cccv, direction: charge, c_rate: 1, voltage_v: 4.2, until: [voltage_above_v: 4.1]}
        - {kind: rest}
        - {kind: power_profile, file: drive.csv, repeat: forever}
        - {kind: cc, direction: charge, c_rate: 1, until: [voltage_below_v: 3.5]}
        """,
    )
    assert problems == [
        f"{path}: step 1 (cc discharge 1C): no end condition and no duration, so the step never ends; add "
        "duration_s or until: [voltage_below_v: 3.0]",
        f"{path}: step 2 (cv 4.2 V): the constant-voltage phase ends only on current or time and has neither; "
        "add until: [current_below_c_rate: 0.05] (C/20) or duration_s",
        f"{path}: step 3 (cccv charge 1C 4.2 V): the constant-voltage phase ends only on current or time and "
        "has neither; add until: [current_below_c_rate: 0.05] (C/20) or duration_s",
        f"{path}: step 4 (rest): no end condition and no duration, so the step never ends; add duration_s or "
        "until: [time_s: 1800]",
        f"{path}: step 5 (power_profile drive.csv): repeat: forever with no end condition never ends; add "
        "until: [voltage_below_v: ...] or duration_s, or give repeat: N",
        f"{path}: step 6 (cc charge 1C): a charge step ends on voltage_below_v, but charging raises the "
        "voltage; use voltage_above_v",
    ]


def test_loops_without_an_end_and_empty_steps(tmp_path: Path) -> None:
    path, problems = problems_for(
        tmp_path,
        """
        - kind: loop
          label: forever
          steps: [Rest for 1 minute]
        - kind: loop
          repeat: 3
          steps: []
        - kind: loop
          label: ageing
          until: {discharge_capacity_below_pct: 80}
          steps: [Charge at 1C until 4.2 V]
        """,
    )
    assert problems == [
        f"{path}: step 1 (forever): the loop has neither repeat nor until, so nothing says when it stops; "
        "add repeat: N and/or until: {discharge_capacity_below_pct: 80}",
        f"{path}: step 2 (loop x3): the loop has no steps; add steps under it or remove the loop",
        f"{path}: step 3 (ageing): the loop ends on discharge capacity but has no discharge step inside, so "
        "the condition is never met; add a discharge step to the loop or use repeat: N",
    ]
    empty = write_profile(tmp_path, "name: empty\nsteps: []\n", name="empty.yaml")
    (line,) = validate_profile(load_profile(empty), **DEMO_BENCH)
    assert line.startswith(f"{empty}: steps is empty; add at least one step")


def test_require_valid_profile_raises_with_every_problem(tmp_path: Path) -> None:
    path = write_profile(tmp_path, "name: t\nsteps:\n  - Charge at 20C until 4.5 V\n  - {kind: rest}\n")
    with pytest.raises(ConfigError) as info:
        require_valid_profile(load_profile(path), **DEMO_BENCH)
    assert len(info.value.problems) == 3
    assert all(p.startswith(f"{path}: step ") for p in info.value.problems)


# --- plan: loops, cycles, resume --------------------------------------------------------------


def walk(cursor) -> list[tuple]:
    return [(i.number, i.step_index, i.cycle_index, i.loop_counters, i.step_count) for i in cursor]


def test_loop_expansion_and_cycle_index() -> None:
    profile = Profile(
        name="p",
        steps=[
            parse_phrase("Rest for 1 minute"),
            LoopStep(repeat=2, steps=[parse_phrase("Charge at 1C until 4.2 V"), parse_phrase("Rest for 1 minute")]),
            parse_phrase("Rest for 2 minutes"),
        ],
    )
    assert walk(Plan(profile, series_cells=14, capacity_ah=27)) == [
        ("1", 0, 0, (), 0),
        ("2.1", 1, 1, (0,), 1),
        ("2.2", 2, 1, (0,), 2),
        ("2.1", 1, 2, (1,), 3),
        ("2.2", 2, 2, (1,), 4),
        ("3", 3, 3, (), 5),
    ]


def test_nested_loops_count_cycles_once_per_boundary() -> None:
    profile = load_profile(PROFILES_DIR / "cycle_life.yaml")
    plan = Plan(profile, series_cells=14, capacity_ah=27)
    items = list(plan.cursor(metrics=lambda: CycleMetrics(last_discharge_capacity_ah=27.0)))
    assert len(items) == plan.max_step_count() == 4 + 10 * (50 * 4 + 4)
    checks = [i for i in items if "capacity_check" in i.resolved.tags and i.step.kind == "cc"]
    assert len(checks) == 10
    assert [c.cycle_index for c in checks[:2]] == [51, 102], "50 standard cycles, then the check's own cycle"
    assert items[-1].cycle_index == 10 * 51
    assert checks[0].resolved.record_period_s == 1.0, "record period inherited from the check loop"
    assert items[4].resolved.record_period_s == 10.0, "profile default"


def test_loop_until_stops_on_the_capacity_reported_by_the_runner() -> None:
    profile = load_profile(PROFILES_DIR / "cycle_life.yaml")
    plan = Plan(profile, series_cells=14, capacity_ah=27)
    reports = iter([26.0, 23.0, 21.5])  # asked once per outer iteration; 21.5 Ah < 80 % of 27 Ah
    items = list(plan.cursor(metrics=lambda: CycleMetrics(last_discharge_capacity_ah=next(reports))))
    assert len(items) == 4 + 3 * (50 * 4 + 4)
    assert items[-1].loop_counters == (2, 0)


def test_loop_until_without_metrics_is_a_programming_error() -> None:
    profile = Profile(
        name="p",
        steps=[LoopStep(until={"discharge_capacity_below_ah": 20}, steps=[parse_phrase("Discharge at 1C until 3 V")])],
    )
    cursor = Plan(profile, series_cells=14, capacity_ah=27).cursor()
    assert cursor.current is not None
    with pytest.raises(RuntimeError, match="pass metrics="):
        cursor.advance()


def test_resume_from_a_saved_position_continues_at_the_same_step_and_cycle() -> None:
    profile = load_profile(PROFILES_DIR / "cycle_life.yaml")
    plan = Plan(profile, series_cells=14, capacity_ah=27)
    metrics = lambda: CycleMetrics(last_discharge_capacity_ah=26.0)  # noqa: E731
    reference = walk(plan.cursor(metrics=metrics))

    cursor = plan.cursor(metrics=metrics)
    for _ in range(437):  # stop in the third block's standard cycles
        next(cursor)
    saved = json.loads(json.dumps(cursor.position.to_dict()))
    interrupted = cursor.current

    resumed = Plan(load_profile(PROFILES_DIR / "cycle_life.yaml"), series_cells=14, capacity_ah=27).cursor(
        PlanPosition.from_dict(saved), metrics=metrics
    )
    first = resumed.current
    assert first is not None and interrupted is not None
    assert (first.number, first.cycle_index, first.loop_counters) == (
        interrupted.number,
        interrupted.cycle_index,
        interrupted.loop_counters,
    )
    assert first.loop_counters == (2, 6)
    assert walk(resumed) == reference[436:]


def test_resume_allows_edited_setpoints_but_not_a_changed_structure() -> None:
    steps = [LoopStep(repeat=3, steps=[parse_phrase("Charge at 1C until 4.2 V"), parse_phrase("Rest for 1 minute")])]
    plan = Plan(Profile(name="p", steps=steps), series_cells=14, capacity_ah=27)
    cursor = plan.cursor()
    next(cursor), next(cursor), next(cursor)
    saved = cursor.position.to_dict()

    edited = [
        LoopStep(repeat=3, steps=[parse_phrase("Charge at 0.5C until 4.1 V"), parse_phrase("Rest for 5 minutes")])
    ]
    resumed = Plan(Profile(name="p", steps=edited), series_cells=14, capacity_ah=27).cursor(
        PlanPosition.from_dict(saved)
    )
    assert resumed.current is not None and resumed.current.resolved.current_a == pytest.approx(13.5)

    reshaped = [LoopStep(repeat=3, steps=[parse_phrase("Rest for 1 minute"), parse_phrase("Charge at 1C until 4.2 V")])]
    with pytest.raises(ConfigError, match="different steps"):
        Plan(Profile(name="p", steps=reshaped), series_cells=14, capacity_ah=27).cursor(PlanPosition.from_dict(saved))

    shorter = [LoopStep(repeat=1, steps=steps[0].steps)]
    with pytest.raises(ConfigError, match="loop counter 1 does not fit the loop at step 1"):
        Plan(Profile(name="p", steps=shorter), series_cells=14, capacity_ah=27).cursor(PlanPosition.from_dict(saved))

    with pytest.raises(ConfigError, match="malformed"):
        PlanPosition.from_dict({"format": 1, "path": [0]})


def test_a_finished_plan_resumes_finished() -> None:
    plan = Plan(Profile(name="p", steps=[parse_phrase("Rest for 1 minute")]), series_cells=14, capacity_ah=27)
    cursor = plan.cursor()
    assert len(list(cursor)) == 1 and cursor.finished
    resumed = plan.cursor(PlanPosition.from_dict(cursor.position.to_dict()))
    assert resumed.finished and resumed.current is None and list(resumed) == []


def test_empty_loops_are_skipped_by_the_cursor() -> None:
    profile = Profile(name="p", steps=[LoopStep(repeat=5, steps=[]), parse_phrase("Rest for 1 minute")])
    assert [i.number for i in Plan(profile, series_cells=14, capacity_ah=27)] == ["2"]


def test_waveform_step_interpolation_wraps_and_holds_after_the_end() -> None:
    (item,) = Plan(
        profile_from_dict(
            {
                "name": "p",
                "steps": [
                    {
                        "kind": "current_profile",
                        "interpolation": "step",
                        "repeat": 2,
                        "series": {"quantity": "c_rate", "time_s": [10, 20, 30], "values": [1, -1, 0]},
                    }
                ],
            }
        ),
        series_cells=14,
        capacity_ah=27,
    )
    values = [item.resolved.setpoint_at(t) for t in (0, 9.9, 10, 19.9, 20, 25, 100)]
    assert values == [27, 27, -27, -27, 27, 27, 0]
    assert item.resolved.end.time_s == 40
    assert not math.isnan(item.resolved.setpoint_at(1e9))


def step_trees(max_depth: int = 3):
    """Random step lists: rests and charges, and loops of 1-3 repeats nested up to ``max_depth``."""
    leaf = st.sampled_from([parse_phrase("Rest for 1 minute"), parse_phrase("Charge at 1C until 4.2 V")])

    def loops(children):
        return st.builds(
            lambda repeat, steps: LoopStep(repeat=repeat, steps=steps),
            st.integers(1, 3),
            st.lists(children, min_size=0, max_size=3),
        )

    return st.lists(st.recursive(leaf, loops, max_leaves=8), min_size=1, max_size=4)


@given(step_trees())
@settings(max_examples=150, deadline=None)
def test_resuming_at_any_position_replays_the_same_remainder(steps) -> None:
    plan = Plan(Profile(name="p", steps=steps), series_cells=14, capacity_ah=27)
    reference = walk(plan)
    assert len(reference) == plan.max_step_count()
    assert [r[4] for r in reference] == list(range(len(reference))), "step_count counts every step"
    cycles = [r[2] for r in reference]
    assert cycles == sorted(cycles), "the cycle index never goes back"
    cursor = plan.cursor()
    for k in range(len(reference)):
        next(cursor)
        saved = json.loads(json.dumps(cursor.position.to_dict()))
        assert walk(plan.cursor(PlanPosition.from_dict(saved))) == reference[k:]


def test_c_rates_without_any_capacity_name_the_step() -> None:
    profile = Profile(name="p", steps=[parse_phrase("Charge at 1C until 4.2 V")])
    with pytest.raises(ConfigError, match=r"^<profile p>: step 1 \(Charge at 1C until 4.2 V\): .*set capacity_ah"):
        Plan(profile, series_cells=14)
