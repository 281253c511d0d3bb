"""``daq report``: a self-contained HTML report, rendered in headless Chromium, plus its PDF."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.integration.sim_run import RecordedRun, shared_recording, synthetic_journal, tiny_disk

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]  # fmt: skip

# Warnings only: the CV phase crosses the warning thresholds, nothing reaches a trip.
WARN_LIMITS = """
name: qa_warn_only
cell_voltage_max_v: {warn: 4.14, trip: 4.25, hysteresis: 0.01}
cell_voltage_min_v: {warn: 3.0, trip: 2.5}
pack_voltage_max_v: {warn: 58.05, trip: 59.5, hysteresis: 0.1}
charge_current_max_a: {warn: 29.7, trip: 32.4, persistence_s: 1.0}
cell_temperature_max_c: {warn: 50.0, trip: 55.0}
"""
TRIP_LIMITS = """
name: qa_tight
cell_voltage_max_v: {warn: 4.12, trip: 4.16}
"""


def daq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daq.cli.main", *args], capture_output=True, text=True, timeout=180)


def chromium(html: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *extra, html.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    return shared_recording(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def report(recorded: RecordedRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("report")
    limits = folder / "qa_warn_only.yaml"
    limits.write_text(WARN_LIMITS)
    out = folder / "report.html"
    result = daq("report", recorded.run_id, "--journal", str(recorded.journal), "--limits", str(limits),
                 "--out", str(out), "--pdf")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_report_renders_in_headless_chromium_with_every_plot(report: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = report
    html = out.read_text()
    images = len(re.findall(r"<img ", html))
    assert images == 3  # overview, cells of bms-1, per cycle
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch
    dom = chromium(out, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    root = re.search(r"<html[^>]*>", dom.stdout)
    assert root is not None
    assert f'data-images-loaded="{images}/{images}"' in root.group(0), root.group(0)
    assert 'data-errors="0"' in root.group(0), root.group(0)
    assert ":CONSOLE" not in dom.stderr, dom.stderr  # no script error, no failed resource
    shot = tmp_path / "report.png"
    result = chromium(out, tmp_path, f"--screenshot={shot}", "--window-size=1280,4000")
    assert result.returncode == 0 and shot.exists(), result.stderr
    with Image.open(shot) as im:
        assert im.size == (1280, 4000)
        # the page is not blank: the plots put many colours on it
        assert len(im.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 1000


def test_report_shows_metadata_verdict_and_tables(report: tuple[Path, str], recorded: RecordedRun) -> None:
    out, stdout = report
    assert "verdict PASS" in stdout and "3 figures" in stdout
    html = out.read_text()
    assert '<span class="word">PASS</span>' in html and "qa_warn_only" in html
    for text in ("J. Quality", "PK-0042", "ci_cycle_3x", recorded.run_id, "daq 0.", "Config hash"):
        assert text in html, text
    assert "cell_voltage_max_v" in html and "pack_voltage_max_v" in html  # warning excursions listed
    assert "alarm.raised" in html and "alarm.cleared" in html  # the journaled alarm
    assert "counted from cycler-0 voltage and current" in html  # no runner summary: said where numbers come from
    cycle_rows = re.findall(r"<tr><td class=\"n\">([0-3])</td>", html)
    assert cycle_rows[:4] == ["0", "1", "2", "3"]


def test_report_pdf_has_a_summary_page_and_every_figure(report: tuple[Path, str]) -> None:
    pdf = report[0].with_suffix(".pdf")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) == 4


def test_report_fail_verdict_names_the_trip(recorded: RecordedRun, tmp_path: Path) -> None:
    limits = tmp_path / "tight.yaml"
    limits.write_text(TRIP_LIMITS)
    out = tmp_path / "r.html"
    result = daq("report", recorded.run_id, "--journal", str(recorded.journal), "--limits", str(limits),
                 "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "verdict FAIL" in result.stdout
    html = out.read_text()
    assert '<span class="word">FAIL</span>' in html
    assert '<span class="lvl-trip">trip</span></td><td>cell_voltage_max_v' in html


def test_report_without_limits_says_there_is_no_verdict(recorded: RecordedRun, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = daq("report", "latest", "--journal", str(recorded.journal), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "no verdict" in result.stdout
    assert "NO VERDICT" in out.read_text()


def test_report_of_a_run_in_progress_says_so(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    run_id = synthetic_journal(journal, records=30, end=False)
    out = tmp_path / "live.html"
    result = daq("report", run_id, "--journal", str(journal), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "still in progress" in result.stdout and "still in progress" in out.read_text()


@pytest.mark.parametrize(
    ("run", "records", "expected"),
    [("no-such-run", 5, "no run 'no-such-run'"), ("synthetic", 0, "has no records yet")],
)
def test_bad_run_is_one_clear_line_and_no_file(tmp_path: Path, run: str, records: int, expected: str) -> None:
    journal = tmp_path / "j.sqlite"
    synthetic_journal(journal, records=records, end=True)
    out = tmp_path / "out" / "r.html"
    out.parent.mkdir()
    result = daq("report", run, "--journal", str(journal), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert list(out.parent.iterdir()) == []


def test_full_disk_leaves_no_partial_report(recorded: RecordedRun, tmp_path: Path) -> None:
    with tiny_disk(tmp_path / "disk") as disk:
        result = daq("report", recorded.run_id, "--journal", str(recorded.journal), "--out", str(disk / "r.html"))
        assert result.returncode == 2
        assert "No space left on device" in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert list(disk.iterdir()) == []


def test_report_takes_per_cycle_figures_from_the_runner_summary_when_there_is_one(tmp_path: Path) -> None:
    from daq.journal import Journal, JournalReader
    from daq.report.data import gather

    journal = tmp_path / "j.sqlite"
    run_id = synthetic_journal(journal, records=10, end=True)
    summary = [
        {"cycle": 1, "charge_ah": 26.0, "discharge_ah": 25.5, "charge_wh": 1400.0, "discharge_wh": 1300.0,
         "capacity_ah": 25.4, "end_of_charge_v": 58.1, "end_of_discharge_v": 42.0, "max_temperature_c": 31.0},
        {"cycle": 2, "charge_ah": 25.0, "discharge_ah": 24.0, "charge_wh": 1350.0, "discharge_wh": 1250.0,
         "capacity_ah": 22.86, "end_of_charge_v": 58.1, "end_of_discharge_v": 42.0, "max_temperature_c": 32.0},
    ]  # fmt: skip
    with Journal(journal) as writer:
        writer.set_run_value(run_id, "cycle_summary", summary)
    with JournalReader(journal) as reader:
        data = gather(reader, reader.run(run_id))
    assert data.cycles_source == "the runner's cycle summary"
    first, second = data.cycles
    assert (first.cycle, first.discharge_ah, first.end_discharge_voltage_v) == (1, 25.5, 42.0)
    assert second.coulombic_efficiency_pct == pytest.approx(96.0)
    assert second.retention_pct == pytest.approx(90.0)  # the capacity step, not the whole discharge
