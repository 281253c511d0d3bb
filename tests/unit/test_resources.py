"""Shipped files by builtin:NAME: every kind resolves, unknown names list what exists, paths stay paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from daq.config.loader import load_bench
from daq.errors import ConfigError
from daq.resources import KINDS, demo_bench, locate, shipped_names, shipped_path, shipped_root
from daq.safety.limits import load_limits
from drivers.modbus.regmap import load_regmap

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_root_is_the_configs_folder_of_this_checkout() -> None:
    # Editable install: daq._configs maps onto configs/ itself (tests/install checks the wheel).
    assert shipped_root().resolve() == (REPO / "configs").resolve()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_shipped_name_of_a_kind_resolves_to_its_file(kind: str) -> None:
    info = KINDS[kind]  # type: ignore[index]
    on_disk = sorted(p.stem for p in (REPO / "configs" / info.folder).glob("*") if p.suffix in info.suffixes)
    assert shipped_names(kind) == on_disk  # type: ignore[arg-type]
    for name in on_disk:
        path = locate(f"builtin:{name}", kind)  # type: ignore[arg-type]
        assert path.is_file() and path.stem == name and path.parent.name == (info.folder or "configs")


def test_names_may_carry_their_suffix() -> None:
    assert shipped_path("regmap", "sim_cycler.yaml") == shipped_path("regmap", "sim_cycler")


def test_an_unknown_name_lists_the_names_that_exist() -> None:
    with pytest.raises(ConfigError) as err:
        locate("builtin:sim_cyclr", "regmap")
    (line,) = err.value.problems
    assert "no shipped register map named 'sim_cyclr'" in line
    assert "sim_bms, sim_cycler" in line


def test_without_a_kind_a_unique_name_is_found_and_an_unknown_one_lists_every_kind() -> None:
    assert locate("builtin:strict_spec") == shipped_path("limits", "strict_spec")
    with pytest.raises(ConfigError) as err:
        locate("builtin:nothing")
    assert "register maps: sim_bms, sim_cycler" in err.value.problems[0]
    assert "bench files:" in err.value.problems[0]


def test_other_references_are_paths_relative_to_the_naming_file(tmp_path: Path) -> None:
    assert locate("regmaps/x.yaml", "regmap", base_dir=tmp_path) == tmp_path / "regmaps" / "x.yaml"
    assert locate("/abs/x.yaml", "regmap", base_dir=tmp_path) == Path("/abs/x.yaml")
    assert locate("x.yaml", "regmap") == Path("x.yaml")


def test_loaders_accept_builtin_references() -> None:
    assert load_regmap("builtin:sim_cycler").name == "sim-cycler"
    assert load_limits("builtin:demo_nmc_14s").name == "demo_nmc_14s"
    assert load_bench("builtin:demo").path == demo_bench()


def test_a_bench_file_may_name_shipped_maps_and_limits(tmp_path: Path) -> None:
    bench = (REPO / "configs" / "demo_safety.yaml").read_text()
    bench = bench.replace("regmap: regmaps/sim_cycler.yaml", "regmap: builtin:sim_cycler")
    bench = bench.replace("limits: limits/demo_nmc_14s.yaml", "limits: builtin:demo_nmc_14s")
    assert "builtin:sim_cycler" in bench and "builtin:demo_nmc_14s" in bench
    path = tmp_path / "bench.yaml"  # no regmaps/ or limits/ folder next to it
    path.write_text(bench)
    loaded = load_bench(path)
    assert loaded.regmaps["cycler-1"].name == "sim-cycler"
    assert loaded.limits is not None and loaded.limits.name == "demo_nmc_14s"


def test_a_bench_file_naming_an_unknown_builtin_map_says_where_and_what_exists(tmp_path: Path) -> None:
    bench = (REPO / "configs" / "demo.yaml").read_text().replace("regmaps/sim_cycler.yaml", "builtin:no_map")
    path = tmp_path / "bench.yaml"
    path.write_text(bench)
    with pytest.raises(ConfigError) as err:
        load_bench(path)
    (line,) = err.value.problems
    assert line.startswith(f"{path}: devices[0](cycler-1).regmap: builtin:no_map: no shipped register map")
    assert "sim_cycler" in line
