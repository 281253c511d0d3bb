"""CAN BMS driver: python-can reception on the event loop, records assembled from the latest frames.

A CAN BMS pushes its frames; nobody polls it. ``connect`` opens the bus and a python-can
``Notifier`` whose reader thread hands every frame to the event loop, where ``CanFrameAssembler`` keeps the
latest of each (frame id, mux value) with the bench time it arrived. The poll engine still calls
``read`` once per record period, which only copies that state into the record: a frame older than
its cycle time times ``stale_factor`` is STALE, so the safety monitor's data-age limit acts on a
CAN BMS exactly as on a polled one. A bus that stops delivering anything is COMM_LOST; a bus that
fails (bus-off, adapter unplugged) raises ``TransportError`` so the engine reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from daq.errors import ConfigError, ConnectError, TransportError
from daq.records import DeviceSchema
from drivers.can.mapping import CanFrameAssembler, CanMapping

log = logging.getLogger(__name__)

_ERROR_PAUSE_S = 0.2  # reader thread, after a bus error


def open_can_bus(interface: str, channel: str, bitrate: int | None) -> Any:
    """A python-can bus; ConnectError naming the interface and channel when it cannot be opened."""
    import can  # CAN benches only pay for it

    kwargs: dict[str, Any] = {"interface": interface, "channel": channel}
    if bitrate is not None and interface not in ("virtual", "socketcan"):  # socketcan: set by `ip link`
        kwargs["bitrate"] = bitrate
    try:
        return can.Bus(**kwargs)
    except can.CanInterfaceNotImplementedError as exc:
        raise ConnectError(
            f"CAN interface {interface!r} is not available: {exc}; install its driver or pick another interface"
        ) from exc
    except (can.CanError, OSError, ValueError, ImportError) as exc:
        hint = f" (ip link set {channel} up type can bitrate {bitrate or 500000})" if interface == "socketcan" else ""
        raise ConnectError(f"cannot open CAN {interface} channel {channel!r}: {exc}; check the adapter{hint}") from exc


def check_can_bus(interface: str, channel: str, bitrate: int | None, *, device: str) -> None:
    """At bench start: an interface python-can does not know or cannot open is a setup error (exit 2)."""
    import can

    if interface not in can.interfaces.VALID_INTERFACES:
        raise ConfigError(
            f"device {device}: CAN interface {interface!r} is unknown to python-can"
            f" (known: {', '.join(sorted(can.interfaces.VALID_INTERFACES))})"
        )
    if interface == "virtual":
        return  # an in-process bus always opens; opening a probe would only add a member to it
    try:
        bus = open_can_bus(interface, channel, bitrate)
    except ConnectError as exc:
        raise ConfigError(f"device {device}: {exc}") from exc
    bus.shutdown()


class _Receiver:
    """The Notifier's listener, called on its reader thread: frames go to the event loop thread.

    The Notifier runs without ``loop=``: with it, python-can re-raises a reader error in its
    thread (a traceback on stderr for an unplugged adapter). Here the error is handed to the driver
    (``read`` raises ``TransportError``, the engine reconnects) and the thread waits a little
    before the next attempt, so a dead bus does not spin until the reconnect stops it.
    """

    def __init__(self, driver: CanBmsDriver, loop: asyncio.AbstractEventLoop) -> None:
        self._driver = driver
        self._loop = loop

    def __call__(self, msg: Any) -> None:
        self._loop.call_soon_threadsafe(self._driver.on_frame, msg)

    def on_error(self, exc: Exception) -> None:
        self._driver.failure = exc  # a plain attribute store: safe from the reader thread
        time.sleep(_ERROR_PAUSE_S)


class CanBmsDriver:
    """A BMS on a CAN bus, its frames decoded with a DBC file into ``bms_channels(cells, sensors)``."""

    protocol = "can"

    def __init__(
        self,
        name: str,
        *,
        mapping: CanMapping,
        interface: str,
        channel: str,
        bitrate: int | None,
        now: Callable[[], float],
        stale_factor: float = 3.0,
    ) -> None:
        """``now``: bench monotonic seconds (the bench clock), so cycle times mean bench time."""
        self.name = name
        self.interface = interface
        self.channel = channel
        self.bitrate = bitrate
        self.now = now
        self.schema = DeviceSchema(name, "bms", mapping.channels)
        self.assembler = CanFrameAssembler(mapping, stale_factor=stale_factor)
        self.info: dict[str, str | float] = {"protocol": "can", "interface": interface, "channel": channel}
        self.failure: Exception | None = None
        self.error_frames = 0
        self._bus: Any = None
        self._notifier: Any = None
        self._problem = ""

    @property
    def where(self) -> str:
        return f"{self.name} (CAN {self.interface}:{self.channel})"

    async def connect(self) -> None:
        import can

        await self.close()
        self._bus = open_can_bus(self.interface, self.channel, self.bitrate)
        self.failure = None
        self.assembler.reset(self.now())
        self._notifier = can.Notifier(self._bus, [_Receiver(self, asyncio.get_running_loop())], timeout=0.1)

    def on_frame(self, msg: Any) -> None:
        if msg.is_error_frame:
            self.error_frames += 1
            return
        if msg.is_remote_frame:
            return
        self.assembler.update(msg.arbitration_id, msg.data[: msg.dlc], self.now())

    async def read(self, values: list[float], quality: bytearray) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise TransportError(f"{self.where}: bus failed: {failure}")
        now = self.now()
        problems = self.assembler.fill(values, quality, now)
        if self.assembler.bus_silent(now):
            problems = [
                f"no CAN frames for over {self.assembler.silence_s:g} s: check the cable, termination, bitrate"
                " and that the BMS is powered"
            ]
        self._report(problems)

    def _report(self, problems: list[str]) -> None:
        if not problems:
            if self._problem:
                log.warning("%s: frames arriving correctly again", self.where)
                self._problem = ""
            return
        key = re.sub(r"\d+(\.\d+)?", "#", problems[0])
        if key != self._problem:
            self._problem = key
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            log.warning("%s: %s%s", self.where, problems[0], more)

    async def close(self) -> None:
        notifier, bus = self._notifier, self._bus
        self._notifier = self._bus = None
        if notifier is not None:  # joins the reader thread: not on the event loop
            await asyncio.to_thread(notifier.stop, 1.0)
        if bus is not None:
            bus.shutdown()
