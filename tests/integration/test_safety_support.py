"""Helpers shared by the safety tests (this module has no tests of its own)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import REPO, sim_bench

CELLS = 14
SENSORS = 4


def write_limits(tmp_path: Path, limits: dict[str, Any], name: str = "limits.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"name": "test-limits", **limits}, sort_keys=False))
    return path


def safety_bench(
    tmp_path: Path,
    limits: dict[str, Any],
    *,
    push_device_limits: bool = False,
    escalation: str = "contactor",
    stale_check_period_s: float = 0.1,
    bms: str | None = None,
    bms_poll_period_s: float = 0.5,
    bms_baud: int = 115200,
    **kwargs: Any,
) -> Path:
    """A ``sim_bench`` with a ``safety:`` section and, with ``bms`` ("jbd", "daly" or "modbus"), the
    simulated BMS of that protocol on a pseudo-terminal watching the cycler's pack (device bms-1)."""
    path = sim_bench(tmp_path, **kwargs)
    cfg = yaml.safe_load(path.read_text())
    cfg["safety"] = {
        "limits": str(write_limits(tmp_path, limits)),
        "stale_check_period_s": stale_check_period_s,
        "push_device_limits": push_device_limits,
        "escalation": escalation,
    }
    if bms is not None:
        cfg["simulation"]["simulators"].append(
            {
                "kind": "bms",
                "name": "sim-bms",
                "protocol": bms,
                "pack_of": "sim-0",
                "sensors_per_module": SENSORS,
                "baud": bms_baud,
                "pacing": True,
            }
        )
        transport = {"kind": "serial", "port": "sim:sim-bms", "baud": bms_baud}
        device: dict[str, Any] = {"name": "bms-1", "poll_period_s": bms_poll_period_s, "timeout_s": 0.5}
        if bms == "modbus":
            device.update(
                kind="modbus", role="bms", transport=transport, regmap=str(REPO / "configs/regmaps/sim_bms.yaml")
            )
        else:
            device.update(kind=bms, transport=transport, cells=CELLS, sensors=SENSORS)
        cfg["devices"].append(device)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# --- reading the journal ---------------------------------------------------------------------


def journal_events(path: Path, run_id: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT kind, data FROM events WHERE run_id=? ORDER BY seq", (run_id,)).fetchall()
    return [(k, json.loads(d)) for k, d in rows if k.startswith(prefix)]


def journal_record_count(path: Path, run_id: str) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute(
            "SELECT COUNT(*) FROM records JOIN devices USING (device_id) WHERE run_id=?", (run_id,)
        ).fetchone()[0]


def kinds(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [k for k, _ in events]


async def daq_cli(*args: str) -> tuple[int, str, str]:
    """Run ``daq`` in a child process without blocking the event loop (the bench keeps polling)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daq.cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
