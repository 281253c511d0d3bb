"""Run the benchmark suite and write ``results.md`` and ``results.json``.

    python -m benchmarks.run                 # full run (about 15 minutes), benchmarks/results/
    python -m benchmarks.run --smoke         # tiny sizes, seconds; benchmarks/results/smoke/
    python -m benchmarks.run --only end_to_end [--smoke]

Each scenario (``benchmarks/scenarios/*.py``) runs its cases; in a full run every case runs in
a fresh process, so memory and CPU figures of one case never include another. Scripts that other
parts of the project own (``benchmarks/codec_throughput.py``, ``trip_latency.py``,
``acceleration.py``, ``serial_bus.py``) are run when present and their tables folded in.
``--only`` re-runs one scenario and merges it into the existing results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib
import json
import logging
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

SCENARIOS = ["components", "poll_floor", "scheduled", "end_to_end", "scale", "big_pack", "soak", "catch_up"]
# Scripts owned elsewhere: (name, file, title).
EXTERNAL = [
    ("safety_trip_latency", "trip_latency.py", "Safety: trip latency (benchmarks/trip_latency.py)"),
    ("codec_throughput", "codec_throughput.py", "BMS codec throughput (benchmarks/codec_throughput.py)"),
    ("acceleration", "acceleration.py", "Simulated-time acceleration (benchmarks/acceleration.py)"),
    ("serial_bus", "serial_bus.py", "Serial bus (benchmarks/serial_bus.py)"),
]
CASE_TIMEOUT_S = 1800
EXTERNAL_TIMEOUT_S = {True: 60, False: 1800}


# ------------------------------------------------------------------------------- own scenarios


def scenario_module(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.scenarios.{name}")


def _quiet_logs(log_file: Path | None) -> None:
    logging.basicConfig(
        level=logging.WARNING,
        filename=str(log_file) if log_file else None,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        force=True,
    )
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # late answers after a cancel, by design


def run_case_here(name: str, case: str, smoke: bool) -> dict[str, Any]:
    """One case in this process: its row, or ``{"error": ...}``."""
    from benchmarks.harness import Unavailable

    module = scenario_module(name)
    load_1m = os.getloadavg()[0]  # other work on the machine skews every figure: say how much there was
    try:
        row = asyncio.run(module.run_case(case, smoke))
        row["machine_load_1m"] = max(load_1m, os.getloadavg()[0])
    except Unavailable as exc:
        return {"case": case, "unavailable": str(exc)}
    except Exception as exc:  # a broken case is reported, the rest of the suite still runs
        return {"case": case, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    return {"case": case, "row": row}


def run_case_isolated(name: str, case: str, smoke: bool, log_file: Path) -> dict[str, Any]:
    """One case in a fresh interpreter (clean RSS and CPU accounting)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, "-m", "benchmarks.run", "--child", name, "--case", case, "--json", str(out)]
    cmd += ["--log", str(log_file)]
    if smoke:
        cmd.append("--smoke")
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=_env(), timeout=CASE_TIMEOUT_S, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists() or not out.stat().st_size:
            return {"case": case, "error": f"case process exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
        return json.loads(out.read_text())
    except subprocess.TimeoutExpired:
        return {"case": case, "error": f"timed out after {CASE_TIMEOUT_S} s"}
    finally:
        out.unlink(missing_ok=True)


def wait_quiet(max_wait_s: float) -> None:
    """Wait (bounded) until nothing else keeps the machine busy: a shared 2-core box skews figures."""
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] >= 1.0 and time.monotonic() < deadline:
        time.sleep(5)


WAIT_QUIET_S = 0.0


def run_scenario(name: str, smoke: bool, log_file: Path, *, isolated: bool) -> dict[str, Any]:
    module = scenario_module(name)
    started = time.perf_counter()
    rows, problems, unavailable = [], [], []
    for case in module.cases(smoke):
        if WAIT_QUIET_S:
            wait_quiet(WAIT_QUIET_S)
        print(f"  {name} [{case}] ...", end="", flush=True)
        result = run_case_isolated(name, case, smoke, log_file) if isolated else run_case_here(name, case, smoke)
        if "row" in result:
            rows.append(result["row"])
            print(" ok", flush=True)
        elif "unavailable" in result:
            unavailable.append(result["unavailable"])
            print(f" unavailable: {result['unavailable']}", flush=True)
        else:
            problems.append(f"case {case}: {result['error']}")
            print(f" FAILED: {result['error']}", flush=True)
            if "traceback" in result:
                logging.getLogger(__name__).error("%s [%s] failed:\n%s", name, case, result["traceback"])
    out = module.summarize(rows, smoke) if rows else {"scenario": name, "title": module.TITLE, "rows": [], "goals": []}
    out.setdefault("notes", [])
    if problems:
        out["status"] = "failed"
        out["notes"] = out["notes"] + problems
    elif unavailable and not rows:
        out["status"] = "unavailable"
        out["notes"] = out["notes"] + unavailable
    else:
        out["status"] = "ok"
    out["seconds"] = time.perf_counter() - started
    return out


