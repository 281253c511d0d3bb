"""Test reports: one self-contained HTML file (and optionally a PDF) per run.

``build_report(reader, run, out, limits=..., pdf=...)`` gathers the run (``data``), draws the
figures (``plots``), renders the page (``html``) and writes every file atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daq.export.writers import atomic_path
from daq.journal import JournalReader, RunInfo
from daq.report import data as report_data
from daq.report import html, plots
from daq.safety.limits import LimitSet


@dataclass(frozen=True, slots=True)
class ReportResult:
    html: Path
    pdf: Path | None
    figures: int
    verdict: str | None  # "pass" / "fail", or None without limits
    notes: tuple[str, ...]


def build_report(
    reader: JournalReader,
    run: RunInfo,
    out: Path,
    *,
    limits: LimitSet | None = None,
    limits_name: str | None = None,
    strict: bool = False,
    pdf: Path | None = None,
) -> ReportResult:
    data = report_data.gather(reader, run, limits=limits, strict=strict)
    figures = plots.all_figures(data)
    try:
        page = html.render(data, figures, limits_name=limits_name)
        with atomic_path(out) as tmp:
            tmp.write_text(page, encoding="utf-8")
        if pdf is not None:
            from daq.report.pdf import write_pdf

            with atomic_path(pdf) as tmp:
                write_pdf(data, figures, tmp, limits_name=limits_name)
    finally:
        plots.close(figures)
    verdict = None if data.check is None else data.check.verdict
    return ReportResult(out, pdf, len(figures), verdict, tuple(data.notes))
