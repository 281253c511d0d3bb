"""Building blocks of the scenarios: the project's bench on farm devices, sinks, servers, bare loops.

The project side always goes through its real composition root (``daq.bench.Bench`` from a bench
file) or, for the poll floor, through its real driver and poll engine; the baselines use the
libraries directly (pymodbus, aiomqtt, aiohttp) against the same simulators and servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pymodbus.client import AsyncModbusTcpClient

from benchmarks.devices import CYCLER_REGMAP, bms_regmap_spec, meter_regmap_spec, meter_values, write_regmap
from daq.bench import Bench
from daq.clock import Clock
from daq.config.loader import load_bench
from drivers.modbus.regmap import ReadBlock, RegisterMap, plan_reads

HOST = "127.0.0.1"
MAX_REGS = 125


class Unavailable(RuntimeError):
    """A scenario cannot run here (a server binary or a script is missing); reported, not failed."""


# ---------------------------------------------------------------------------------- bench files


@dataclass(frozen=True, slots=True)
class BenchDevice:
    name: str
    kind: str  # cycler | meter | bms | bms_module (as in the farm)
    port: int
    poll_period_s: float


def regmap_paths(folder: Path) -> dict[str, Path]:
    """Register map file per farm device kind (the generated ones written into ``folder``)."""
    from benchmarks.devices import BMS_REGMAP

    return {
        "cycler": CYCLER_REGMAP,
        "meter": write_regmap(meter_regmap_spec(), folder),
        "bms": write_regmap(bms_regmap_spec(), folder),
        "bms_module": BMS_REGMAP,
    }


ROLE = {"cycler": "cycler", "meter": "meter", "bms": "bms", "bms_module": "bms"}


def write_bench(
    folder: Path,
    devices: list[BenchDevice],
    *,
    commit_interval_s: float = 0.5,
    timeout_s: float = 1.0,
) -> Path:
    """A bench file polling farm devices over Modbus TCP, journal in ``folder``."""
    maps = regmap_paths(folder)
    for kind in {d.kind for d in devices if d.kind.startswith("meter:")}:  # meters of other sizes
        maps[kind] = write_regmap(meter_regmap_spec(meter_values(kind)), folder)
    cfg = {
        "bench": {"id": "benchmark"},
        "journal": {"path": str(folder / "journal.sqlite"), "commit_interval_s": commit_interval_s},
        "devices": [
            {
                "name": d.name,
                "kind": "modbus",
                "role": ROLE.get(d.kind, "meter"),
                "transport": {"kind": "tcp", "host": HOST, "port": d.port},
                "regmap": str(maps[d.kind]),
                "poll_period_s": d.poll_period_s,
                "timeout_s": timeout_s,
                "max_registers_per_read": MAX_REGS,
            }
            for d in devices
        ],
    }
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def make_bench(path: Path, clock: Clock | None = None) -> Bench:
    loaded = load_bench(path)
    return Bench(loaded, clock=clock) if clock is not None else Bench(loaded)


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=f"daq-bench-{prefix}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------- servers


@dataclass
class Servers:
    """A private Mosquitto and VictoriaMetrics (InfluxDB v2 write API) on free local ports."""

    folder: Path
    mosquitto: Any = None
    victoria: Any = None

    def start(self) -> Servers:
        missing = [b for b in ("mosquitto", "victoria-metrics") if not _binary(b)]
        if missing:
            raise Unavailable(f"{', '.join(missing)} not installed (apt-get install mosquitto victoria-metrics)")
        from tests.servers import MosquittoServer, VictoriaMetricsServer

        self.mosquitto = MosquittoServer(self.folder / "mosquitto")
        self.mosquitto.start()
        self.victoria = VictoriaMetricsServer(self.folder / "victoria-metrics")
        self.victoria.start()
        return self

    def stop(self) -> None:
        for server in (self.mosquitto, self.victoria):
            if server is not None:
                server.kill()

    @property
    def mqtt_port(self) -> int:
        return int(self.mosquitto.port)

    @property
    def influx_url(self) -> str:
        return str(self.victoria.url)


def _binary(name: str) -> bool:
    fallback = {"mosquitto": "/usr/sbin/mosquitto", "victoria-metrics": "/usr/bin/victoria-metrics"}[name]
    return shutil.which(name) is not None or Path(fallback).exists()


@contextlib.contextmanager
def servers(folder: Path) -> Iterator[Servers]:
    s = Servers(folder)
    try:
        yield s.start()
    finally:
        s.stop()


# ---------------------------------------------------------------------------------- sinks


@dataclass
class SinkSet:
    """The project's MQTT and InfluxDB sinks on a bench, started as bench tasks."""

    bench: Bench
    sinks: list[Any] = field(default_factory=list)

    def start(
        self, srv: Servers, *, backoff_max_s: float = 1.0, mqtt_qos: int = 1, mqtt_options: dict[str, Any] | None = None
    ) -> SinkSet:
        from daq.config.sinks import InfluxSinkConfig, MqttSinkConfig
        from daq.sinks import build_sink

        backoff = {"initial_s": 0.1, "max_s": backoff_max_s}
        configs = [
            MqttSinkConfig.model_validate(
                {
                    "kind": "mqtt",
                    "host": HOST,
                    "port": srv.mqtt_port,
                    "qos": {"data": mqtt_qos},
                    "backoff": backoff,
                    **(mqtt_options or {}),
                }
            ),
            InfluxSinkConfig.model_validate(
                {"kind": "influxdb", "url": srv.influx_url, "bucket": "bench", "org": "lab", "backoff": backoff}
            ),
        ]
        bench = self.bench
        for cfg in configs:
            sink = build_sink(
                cfg,
                bench_id=bench.bench_id,
                journal_path=bench.journal.path,
                journal=bench.journal,
                clock=bench.clock,
            )
            self.sinks.append(sink)
            bench.add_task(sink.run(), name=f"sink:{sink.name}")
        return self

    def delivered(self) -> int:
        """Records every sink has delivered (the slowest sink)."""
        return min((s.metrics()["delivered_records"] for s in self.sinks), default=0)

    def backlog(self) -> int:
        """Records still to deliver by the slowest sink."""
        return max((s.metrics()["backlog_records"] for s in self.sinks), default=0)

    def cursors(self) -> int:
        return min((s.metrics()["cursor"] for s in self.sinks), default=0)

    def metrics(self) -> list[dict[str, Any]]:
        return [s.metrics() for s in self.sinks]


