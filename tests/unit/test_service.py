"""systemd integration: sd_notify datagrams on a real AF_UNIX socket, watchdog health, journald lines."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from daq.service import JournaldFormatter, SystemdNotifier, notify, stderr_is_journal, watchdog_period_s


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A datagram socket standing in for systemd's, and the environment naming it."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}


def received(sock: socket.socket) -> list[str]:
    messages = []
    sock.setblocking(False)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except BlockingIOError:
        return messages
    finally:
        sock.settimeout(5)


def test_notify_sends_one_datagram_to_the_named_socket(notify_socket: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = notify_socket
    assert notify("READY=1", environ=env)
    assert sock.recv(4096) == b"READY=1"


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"daq-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify("WATCHDOG=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_outside_systemd_nothing_is_sent() -> None:
    assert not notify("READY=1", environ={})
    assert watchdog_period_s({}) is None


def test_the_watchdog_period_is_for_this_process_only() -> None:
    assert watchdog_period_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_period_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_period_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_period_s({"WATCHDOG_USEC": "0"}) is None


def fake_bench(**overrides: Any) -> Any:
    """The few bench attributes the watchdog looks at."""
    bench = SimpleNamespace(
        bench_id="bench-1",
        run_id="bench-1-20261203-120000",
        records_seen=0,
        journal=SimpleNamespace(error=None),
        pollers={"cycler-1": SimpleNamespace(period_s=1.0)},
        clock=SimpleNamespace(time_scale=1.0),
    )
    for key, value in overrides.items():
        setattr(bench, key, value)
    return bench


def test_watchdog_pings_while_healthy_and_stops_on_a_journal_error(
    notify_socket: tuple[socket.socket, dict[str, str]],
) -> None:
    sock, env = notify_socket
    bench = fake_bench()
    notifier = SystemdNotifier(bench, environ=env)
    notifier.ready()
    assert sock.recv(4096).decode() == f"READY=1\nSTATUS=recording run {bench.run_id}"
    bench.records_seen = 5
    assert notifier.ping()
    assert sock.recv(4096) == b"WATCHDOG=1"
    bench.journal.error = "disk I/O error"
    assert not notifier.ping()
    assert not notifier.ping()  # reported once, still no ping
    assert received(sock) == ["STATUS=unhealthy: journal error: disk I/O error"]


def test_watchdog_stops_pinging_when_records_stop_arriving(
    notify_socket: tuple[socket.socket, dict[str, str]],
) -> None:
    sock, env = notify_socket
    bench = fake_bench()
    notifier = SystemdNotifier(bench, environ=env)
    notifier.health.stall_after_s = 0.0  # any pause counts as a stall
    bench.records_seen = 1
    assert notifier.ping()  # records moved
    assert not notifier.ping()  # nothing new since: stalled
    messages = received(sock)
    assert messages[0] == "WATCHDOG=1" and messages[1].startswith("STATUS=unhealthy: no record for")


def test_the_stall_allowance_covers_slow_polls() -> None:
    slow = fake_bench(pollers={"bms": SimpleNamespace(period_s=600.0)})
    assert SystemdNotifier(slow, environ={}).health.stall_after_s == 1800.0
    assert SystemdNotifier(fake_bench(), environ={}).health.stall_after_s == 60.0


def test_journald_lines_carry_the_syslog_priority_and_stay_one_line() -> None:
    formatter = JournaldFormatter()
    record = logging.LogRecord("daq.bench", logging.WARNING, __file__, 1, "device %s\nlost", ("cycler-1",), None)
    assert formatter.format(record) == "<4>daq.bench: device cycler-1 | lost"
    record = logging.LogRecord("daq.sinks", logging.ERROR, __file__, 1, "down", (), None)
    assert formatter.format(record).startswith("<3>")


def test_stderr_is_the_journal_only_when_journal_stream_names_it() -> None:
    st = os.fstat(2)
    assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
    assert not stderr_is_journal({})
