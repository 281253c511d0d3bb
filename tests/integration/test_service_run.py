"""``daq run`` as a systemd service: READY=1, watchdog pings, clean stop on SIGTERM, journald lines.

systemd is played by a real AF_UNIX datagram socket named in ``$NOTIFY_SOCKET``; the bench runs in
its own process against a simulated cycler on a real TCP socket.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from daq.journal import JournalReader
from tests.helpers import sim_bench

DEADLINE_S = 60.0


def wait_for_message(sock: socket.socket, wanted: str, seen: list[str]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not any(m.startswith(wanted) for m in seen):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            raise AssertionError(f"no {wanted!r} from daq run within {DEADLINE_S} s; got {seen}") from None


def test_daq_run_notifies_systemd_pings_the_watchdog_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    bench = sim_bench(tmp_path)
    notify_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(notify_path),
            "WATCHDOG_USEC": "400000",  # a ping every 0.2 s
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("WATCHDOG_PID", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "daq.cli.main", "run", str(bench)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            seen: list[str] = []
            wait_for_message(sock, "READY=1", seen)
            wait_for_message(sock, "WATCHDOG=1", seen)
            proc.send_signal(signal.SIGTERM)
            wait_for_message(sock, "STOPPING=1", seen)
            out, err = proc.communicate(timeout=DEADLINE_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert seen[0].startswith("READY=1\nSTATUS=recording run testbench-")
    assert "completed" in out and "Traceback" not in err
    with JournalReader(tmp_path / "journal.sqlite") as reader:
        run = reader.run("latest")
    assert run.status == "completed"