# ------------------------------------------------------------------------------- other scripts


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


_NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+(?:[eE][-+]?\d+)?$")


def _cell(text: str) -> Any:
    text = text.strip().strip("*`")
    if _NUMBER.match(text):
        number = float(text.replace(",", ""))
        return int(number) if number.is_integer() and "." not in text else number
    return text


def parse_markdown_tables(text: str) -> list[dict[str, Any]]:
    """Rows of every markdown table in ``text`` (header row -> keys); numbers parsed."""
    rows: list[dict[str, Any]] = []
    lines = [line.strip() for line in text.splitlines()]
    i = 0
    while i + 1 < len(lines):
        head, rule = lines[i], lines[i + 1]
        if head.startswith("|") and re.match(r"^\|[\s:|-]+\|$", rule):
            keys = [k.strip() for k in head.strip("|").split("|")]
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c for c in lines[i].strip("|").split("|")]
                rows.append({k: _cell(c) for k, c in zip(keys, cells, strict=False)})
                i += 1
            continue
        i += 1
    return rows


def parse_script_output(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """A script's results: a JSON document (a list of rows, or an object with ``rows``) if it
    printed one, else its markdown tables. Also returns its non-table lines as notes."""
    stripped = text.strip()
    for candidate in (stripped, *[line for line in reversed(stripped.splitlines()) if line.startswith(("{", "["))]):
        try:
            doc = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(doc, list) and all(isinstance(r, dict) for r in doc):
            return doc, []
        if isinstance(doc, dict):
            rows = doc.get("rows")
            if isinstance(rows, list):
                return rows, [str(n) for n in doc.get("notes", [])]
            return [doc], []
    notes = [line.strip() for line in stripped.splitlines() if line.strip() and not line.strip().startswith("|")]
    return parse_markdown_tables(text), notes[:5]


def run_external(name: str, filename: str, title: str, smoke: bool) -> dict[str, Any] | None:
    path = REPO / "benchmarks" / filename
    if not path.exists():
        return {
            "scenario": name,
            "title": title,
            "status": "unavailable",
            "rows": [],
            "goals": [],
            "notes": [f"benchmarks/{filename} does not exist yet"],
        }
    cmd = [sys.executable, str(path)]
    source = path.read_text(errors="replace")
    if smoke and "--smoke" in source:
        cmd.append("--smoke")
    print(f"  {name} ({filename}) ...", end="", flush=True)
    started = time.perf_counter()
    result: dict[str, Any] = {"scenario": name, "title": title, "rows": [], "goals": [], "notes": []}
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=EXTERNAL_TIMEOUT_S[smoke]
        )
    except subprocess.TimeoutExpired:
        result.update(status="failed", notes=[f"timed out after {EXTERNAL_TIMEOUT_S[smoke]} s"])
        print(" FAILED (timeout)", flush=True)
        return result
    rows, notes = parse_script_output(proc.stdout)
    if proc.returncode != 0 or not rows:
        why = f"exit {proc.returncode}" if proc.returncode else "printed no table"
        result.update(status="failed", notes=[f"{filename}: {why}: {proc.stderr.strip()[-1500:]}"])
        print(f" FAILED ({why})", flush=True)
    else:
        result.update(status="ok", rows=rows, notes=[f"command: {' '.join(['python', *cmd[1:]])}", *notes])
        print(" ok", flush=True)
    result["seconds"] = time.perf_counter() - started
    return result


# ------------------------------------------------------------------------------- rendering


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("pymodbus", "aiomqtt", "aiohttp"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        **versions,
    }


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        a = abs(value)
        if a >= 1000:
            return f"{value:,.0f}"
        if a >= 100:
            return f"{value:.0f}"
        if a >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|")


def table(rows: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    if len(keys) > 6 and len(rows) <= 8:  # wide: one line per figure, one column per case
        head = ["figure", *[f"case {i + 1}" for i in range(len(rows))]]
        lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(rows)]
        for k in keys:
            lines.append(f"| {k} | " + " | ".join(fmt(r.get(k, "")) for r in rows) + " |")
        return lines
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |")
    return lines


