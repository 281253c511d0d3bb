"""Every config file kind words an unknown key the same way: check the spelling, the allowed names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from daq.config.loader import load_bench
from daq.errors import ConfigError
from daq.profiles.loader import load_profile
from daq.safety.limits import load_limits
from drivers.modbus.regmap import load_regmap
from tests.helpers import REPO

CONFIGS = REPO / "configs"


def _bench(tmp: Path) -> Path:
    data = yaml.safe_load((CONFIGS / "demo.yaml").read_text())
    data["devices"][1]["poll_perod_s"] = data["devices"][1].pop("poll_period_s")
    data["devices"][0]["regmap"] = str(CONFIGS / "regmaps" / "sim_cycler.yaml")
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _regmap(tmp: Path) -> Path:
    data = yaml.safe_load((CONFIGS / "regmaps" / "sim_cycler.yaml").read_text())
    data["registers"][0]["scael"] = 2
    path = tmp / "regmap.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _profile(tmp: Path) -> Path:
    path = tmp / "profile.yaml"
    path.write_text(
        "name: p\nsteps:\n  - {kind: cc, direction: discharge, c_rat: 1.0, until: [{voltage_below_v: 3.0}]}\n"
    )
    return path


def _limits(tmp: Path) -> Path:
    path = tmp / "limits.yaml"
    path.write_text("name: l\ncell_voltage_max_v: {trip: 4.25, persistance_s: 1}\n")
    return path


@pytest.mark.parametrize(
    ("write", "load", "where", "meant"),
    [
        (_bench, load_bench, "devices[1](bms-1).poll_perod_s", "poll_period_s"),
        (_regmap, load_regmap, "registers[0](voltage_v).scael", "scale"),
        (_profile, load_profile, "step 1 (cc): c_rat", "c_rate"),
        (_limits, load_limits, "cell_voltage_max_v.persistance_s", "persistence_s"),
    ],
    ids=["bench", "regmap", "profile", "limit set"],
)
def test_unknown_key_gets_the_same_hint_with_the_allowed_names(
    tmp_path: Path, write: Callable[[Path], Path], load: Callable[[Path], object], where: str, meant: str
) -> None:
    path = write(tmp_path)
    with pytest.raises(ConfigError) as info:
        load(path)
    (line,) = [p for p in info.value.problems if where in p]
    assert line.startswith(f"{path}: ")
    assert f"{where}: unknown key; check the spelling (did you mean {meant!r}?); allowed: " in line
    allowed = line.split("allowed: ", 1)[1].split(" (see", 1)[0].split(", ")
    assert meant in allowed and "kind" not in allowed
