"""The same report as a PDF (matplotlib's PdfPages): a text page with the verdict and tables, then the figures."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages

from daq.report.data import RunData, flat_metadata
from daq.report.plots import WIDTH_IN, ReportFigure


def _fmt(x: float, spec: str) -> str:
    return "-" if math.isnan(x) else format(x, spec)


def summary_lines(data: RunData, limits_name: str | None) -> list[str]:
    run, meta = data.run, flat_metadata(data.run.metadata)
    lines = [f"Test report: {run.run_id}", ""]
    if data.check is None:
        lines.append("Verdict: none (no limit set given)")
    else:
        c = data.check
        lines.append(f"Verdict: {c.verdict.upper()} against {c.limits_name or '(unnamed)'}: "
                     f"{len(c.trips)} trip, {len(c.warnings)} warning excursion(s)")  # fmt: skip
    lines += [""] + [f"{n}" for n in data.notes]
    for label, key in (("Pack", "pack_serial"), ("Operator", "operator"), ("Profile", "profile")):
        lines.append(f"{label}: {meta.get(key, 'not recorded')}")
    lines.append(f"Limit set: {limits_name or meta.get('limit_set', 'not recorded')}")
    lines.append(f"Bench {run.bench_id}, status {run.status} {run.reason}".rstrip())
    lines.append(f"Software: daq {meta.get('software_version', '?')}, config hash {run.config_hash or '-'}")
    lines += ["", "cycle  charged/Ah  discharged/Ah  coulombic/%  energy/%  retention/%"]
    for r in data.cycles:
        lines.append(
            f"{r.cycle:>5}  {_fmt(r.charge_ah, '10.3f')}  {_fmt(r.discharge_ah, '13.3f')}  "
            f"{_fmt(r.coulombic_efficiency_pct, '11.2f')}  {_fmt(r.energy_efficiency_pct, '8.2f')}  "
            f"{_fmt(r.retention_pct, '11.2f')}"
        )
    if data.check is not None and data.check.excursions:
        lines += ["", "level    limit                        device     channel      start/s    peak  threshold"]
        for e in data.check.excursions[:40]:
            lines.append(
                f"{e.level:<8} {e.limit:<28} {e.device:<10} {e.channel:<12} "
                f"{data.time_s(e.start_ns):>7.1f} {_fmt(e.peak, '7.4g')} {_fmt(e.threshold, '10.4g')}"
            )
    return lines


def write_pdf(data: RunData, figures: list[ReportFigure], path: Path, *, limits_name: str | None = None) -> None:
    with PdfPages(path) as pdf:
        page = plt.figure(figsize=(WIDTH_IN, 8.5))
        page.text(0.04, 0.96, "\n".join(summary_lines(data, limits_name)), va="top", family="monospace", fontsize=9)
        pdf.savefig(page)
        plt.close(page)
        for f in figures:
            f.figure.suptitle(f.title)
            pdf.savefig(f.figure)
