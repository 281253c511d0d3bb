"""The shipped demo as a new user sees it: its times, its status and its own limit check agree.

One ``daq demo`` run (subprocess, real simulators over TCP and a pty) is shared by the tests.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from daq.journal import JournalReader, RunInfo
from daq.status import STATUS_KEY
from daq.timebase import run_times
from tests.helpers import REPO, sim_bench

DEMO_LIMITS = REPO / "configs" / "limits" / "demo_nmc_14s.yaml"
DEMO_WALL_S = 4.0
DEMO_TIME_SCALE = 5.0  # configs/demo.yaml


def daq(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daq.cli.main", *args], capture_output=True, text=True, cwd=cwd, timeout=180
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunInfo, float]:
    """A finished ``daq demo --duration 4s`` run: its journal, its run, and when the command returned."""
    journal = tmp_path_factory.mktemp("demo") / "demo.sqlite"
    result = daq("demo", "--duration", f"{DEMO_WALL_S:g}s", "--quiet", "--journal", str(journal))
    returned = time.time()
    assert result.returncode == 0, result.stderr
    with JournalReader(journal) as reader:
        (run,) = reader.runs()
    return journal, run, returned


def test_the_shipped_demo_passes_its_shipped_limit_set(demo_run: tuple[Path, RunInfo, float]) -> None:
    journal, run, _ = demo_run
    result = daq("check", run.run_id, "--journal", str(journal), "--limits", str(DEMO_LIMITS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: PASS" in result.stdout
    assert "data_age_max_s" not in result.stdout  # the BMS data is never stale, not even a warning


def test_duration_is_wall_clock_time_and_the_bench_lives_time_scale_times_more(
    demo_run: tuple[Path, RunInfo, float],
) -> None:
    _, run, returned = demo_run
    times = run_times(run.started_ns, run.ended_ns, run.metadata)
    assert times.exact and times.time_scale == DEMO_TIME_SCALE
    assert times.wall_s is not None and times.wall_s >= DEMO_WALL_S
    assert times.bench_s is not None and times.bench_s == pytest.approx(times.wall_s * DEMO_TIME_SCALE, rel=1e-6)
    assert times.wall_ended_ns is not None and times.wall_ended_ns / 1e9 <= returned  # not in the future
    assert run.reason == f"--duration {DEMO_WALL_S:g} s (wall clock) reached"


def test_runs_lists_wall_clock_start_and_end_with_bench_time_beside_them(
    demo_run: tuple[Path, RunInfo, float],
) -> None:
    journal, run, _ = demo_run
    times = run_times(run.started_ns, run.ended_ns, run.metadata)
    result = daq("runs", "--journal", str(journal))
    assert result.returncode == 0, result.stderr
    (line,) = [ln for ln in result.stdout.splitlines() if run.run_id in ln]
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(times.wall_ended_ns / 1e9)) in line
    assert (
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run.ended_ns / 1e9)) not in line
    )  # bench time is not shown as the clock
    assert "at ×5" in line and "bench " in line


def test_status_of_the_finished_demo_shows_its_final_figures(demo_run: tuple[Path, RunInfo, float]) -> None:
    journal, run, _ = demo_run
    result = daq("status", run.run_id, "--journal", str(journal))
    assert result.returncode == 0, result.stderr
    assert "finished: completed" in result.stdout
    assert f"final figures: records {run.records}" in result.stdout
    with JournalReader(journal) as reader:
        status = reader.run_value(run.run_id, STATUS_KEY)
    assert status["final"] is True
    assert sum(d["polls"] for d in status["devices"].values()) == run.records
    for name, device in status["devices"].items():
        assert device["quality"] == "good" and device["polls"] > 0, name
        assert f"{name}" in result.stdout and f"polls={device['polls']}" in result.stdout


def test_bench_duration_is_bench_time(tmp_path: Path) -> None:
    path = sim_bench(tmp_path, time_scale=10, poll_period_s=1.0)
    result = daq("run", str(path), "--bench-duration", "20s", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with JournalReader(tmp_path / "journal.sqlite") as reader:
        (run,) = reader.runs()
    times = run_times(run.started_ns, run.ended_ns, run.metadata)
    assert times.bench_s is not None and times.bench_s >= 20.0
    assert times.wall_s is not None and times.wall_s < 20.0  # 20 bench seconds at 10x are not 20 wall seconds
    assert run.reason == "--bench-duration 20 s (bench time) reached"


def test_help_says_which_time_each_duration_means() -> None:
    for command in (["run"], ["demo"], ["test", "start"]):
        result = daq(*command, "--help")
        text = " ".join(result.stdout.split())
        assert "wall-clock time" in text and "--bench-duration" in text and "bench time" in text, command


def test_exports_stamp_unix_time_on_the_wall_clock_and_test_time_in_bench_time(
    demo_run: tuple[Path, RunInfo, float], tmp_path: Path
) -> None:
    import csv
    import json

    journal, run, returned = demo_run
    times = run_times(run.started_ns, run.ended_ns, run.metadata)
    out = tmp_path / "run.bdf.csv"
    result = daq("export", run.run_id, "--journal", str(journal), "--format", "bdf-csv", "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.read_text().splitlines()))
    unix = [float(r["Unix Time / s"]) for r in rows]
    test = [float(r["Test Time / s"]) for r in rows]
    assert times.wall_started_ns / 1e9 <= unix[0] and unix[-1] <= returned  # when it happened, not in the future
    assert test[-1] - test[0] == pytest.approx((unix[-1] - unix[0]) * DEMO_TIME_SCALE, rel=1e-4)  # CSV rounding
    sidecar = json.loads(next(tmp_path.glob("run.bdf*.json")).read_text())
    assert sidecar["run"]["time"]["time_scale"] == DEMO_TIME_SCALE
    assert sidecar["run"]["time"]["bench_duration_s"] == pytest.approx(times.bench_s)
    assert sidecar["run"]["started_utc"].startswith(time.strftime("%Y-%m-%dT%H:%M", time.gmtime(unix[0])))

    # --from is wall-clock time too: the second half of the run by the Unix Time column
    middle = (unix[0] + unix[-1]) / 2
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(middle)) + f".{int(middle % 1 * 1000):03d}Z"
    half = tmp_path / "half.csv"
    result = daq("export", run.run_id, "--journal", str(journal), "--from", since, "--out", str(half))
    assert result.returncode == 0, result.stderr
    kept = [float(r["unix_time_s"]) for r in csv.DictReader(half.read_text().splitlines())]
    assert kept and min(kept) >= middle - 1e-3
    full = tmp_path / "full.csv"
    assert daq("export", run.run_id, "--journal", str(journal), "--out", str(full)).returncode == 0
    total = len(full.read_text().splitlines()) - 1
    assert 0.25 * total < len(kept) < 0.75 * total  # about half the run, not all of it


def test_status_of_a_running_bench_shows_live_figures(tmp_path: Path) -> None:
    journal = tmp_path / "live.sqlite"
    bench = subprocess.Popen(
        [sys.executable, "-m", "daq.cli.main", "demo", "--duration", "20s", "--quiet", "--journal", str(journal)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        seen = ""
        while "running (live" not in seen or "polls=0 " in seen:
            assert time.monotonic() < deadline, f"no live status; last: {seen!r}"
            assert bench.poll() is None, bench.stderr.read() if bench.stderr else ""
            seen = daq("status", "--journal", str(journal)).stdout if journal.exists() else ""
        assert "finished" not in seen and "final figures" not in seen
    finally:
        bench.terminate()  # SIGTERM stops cleanly, as Ctrl-C does
        bench.wait(timeout=60)
        if bench.stderr:
            bench.stderr.close()
    after = daq("status", "--journal", str(journal)).stdout
    assert "finished: completed (stopped by operator)" in after and "final figures" in after
