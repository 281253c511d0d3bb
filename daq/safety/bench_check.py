"""Checks of a bench file's ``safety:`` section against the rest of the bench (used by ``load_bench``).

So ``daq validate`` reports, before anything runs: a limit-set file that is missing or invalid, a
trip level the cycler's limit register cannot hold (with ``push_device_limits``), and an
escalation the cyclers cannot perform.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from daq.config.bench import BenchConfig
from daq.errors import ConfigError
from daq.safety.device_limits import device_limit_values
from daq.safety.limits import LimitSet, load_limits
from drivers.modbus.regmap import RegisterMap


class CheckedBench(Protocol):
    """What the check reads of a loaded bench (``daq.config.loader.LoadedBench`` is one); a protocol,
    so the loader can call this module without this module importing the loader."""

    @property
    def config(self) -> BenchConfig: ...

    @property
    def path(self) -> Path: ...

    @property
    def regmaps(self) -> Mapping[str, RegisterMap]: ...

    def resolve(self, relative: str) -> Path: ...


def validate_safety(loaded: CheckedBench) -> tuple[LimitSet | None, list[str]]:
    """The bench's limit set (None if it has no safety section or the file is invalid) and problems."""
    safety = loaded.config.safety
    if safety is None:
        return None, []
    where = f"{loaded.path}: safety"
    try:
        limits = load_limits(loaded.resolve(safety.limits, "limits"))
    except ConfigError as exc:
        return None, [f"{where}.limits: {p}" for p in exc.problems]
    problems: list[str] = []
    cyclers = [d for d in loaded.config.devices if d.role == "cycler" and d.enabled and d.name in loaded.regmaps]
    for dev in cyclers:
        regmap = loaded.regmaps[dev.name]
        if safety.push_device_limits:
            for item in device_limit_values(limits):
                reg = regmap.by_name.get(item.channel)
                if reg is None or reg.range is None:
                    continue
                lo, hi = reg.range
                if not lo <= item.value <= hi:
                    problems.append(
                        f"{where}.push_device_limits: {item.source} = {item.value:g} does not fit {dev.name}'s"
                        f" {item.channel} register (range {lo:g}..{hi:g}); change the limit set or set"
                        " push_device_limits: false"
                    )
        if safety.escalation == "contactor" and "contactor_closed" not in regmap.by_name:
            problems.append(
                f"{where}.escalation: 'contactor' but {dev.name}'s register map has no contactor_closed;"
                " map the contactor or set escalation: none"
            )
    return limits, problems
