"""Parse human durations: ``30s``, ``5m``, ``1.5h``, ``2d``, or plain seconds."""

from __future__ import annotations

import argparse
import re

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|min|m|h|d)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; use e.g. 30s, 5m, 1.5h")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]