async def wait_until(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.02) -> bool:
    """True once ``predicate`` holds; False after ``timeout_s`` (benchmarks report, never hang)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(interval_s)
    return True


# ---------------------------------------------------------------------------------- bare loops


_READ = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


def blocks_of(regmap: RegisterMap) -> list[ReadBlock]:
    """The requests one poll of ``regmap`` takes: the same plan the project's driver uses."""
    return plan_reads(regmap.polled, max_count=MAX_REGS, max_gap=8)


async def bare_client(port: int) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient(HOST, port=port, timeout=1.0, retries=0, reconnect_delay=0)
    if not await client.connect():
        raise ConnectionError(f"bare pymodbus client could not connect to {HOST}:{port}")
    return client


async def bare_poll_loop(
    client: AsyncModbusTcpClient,
    blocks: list[ReadBlock],
    counter: list[int],
    stop: asyncio.Event,
    publish: Callable[[bytes], Any] | None = None,
) -> None:
    """Poll as fast as possible: the same block reads as the driver, no decoding, nothing kept.

    With ``publish`` the raw registers of the poll are sent as one message (the issue's bare
    loop: pymodbus reads + one aiomqtt publish per poll).
    """
    calls = [(getattr(client, _READ[b.table]), b.start, b.count) for b in blocks]
    while not stop.is_set():
        payload = []
        for read, start, count in calls:
            response = await read(start, count=count, device_id=1)
            if publish is not None:
                payload.extend(response.registers)
        if publish is not None:
            await publish(array("H", payload).tobytes())
        counter[0] += 1
