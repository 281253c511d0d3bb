"""The bench's sinks in a process of their own, for the process-split measurement (docs/adr/0008).

    python -m benchmarks.sink_process SPEC_JSON

SPEC: ``{"journal": path, "bench_id": ..., "mqtt_port": ..., "influx_url": ...}``. Runs the same
MQTT (QoS 1) and InfluxDB v2 sinks as ``benchmarks.harness.SinkSet``, but without the bench's
journal writer at hand: they read every record back from the journal file (the path a sink in
another process has to take) and poll it for new commits. Runs until stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Self

from benchmarks.common import pid_cpu_s

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


class SinkProcess:
    """The sinks of a bench run as a child process; ``cpu_s()`` is its CPU so far."""

    def __init__(self, journal: Path, *, bench_id: str, mqtt_port: int, influx_url: str) -> None:
        self.spec = {"journal": str(journal), "bench_id": bench_id, "mqtt_port": mqtt_port, "influx_url": influx_url}
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.sink_process", json.dumps(self.spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=env,
        )
        assert self._proc.stdout is not None
        if not self._proc.stdout.readline():
            raise RuntimeError(f"sink process exited with {self._proc.wait(timeout=20)} before it was ready")
        return self

    def cpu_s(self) -> float:
        assert self._proc is not None
        return pid_cpu_s(self._proc.pid)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        try:
            proc.stdin.close()
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sink_configs(mqtt_port: int, influx_url: str) -> list[Any]:
    """The sinks every end-to-end scenario runs: MQTT data at QoS 1, InfluxDB v2."""
    from daq.config.sinks import InfluxSinkConfig, MqttSinkConfig

    backoff = {"initial_s": 0.1, "max_s": 1.0}
    return [
        MqttSinkConfig.model_validate(
            {"kind": "mqtt", "host": HOST, "port": mqtt_port, "qos": {"data": 1}, "backoff": backoff}
        ),
        InfluxSinkConfig.model_validate(
            {"kind": "influxdb", "url": influx_url, "bucket": "bench", "org": "lab", "backoff": backoff}
        ),
    ]


async def _serve(spec: dict[str, Any]) -> None:
    from daq.sinks import build_sink

    sinks = [
        build_sink(cfg, bench_id=spec["bench_id"], journal_path=spec["journal"])
        for cfg in sink_configs(spec["mqtt_port"], spec["influx_url"])
    ]
    tasks = [asyncio.create_task(s.run(), name=f"sink:{s.name}") for s in sinks]
    gc.freeze()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


if __name__ == "__main__":
    asyncio.run(_serve(json.loads(sys.argv[1])))
