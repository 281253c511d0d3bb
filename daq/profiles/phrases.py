"""PyBaMM-style experiment phrases parsed into typed steps.

Forms understood (case-insensitive; an optional "(1 minute period)" suffix sets the record period):

    Charge|Discharge at <current | C-rate | power> [for <duration>] [or] [until <end> [or <end>]...]
    Hold at <voltage> [for <duration>] [or] [until <current | C-rate>]
    Rest for <duration>

Units: A, mA, C-rates (1C, 0.5C, C/20), W, mW, kW, V, mV; durations in seconds, minutes, hours.

Direction: PyBaMM counts discharge current as positive; this project counts charge as positive.
Phrases never carry a sign, only the words Charge/Discharge, which map to ``direction`` and so to
the project's sign when the step is resolved. A voltage end on a charge step means "voltage rose
above", on a discharge step "voltage fell below". A current end means "current magnitude fell below".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from daq.profiles.model import (
    CcStep,
    CpStep,
    CvStep,
    Direction,
    EndConditions,
    LeafStep,
    RestStep,
)

PHRASE_EXAMPLES = (
    "'Charge at 0.5C until 4.2 V', 'Hold at 4.2 V until C/20', 'Rest for 30 minutes', "
    "'Discharge at C/3 for 2 hours or until 2.5 V'"
)


class PhraseError(ValueError):
    """A phrase could not be parsed; ``str()`` is '<what is wrong>; <how to fix>'."""

    def __init__(self, what: str, fix: str = f"write it like {PHRASE_EXAMPLES}") -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what}; {fix}")


@dataclass(frozen=True, slots=True)
class Quantity:
    """A parsed amount: ``kind`` is current_a, c_rate, power_w, voltage_v or resistance_ohm (SI)."""

    kind: str
    value: float


_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_C_RATE = re.compile(rf"^(?:(?P<mult>{_NUMBER})\s*C|C\s*/\s*(?P<div>{_NUMBER}))$", re.IGNORECASE)
_AMOUNT = re.compile(rf"^(?P<sign>[-+])?(?P<num>{_NUMBER})\s*(?P<unit>[a-zA-ZΩ]+)$")
_UNITS: dict[str, tuple[str, float]] = {
    "a": ("current_a", 1.0),
    "ma": ("current_a", 1e-3),
    "w": ("power_w", 1.0),
    "mw": ("power_w", 1e-3),
    "kw": ("power_w", 1e3),
    "v": ("voltage_v", 1.0),
    "mv": ("voltage_v", 1e-3),
    "ohm": ("resistance_ohm", 1.0),
    "ω": ("resistance_ohm", 1.0),
    "mohm": ("resistance_ohm", 1e-3),
}
_SECONDS_PER: dict[str, float] = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("day", "days"), 86400.0),
}
_DURATION = re.compile(rf"^(?P<num>{_NUMBER})\s*(?P<unit>[a-zA-Z]+)$")
_PERIOD_SUFFIX = re.compile(r"\s*\(\s*(?P<period>[^()]*?)\s+period\s*\)\s*$", re.IGNORECASE)
_ACTION = re.compile(
    r"^(?P<verb>charge|discharge|hold)\s+at\s+(?P<amount>.+?)"
    r"(?:\s+for\s+(?P<duration>.+?))?"
    r"(?:\s+(?:or\s+)?until\s+(?P<until>.+?))?$",
    re.IGNORECASE,
)
_REST = re.compile(r"^rest\s+for\s+(?P<duration>.+?)(?:\s+(?:or\s+)?until\s+(?P<until>.+?))?$", re.IGNORECASE)
_OR = re.compile(r"\s+or\s+", re.IGNORECASE)


def parse_quantity(text: str) -> Quantity:
    """'0.5C', 'C/20', '1 A', '50 mA', '20 W', '4.2 V', '3000 mV' -> Quantity (magnitudes only)."""
    text = text.strip()
    if match := _C_RATE.match(text):
        if match["mult"] is not None:
            return Quantity("c_rate", float(match["mult"]))
        divisor = float(match["div"])
        if divisor == 0:
            raise PhraseError(f"'{text}' divides by zero", "write a C-rate such as C/20 or 0.05C")
        return Quantity("c_rate", 1.0 / divisor)
    match = _AMOUNT.match(text)
    unit = _UNITS.get(match["unit"].lower()) if match else None
    if match is None or unit is None:
        raise PhraseError(
            f"'{text}' is not an amount this parser knows",
            "use A, mA, a C-rate (1C, 0.5C, C/20), W, mW, V or mV, e.g. '0.5C' or '4.2 V'",
        )
    if match["sign"] == "-":
        raise PhraseError(
            f"'{text}' is negative",
            "give a magnitude: the words Charge or Discharge set the direction",
        )
    kind, factor = unit
    return Quantity(kind, float(match["num"]) * factor)


def parse_duration_s(text: str) -> float:
    """'30 minutes', '2 hours', '10 s' -> seconds."""
    text = text.strip()
    match = _DURATION.match(text)
    factor = _SECONDS_PER.get(match["unit"].lower()) if match else None
    if match is None or factor is None:
        raise PhraseError(
            f"'{text}' is not a duration this parser knows",
            "use seconds, minutes or hours, e.g. '30 minutes', '2 hours', '10 seconds'",
        )
    seconds = float(match["num"]) * factor
    if seconds <= 0:
        raise PhraseError(f"duration '{text}' is zero", "give a positive duration")
    return seconds


def parse_phrase(text: str) -> LeafStep:
    """Parse one PyBaMM-style phrase into a typed step (labelled with the phrase itself)."""
    phrase = " ".join(text.split())
    body, record_period_s = _split_period(phrase)

    if match := _REST.match(body):
        if match["until"]:
            raise PhraseError(
                "a rest ends only after its time in this phrasing",
                "write 'Rest for 30 minutes'; for other end conditions use a structured step (kind: rest)",
            )
        return RestStep(label=phrase, record_period_s=record_period_s, duration_s=parse_duration_s(match["duration"]))

    match = _ACTION.match(body)
    if match is None:
        raise PhraseError(f"'{phrase}' is not a phrase this parser knows")
    verb = match["verb"].lower()
    amount = parse_quantity(match["amount"])
    duration_s = parse_duration_s(match["duration"]) if match["duration"] else None
    ends = [_parse_end(part) for part in _OR.split(match["until"])] if match["until"] else []

    if verb == "hold":
        if amount.kind != "voltage_v":
            raise PhraseError(f"Hold takes a voltage, not '{match['amount']}'", "write e.g. 'Hold at 4.2 V until C/20'")
        return CvStep(
            label=phrase,
            record_period_s=record_period_s,
            voltage_v=amount.value,
            duration_s=duration_s,
            until=_end_conditions(ends, direction=None, allow_current=True),
        )

    direction: Direction = "charge" if verb == "charge" else "discharge"
    if amount.kind == "voltage_v":
        raise PhraseError(
            f"'{verb.capitalize()} at {match['amount']}' sets a voltage",
            "to hold a voltage write 'Hold at 4.2 V until C/20'",
        )
    if amount.kind == "resistance_ohm":
        raise PhraseError("constant-resistance steps (Ohm) are not supported", "use a current, C-rate or power instead")
    if amount.kind == "power_w":
        return CpStep(
            label=phrase,
            record_period_s=record_period_s,
            direction=direction,
            power_w=amount.value,
            duration_s=duration_s,
            until=_end_conditions(ends, direction=direction, allow_current=True),
        )
    return CcStep(
        label=phrase,
        record_period_s=record_period_s,
        direction=direction,
        current_a=amount.value if amount.kind == "current_a" else None,
        c_rate=amount.value if amount.kind == "c_rate" else None,
        duration_s=duration_s,
        until=_end_conditions(ends, direction=direction, allow_current=False),
    )


def _parse_end(text: str) -> Quantity:
    try:
        return parse_quantity(text)
    except PhraseError:
        match = _DURATION.match(text.strip())
        if match and match["unit"].lower() in _SECONDS_PER:
            raise PhraseError(
                f"'until {text.strip()}' is a time",
                "put time in 'for', e.g. 'Discharge at 1C for 1 hour or until 3.0 V'",
            ) from None
        raise


def _split_period(phrase: str) -> tuple[str, float | None]:
    match = _PERIOD_SUFFIX.search(phrase)
    if match is None:
        return phrase, None
    return phrase[: match.start()], parse_duration_s(match["period"])


def _end_conditions(ends: list[Quantity], *, direction: Direction | None, allow_current: bool) -> EndConditions:
    fields: dict[str, float] = {}
    for end in ends:
        if end.kind == "voltage_v":
            if direction is None:
                raise PhraseError(
                    "a voltage hold cannot end on a voltage",
                    "end it on current or time, e.g. 'Hold at 4.2 V until C/20'",
                )
            name = "voltage_above_v" if direction == "charge" else "voltage_below_v"
        elif end.kind in ("current_a", "c_rate"):
            if not allow_current:
                raise PhraseError(
                    "a constant-current step cannot end on current",
                    "end it on voltage or time, e.g. 'Charge at 0.5C until 4.2 V'",
                )
            name = "current_below_a" if end.kind == "current_a" else "current_below_c_rate"
        else:
            raise PhraseError(
                f"'until' cannot take a {end.kind.split('_')[0]}",
                "end on a voltage (4.2 V), a current (C/20, 50 mA), or use 'for <duration>'",
            )
        if name in fields or (name.startswith("current_below") and any(k.startswith("current_below") for k in fields)):
            raise PhraseError("two end conditions of the same kind", "keep one per quantity")
        fields[name] = end.value
    return EndConditions(**fields)
