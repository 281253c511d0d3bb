"""Running under systemd: readiness and watchdog notifications, and log lines journald understands.

``sd_notify`` is a datagram to the AF_UNIX socket named in ``$NOTIFY_SOCKET`` (a leading ``@`` is
the abstract namespace); no library is needed. With ``Type=notify`` and ``WatchdogSec=`` in the
unit (configs/deploy/daq@.service), ``daq run`` sends ``READY=1`` once the bench is up, then
``WATCHDOG=1`` every half watchdog period **only while the bench is healthy**: the journal has no
error and records keep arriving. A hung event loop, a dead journal writer or a poll engine that
stopped all stop the pings, and systemd restarts the service (``Restart=on-failure``).
Outside systemd every function here is a no-op.

Logs: when stderr is the journal (``$JOURNAL_STREAM`` names it), each line starts with the syslog
priority ``<N>`` so ``journalctl -p warning`` filters by level, and carries no timestamp of its
own (journald stamps every line).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from daq.bench import Bench

log = logging.getLogger(__name__)

MIN_STALL_S = 60.0  # records may pause this long before the bench counts as stalled
STALL_POLL_PERIODS = 3  # ... or this many of its slowest device's poll periods, if longer


def notify(state: str, *, environ: Mapping[str, str] = os.environ) -> bool:
    """Send one sd_notify message (e.g. ``READY=1``); False when not under systemd or on failure."""
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd on %s: %s", environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def watchdog_period_s(environ: Mapping[str, str] = os.environ) -> float | None:
    """The watchdog timeout systemd set for this process (``WatchdogSec=``), or None."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6


class BenchHealth:
    """Is the bench doing its job: journal fine, and records still arriving?"""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self._records = bench.records_seen
        self._changed_at = time.monotonic()
        slowest = max((p.period_s for p in bench.pollers.values()), default=0.0) / bench.clock.time_scale
        self.stall_after_s = max(MIN_STALL_S, STALL_POLL_PERIODS * slowest)

    def problem(self) -> str | None:
        """Why the bench is unhealthy, or None."""
        error = self.bench.journal.error
        if error:
            return f"journal error: {error}"
        now = time.monotonic()
        if self.bench.records_seen != self._records:
            self._records = self.bench.records_seen
            self._changed_at = now
        elif self.bench.pollers and now - self._changed_at > self.stall_after_s:
            return f"no record for {now - self._changed_at:.0f} s"
        return None


class SystemdNotifier:
    """READY, STATUS, WATCHDOG and STOPPING for one running bench."""

    def __init__(self, bench: Bench, *, environ: Mapping[str, str] = os.environ) -> None:
        self.bench = bench
        self.environ = environ
        self.health = BenchHealth(bench)
        self.period_s = watchdog_period_s(environ)
        self._reported: str | None = None

    @classmethod
    def attach(cls, bench: Bench) -> SystemdNotifier | None:
        """Under systemd: send READY=1 and start the watchdog task on the bench; else None."""
        if not os.environ.get("NOTIFY_SOCKET"):
            return None
        notifier = cls(bench)
        notifier.ready()
        if notifier.period_s is not None:
            bench.add_task(notifier.run(), "systemd-watchdog")
        return notifier

    def ready(self) -> None:
        notify(f"READY=1\nSTATUS=recording run {self.bench.run_id}", environ=self.environ)

    def ping(self) -> bool:
        """One watchdog check: ping if healthy; report a problem once (STATUS and the log)."""
        problem = self.health.problem()
        if problem is None:
            self._reported = None
            return notify("WATCHDOG=1", environ=self.environ)
        if problem != self._reported:
            self._reported = problem
            log.error("bench %s unhealthy, withholding the systemd watchdog ping: %s", self.bench.bench_id, problem)
            notify(f"STATUS=unhealthy: {problem}", environ=self.environ)
        return False

    async def run(self) -> None:
        assert self.period_s is not None
        while True:
            self.ping()
            await asyncio.sleep(self.period_s / 2)

    def stopping(self) -> None:
        notify("STOPPING=1", environ=self.environ)


class JournaldFormatter(logging.Formatter):
    """``<priority>logger: message``: journald takes the level from the prefix and stamps the time."""

    PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        text = super().format(record).replace("\n", " | ")  # one journal entry per record
        return f"<{priority}>{text}"


def stderr_is_journal(environ: Mapping[str, str] = os.environ) -> bool:
    """True when stderr is the journald stream systemd connected (``$JOURNAL_STREAM`` = device:inode)."""
    stream = environ.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def use_journald_format(environ: Mapping[str, str] = os.environ) -> None:
    """Switch the root logger's handlers to ``JournaldFormatter`` when stderr is the journal."""
    if stderr_is_journal(environ):
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JournaldFormatter())
