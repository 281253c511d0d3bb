"""Small helpers for tests: waiting with a deadline, writing bench files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CYCLER_REGMAP = str(REPO / "configs" / "regmaps" / "sim_cycler.yaml")


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout`` real seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_for_value(
    fn: Callable[[], Awaitable[Any]], predicate: Callable[[Any], bool], *, timeout: float = 20.0, what: str = "value"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        await asyncio.sleep(0.01)


def sim_bench(
    tmp_path: Path,
    *,
    cyclers: int = 1,
    time_scale: float = 1.0,
    poll_period_s: float = 0.1,
    watchdog_timeout_s: float = 0,
    extra_device: dict | None = None,
    **pack: Any,
) -> Path:
    """Write a bench file with ``cyclers`` simulated cyclers on free ports; return its path."""
    sims = [{"kind": "cycler", "name": f"sim-{k}", "port": 0} for k in range(cyclers)]
    devices = [
        {
            "name": f"cycler-{k}",
            "kind": "modbus",
            "role": "cycler",
            "transport": {"kind": "tcp", "simulator": f"sim-{k}"},
            "regmap": CYCLER_REGMAP,
            "poll_period_s": poll_period_s,
            "timeout_s": 0.3,
            "watchdog_timeout_s": watchdog_timeout_s,
        }
        for k in range(cyclers)
    ]
    if extra_device:
        devices.append(extra_device)
    cfg = {
        "bench": {"id": "testbench"},
        "journal": {"path": str(tmp_path / "journal.sqlite"), "commit_interval_s": 0.1},
        "simulation": {
            "time_scale": time_scale,
            "pack": {"series_cells": 14, "capacity_ah": 27, **pack},
            "simulators": sims,
        },
        "devices": devices,
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
