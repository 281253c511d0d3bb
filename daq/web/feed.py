"""The live bench view as data: one JSON snapshot built a few times per second, shared by every client.

Nothing here runs on the record path. A ``LiveFeed`` task wakes ``rate_hz`` times per wall second,
reads what the bench already keeps (``bench.latest`` per device, poll stats, the safety monitor's
alarms, the runner's progress), serialises it once and wakes every waiting client with the same
bytes. So ten browsers cost the same as one, and a slow client only ever misses ticks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from daq.channels import CELL_VOLTAGE_RE, CyclerMode
from daq.records import Quality, Record

if TYPE_CHECKING:
    from daq.bench import Bench

log = logging.getLogger(__name__)

CELL_TEMP_RE = re.compile(r"^temp(\d+)_c$")
MODE_NAMES = {m.value: m.name for m in CyclerMode}
STALE_AFTER_POLLS = 3.0  # a device whose last record is older than this many periods is marked stale
MIN_STALE_AFTER_S = 2.0  # wall seconds; fast pollers on a loaded PC get some slack
TREND_SERIES = ("voltage_v", "current_a", "temperature_c", "soc_pct")

RunnerSource = Callable[[], Any]  # returns the TestRunner of this process, or None


def _num(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


class LiveFeed:
    """Builds the snapshot on its own clock and hands it out by version number."""

    def __init__(
        self,
        bench: Bench,
        *,
        rate_hz: float = 4.0,
        trend_window_s: float = 600.0,
        runner_source: RunnerSource | None = None,
        controls_enabled: bool = False,
    ) -> None:
        self.bench = bench
        self.period_s = 1.0 / rate_hz
        self.runner_source = runner_source or (lambda: None)
        self.controls_enabled = controls_enabled
        self.version = 0
        self.payload: bytes = b"{}"
        self.snapshot: dict[str, Any] = {}
        points = int(trend_window_s * rate_hz)
        self.trend: dict[str, deque[float | None]] = {k: deque(maxlen=points) for k in ("t", *TREND_SERIES)}
        self._tick = asyncio.Event()
        self.closed = asyncio.Event()

    # -- fan-out ---------------------------------------------------------------------------------
    def publish(self) -> None:
        """Build one snapshot and wake everyone waiting for a newer one (O(1) in the clients)."""
        self.snapshot = self.build()
        self._append_trend(self.snapshot["trend_point"])
        try:
            text = json.dumps(self.snapshot, allow_nan=False, separators=(",", ":"))
        except ValueError:  # a NaN from a status provider: JSON has none, so it becomes null
            self.snapshot = _without_nan(self.snapshot)
            text = json.dumps(self.snapshot, allow_nan=False, separators=(",", ":"))
        self.payload = text.encode()
        self.version += 1
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    async def wait_newer(self, version: int) -> int:
        """Wait until a snapshot newer than ``version`` exists (or the feed closes); return the newest."""
        while self.version <= version and not self.closed.is_set():
            waiters = [
                asyncio.ensure_future(self._tick.wait()),
                asyncio.ensure_future(self.closed.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        return self.version

    async def run(self) -> None:
        try:
            while True:
                try:
                    self.publish()
                except Exception:  # a broken view must never take the bench down
                    log.exception("live feed: building the snapshot failed")
                await asyncio.sleep(self.period_s)
        finally:
            self.closed.set()

    def close(self) -> None:
        self.closed.set()

    # -- the snapshot ----------------------------------------------------------------------------
    def build(self) -> dict[str, Any]:
        bench = self.bench
        now_wall = time.time()
        devices = [self._device(name, poller) for name, poller in bench.pollers.items()]
        runner = self.runner_source()
        cfg = bench.loaded.config
        return {
            "bench": {
                "id": bench.bench_id,
                "description": cfg.bench.description,
                "location": cfg.bench.location,
                "run_id": bench.run_id,
                "bench_time_ns": bench.clock.wall_ns(),
                "started_ns": bench.started_ns,
                "time_scale": bench.clock.time_scale,
                "records": bench.records_seen,
                "journal": str(bench.journal.path),
                "journal_error": bench.journal.error,
            },
            "updated_unix_s": now_wall,
            "version": self.version + 1,
            "devices": devices,
            "pack": self._pack(),
            "safety": self._safety(),
            "test": None if runner is None else test_state(runner),
            "controls": {"enabled": self.controls_enabled, "test": runner is not None},
            "trend_point": self._trend_point(now_wall),
        }

    def device(self, name: str) -> dict[str, Any] | None:
        for dev in self.snapshot.get("devices", []):
            if dev["name"] == name:
                return dev
        return None

    def _device(self, name: str, poller: Any) -> dict[str, Any]:
        rec = self.bench.latest.get(name)
        stats = poller.stats
        schema = getattr(self.bench.drivers.get(name), "schema", None)
        scale = self.bench.clock.time_scale or 1.0
        out: dict[str, Any] = {
            "name": name,
            "kind": schema.kind if schema is not None else "",
            "period_s": poller.period_s,
            "polls": stats.polls,
            "good_polls": stats.good_polls,
            "timeouts": stats.timeouts,
            "errors": stats.errors,
            "last_error": stats.last_error or "",
            "quality": "waiting",
            "age_s": None,
            "stale": False,
            "channels": [],
        }
        if rec is None:
            return out
        age_s = (self.bench.clock.wall_ns() - rec.t_ns) / 1e9 / scale
        stale_after = max(MIN_STALE_AFTER_S, STALE_AFTER_POLLS * poller.period_s / scale)
        worst = max(rec.quality) if rec.quality else 0
        out.update(
            t_ns=rec.t_ns,
            age_s=round(age_s, 3),
            stale=age_s > stale_after,
            quality="stale" if age_s > stale_after and worst == 0 else Quality(worst).label,
            step=rec.step,
            cycle=rec.cycle,
            channels=[_channel(rec, i) for i in range(len(rec.schema.channels))],
        )
        return out

    def _bms_record(self) -> Record | None:
        for rec in self.bench.latest.values():
            if any(CELL_VOLTAGE_RE.match(c.name) for c in rec.schema.channels):
                return rec
        return None

    def _pack(self) -> dict[str, Any] | None:
        rec = self._bms_record()
        if rec is None:
            return None
        cells: list[dict[str, Any]] = []
        temps: list[dict[str, Any]] = []
        for i, ch in enumerate(rec.schema.channels):
            cell = CELL_VOLTAGE_RE.match(ch.name)
            temp = CELL_TEMP_RE.match(ch.name)
            if cell or temp:
                good = rec.quality[i] == 0
                entry = {
                    "n": int((cell or temp).group(1)),  # type: ignore[union-attr]
                    "value": _num(rec.values[i]) if good else None,
                    "quality": Quality(rec.quality[i]).label,
                }
                (cells if cell else temps).append(entry)
        spreads = {**_spread(cells, "v"), **_spread(temps, "c")}
        return {"device": rec.device, "cells": cells, "temperatures": temps, **spreads}

    def _safety(self) -> dict[str, Any] | None:
        monitor = self.bench.safety
        if monitor is None:
            return None
        return {
            "tripped": monitor.tripped,
            "limits": monitor.limits.name,
            "abort_reason": monitor.abort_reason or "",
            "latched": [_alarm(e) for e in monitor.trip_reasons()],
            "active": [_alarm(e) for e in monitor.active_alarms()],
        }

    def _trend_point(self, now_wall: float) -> dict[str, float | None]:
        """Pack V/I/T/SOC now: V and I from the cycler, T the hottest sensor, SOC from the BMS."""
        point: dict[str, float | None] = {"t": round(now_wall, 3)}
        cycler = next((self.bench.latest[n] for n in self.bench.cyclers if n in self.bench.latest), None)
        bms = self._bms_record()
        source = cycler or bms
        point["voltage_v"] = _num(source.get("voltage_v")) if source else None
        point["current_a"] = _num(source.get("current_a")) if source else None
        hottest = math.nan
        for rec in (bms, cycler):
            if rec is None:
                continue
            for i, ch in enumerate(rec.schema.channels):
                if (CELL_TEMP_RE.match(ch.name) or ch.name == "temperature_c") and rec.quality[i] == 0:
                    v = rec.values[i]
                    if math.isfinite(v) and not (v <= hottest):
                        hottest = v
        point["temperature_c"] = _num(hottest)
        point["soc_pct"] = _num(bms.get("soc_pct")) if bms else None
        return point

    def _append_trend(self, point: dict[str, float | None]) -> None:
        for key, series in self.trend.items():
            series.append(point.get(key))

    def trend_json(self) -> dict[str, list[float | None]]:
        return {key: list(series) for key, series in self.trend.items()}


def _without_nan(value: Any) -> Any:
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nan(v) for v in value]
    return value


def _channel(rec: Record, i: int) -> dict[str, Any]:
    ch = rec.schema.channels[i]
    q = rec.quality[i]
    value = _num(rec.values[i])
    out: dict[str, Any] = {"name": ch.name, "unit": ch.unit, "value": value, "quality": Quality(q).label}
    if ch.name == "mode" and value is not None and int(value) in MODE_NAMES:
        out["text"] = MODE_NAMES[int(value)]
    return out


def _spread(entries: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    values = [(e["value"], e["n"]) for e in entries if e["value"] is not None]
    if not values:
        return {f"min_{suffix}": None, f"max_{suffix}": None, f"spread_{suffix}": None}
    lo, hi = min(values), max(values)
    return {
        f"min_{suffix}": lo[0],
        f"min_{suffix}_at": lo[1],
        f"max_{suffix}": hi[0],
        f"max_{suffix}_at": hi[1],
        f"spread_{suffix}": hi[0] - lo[0],
    }


def _alarm(event: Any) -> dict[str, Any]:
    return {
        "t_ns": event.t_ns,
        "kind": event.kind,
        "level": event.level,
        "limit": event.limit,
        "device": event.device,
        "channel": event.channel,
        "value": _num(event.value),
        "threshold": _num(event.threshold),
        "message": event.message,
    }


def test_state(runner: Any) -> dict[str, Any]:
    """The running test as the page shows it: the runner's status plus profile and end conditions."""
    state = dict(runner.status())
    state["run_id"] = runner.run_id
    state["profile"] = getattr(runner.plan.profile, "name", "")
    detail = runner.step_detail() if hasattr(runner, "step_detail") else {}
    state.update(detail)
    return state


test_state.__test__ = False  # type: ignore[attr-defined]  # pytest: not a test despite the name
