"""The poll schedule: the per-device phase never makes a gap longer than one period."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from daq.clock import ManualClock
from daq.engine.poller import DevicePoller
from daq.records import Channel, DeviceSchema, Record


class CountingDriver:
    """A driver that answers at once: only the schedule is under test here."""

    def __init__(self, name: str, clock: ManualClock, *, poll_takes_s: float = 0.0) -> None:
        self.name = name
        self.schema = DeviceSchema(name, "bms", (Channel("pack_voltage_v", "V"),))
        self.info: dict[str, str | float] = {}
        self._clock = clock
        self._poll_takes_s = poll_takes_s

    async def connect(self) -> None:
        return None

    async def read(self, values: list[float], quality: bytearray) -> None:
        self._clock.advance(self._poll_takes_s)
        values[0] = 48.0

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("phase_s", [0.0, 0.3, 4.99])
@pytest.mark.parametrize("poll_takes_s", [0.0, 0.5])
async def test_no_gap_between_polls_exceeds_the_period(phase_s: float, poll_takes_s: float) -> None:
    clock = ManualClock()
    times: list[int] = []
    enough = asyncio.Event()

    def on_record(record: Record) -> None:
        times.append(record.t_ns)
        if len(times) >= 6:
            enough.set()

    driver = CountingDriver("bms-1", clock, poll_takes_s=poll_takes_s)
    poller = DevicePoller(driver, period_s=5.0, clock=clock, on_record=on_record, phase_s=phase_s)
    task = asyncio.create_task(poller.run(), name="poll:bms-1")
    await asyncio.wait_for(enough.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 5.0 + 1e-9, gaps
    assert gaps[2:] == pytest.approx([5.0] * (len(gaps) - 2))  # then exactly on the period
    assert poller.stats.missed == 0
