"""Safety limits: the limit-set format, the live evaluator and the after-the-fact check.

Pure logic (the only I/O is reading a limit-set YAML file). The poll pipeline feeds every
record to ``Evaluator.evaluate`` before any sink; a trip is an event, never an exception.
"""

from daq.safety.compliance import CheckResult, check_run, format_table
from daq.safety.evaluator import Evaluator
from daq.safety.events import AlarmEvent, Excursion
from daq.safety.limits import (
    CurrentMismatchLimit,
    LimitSet,
    LowerLimit,
    RateLimit,
    SensorFaultPolicy,
    UpperLimit,
    load_limits,
    tighten,
)

__all__ = [
    "AlarmEvent",
    "CheckResult",
    "CurrentMismatchLimit",
    "Evaluator",
    "Excursion",
    "LimitSet",
    "LowerLimit",
    "RateLimit",
    "SensorFaultPolicy",
    "UpperLimit",
    "check_run",
    "format_table",
    "load_limits",
    "tighten",
]
