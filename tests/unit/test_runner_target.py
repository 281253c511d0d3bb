"""What a profile is checked against: pack size, cell window, currents from the regmap and limit sets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from daq.config.loader import load_bench
from daq.errors import ConfigError
from daq.profiles import profile_from_dict
from daq.runner import prepare_test, resolve_target
from tests.helpers import CYCLER_REGMAP, REPO, sim_bench

PROFILES = sorted((REPO / "configs" / "profiles").glob("*.yaml"))


def profile(**fields):
    return profile_from_dict({"name": "t", "steps": ["Rest for 1 minute"], **fields})


def real_bench(tmp_path: Path, **extra) -> Path:
    cfg = {
        "bench": {"id": "lab"},
        "devices": [
            {
                "name": "cycler-1",
                "kind": "modbus",
                "role": "cycler",
                "transport": {"kind": "tcp", "host": "10.0.0.9", "port": 502},
                "regmap": CYCLER_REGMAP,
            }
        ],
        **extra,
    }
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_simulated_bench_gives_the_pack_and_the_cyclers_range(tmp_path: Path) -> None:
    loaded = load_bench(sim_bench(tmp_path, parallel_cells=2))
    target = resolve_target(loaded, profile())
    assert target.cycler == "cycler-0"
    assert target.series_cells == 14 and target.capacity_ah == 54.0
    assert (target.cell_voltage_min_v, target.cell_voltage_max_v) == (3.0, 4.2)
    assert target.currents.max_charge_a == 300 and target.currents.max_discharge_a == 300


def test_limit_sets_tighten_currents_and_the_window(tmp_path: Path) -> None:
    limits = tmp_path / "limits.yaml"
    limits.write_text(
        yaml.safe_dump(
            {
                "name": "l",
                "charge_current_max_a": {"warn": 29.7, "trip": 32.4},
                "discharge_current_max_a": {"trip": 67.5},
                "cell_voltage_max_v": {"warn": 4.1, "trip": 4.15},
            }
        )
    )
    bench = sim_bench(tmp_path)
    cfg = yaml.safe_load(bench.read_text())
    cfg["safety"] = {"limits": str(limits)}
    bench.write_text(yaml.safe_dump(cfg))
    target = resolve_target(load_bench(bench), profile())
    assert target.currents.max_charge_a == 32.4 and target.currents.max_discharge_a == 67.5
    assert target.currents.cv_limit_a == 29.7  # an unlimited cv hold stays below the warning
    assert target.cell_voltage_max_v == 4.15


def test_a_real_bench_takes_the_pack_from_the_profile_or_the_command_line(tmp_path: Path) -> None:
    loaded = load_bench(real_bench(tmp_path))
    with pytest.raises(ConfigError, match="series cell count is unknown on bench lab; pass --series-cells N"):
        resolve_target(loaded, profile())
    with pytest.raises(ConfigError, match="no cell voltage window is known"):
        resolve_target(loaded, profile(), series_cells=14)
    target = resolve_target(loaded, profile(capacity_ah=100, metadata={"series_cells": 96, "chemistry": "LFP"}))
    assert target.series_cells == 96 and target.capacity_ah is None  # the profile's capacity_ah is used by the plan
    assert (target.cell_voltage_min_v, target.cell_voltage_max_v) == (2.5, 3.65)
    target = resolve_target(
        loaded, profile(metadata={"cell_voltage_min_v": 2.8, "cell_voltage_max_v": 4.1}), series_cells=7, capacity_ah=5
    )
    assert (target.series_cells, target.capacity_ah, target.cell_voltage_max_v) == (7, 5, 4.1)


def test_a_bench_with_two_cyclers_needs_one_named(tmp_path: Path) -> None:
    loaded = load_bench(sim_bench(tmp_path, cyclers=2))
    with pytest.raises(ConfigError, match=r"several cyclers \(cycler-0, cycler-1\); pick one with --cycler"):
        resolve_target(loaded, profile())
    assert resolve_target(loaded, profile(), cycler="cycler-1").cycler == "cycler-1"
    with pytest.raises(ConfigError, match="no enabled cycler named 'nope'"):
        resolve_target(loaded, profile(), cycler="nope")


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_standard_profile_fits_the_ci_bench(path: Path) -> None:
    prepared = prepare_test(load_bench(REPO / "configs" / "ci_bench.yaml"), path)
    assert prepared.plan.steps


def test_prepare_reports_every_problem_with_file_and_step(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "bad", "steps": ["Charge at 20C until 4.2 V", "Discharge at 1C until 2.5 V", "Rest for 1 s"]}
        )
    )
    with pytest.raises(ConfigError) as info:
        prepare_test(load_bench(sim_bench(tmp_path)), path)
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(f"{path}: step 1 (Charge at 20C until 4.2 V): charges at 540 A")
    assert problems[1].startswith(f"{path}: step 2 (Discharge at 1C until 2.5 V): until voltage_below_v 2.5 V")
