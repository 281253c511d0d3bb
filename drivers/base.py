"""What the poll engine and the safety/runner layers need from any device driver."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from daq.records import DeviceSchema


class PollingDriver(Protocol):
    """A device that can be polled for one record's worth of values.

    ``read`` fills ``values`` and ``quality`` (one slot per channel of ``schema``) in place so the
    hot path allocates nothing per value. Per-channel problems (a Modbus exception on one block, a
    sensor sentinel) are written as qualities; a dead link raises ``TransportError``, a garbled
    reply ``ProtocolError``, after marking what could not be read.
    """

    name: str
    schema: DeviceSchema
    info: dict[str, str | float]

    async def connect(self) -> None: ...

    async def read(self, values: list[float], quality: bytearray) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class CommandableDriver(PollingDriver, Protocol):
    """A device that takes setpoints. ``write`` range-checks before anything is sent."""

    async def write(self, channel: str, value: float) -> None: ...

    async def read_channel(self, channel: str) -> float: ...
