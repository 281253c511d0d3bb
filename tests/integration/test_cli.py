"""The command line: clear one-line errors with exit 2, schema, validation of every shipped config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from daq.config.loader import load_bench
from tests.helpers import REPO, sim_bench


def daq(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daq.cli.main", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


BENCH_FILES = sorted(p for p in (REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", BENCH_FILES, ids=lambda p: p.name)
def test_every_shipped_bench_file_validates(path: Path) -> None:
    result = daq("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")


def test_schema_is_json_schema_of_the_bench_file() -> None:
    result = daq("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["type"] == "object" and "devices" in schema["properties"]


def break_bench(tmp_path: Path, mutate) -> Path:
    path = sim_bench(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    mutate(cfg)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["devices"][0].update(poll_period_z=1), "devices[0](cycler-0).poll_period_z: unknown key"),
        (lambda c: c["devices"][0].update(poll_period_s="fast"), "devices[0](cycler-0).poll_period_s"),
        (lambda c: c["devices"][0].update(kind="canbus"), "unknown kind 'canbus'"),
        (lambda c: c["devices"][0].update(regmap="nowhere.yaml"), "register map file not found"),
        (lambda c: c["devices"][0]["transport"].update(simulator="ghost"), "'ghost' is not in simulation.simulators"),
        (lambda c: c["devices"].append(dict(c["devices"][0])), "device names must be unique"),
        (lambda c: c["devices"][0].update(max_registers_per_read=3), "spans 4 registers"),
    ],
)
def test_bad_bench_file_gives_one_clear_line_and_exit_2(tmp_path: Path, mutate, expected: str) -> None:
    path = break_bench(tmp_path, mutate)
    result = daq("validate", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert expected in result.stderr, result.stderr
    assert str(path) in result.stderr


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    def two_problems(c: dict) -> None:
        c["devices"][0]["poll_period_s"] = -1
        c["bench"]["colour"] = "red"

    result = daq("validate", str(break_bench(tmp_path, two_problems)))
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 2 and result.returncode == 2


def test_overlapping_registers_in_a_regmap_are_named(tmp_path: Path) -> None:
    regmap = tmp_path / "overlap.yaml"
    regmap.write_text(
        "name: x\nregisters:\n  - {name: a, table: holding, address: 0, type: u32}\n"
        "  - {name: b, table: holding, address: 1, type: u16}\n"
    )
    path = break_bench(tmp_path, lambda c: c["devices"][0].update(regmap=str(regmap)))
    result = daq("validate", str(path))
    assert result.returncode == 2 and "overlap" in result.stderr and "a (0..1)" in result.stderr


def test_missing_and_invalid_yaml(tmp_path: Path) -> None:
    result = daq("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "bench file not found" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("bench: {id: x\ndevices: [")
    result = daq("validate", str(bad))
    assert result.returncode == 2 and "not valid YAML" in result.stderr and "Traceback" not in result.stderr


def test_serial_port_that_cannot_be_opened(tmp_path: Path) -> None:
    def serial(c: dict) -> None:
        c["devices"][0]["transport"] = {"kind": "serial", "port": "/dev/ttyDOESNOTEXIST", "baud": 9600}

    path = break_bench(tmp_path, serial)
    result = daq("run", str(path), "--duration", "1s", "--quiet")
    assert result.returncode == 2, result.stderr
    assert "/dev/ttyDOESNOTEXIST" in result.stderr and "Traceback" not in result.stderr


def test_simulator_port_already_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        def fixed_port(c: dict) -> None:
            c["simulation"]["simulators"][0]["port"] = port

        result = daq("run", str(break_bench(tmp_path, fixed_port)), "--duration", "1s", "--quiet")
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_run_then_export_csv_and_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = sim_bench(tmp_path, time_scale=10, poll_period_s=1.0)
    result = daq("run", str(path), "--bench-duration", "20s", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    journal = str(tmp_path / "journal.sqlite")
    runs = daq("runs", "--journal", journal)
    assert "testbench-" in runs.stdout and "completed" in runs.stdout
    out = tmp_path / "run.csv"
    result = daq("export", "latest", "--journal", journal, "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    header = lines[0].split(",")
    assert "cycler-0.voltage_v" in header and "cycler-0.current_a" in header
    assert 19 <= len(lines) - 1 <= 22  # 20 s at 1 s period
    pq_out = tmp_path / "run.parquet"
    assert daq("export", "latest", "--journal", journal, "--format", "parquet", "--out", str(pq_out)).returncode == 0
    table = pq.read_table(pq_out)
    assert table.num_rows == len(lines) - 1
    assert table.schema.field("cycler-0.voltage_v").metadata[b"unit"] == b"V"
    # unknown run: one clear line, exit 2, no file
    missing = tmp_path / "missing.csv"
    result = daq("export", "nope", "--journal", journal, "--out", str(missing))
    assert result.returncode == 2 and "no run 'nope'" in result.stderr and not missing.exists()


def test_load_bench_resolves_regmap_relative_to_bench_file() -> None:
    loaded = load_bench(REPO / "configs" / "demo.yaml")
    assert loaded.regmaps["cycler-1"].name == "sim-cycler"
