"""Files that are not configuration text: one line naming the file and the fix, exit 2, no traceback.

Each case here once ended in a Python traceback (binary, UTF-16) or many lines (alias bomb) from
``daq validate``; the same reader serves bench files, register maps, profiles and limit sets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


def daq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daq.cli.main", *args], capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
)


def test_binary_bench_file(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_bytes(bytes(range(256)) * 8)
    assert_one_line_error(daq("validate", str(path)), str(path), "binary file", "bench file")


def test_non_utf8_bench_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_bytes("bench:\n  id: caf\u00e9\n".encode("latin-1"))
    assert_one_line_error(daq("validate", str(path)), f"{path}:2:", "not UTF-8", "save the bench file as UTF-8")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
def test_other_unicode_encodings_are_read(tmp_path: Path, encoding: str) -> None:
    """Notepad's UTF-16 and UTF-8 with BOM decode to the same bench as plain UTF-8."""
    demo = REPO / "configs" / "demo.yaml"
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    path = tmp_path / "configs" / "demo.yaml"
    path.write_bytes(demo.read_text(encoding="utf-8").encode(encoding))
    result = daq("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")


def test_alias_bomb_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(ALIAS_BOMB, encoding="utf-8")
    assert_one_line_error(daq("validate", str(path)), str(path), "YAML aliases")


def test_self_referencing_alias_is_one_line(tmp_path: Path) -> None:
    """PyYAML builds a cyclic list from ``&a [*a]``; the expansion check stops on it, not in it."""
    from daq.errors import ConfigError
    from daq.safety.limits import load_limits

    path = tmp_path / "limits.yaml"
    path.write_text("a: &a [*a, *a]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_limits(path)
    assert len(err.value.problems) == 1 and "YAML aliases" in err.value.problems[0]


def test_folder_and_fifo(tmp_path: Path) -> None:
    assert_one_line_error(daq("validate", str(tmp_path)), "is a folder")
    fifo = tmp_path / "bench.yaml"
    os.mkfifo(fifo)
    assert_one_line_error(daq("validate", str(fifo)), "not a regular file")


def test_binary_profile_and_limit_set(tmp_path: Path) -> None:
    """The same reader serves every file kind: a binary profile is named as a profile file."""
    blob = tmp_path / "blob.yaml"
    blob.write_bytes(b"\x00\x01\x02" * 100)
    from daq.errors import ConfigError
    from daq.profiles.loader import load_profile
    from daq.safety.limits import load_limits
    from drivers.modbus.regmap import load_regmap

    for load, what in ((load_profile, "profile file"), (load_limits, "limit set"), (load_regmap, "register map")):
        with pytest.raises(ConfigError) as err:
            load(blob)
        assert err.value.problems == [err.value.problems[0]]
        assert what in err.value.problems[0] and "binary file" in err.value.problems[0]