def render_markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    out = [
        f"# Benchmark results{' (smoke run: tiny sizes, figures not meaningful)' if doc['smoke'] else ''}",
        "",
        f"Generated {doc['generated']} by `python -m benchmarks.run{' --smoke' if doc['smoke'] else ''}` on "
        f"{m.get('cpus')} CPUs ({m.get('cpu_model') or 'unknown model'}), Python {m.get('python')}, "
        f"pymodbus {m.get('pymodbus', '?')}, aiomqtt {m.get('aiomqtt', '?')}, kernel {m.get('kernel')}.",
        "Every ratio compares figures measured in the same run on the same simulators and servers.",
        "",
        "## Goals",
        "",
        "| goal | target | measured | pass |",
        "|---|---|---:|---|",
    ]
    for s in doc["scenarios"]:
        for g in s.get("goals", []):
            measured = f"{fmt(g['measured'])} {g.get('unit', '')}".strip()
            out.append(f"| {g['goal']} | {g['target']} | {measured} | {'PASS' if g['pass'] else 'FAIL'} |")
    out.append("")
    for s in doc["scenarios"]:
        out += [
            f"## {s['title']}",
            "",
            f"Scenario `{s['scenario']}`: {s['status']}" + (f", {s['seconds']:.0f} s" if "seconds" in s else "") + ".",
            "",
        ]
        if s["rows"]:
            out += [*table(s["rows"]), ""]
        out += [f"- {n}" for n in s.get("notes", [])]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def write_results(doc: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out_dir / "results.md").write_text(render_markdown(doc))


# ------------------------------------------------------------------------------- profiling


def profile_case(name: str, case: str, *, smoke: bool) -> int:
    """cProfile of one case, timed by CPU: what the hot path spends its time on."""
    import cProfile
    import pstats

    _quiet_logs(None)
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    result = run_case_here(name, case, smoke)
    profiler.disable()
    print(json.dumps(result.get("row") or result, indent=1, default=str))
    stats = pstats.Stats(profiler)
    stats.dump_stats(f"/tmp/profile-{name}-{case}.prof")
    stats.sort_stats("tottime").print_stats(35)
    print(f"full profile: /tmp/profile-{name}-{case}.prof (python -m pstats)")
    return 0


# ------------------------------------------------------------------------------- main


def all_names() -> list[str]:
    return SCENARIOS + [e[0] for e in EXTERNAL]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds per scenario (CI)")
    parser.add_argument("--only", choices=all_names(), action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--out", type=Path, help="output folder (default benchmarks/results, smoke: .../smoke)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each case wait up to this long for the 1-minute load average to drop below 1",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--profile",
        nargs=2,
        metavar=("SCENARIO", "CASE"),
        help="run one case under cProfile (CPU time, main thread) and print the top functions",
    )
    args = parser.parse_args(argv)

    if args.child:  # one case in a fresh process, for the parent run
        _quiet_logs(args.log)
        args.json.write_text(json.dumps(run_case_here(args.child, args.case, args.smoke), default=str))
        return 0
    if args.profile:
        return profile_case(*args.profile, smoke=args.smoke)

    global WAIT_QUIET_S
    WAIT_QUIET_S = args.wait_quiet
    out_dir = args.out or (RESULTS / "smoke" if args.smoke else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = out_dir / "run.log"
    log_file.write_text("")
    _quiet_logs(log_file)
    names = args.only or all_names()
    previous: dict[str, dict[str, Any]] = {}
    if args.only and (out_dir / "results.json").exists():
        with contextlib.suppress(ValueError, KeyError):
            old = json.loads((out_dir / "results.json").read_text())
            if old.get("smoke") == args.smoke:
                previous = {s["scenario"]: s for s in old["scenarios"]}
    load = os.getloadavg()[0]
    print(f"benchmarks ({'smoke' if args.smoke else 'full'} run) -> {out_dir}; load average {load:.1f}", flush=True)
    if load >= 1.0 and not args.smoke:
        print("  warning: the machine is busy with other work; figures will be skewed (see --wait-quiet)", flush=True)
    fresh: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in SCENARIOS:
            fresh[name] = run_scenario(name, args.smoke, log_file, isolated=not args.smoke)
        else:
            ext = next(e for e in EXTERNAL if e[0] == name)
            result = run_external(*ext, smoke=args.smoke)
            if result is not None:
                fresh[name] = result
    merged = {**previous, **fresh}
    doc = {
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "smoke": args.smoke,
        "machine": machine(),
        "scenarios": [merged[n] for n in all_names() if n in merged],
    }
    write_results(doc, out_dir)
    failed = [s["scenario"] for s in doc["scenarios"] if s["status"] == "failed"]
    print(f"wrote {out_dir / 'results.md'} and results.json" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
