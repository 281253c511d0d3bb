"""The benchmark suite's smoke run: every scenario runs at tiny sizes and reports numbers.

No timing assertions: the figures of a smoke run mean nothing; what is checked is that the suite
still runs end to end (simulator farm, bench, sinks, Mosquitto, VictoriaMetrics) and writes both
result files with every scenario in them. Scripts other parts of the project own (trip latency,
codec throughput, acceleration) are folded in by the full run and smoke-tested by their owners;
here their output parsing is checked on a sample.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from benchmarks.run import SCENARIOS, parse_script_output

REPO = Path(__file__).resolve().parents[2]


def _numbers(row: dict) -> list[float]:
    return [v for v in row.values() if isinstance(v, int | float) and not isinstance(v, bool)]


def test_smoke_run_reports_every_scenario_with_numbers(tmp_path: Path) -> None:
    only = [arg for name in SCENARIOS for arg in ("--only", name)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(tmp_path), *only],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
    )
    log = (tmp_path / "run.log").read_text() if (tmp_path / "run.log").exists() else ""
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{log[-3000:]}"

    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["smoke"] is True
    by_name = {s["scenario"]: s for s in doc["scenarios"]}
    assert sorted(by_name) == sorted(SCENARIOS)
    for name, scenario in by_name.items():
        assert scenario["status"] == "ok", f"{name}: {scenario['notes']}"
        assert scenario["rows"], f"{name} has no rows"
        for row in scenario["rows"]:
            numbers = _numbers(row)
            assert numbers and all(math.isfinite(x) for x in numbers), f"{name}: {row}"

    # The figures the goals are judged on are there, as numbers.
    for e2e in by_name["end_to_end"]["rows"]:  # sinks in the bench process, and in their own
        assert e2e["project_drained"] is True, e2e["sinks_in"]
        assert e2e["project_values_per_s"] > 0 and e2e["bare_cpu_us_per_poll"] > 0
    assert {r["sinks_in"] for r in by_name["end_to_end"]["rows"]} == {"bench process", "own process"}
    assert by_name["scheduled"]["rows"][0]["achieved_hz_per_device"] > 0
    assert by_name["soak"]["rows"][0]["rss_peak_mb"] > 0
    assert by_name["catch_up"]["rows"][0]["caught_up"] is True
    assert by_name["scale"]["rows"][0]["bare_cpu_us_per_value"] > 0
    goals = [g for s in doc["scenarios"] for g in s["goals"]]
    assert goals and all(isinstance(g["pass"], bool) for g in goals)

    markdown = (tmp_path / "results.md").read_text()
    for scenario in doc["scenarios"]:
        assert f"## {scenario['title']}" in markdown
    assert "| goal | target | measured | pass |" in markdown


def test_output_of_other_benchmark_scripts_is_folded_in_as_rows() -> None:
    printed = """Python 3.11.7, 32-cell pack

| codec / message | decode frames/s | encode frames/s |
|---|---:|---:|
| JBD basic info (0x03) | 106,742 | 66,778 |
| Daly pack (0x90) | 195,211.5 | n/a |
"""
    rows, notes = parse_script_output(printed)
    assert rows == [
        {"codec / message": "JBD basic info (0x03)", "decode frames/s": 106742, "encode frames/s": 66778},
        {"codec / message": "Daly pack (0x90)", "decode frames/s": 195211.5, "encode frames/s": "n/a"},
    ]
    assert notes == ["Python 3.11.7, 32-cell pack"]

    rows, _ = parse_script_output('progress...\n{"rows": [{"case": "a", "p99_ms": 1.5}], "notes": ["x"]}\n')
    assert rows == [{"case": "a", "p99_ms": 1.5}]
