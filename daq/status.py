"""Self-metrics of a running bench: one JSON-able snapshot, refreshed every few seconds.

The bench stores the snapshot in its journal (``status`` of the run) so ``daq status`` can show it
from another terminal, and the MQTT sink publishes it. When the run ends the bench writes one last
snapshot marked ``final`` with the run's totals, so ``daq status`` of a finished run shows them.
Parts of the system add their own section through ``bench.status_providers`` (sinks, safety,
runner) without this module knowing them. It sees the bench only as a ``daq.ports.StatusSource``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from daq.ports import StatusSource
from daq.records import Quality

log = logging.getLogger(__name__)

STATUS_KEY = "status"


class StatusReporter:
    """Snapshots ``source`` every ``period_s``, hands each to ``on_snapshot`` and queues it in the journal."""

    def __init__(
        self,
        source: StatusSource,
        *,
        on_snapshot: Callable[[dict[str, Any]], None] | None = None,
        period_s: float = 2.0,
    ) -> None:
        self.source = source
        self.on_snapshot = on_snapshot
        self.period_s = period_s
        self._last_polls: dict[str, tuple[float, int]] = {}
        self._started = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        bench = self.source
        now = time.monotonic()
        devices: dict[str, Any] = {}
        for name, poller in bench.pollers.items():
            s = poller.stats
            t_prev, polls_prev = self._last_polls.get(name, (now, s.polls))
            elapsed = now - t_prev
            rate = (s.polls - polls_prev) / elapsed if elapsed > 0 else 0.0
            self._last_polls[name] = (now, s.polls)
            latest = bench.latest.get(name)
            devices[name] = {
                **s.as_dict(),
                "poll_rate_hz": round(rate, 3),
                "period_s": poller.period_s,
                "quality": Quality(max(latest.quality)).label if latest and latest.quality else "none",
            }
        status: dict[str, Any] = {
            "bench": bench.bench_id,
            "run_id": bench.run_id,
            "updated_unix_s": time.time(),
            "bench_time_ns": bench.clock.wall_ns(),
            "time_scale": bench.clock.time_scale,
            "records": bench.records_seen,
            "journal": {"path": str(bench.journal.path), "error": bench.journal.error},
            "devices": devices,
        }
        for section, provider in bench.status_providers.items():
            try:
                status[section] = provider()
            except Exception as exc:  # a broken provider must not hide the rest of the status
                status[section] = {"error": str(exc)}
        return status

    def final_snapshot(self, *, status: str, reason: str) -> dict[str, Any]:
        """The run's final figures as it ends (``final: true``); the bench journals them.

        Poll rates here are the run's mean per wall-clock second, not the last interval's.
        """
        snap = self.snapshot()
        elapsed = time.monotonic() - self._started
        for device in snap["devices"].values():
            device["poll_rate_hz"] = round(device["polls"] / elapsed, 3) if elapsed > 0 else 0.0
        snap["final"] = True
        snap["ended"] = {"status": status, "reason": reason}
        return snap

    async def run(self) -> None:
        while True:
            snap = self.snapshot()
            if self.on_snapshot is not None:
                self.on_snapshot(snap)
            self.source.journal.queue_run_value(self.source.run_id, STATUS_KEY, snap)
            await asyncio.sleep(self.period_s)
