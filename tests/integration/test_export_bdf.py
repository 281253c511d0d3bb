"""``daq export`` to the Battery Data Format and the cell table, read back with pandas, pyarrow
and the Battery Data Alliance's own ``batterydf`` validator, from a recorded simulated run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.integration.sim_run import (
    ALARM_CELL,
    CHARGE_INDEX,
    DISCHARGE_INDEX,
    SERIES,
    RecordedRun,
    shared_recording,
    synthetic_journal,
    tiny_disk,
)

REQUIRED = ["Test Time / s", "Voltage / V", "Current / A"]
RECOMMENDED = ["Unix Time / s", "Cycle Count / 1", "Step Count / 1"]
LABEL = re.compile(r"^[A-Z][A-Za-z0-9 ]+ / (s|V|A|W|1|Ah|Wh|degC)$")


def daq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daq.cli.main", *args], capture_output=True, text=True, timeout=120)


def export(run: RecordedRun, *args: str) -> subprocess.CompletedProcess[str]:
    return daq("export", run.run_id, "--journal", str(run.journal), *args)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    return shared_recording(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def bdf_files(recorded: RecordedRun, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bdf")
    files = {}
    names = {"bdf-csv": "run.bdf.csv", "bdf-parquet": "run.bdf.parquet", "cells-parquet": "cells.parquet"}
    for fmt, name in names.items():
        result = export(recorded, "--format", fmt, "--out", str(out / name))
        assert result.returncode == 0, result.stderr
        assert f"run {recorded.run_id}" in result.stdout
        files[fmt] = out / name
    return files


def test_bdf_csv_has_the_bdf_columns_with_units(bdf_files: dict[str, Path]) -> None:
    df = pd.read_csv(bdf_files["bdf-csv"])
    assert list(df.columns[:4]) == ["Test Time / s", "Unix Time / s", "Voltage / V", "Current / A"]
    for label in REQUIRED + RECOMMENDED + ["Step Index / 1", "Charging Capacity / Ah", "Discharging Energy / Wh"]:
        assert label in df.columns
    assert all(LABEL.match(c) for c in df.columns), [c for c in df.columns if not LABEL.match(c)]
    assert [f"Surface Temperature T{n} / degC" for n in range(1, 6)] == [c for c in df.columns if "Temperature T" in c]
    assert df[REQUIRED].notna().all().all()
    assert (df["Test Time / s"].diff().dropna() >= 0).all()
    assert 40 < df["Voltage / V"].min() and df["Voltage / V"].max() < 60  # pack volts, not cell or mV
    assert set(df["Cycle Count / 1"]) == {0, 1, 2, 3}
    # Step Count is the runner's running step number: it goes up exactly where the program step changes
    changed = (df["Cycle Count / 1"].diff() != 0) | (df["Step Index / 1"].diff() != 0)
    assert ((df["Step Count / 1"].diff().fillna(1) > 0) == changed).all()
    assert df["Step Count / 1"].max() == 3 + 3 * 4
    # Step Index is the program step: every cycle's charge has the same one
    charge_rows = df[df["Step Index / 1"] == CHARGE_INDEX]
    assert set(charge_rows["Cycle Count / 1"]) == {1, 2, 3}
    assert charge_rows.groupby("Cycle Count / 1")["Step Count / 1"].nunique().eq(1).all()


def test_bdf_current_is_positive_while_charging(bdf_files: dict[str, Path]) -> None:
    df = pd.read_csv(bdf_files["bdf-csv"])
    step = df["Step Index / 1"]
    # the first poll of a step may still show the previous operating point
    charging = df[(step == CHARGE_INDEX) & (step.shift() == CHARGE_INDEX)]
    discharging = df[(step == DISCHARGE_INDEX) & (step.shift() == DISCHARGE_INDEX)]
    assert (charging["Current / A"] >= 0).all() and charging["Current / A"].max() == pytest.approx(27.0, rel=0.01)
    assert (discharging["Current / A"] < 0).all()
    assert (charging["Power / W"] >= 0).all() and (discharging["Power / W"] < 0).all()
    # voltage rises while charging
    first_charge = charging[charging["Cycle Count / 1"] == 2]
    assert first_charge["Voltage / V"].iloc[-1] > first_charge["Voltage / V"].iloc[0]


def test_bdf_capacity_matches_the_integrated_current(bdf_files: dict[str, Path]) -> None:
    df = pd.read_csv(bdf_files["bdf-csv"])
    meta = json.loads(bdf_files["bdf-csv"].with_name("run.bdf.csv.metadata.json").read_text())
    max_gap_s = meta["quality"]["capacity_max_gap_s"]  # longer silences are not counted (and listed)
    for cycle in (1, 2, 3):
        rows = df[df["Cycle Count / 1"] == cycle]
        charge_ah = rows["Charging Capacity / Ah"].iloc[-1]
        discharge_ah = rows["Discharging Capacity / Ah"].iloc[-1]
        # a real part of the 27 Ah pack moved (how much depends on the simulation's timing)
        assert 5 < charge_ah < 27 and 5 < discharge_ah < 27
        assert (rows["Charging Capacity / Ah"].diff().dropna() >= 0).all()
        assert rows["Net Capacity / Ah"].iloc[-1] == pytest.approx(charge_ah - discharge_ah)
        # independent check: trapezoid over the cycle's positive current (the current changes
        # sign only at rests, so the half-interval rule and the trapezoid agree)
        t, i = rows["Test Time / s"].to_numpy(), np.clip(rows["Current / A"].to_numpy(), 0, None)
        dt = np.diff(t)
        charged = float(np.sum(np.where(dt <= max_gap_s, dt * (i[1:] + i[:-1]) / 2, 0.0))) / 3600
        assert charge_ah == pytest.approx(charged, rel=0.03, abs=0.05)
    net = df["Cumulative Capacity / Ah"].iloc[-1]
    per_cycle = df.groupby("Cycle Count / 1").last()
    assert net == pytest.approx((per_cycle["Charging Capacity / Ah"] - per_cycle["Discharging Capacity / Ah"]).sum())
    assert df["Step Capacity / Ah"][df["Step Count / 1"].diff() > 0].abs().max() < 1.0  # resets at each step


def test_bdf_parquet_reads_back_with_pyarrow_with_units_and_metadata(
    bdf_files: dict[str, Path], recorded: RecordedRun
) -> None:
    table = pq.read_table(bdf_files["bdf-parquet"])
    schema = table.schema
    assert schema.field("Voltage / V").type == "double"
    assert schema.field("Cycle Count / 1").type == "int64"
    assert schema.field("Current / A").metadata[b"unit"] == b"A"
    meta = json.loads(schema.metadata[b"daq.metadata"])
    assert meta["run"]["run_id"] == recorded.run_id
    csv = pd.read_csv(bdf_files["bdf-csv"])
    pdf = table.to_pandas()
    assert list(pdf.columns) == list(csv.columns)
    assert np.allclose(pdf["Current / A"], csv["Current / A"]) and np.allclose(pdf["Voltage / V"], csv["Voltage / V"])


def test_bdf_sidecar_describes_run_devices_and_sources(bdf_files: dict[str, Path], recorded: RecordedRun) -> None:
    sidecar = bdf_files["bdf-csv"].with_name("run.bdf.csv.metadata.json")
    meta = json.loads(sidecar.read_text())
    assert meta["bdf_file"] == "run.bdf.csv"
    assert meta["run"]["run_id"] == recorded.run_id and meta["run"]["status"] == "completed"
    assert meta["run"]["config_hash"] and meta["software"]["version"]
    assert meta["run"]["metadata"]["operator"] == "J. Quality"
    assert {d["device"] for d in meta["devices"]} == {"cycler-0", "bms-1"}
    sources = {c["label"]: c["source"] for c in meta["columns"]}
    assert sources["Current / A"] == "cycler-0.current_a"
    assert sources["Surface Temperature T1 / degC"] == "bms-1.temp1_c"  # BMS sensors come first
    assert "positive = charging" in meta["sign_convention"]
    assert meta["steps"]["4"] == {"program_step": "4.1", "step_index": CHARGE_INDEX, "cycle": 1, "kind": "cccv",
                                  "label": "Charge at 1C until 4.15 V, hold until C/10"}  # fmt: skip
    check = meta["counter_check"]  # our count next to the cycler's own Ah counter
    assert check["counted_net_ah"] == pytest.approx(check["cycler_counter_net_ah"], abs=1.0)


def test_batterydf_validates_the_export(bdf_files: dict[str, Path]) -> None:
    import bdf  # batterydf, the Battery Data Alliance's package (a test dependency)

    for fmt in ("bdf-csv", "bdf-parquet"):
        df = bdf.read(str(bdf_files[fmt]))  # validates: raises on missing required columns
        report = bdf.validate_df(df)
        assert report["ok"] and report["missing"] == []
        assert report["extras"] == [] and report["legacy_labels"] == []  # every column is a canonical BDF one
        assert report["time_stats"]["monotonic"]


def test_cells_table_is_long_with_flags(bdf_files: dict[str, Path]) -> None:
    df = pd.read_parquet(bdf_files["cells-parquet"])
    assert list(df.columns) == [
        "Test Time / s", "Unix Time / s", "Cycle Count / 1", "Step Index / 1", "Device", "Cell / 1", "Voltage / V",
        "Temperature / degC", "Balancing / 1", "Alarm / 1", "BMS Alarm Level / 1",
    ]  # fmt: skip
    assert set(df["Cell / 1"]) == set(range(1, SERIES + 1))
    assert (df.groupby("Test Time / s").size() == SERIES).all()
    assert df["Voltage / V"].between(2.5, 4.3).all() and df["Temperature / degC"].between(15, 60).all()
    assert set(df["Balancing / 1"]) <= {0, 1}
    wide = df.pivot_table(index="Test Time / s", columns="Cell / 1", values="Voltage / V")
    assert wide.shape[1] == SERIES
    # the journaled warning on one cell shows on that cell's rows only, while it lasted
    flagged = df[df["Alarm / 1"] > 0]
    assert not flagged.empty and set(flagged["Cell / 1"]) == {ALARM_CELL} and set(flagged["Alarm / 1"]) == {1}
    assert set(flagged["Cycle Count / 1"]) == {2}


def test_plain_csv_export_is_unchanged(recorded: RecordedRun, tmp_path: Path) -> None:
    out = tmp_path / "all.csv"
    result = export(recorded, "--out", str(out), "--channel", "soc_pct")
    assert result.returncode == 0, result.stderr
    df = pd.read_csv(out)
    assert "bms-1.soc_pct" in df.columns and "cycler-0.voltage_v" not in df.columns


# -- bad input ------------------------------------------------------------------------------------


def assert_one_error_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_unknown_run_is_one_clear_line(recorded: RecordedRun, tmp_path: Path) -> None:
    out = tmp_path / "x.bdf.csv"
    result = daq("export", "no-such-run", "--journal", str(recorded.journal), "--format", "bdf-csv", "--out", str(out))
    assert_one_error_line(result, "no run 'no-such-run'", "daq runs")
    assert list(tmp_path.iterdir()) == []


def test_empty_run_writes_nothing(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    run_id = synthetic_journal(journal, records=0, end=True)
    out = tmp_path / "out" / "x.bdf.parquet"
    out.parent.mkdir()
    result = daq("export", run_id, "--journal", str(journal), "--format", "bdf-parquet", "--out", str(out))
    assert_one_error_line(result, f"run {run_id} has no good voltage and current readings", "nothing was written")
    assert list(out.parent.iterdir()) == []


def test_run_in_progress_exports_what_is_there_and_says_so(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    run_id = synthetic_journal(journal, records=20, end=False)
    out = tmp_path / "live.bdf.csv"
    result = daq("export", run_id, "--journal", str(journal), "--format", "bdf-csv", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "run still in progress" in result.stdout
    df = pd.read_csv(out)
    assert len(df) == 20 and df["Charging Capacity / Ah"].iloc[-1] == pytest.approx(10.0 * 19 / 3600)
    meta = json.loads(out.with_name("live.bdf.csv.metadata.json").read_text())
    assert meta["run"]["status"] == "running" and meta["notes"]
    # a run without cell voltages has no cell table
    cells = daq("export", run_id, "--journal", str(journal), "--format", "cells-csv", "--out", str(tmp_path / "c.csv"))
    assert_one_error_line(cells, "recorded no cell voltages")


def test_bdf_file_name_must_follow_the_convention(recorded: RecordedRun, tmp_path: Path) -> None:
    out = tmp_path / "run.csv"
    result = export(recorded, "--format", "bdf-csv", "--out", str(out))
    assert_one_error_line(result, "*.bdf.csv")
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["bdf-csv", "bdf-parquet", "cells-csv"])
def test_full_disk_leaves_no_partial_file(recorded: RecordedRun, tmp_path: Path, fmt: str) -> None:
    name = {"bdf-csv": "run.bdf.csv", "bdf-parquet": "run.bdf.parquet", "cells-csv": "cells.csv"}[fmt]
    with tiny_disk(tmp_path / "disk") as disk:
        result = export(recorded, "--format", fmt, "--out", str(disk / name))
        assert_one_error_line(result, f"cannot write {disk / name}", "No space left on device")
        assert list(disk.iterdir()) == []  # neither the file, its sidecar nor a temporary file
