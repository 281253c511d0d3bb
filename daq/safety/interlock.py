"""The output interlock: while a trip is latched, nothing may switch a cycler's output back on.

``InterlockedDriver`` sits between a ``CyclerControl`` and its driver (the monitor installs it at
start). It refuses, before anything is sent, every write that would let current flow again
(``output_enable`` or ``contactor_closed`` set to a non-zero value) while ``is_latched()`` is true;
everything else passes through unchanged, so the action ladder itself is never blocked. Writes
that go around ``CyclerControl`` are caught by the monitor instead: a record showing the output
on while latched runs the ladder again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daq.errors import InterlockError
from drivers.base import CommandableDriver

ENABLING_CHANNELS = frozenset({"output_enable", "contactor_closed"})


class InterlockedDriver:
    """A ``CommandableDriver`` that refuses enabling writes while a trip is latched."""

    def __init__(
        self,
        inner: CommandableDriver,
        *,
        is_latched: Callable[[], bool],
        reason: Callable[[], str],
        on_refused: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.inner = inner
        self._is_latched = is_latched
        self._reason = reason
        self._on_refused = on_refused

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def write(self, channel: str, value: float) -> None:
        if channel in ENABLING_CHANNELS and value and self._is_latched():
            why = self._reason()
            if self._on_refused is not None:
                self._on_refused(self.inner.name, channel, value)
            raise InterlockError(
                f"{self.inner.name}: {channel}={value:g} refused: a safety trip is latched ({why});"
                " acknowledge it with `daq ack RUN` first; nothing was sent"
            )
        await self.inner.write(channel, value)
