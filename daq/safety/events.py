"""What the safety evaluator reports: alarm events (live) and excursions (after the fact).

An ``AlarmEvent`` is journaled and published, so ``to_dict``/``from_dict`` keep stable keys and
turn NaN into ``None`` (JSON has no NaN). An ``Excursion`` is one interval during which a value
stayed beyond a threshold long enough to count (its persistence time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

EventKind = Literal["raised", "cleared", "tripped", "acknowledged"]
Level = Literal["warning", "trip"]

RAISED: EventKind = "raised"
CLEARED: EventKind = "cleared"
TRIPPED: EventKind = "tripped"
ACKNOWLEDGED: EventKind = "acknowledged"
WARNING: Level = "warning"
TRIP: Level = "trip"


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else x


def _from_json_float(x: float | None) -> float:
    return math.nan if x is None else float(x)


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One change of alarm state.

    ``kind``: "raised"/"cleared" for warnings, "tripped" for a trip (latched until acknowledged),
    "acknowledged" when an operator releases a latched trip. ``limit`` is the limit's field name
    in the limit set (e.g. "cell_voltage_max_v"); ``channel`` is a record channel or a derived
    quantity (e.g. "cell_spread_v", "data_age_s", "step_ah"). ``value`` and ``threshold`` are
    in the limit's unit (NaN where they do not apply, e.g. an open sensor).
    """

    t_ns: int
    kind: EventKind
    limit: str
    level: Level
    device: str
    channel: str
    value: float
    threshold: float
    message: str
    who: str = ""

    def acknowledged_by(self, who: str, t_ns: int) -> AlarmEvent:
        """The "acknowledged" event that releases this latched trip."""
        return AlarmEvent(
            t_ns=t_ns,
            kind=ACKNOWLEDGED,
            limit=self.limit,
            level=self.level,
            device=self.device,
            channel=self.channel,
            value=self.value,
            threshold=self.threshold,
            message=f"{self.limit} trip on {self.device} {self.channel} acknowledged by {who}",
            who=who,
        )

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity of the alarm this event belongs to: (limit, device, channel)."""
        return (self.limit, self.device, self.channel)

    def to_dict(self) -> dict[str, Any]:
        return {
            "t_ns": self.t_ns,
            "kind": self.kind,
            "limit": self.limit,
            "level": self.level,
            "device": self.device,
            "channel": self.channel,
            "value": _json_float(self.value),
            "threshold": _json_float(self.threshold),
            "message": self.message,
            "who": self.who,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlarmEvent:
        return cls(
            t_ns=int(data["t_ns"]),
            kind=data["kind"],
            limit=data["limit"],
            level=data["level"],
            device=data["device"],
            channel=data["channel"],
            value=_from_json_float(data["value"]),
            threshold=_from_json_float(data["threshold"]),
            message=data["message"],
            who=data.get("who", ""),
        )


@dataclass(frozen=True, slots=True)
class Excursion:
    """An interval beyond one threshold that lasted at least the limit's persistence time.

    ``start_ns``: first sample beyond the threshold. ``end_ns``: first sample back within it
    (for warnings: back past the hysteresis band, as the live monitor clears), or the last
    sample of the data if it never came back (then ``ended`` is False). ``peak`` is the most
    extreme value seen (the highest for a max limit, the lowest for a min limit).
    """

    limit: str
    level: Level
    device: str
    channel: str
    start_ns: int
    end_ns: int
    peak: float
    threshold: float
    unit: str
    ended: bool = True

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "level": self.level,
            "device": self.device,
            "channel": self.channel,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "duration_s": self.duration_s,
            "peak": _json_float(self.peak),
            "threshold": _json_float(self.threshold),
            "unit": self.unit,
            "ended": self.ended,
        }
