"""Installing a bench on a lab PC: ``daq init DIR`` (a starter bench folder), ``daq systemd-unit``
(the service template for this installation) and ``daq shipped`` (what ``builtin:NAME`` names).

The starter is written from shipped files only (``configs/starter/``, the demo register map and
limit set), so it works from an installed wheel; it validates and runs against the simulators as
written, and its README says what to edit for a real bench.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from daq.errors import ConfigError
from daq.resources import BUILTIN_PREFIX, KINDS, shipped_file, shipped_names, shipped_path, shipped_root

BENCH_ID_PLACEHOLDER = "__BENCH_ID__"
BENCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # as config.bench.Name
UNIT_TEMPLATE = "deploy/daq@.service"
UNIT_EXECUTABLE = "/opt/battery-daq/bin/daq"  # the shipped unit's placeholder for the daq program


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write a starter bench folder (bench file, register map, limit set, README)")
    p.add_argument("dir", help="folder to create (must be empty or missing, unless --force)")
    p.add_argument("--id", dest="bench_id", help="bench id (default: the folder's name)")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder, replacing the starter files")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("systemd-unit", help="print the systemd unit template daq@.service for this installation")
    p.set_defaults(func=cmd_systemd_unit)

    p = sub.add_parser("shipped", help="list the shipped files builtin:NAME can name, or print where one is")
    p.add_argument("--path", metavar="FILE", help="print the path of a shipped file or folder, e.g. grafana")
    p.set_defaults(func=cmd_shipped)


def starter_files() -> dict[str, Path]:
    """Starter folder layout: relative path written -> shipped source."""
    return {
        "bench.yaml": shipped_file("starter/bench.yaml"),
        "README.md": shipped_file("starter/README.md"),
        "regmaps/sim_cycler.yaml": shipped_path("regmap", "sim_cycler"),
        "limits/demo_nmc_14s.yaml": shipped_path("limits", "demo_nmc_14s"),
    }


def write_starter(target: Path, *, bench_id: str, force: bool = False) -> list[Path]:
    if not BENCH_ID.match(bench_id):
        raise ConfigError(
            f"bench id {bench_id!r}: use letters, digits, '.', '_' and '-' (up to 64, starting with a letter or"
            " digit); pass --id"
        )
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target}: exists and is not a folder; choose another DIR")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ConfigError(
            f"{target}: the folder is not empty; choose an empty or new folder, or pass --force to write the"
            " starter files into it (files of the same name are replaced, others are left alone)"
        )
    written = []
    for relative, source in starter_files().items():
        dest = target / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        if relative == "bench.yaml":
            text = source.read_text(encoding="utf-8").replace(BENCH_ID_PLACEHOLDER, bench_id)
            dest.write_text(text, encoding="utf-8")
        else:
            shutil.copyfile(source, dest)
        written.append(dest)
    return written


def cmd_init(args: argparse.Namespace) -> int:
    target = Path(args.dir)
    bench_id = args.bench_id or target.resolve().name
    try:
        written = write_starter(target, bench_id=bench_id, force=args.force)
    except OSError as exc:
        problem = f"{target}: cannot write the starter bench: {exc.strerror}; check the folder's permissions"
        raise ConfigError(problem) from exc
    print(f"wrote a starter bench {bench_id} in {target}:")
    for path in written:
        print(f"  {path}")
    bench = target / "bench.yaml"
    print(f"next: daq validate {bench} && daq run {bench} --duration 1m; then edit it (see {target / 'README.md'})")
    return 0


def unit_text(executable: str) -> str:
    """The shipped ``daq@.service`` with ExecStart pointing at ``executable``."""
    return shipped_file(UNIT_TEMPLATE).read_text(encoding="utf-8").replace(UNIT_EXECUTABLE, executable)


def daq_executable() -> str:
    """The ``daq`` program of this installation (next to its Python), for the unit's ExecStart."""
    candidate = Path(sys.executable).with_name("daq")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("daq")
    return found or UNIT_EXECUTABLE


def cmd_systemd_unit(args: argparse.Namespace) -> int:
    sys.stdout.write(unit_text(daq_executable()))
    return 0


def cmd_shipped(args: argparse.Namespace) -> int:
    if args.path:
        print(shipped_file(args.path))
        return 0
    root = shipped_root()
    print(f"shipped files in {root}; name them as {BUILTIN_PREFIX}NAME")
    for kind, info in KINDS.items():
        names = shipped_names(kind)
        print(f"  {info.label + 's:':<16} {', '.join(names) or '-'}")
    folders = sorted(
        p.name + "/" for p in root.iterdir() if p.is_dir() and p.name not in {i.folder for i in KINDS.values()}
        and not p.name.startswith("__")
    )
    print(f"  {'other:':<16} {', '.join(folders)}  (daq shipped --path FOLDER)")
    return 0
