"""Operator commands for a running test, from another terminal, through the run's journal.

Channel: ``daq test pause|resume|abort RUN`` writes one row into the journal's ``kv`` table,
key ``runner_command:<unix ns>:<pid>`` (so keys sort by time and never collide), value
``{"action", "reason", "who", "t_ns"}``. The process running the test polls those keys every
``POLL_INTERVAL_S`` (real seconds) through its own read connection, acts on each new one in order,
and answers under key ``runner_ack`` with ``{"key", "ok", "message", "phase"}``; the command waits
for that answer. Commands older than the runner process are ignored, so a stale ``pause`` from
before a crash never hits the resumed test. Commands are also journaled as events by the runner
(``runner.paused`` ... with ``who``), so the run's history says who did what.

Why the journal and not a socket: it already sits on the bench machine where both processes can
reach it (WAL lets a reader and the writer work at once), it needs no port or path-length care,
and commands survive as a record. Latency is the poll interval, which is fine for people.

Liveness: the runner stores its process identity (host, pid, Linux start time) in the runner
state; ``process_alive`` tells a running test from a crashed one without waiting for a timeout.

Every read and write goes through ``daq.journal.JournalCommands``, the journal's one write API for
other processes (short ``BEGIN IMMEDIATE`` transactions next to the bench's writer thread).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daq.errors import JournalError
from daq.journal import JournalCommands

log = logging.getLogger(__name__)

COMMAND_PREFIX = "runner_command:"
ACK_KEY = "runner_ack"
ACTIONS = ("pause", "resume", "abort")
POLL_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class OperatorCommand:
    key: str
    action: str  # pause | resume | abort
    reason: str = ""
    who: str = ""
    source: str = "cli"  # cli | terminal | mqtt


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def process_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_ticks(os.getpid())}


def process_alive(identity: dict[str, Any]) -> bool | None:
    """True/False for a process on this host; None when it ran on another host (cannot tell)."""
    if not identity or identity.get("host") != socket.gethostname():
        return None
    pid = int(identity.get("pid", 0))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    start = identity.get("start")
    return start is None or _start_ticks(pid) == start  # a reused pid has another start time


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class JournalControl:
    """Operator commands on a journal another process owns (``JournalCommands`` underneath)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._commands = JournalCommands(self.path)

    def close(self) -> None:
        self._commands.close()

    def __enter__(self) -> JournalControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ------------------------------------------------------------------------------
    def post(self, run_id: str, action: str, *, reason: str = "", who: str = "", source: str = "cli") -> str:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        t_ns = time.time_ns()
        key = f"{COMMAND_PREFIX}{t_ns:020d}:{os.getpid()}"
        value = {"action": action, "reason": reason, "who": who or current_user(), "source": source, "t_ns": t_ns}
        self._commands.insert_value(run_id, key, value)
        return key

    def latest_command_key(self, run_id: str) -> str:
        return self._commands.last_key(run_id, COMMAND_PREFIX)

    def commands_after(self, run_id: str, key: str) -> list[OperatorCommand]:
        rows = self._commands.values_after(run_id, COMMAND_PREFIX, key)
        commands = []
        for k, raw in rows:
            try:
                data = json.loads(raw)
                commands.append(
                    OperatorCommand(
                        k, str(data["action"]), str(data.get("reason", "")), str(data.get("who", "")),
                        str(data.get("source", "cli")),
                    )
                )  # fmt: skip
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring malformed operator command %s in %s", k, self.path)
        return commands

    def value(self, run_id: str, key: str, default: Any = None) -> Any:
        return self._commands.value(run_id, key, default)

    def wait_ack(self, run_id: str, key: str, *, timeout_s: float) -> dict[str, Any] | None:
        """Block until the runner answered command ``key`` (None after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            ack = self.value(run_id, ACK_KEY)
            if isinstance(ack, dict) and ack.get("key") == key:
                return ack
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    # -- a run nobody is running any more --------------------------------------------------------
    def end_run_offline(self, run_id: str, *, status: str, reason: str, event: str, data: dict[str, Any]) -> None:
        """Close a run whose runner process is gone: status, reason and one event, in one transaction."""
        self._commands.end_run_offline(run_id, status=status, reason=reason, event=event, data=data)

    def set_value(self, run_id: str, key: str, value: Any) -> None:
        self._commands.set_value(run_id, key, value)


async def serve_journal_commands(
    journal_path: str | Path,
    run_id: str,
    deliver: Callable[[OperatorCommand], None],
    *,
    interval_s: float = POLL_INTERVAL_S,
    ready: asyncio.Event | None = None,
) -> None:
    """Poll the journal for new commands for ``run_id`` forever and hand each to ``deliver``.

    Commands already there when it starts are ignored (``ready`` is set once that point is taken).
    Run it as a bench task (``bench.add_task``); cancelled with the bench."""
    control = await asyncio.to_thread(JournalControl, journal_path)
    try:
        last = await asyncio.to_thread(control.latest_command_key, run_id)
        if ready is not None:
            ready.set()
        while True:
            await asyncio.sleep(interval_s)
            try:
                commands = await asyncio.to_thread(control.commands_after, run_id, last)
            except JournalError as exc:
                log.warning("reading operator commands failed: %s", exc)
                continue
            for command in commands:
                last = command.key
                deliver(command)
    finally:
        control.close()
