"""Find the journal a command should read: --journal, --bench, $DAQ_JOURNAL, or ./journal/*.sqlite."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from daq.config.loader import load_bench
from daq.errors import DaqError, JournalError
from daq.journal import JournalReader, RunInfo


def add_journal_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--journal", help="journal file (default: the one under ./journal holding the run)")
    p.add_argument("--bench", help="bench file whose journal to read")


def candidate_journals(args: argparse.Namespace) -> list[Path]:
    if getattr(args, "journal", None):
        return [Path(args.journal)]
    if getattr(args, "bench", None):
        return [load_bench(args.bench).journal_path]
    if os.environ.get("DAQ_JOURNAL"):
        return [Path(os.environ["DAQ_JOURNAL"])]
    found = sorted(Path("journal").glob("*.sqlite"))
    if not found:
        raise JournalError("no journal found under ./journal; pass --journal FILE or --bench CONFIG")
    return found


def open_run(args: argparse.Namespace, run: str) -> tuple[JournalReader, RunInfo]:
    """The journal holding ``run`` (an id, a unique prefix, or 'latest') and the run itself."""
    paths = candidate_journals(args)
    errors: list[str] = []
    hits: list[tuple[JournalReader, RunInfo]] = []
    for path in paths:
        reader = JournalReader(path)
        try:
            hits.append((reader, reader.run(run)))
        except DaqError as exc:
            errors.append(str(exc))
            reader.close()
    if run == "latest" and hits:
        best = max(hits, key=lambda h: h[1].started_ns)
        for reader, _ in hits:
            if reader is not best[0]:
                reader.close()
        return best
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise JournalError(f"run {run!r} found in several journals; pass --journal")
    raise JournalError(errors[0] if len(errors) == 1 else f"no run {run!r} in {', '.join(map(str, paths))}")
