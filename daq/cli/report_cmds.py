"""``daq report``: a self-contained HTML test report (and optionally a PDF) for one run."""

from __future__ import annotations

import argparse
from pathlib import Path

from daq.cli.journals import add_journal_args, open_run
from daq.export.writers import ExportError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write an HTML test report (plots, alarms, pass/fail verdict) for a run")
    p.add_argument("run", help="run id, a unique prefix of it, or 'latest'")
    p.add_argument("--limits", help="limit-set file to judge the run against (gives the pass/fail verdict)")
    p.add_argument("--strict", action="store_true", help="with --limits: warnings fail the run too")
    p.add_argument("--out", required=True, help="output HTML file, e.g. report.html")
    p.add_argument(
        "--pdf", nargs="?", const="", default=None, metavar="FILE", help="also write a PDF (default: --out with .pdf)"
    )
    add_journal_args(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from daq.safety.limits import load_limits

    out = Path(args.out)
    pdf = None if args.pdf is None else Path(args.pdf) if args.pdf else out.with_suffix(".pdf")
    limits = load_limits(args.limits) if args.limits else None
    reader, run = open_run(args, args.run)
    with reader:
        from daq.report import build_report  # matplotlib loads only once there is a run to report

        try:
            result = build_report(
                reader,
                run,
                out,
                limits=limits,
                limits_name=limits.name if limits else None,
                strict=args.strict,
                pdf=pdf,
            )
        except OSError as exc:  # the temporary file itself could not be created (disk full, read-only)
            raise ExportError(f"cannot write {exc.filename or out}: {exc.strerror or exc}; nothing was left") from exc
    written = f"{result.html}" + (f" and {result.pdf}" if result.pdf else "")
    verdict = f"; verdict {result.verdict.upper()}" if result.verdict else "; no verdict (give --limits FILE)"
    print(f"wrote report of run {run.run_id} ({result.figures} figures) to {written}{verdict}")
    for note in result.notes:
        print(f"note: {note}")
    return 0
