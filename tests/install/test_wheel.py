"""The installed product: a wheel built from this checkout, installed in a fresh virtual environment
and run from an empty folder, as a lab PC would run it.

The package under test comes from the wheel only: the venv has its own site-packages with the
wheel installed, and sees the test environment's site-packages for the dependencies alone (a
``.pth`` line per folder, so no editable-install hook of the checkout is processed). Every test
asserts that ``daq`` is imported from inside the venv, and runs in an empty temporary folder.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import site
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daq.journal import JournalReader
from drivers.modbus.regmap import load_regmap

REPO = Path(__file__).resolve().parents[2]
BUILD_INPUTS = ["pyproject.toml", "setup.py", "README.md", "daq", "drivers", "simulators", "configs"]
SHIPPED_KINDS = {"regmaps": "regmap", "limits": "limits", "profiles": "profile"}
DEADLINE_S = 60.0


@dataclass
class Installed:
    venv: Path
    wheel: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def daq(self, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "daq"), *args], cwd=cwd, env=self.env, capture_output=True, text=True,
            timeout=timeout,
        )

    def start(self, *args: str, cwd: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(self.venv / "bin" / "daq"), *args], cwd=cwd, env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )


def _copy_build_inputs(dest: Path) -> None:
    dest.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in BUILD_INPUTS:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    src, dist, venv = root / "src", root / "dist", root / "venv"
    _copy_build_inputs(src)  # a copy: building must not write build/ or *.egg-info into the checkout
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check", "-w", str(dist),
         str(src)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    wheel = next(dist.glob("battery_daq-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    # Dependencies from the test environment, after the venv's own site-packages (where the wheel is).
    parent_sites = [p for p in [*site.getsitepackages(), site.getusersitepackages()] if Path(p).is_dir()]
    (Path(purelib) / "zz_test_dependencies.pth").write_text("\n".join(parent_sites) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index",
         "-q", "--disable-pip-version-check", str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return Installed(venv, wheel)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def _repo_config_files() -> set[str]:
    return {
        p.relative_to(REPO / "configs").as_posix()
        for p in (REPO / "configs").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_the_wheel_ships_every_config_file_and_daq_is_imported_from_it(installed: Installed, workdir: Path) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        shipped = {n.removeprefix("daq/_configs/") for n in wheel.namelist() if n.startswith("daq/_configs/")}
    assert shipped == _repo_config_files()
    result = subprocess.run(
        [str(installed.python), "-c", "import daq, daq.resources as r; print(daq.__file__); print(r.shipped_root())"],
        cwd=workdir, env=installed.env, capture_output=True, text=True, check=True,
    )
    package_file, shipped_root = result.stdout.split()
    assert Path(package_file).is_relative_to(installed.venv), package_file
    assert Path(shipped_root).is_relative_to(installed.venv), shipped_root
    assert not Path(package_file).is_relative_to(REPO)


def test_every_shipped_config_validates_by_its_package_reference(installed: Installed, workdir: Path) -> None:
    benches = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
    assert "demo" in benches
    for name in benches:
        result = installed.daq("validate", f"builtin:{name}", cwd=workdir)
        assert result.returncode == 0, f"builtin:{name}: {result.stderr}"
        assert result.stdout.startswith(f"ok: builtin:{name}")
    # Register maps, limit sets and profiles through their loaders, all in one installed interpreter.
    refs = {
        kind: sorted(p.stem for p in (REPO / "configs" / folder).glob("*.yaml"))
        for folder, kind in SHIPPED_KINDS.items()
    }
    script = (
        "import json, sys\n"
        "from drivers.modbus.regmap import load_regmap\n"
        "from daq.safety.limits import load_limits\n"
        "from daq.profiles import load_profile\n"
        "loaders = {'regmap': load_regmap, 'limits': load_limits, 'profile': load_profile}\n"
        "refs = json.loads(sys.argv[1])\n"
        "for kind, names in refs.items():\n"
        "    for name in names:\n"
        "        loaders[kind]('builtin:' + name)\n"
        "        print(kind, name)\n"
    )
    result = subprocess.run(
        [str(installed.python), "-c", script, json.dumps(refs)], cwd=workdir, env=installed.env,
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == sum(len(v) for v in refs.values())


def test_an_unknown_builtin_name_lists_the_names_that_exist(installed: Installed, workdir: Path) -> None:
    result = installed.daq("validate", "builtin:no_such_bench", cwd=workdir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no shipped bench file named 'no_such_bench'" in lines[0]
    assert "demo" in lines[0] and "Traceback" not in result.stderr


def _records(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        with JournalReader(journal) as reader:
            return reader.last_record_seq()
    except sqlite3.OperationalError:  # the file exists, its tables are not created yet
        return 0


def run_until_records(installed: Installed, args: list[str], *, cwd: Path, journal: Path, records: int = 20) -> str:
    """Start a bench, wait (with a deadline) until the journal holds ``records``, stop it with SIGTERM
    as systemd does; return its stdout. The stop must be clean: exit 0 and the run completed."""
    proc = installed.start(*args, cwd=cwd)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while _records(journal) < records:
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"daq {' '.join(args)} exited {proc.returncode} early: {err or out}")
            if time.monotonic() > deadline:
                raise AssertionError(f"daq {' '.join(args)}: fewer than {records} records after {DEADLINE_S} s")
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "completed" in out, out
    with JournalReader(journal) as reader:
        run = reader.run("latest")
    assert run.status == "completed", (run.status, run.reason)
    return out


def test_demo_runs_from_an_empty_folder_and_its_run_exports(installed: Installed, workdir: Path) -> None:
    run_until_records(installed, ["demo", "--quiet"], cwd=workdir, journal=workdir / "journal" / "demo.sqlite")
    result = installed.daq("export", "latest", "--format", "csv", "--out", "run.csv", cwd=workdir)
    assert result.returncode == 0, result.stderr
    lines = (workdir / "run.csv").read_text().splitlines()
    assert len(lines) > 2
    assert "voltage_v" in lines[0]


def test_init_writes_a_bench_that_validates_and_runs(installed: Installed, workdir: Path) -> None:
    result = installed.daq("init", "bench-7", cwd=workdir)
    assert result.returncode == 0, result.stderr
    bench = workdir / "bench-7"
    assert sorted(p.relative_to(bench).as_posix() for p in bench.rglob("*") if p.is_file()) == [
        "README.md",
        "bench.yaml",
        "limits/demo_nmc_14s.yaml",
        "regmaps/sim_cycler.yaml",
    ]
    assert "id: bench-7" in (bench / "bench.yaml").read_text()
    result = installed.daq("validate", "bench-7/bench.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:") and "bench bench-7" in result.stdout
    run_until_records(
        installed, ["run", "bench-7/bench.yaml"], cwd=workdir, journal=workdir / "journal" / "bench-7.sqlite",
        records=4,
    )

    again = installed.daq("init", "bench-7", cwd=workdir)
    assert again.returncode == 2
    assert "not empty" in again.stderr and "--force" in again.stderr and len(again.stderr.splitlines()) == 1


@pytest.fixture
def simulated_demo(installed: Installed, workdir: Path) -> Iterator[tuple[str, int]]:
    """``daq sim builtin:demo`` from the wheel: the cycler's Modbus TCP address."""
    proc = installed.start("sim", "builtin:demo", cwd=workdir)
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None

    def forward() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=forward, name="sim-stdout", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + DEADLINE_S
        address = None
        while address is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"daq sim printed no Modbus TCP address within {DEADLINE_S} s") from None
            match = re.match(r"sim-cycler: Modbus TCP on ([\d.]+):(\d+)", line)
            if match:
                address = (match.group(1), int(match.group(2)))
        yield address
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_probe_reads_the_simulated_cycler_as_its_documented_map(
    installed: Installed, workdir: Path, simulated_demo: tuple[str, int]
) -> None:
    host, port = simulated_demo
    target = ["--host", host, "--port", str(port)]
    result = installed.daq("probe", *target, "--regmap", "builtin:sim_cycler", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    probed = json.loads(result.stdout)
    documented = load_regmap(REPO / "configs" / "regmaps" / "sim_cycler.yaml")
    expected = {r.name for r in documented.polled} | {bit for r in documented.polled for bit, _ in r.bits}
    channels = {c["name"]: c for c in probed["channels"]}
    assert set(channels) == expected
    assert all(c["quality"] == "good" for c in channels.values())
    # The demo's 14s NMC module at 60 % state of charge, at rest: about 3.7 V per cell.
    assert 14 * 3.5 < channels["voltage_v"]["value"] < 14 * 4.0
    assert channels["voltage_v"]["where"] == "input 0 f32"
    assert probed["info"]["model"] and probed["info"]["rated_current_a"] == pytest.approx(300)

    raw = installed.daq("probe", *target, "--table", "input", "--start", "0", "--count", "2", "--json", cwd=workdir)
    assert raw.returncode == 0, raw.stderr
    first = json.loads(raw.stdout)["registers"][0]
    # The map documents voltage_v as an f32, high word first: that candidate is the voltage.
    assert first["f32 big"] == pytest.approx(channels["voltage_v"]["value"], abs=0.5)

    table = installed.daq("probe", *target, "--table", "input", "--count", "20", cwd=workdir)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()[1:]
    assert "f32 big" in header and "f32 little" in header
    assert [int(row.split()[0]) for row in rows if row.split()[0].isdigit()] == list(range(20))


def test_probe_of_a_wrong_unit_or_nothing_listening_is_one_line_and_exit_2(
    installed: Installed, workdir: Path, simulated_demo: tuple[str, int]
) -> None:
    host, port = simulated_demo
    wrong_unit = installed.daq("probe", "--host", host, "--port", str(port), "--unit", "9", cwd=workdir)
    assert wrong_unit.returncode == 2
    assert wrong_unit.stderr.count("\n") == 1 and "unit 9" in wrong_unit.stderr and "--unit" in wrong_unit.stderr
    closed = _closed_port()
    nothing = installed.daq("probe", "--host", "127.0.0.1", "--port", str(closed), cwd=workdir)
    assert nothing.returncode == 2
    assert nothing.stderr.count("\n") == 1 and f"127.0.0.1:{closed}" in nothing.stderr
    assert "Traceback" not in wrong_unit.stderr + nothing.stderr


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound and released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_systemd_unit_points_at_this_installation_and_verifies(installed: Installed, workdir: Path) -> None:
    result = installed.daq("systemd-unit", cwd=workdir)
    assert result.returncode == 0, result.stderr
    exec_start = [line for line in result.stdout.splitlines() if line.startswith("ExecStart=")]
    assert exec_start == [f"ExecStart={installed.venv / 'bin' / 'daq'} run /etc/daq/%i/bench.yaml"]
    assert "Type=notify" in result.stdout and "WatchdogSec=" in result.stdout
    (workdir / "daq@.service").write_text(result.stdout)
    verify = subprocess.run(
        ["systemd-analyze", "verify", "daq@bench-1.service"], cwd=workdir, capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and verify.stderr == "" and verify.stdout == "", verify.stderr


def test_shipped_lists_the_builtin_names_and_finds_the_grafana_files(installed: Installed, workdir: Path) -> None:
    listing = installed.daq("shipped", cwd=workdir)
    assert listing.returncode == 0, listing.stderr
    assert "sim_cycler" in listing.stdout and "demo_nmc_14s" in listing.stdout and "grafana/" in listing.stdout
    grafana = installed.daq("shipped", "--path", "grafana", cwd=workdir)
    assert grafana.returncode == 0, grafana.stderr
    folder = Path(grafana.stdout.strip())
    assert folder.is_relative_to(installed.venv)
    assert sorted(p.name for p in (folder / "dashboards").glob("*.json")) == sorted(
        p.name for p in (REPO / "configs" / "grafana" / "dashboards").glob("*.json")
    )
