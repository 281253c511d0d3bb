"""Mutated shipped configs (bytes and YAML structure) either load or fail with one line per problem.

Never a traceback: whatever hypothesis does to a bench file, register map, profile or limit set,
``daq validate`` exits 0 or 2 and every line it prints on stderr is an ``error:`` line, and the
loaders raise nothing but ConfigError with single-line problems.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from daq.cli.main import main
from daq.errors import ConfigError
from daq.profiles.loader import load_profile
from daq.safety.limits import load_limits
from drivers.modbus.regmap import load_regmap
from tests.helpers import REPO

# No "explain" phase: it imports libcst, whose import warns (and warnings are errors here).
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)

leaf_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(-5, 5), max_size=2),
)


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of configs/: bench files name their register maps relative to themselves."""
    folder = tmp_path_factory.mktemp("mutations") / "configs"
    shutil.copytree(REPO / "configs", folder)
    return folder


def _places(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) in a loaded YAML document, in a stable order."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in list(items):
        out.append((node, key))
        _places(child, out)
    return out


@st.composite
def structural_mutation(draw: st.DrawFn, text: str) -> str:
    doc = yaml.safe_load(text)
    places = _places(doc, [])
    container, key = places[draw(st.integers(0, len(places) - 1))]
    action = draw(st.sampled_from(["replace", "delete", "rename", "wrap"]))
    if action == "replace":
        container[key] = draw(leaf_values)
    elif action == "delete":
        del container[key]
    elif action == "rename" and isinstance(container, dict):
        container[draw(st.text(min_size=1, max_size=8))] = container.pop(key)
    else:
        container[key] = [container[key]]
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@st.composite
def byte_mutation(draw: st.DrawFn, data: bytes) -> bytes:
    action = draw(st.sampled_from(["flip", "insert", "truncate", "delete", "encode"]))
    at = draw(st.integers(0, len(data) - 1))
    if action == "flip":
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if action == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    if action == "truncate":
        return data[:at]
    if action == "delete":
        return data[:at] + data[at + draw(st.integers(1, 64)) :]
    return data.decode("utf-8").encode(draw(st.sampled_from(["utf-16", "utf-16-be", "utf-32", "latin-1", "cp1252"])))


def _validate(path: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", str(path)])
    lines = err.getvalue().splitlines()
    assert code in (0, 2), (code, lines)
    if code == 2:
        assert lines, "exit 2 without saying why"
    assert all(line.startswith("error: ") for line in lines), lines


def _load_with(loader: Callable[[Path], Any]) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        try:
            loader(path)
        except ConfigError as exc:
            assert exc.problems and all(p and "\n" not in p for p in exc.problems), exc.problems

    return check


KINDS = {
    "demo.yaml": _validate,
    "ci_bench.yaml": _validate,
    "regmaps/sim_cycler.yaml": _load_with(load_regmap),
    "profiles/ci_cycle_3x.yaml": _load_with(load_profile),
    "limits/demo_nmc_14s.yaml": _load_with(load_limits),
}


@pytest.mark.parametrize("name", sorted(KINDS))
@SETTINGS
@given(data=st.data())
def test_structural_mutations(configs: Path, name: str, data: st.DataObject) -> None:
    original = configs / name
    mutated = original.with_name("mutated-" + original.name)
    mutated.write_text(data.draw(structural_mutation(original.read_text(encoding="utf-8"))), encoding="utf-8")
    KINDS[name](mutated)


@pytest.mark.parametrize("name", sorted(KINDS))
@SETTINGS
@given(data=st.data())
def test_byte_mutations(configs: Path, name: str, data: st.DataObject) -> None:
    original = configs / name
    mutated = original.with_name("mutated-" + original.name)
    mutated.write_bytes(data.draw(byte_mutation(original.read_bytes())))
    KINDS[name](mutated)
