"""Semantic control of a cycler over any driver whose register map uses the standard names.

Standard writable channels: ``mode_setpoint`` (daq.channels.CyclerMode), ``current_setpoint_a``
(+ = charge), ``voltage_setpoint_v``, ``power_setpoint_w`` (+ = charge), ``output_enable``,
``watchdog_timeout_s``, ``watchdog_counter``, device limits ``limit_*``; optional
``contactor_closed`` for the last step of the safety ladder. Every write is range-checked by the
driver before it is sent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from daq.channels import CyclerMode
from daq.clock import Clock
from daq.errors import DriverError
from drivers.base import CommandableDriver

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CyclerCommand:
    """One operating point. ``current_a`` and ``power_w`` are + = charge."""

    mode: CyclerMode
    current_a: float = 0.0
    voltage_v: float = 0.0
    power_w: float = 0.0


class CyclerControl:
    def __init__(self, driver: CommandableDriver, *, clock: Clock) -> None:
        self.driver = driver
        self.clock = clock
        self._watchdog_counter = 0
        self.last_command: CyclerCommand | None = None

    @property
    def name(self) -> str:
        return self.driver.name

    def has(self, channel: str) -> bool:
        regmap = getattr(self.driver, "regmap", None)
        if regmap is not None:
            return channel in regmap.by_name or channel in regmap.bit_owner
        return channel in self.driver.schema.index

    async def apply(self, command: CyclerCommand, *, enable_output: bool = True) -> None:
        """Setpoints first, then the mode, then the output: the unit never runs on stale setpoints."""
        d = self.driver
        if command.mode in (CyclerMode.CC, CyclerMode.CV, CyclerMode.CCCV):
            await d.write("current_setpoint_a", command.current_a)
        if command.mode != CyclerMode.REST:
            # always, 0 included: a clamp left over from the previous step must not pin this one
            await d.write("voltage_setpoint_v", command.voltage_v)
        if command.mode == CyclerMode.CP:
            await d.write("power_setpoint_w", command.power_w)
        await d.write("mode_setpoint", int(command.mode))
        if enable_output and command.mode != CyclerMode.REST:
            await d.write("output_enable", 1)
        self.last_command = command

    async def rest(self) -> None:
        await self.driver.write("mode_setpoint", int(CyclerMode.REST))
        self.last_command = CyclerCommand(CyclerMode.REST)

    async def output_off(self) -> None:
        await self.driver.write("output_enable", 0)

    async def safe_state(self, *, attempts: int = 3) -> bool:
        """Zero current, rest, output off; verify by reading back. True when verified off."""
        for attempt in range(1, attempts + 1):
            try:
                await self.driver.write("current_setpoint_a", 0.0)
                await self.driver.write("mode_setpoint", int(CyclerMode.REST))
                await self.driver.write("output_enable", 0)
                if await self.output_is_off():
                    return True
                log.error("%s: output still on after safe-state command (attempt %d)", self.name, attempt)
            except DriverError as exc:
                log.error("%s: safe-state command failed (attempt %d): %s", self.name, attempt, exc)
            await asyncio.sleep(0.05 * attempt)
        return False

    async def output_is_off(self) -> bool:
        reads = ["output_on"] if self.has("output_on") else []
        reads.append("output_enable")
        for channel in reads:
            if self.has(channel) and await self.driver.read_channel(channel) != 0:
                return False
        return True

    async def open_contactor(self) -> bool:
        if not self.has("contactor_closed"):
            return False
        await self.driver.write("contactor_closed", 0)
        return await self.driver.read_channel("contactor_closed") == 0

    async def push_limits(self, limits: dict[str, float]) -> dict[str, float]:
        """Write device-side limits (``limit_*`` channels) and read them back."""
        readback: dict[str, float] = {}
        for channel, value in limits.items():
            await self.driver.write(channel, value)
            readback[channel] = await self.driver.read_channel(channel)
        return readback

    async def refresh_watchdog(self) -> None:
        self._watchdog_counter = (self._watchdog_counter + 1) & 0xFFFF
        await self.driver.write("watchdog_counter", self._watchdog_counter)

    async def keep_watchdog(self, timeout_s: float) -> None:
        """Program the device watchdog and refresh it three times per timeout, forever.

        If this process dies or hangs, the refreshes stop and the cycler turns its output off.
        """
        programmed = False
        while True:
            try:
                if not programmed:
                    await self.driver.write("watchdog_timeout_s", timeout_s)
                    programmed = True
                await self.refresh_watchdog()
            except DriverError as exc:
                programmed = False
                log.debug("%s: watchdog refresh failed: %s", self.name, exc)
            await self.clock.sleep(timeout_s / 3)
