"""Per-poll records: the unit of data on the hot path.

One poll of one device yields one ``Record``: a timestamp, the values of all the device's
channels as a flat list of floats (NaN where there is no value) and one quality code per value.
The channel names and units live once per device in a shared ``DeviceSchema``, never per value.

Sign convention everywhere past the driver boundary: SI units, current positive = charging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

NAN = math.nan


class Quality(IntEnum):
    """Per-value quality. Codes are stored in the journal: never renumber."""

    GOOD = 0
    STALE = 1  # value repeated from an earlier poll (e.g. slow sub-block)
    TIMEOUT = 2  # device did not answer
    DEVICE_EXCEPTION = 3  # device answered with an exception code
    OUT_OF_RANGE = 4  # decoded but outside the register's plausible range, or a sensor sentinel
    BAD_FRAME = 5  # checksum / framing / unexpected response
    COMM_LOST = 6  # link down, reconnecting

    @property
    def label(self) -> str:
        return self.name.lower()


GOOD = int(Quality.GOOD)


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    unit: str = ""
    writable: bool = False


@dataclass(frozen=True, slots=True)
class DeviceSchema:
    """The channels one device reports, in record order. Shared by all of its records."""

    device: str
    kind: str  # "cycler", "bms", ... ; InfluxDB measurement and export grouping
    channels: tuple[Channel, ...]
    index: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {c.name: i for i, c in enumerate(self.channels)})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)

    def __len__(self) -> int:
        return len(self.channels)


@dataclass(slots=True)
class Record:
    """One poll of one device.

    ``t_ns`` is the (possibly simulated) Unix time in nanoseconds when the poll started.
    ``quality`` holds one ``Quality`` code per channel.
    ``seq`` is assigned by the journal (0 until then). ``step`` and ``cycle`` are stamped by the
    test runner (0 outside a test).
    """

    schema: DeviceSchema
    t_ns: int
    values: list[float]
    quality: bytes
    run_id: str = ""
    step: int = 0
    cycle: int = 0
    seq: int = 0

    @property
    def device(self) -> str:
        return self.schema.device

    def get(self, channel: str, default: float = NAN) -> float:
        """Value of ``channel`` if present and good, else ``default``."""
        i = self.schema.index.get(channel)
        if i is None or self.quality[i] != GOOD:
            return default
        return self.values[i]

    def all_good(self) -> bool:
        return not any(self.quality)

    @classmethod
    def failed(cls, schema: DeviceSchema, t_ns: int, quality: Quality) -> Record:
        """A record for a poll that produced no values at all."""
        n = len(schema.channels)
        return cls(schema, t_ns, [NAN] * n, bytes([int(quality)]) * n)
