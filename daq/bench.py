"""Composition root: turns a loaded bench file into simulators, drivers, pollers, journal and sinks.

Record path (synchronous, in this order, for every poll): stamp run/step/cycle -> hooks (safety
monitor first, then the runner and the live view) -> journal. Sinks forward from the journal in
their own tasks, so nothing on this path waits on a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daq import __version__
from daq.clock import Clock, MonotonicClock, ScaledClock
from daq.config.bench import (
    CanDeviceConfig,
    DalyDeviceConfig,
    JbdDeviceConfig,
    ModbusDeviceConfig,
    SerialTransportConfig,
    TcpTransportConfig,
)
from daq.config.loader import LoadedBench
from daq.cycler import CyclerControl
from daq.engine.poller import DevicePoller
from daq.errors import ConfigError
from daq.journal import Journal, new_run_id
from daq.records import Record
from daq.status import STATUS_KEY, StatusReporter
from daq.timebase import METADATA_KEY as TIMEBASE_KEY
from daq.timebase import Timebase
from drivers.bms.daly.driver import DalyDriver
from drivers.bms.jbd.driver import JbdDriver
from drivers.bus import SerialBus, idle_gap_s
from drivers.modbus.driver import Endpoint, ModbusDriver, ModbusLink, SerialEndpoint, TcpEndpoint
from drivers.serial_link import SerialLink, bits_per_char
from drivers.serial_port import check_serial_port

if TYPE_CHECKING:
    from daq.safety.monitor import SafetyMonitor

log = logging.getLogger(__name__)

RecordHook = Callable[[Record], None]


@dataclass
class RunContext:
    """What the bench stamps on every record. The runner moves step and cycle."""

    run_id: str = ""
    step: int = 0
    cycle: int = 0


@dataclass
class Bench:
    loaded: LoadedBench
    clock: Clock = field(default_factory=MonotonicClock)
    journal_path: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cfg = self.loaded.config
        if cfg.simulation is not None and cfg.simulation.time_scale != 1.0 and isinstance(self.clock, MonotonicClock):
            self.clock = ScaledClock(cfg.simulation.time_scale)
        self.journal = Journal(
            self.journal_path or self.loaded.journal_path, commit_interval_s=cfg.journal.commit_interval_s
        )
        self.context = RunContext()
        self.hooks: list[RecordHook] = []
        self.latest: dict[str, Record] = {}
        self.pollers: dict[str, DevicePoller] = {}
        self.drivers: dict[str, ModbusDriver] = {}
        self.cyclers: dict[str, CyclerControl] = {}
        self.simulation: Any = None
        self.safety: SafetyMonitor | None = None  # set by start() when the bench file has safety:
        self._links: dict[Endpoint, ModbusLink] = {}
        self.serial_buses: dict[str, SerialBus] = {}  # JBD/Daly buses by port path
        self._tasks: list[asyncio.Task[None]] = []
        self.records_seen = 0
        self.started_ns = 0
        self.final_status: tuple[str, str] = ("", "")  # (status, reason) once the run has ended
        self._run_open = False
        # name -> callable returning a JSON-able dict; merged into the status snapshot (daq status)
        self.status_providers: dict[str, Callable[[], dict[str, Any]]] = {}
        self.sinks: list[Any] = []
        self.sink_drain: list[Any] = []  # DrainResult per sink after a stop (daq.sinks.drain)
        self.last_status: dict[str, Any] = {}
        self.status_reporter: StatusReporter | None = None

    @property
    def bench_id(self) -> str:
        return self.loaded.config.bench.id

    @property
    def run_id(self) -> str:
        return self.context.run_id

    # -- construction --------------------------------------------------------------------------
    async def start_simulation(self) -> None:
        sim_cfg = self.loaded.config.simulation
        if sim_cfg is None:
            return
        from simulators.hardware import SimulatedHardware  # only benches with simulation load it

        self.simulation = SimulatedHardware(sim_cfg, clock=self.clock, base_dir=self.loaded.base_dir)
        await self.simulation.start()

    def _endpoint(self, dev: ModbusDeviceConfig) -> Endpoint:
        t = dev.transport
        if isinstance(t, TcpTransportConfig):
            if t.simulator is not None:
                if self.simulation is None:
                    raise ConfigError(
                        f"device {dev.name}: transport.simulator {t.simulator} needs the bench's simulation"
                    )
                host, port = self.simulation.tcp_address(t.simulator)
                return TcpEndpoint(host, port, t.framing, dev.timeout_s)
            return TcpEndpoint(t.host, t.port, t.framing, dev.timeout_s)
        assert isinstance(t, SerialTransportConfig)
        port = self._serial_path(dev.name, t.port)
        return SerialEndpoint(port, t.baud, t.parity, t.bytesize, t.stopbits, dev.timeout_s)

    def _serial_path(self, device: str, port: str) -> str:
        if port.startswith("sim:"):
            if self.simulation is None:
                raise ConfigError(f"device {device}: serial port {port} needs the bench's simulation")
            return self.simulation.serial_path(port[4:])
        return port

    def _bms_driver(self, dev: JbdDeviceConfig | DalyDeviceConfig) -> JbdDriver | DalyDriver:
        """A JBD or Daly driver on the ``SerialBus`` of its port, shared with every device on that port.

        A port that is missing or busy is not fatal here: the device reports COMM_LOST with one
        clear log line and comes back when the port does, while the rest of the bench runs.
        """
        t = dev.transport
        port = self._serial_path(dev.name, t.port)
        bus = self.serial_buses.get(port)
        if bus is None:
            link = SerialLink(port, baud=t.baud, parity=t.parity, bytesize=t.bytesize, stopbits=t.stopbits)
            bits = bits_per_char(bytesize=t.bytesize, parity=t.parity, stopbits=t.stopbits)
            gap = idle_gap_s(dev.kind, baud=t.baud, bits_per_char=bits)
            bus = self.serial_buses[port] = SerialBus(link, idle_gap_s=gap)
        if isinstance(dev, JbdDeviceConfig):
            return JbdDriver(dev.name, bus=bus, cells=dev.cells, sensors=dev.sensors, timeout_s=dev.timeout_s)
        return DalyDriver(
            dev.name,
            bus=bus,
            cells=dev.cells,
            sensors=dev.sensors,
            address=dev.address,
            timeout_s=dev.timeout_s,
            invert_current=dev.invert_current,
        )

    def _can_driver(self, dev: CanDeviceConfig) -> Any:
        """A CAN BMS driver: frames pushed by the BMS, one record per poll period from the latest ones."""
        from drivers.can.driver import CanBmsDriver  # CAN benches only pay for python-can

        return CanBmsDriver(
            dev.name,
            mapping=self.loaded.can_mappings[dev.name],
            interface=dev.interface,
            channel=dev.channel,
            bitrate=dev.bitrate,
            now=self.clock.monotonic,
            stale_factor=dev.stale_factor,
        )

    def build_devices(self) -> None:
        for dev in self.loaded.config.devices:
            if not dev.enabled:
                continue
            if isinstance(dev, CanDeviceConfig):
                can_driver = self._can_driver(dev)
                self.drivers[dev.name] = can_driver
                self.pollers[dev.name] = DevicePoller(
                    can_driver,
                    period_s=dev.poll_period_s,
                    clock=self.clock,
                    on_record=self.handle_record,
                    timeout_s=dev.timeout_s,
                    retries=0,
                )
                continue
            if isinstance(dev, JbdDeviceConfig | DalyDeviceConfig):
                bms = self._bms_driver(dev)
                self.drivers[dev.name] = bms  # type: ignore[assignment]
                self.pollers[dev.name] = DevicePoller(
                    bms,
                    period_s=dev.poll_period_s,
                    clock=self.clock,
                    on_record=self.handle_record,
                    # the poll engine's hang guard: a poll is several requests on a shared bus
                    timeout_s=dev.timeout_s * len(bms.parts()),
                    retries=dev.retries,
                )
                continue
            endpoint = self._endpoint(dev)
            link = self._links.get(endpoint)
            if link is None:
                link = self._links[endpoint] = ModbusLink(endpoint)
            driver = ModbusDriver(
                dev.name,
                kind=dev.role,
                regmap=self.loaded.regmaps[dev.name],
                link=link,
                unit_id=dev.unit_id,
                max_registers_per_read=dev.max_registers_per_read,
                max_gap=dev.max_gap,
            )
            self.drivers[dev.name] = driver
            if dev.role == "cycler":
                self.cyclers[dev.name] = CyclerControl(driver, clock=self.clock)
            self.pollers[dev.name] = DevicePoller(
                driver,
                period_s=dev.poll_period_s,
                clock=self.clock,
                on_record=self.handle_record,
                timeout_s=dev.timeout_s,
                retries=dev.retries,
            )

    def _check_can_buses(self) -> None:
        """An unknown CAN interface or one that does not open is a setup error (exit 2), like a missing port."""
        devices = [d for d in self.loaded.config.devices if isinstance(d, CanDeviceConfig) and d.enabled]
        if not devices:
            return
        from drivers.can.driver import check_can_bus

        for dev in devices:
            try:
                check_can_bus(dev.interface, dev.channel, dev.bitrate, device=dev.name)
            except ConfigError as exc:
                raise ConfigError(f"{self.loaded.path}: {exc}") from exc

    # -- hot path ------------------------------------------------------------------------------
    def handle_record(self, record: Record) -> None:
        ctx = self.context
        record.run_id = ctx.run_id
        record.step = ctx.step
        record.cycle = ctx.cycle
        for hook in self.hooks:
            try:
                hook(record)
            except Exception:  # a faulty observer must never cost a reading
                log.exception("record hook %r failed", hook)
        self.journal.append(record)
        self.latest[record.schema.device] = record
        self.records_seen += 1

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, *, run_id: str | None = None) -> str:
        """Start simulators, open the journal, begin (or resume) a run and start polling."""
        try:
            await self.start_simulation()
            self.build_devices()
            # A serial port that is missing or busy at start is a setup error (exit 2): better than
            # a test that runs without its BMS. Losing a port later is a quality flag and a retry.
            serial_ports = {e.port for e in self._links if isinstance(e, SerialEndpoint)} | set(self.serial_buses)
            for port in sorted(serial_ports):
                check_serial_port(port)
            self._check_can_buses()
            self.journal.open()
        except BaseException:
            await self.stop(status="aborted", reason="bench could not start")
            raise
        schemas = [d.schema for d in self.drivers.values()]
        if run_id is None:
            meta = {
                "software_version": __version__,
                "bench_file": str(self.loaded.path),
                "time_scale": self.clock.time_scale,
                TIMEBASE_KEY: Timebase.of_clock(self.clock).as_metadata(),  # bench -> wall time
                **self.metadata,
            }
            self.context.run_id = self.journal.begin_run(
                self.bench_id,
                schemas=schemas,
                metadata=meta,
                config_hash=self.loaded.config_hash,
                started_ns=self.clock.wall_ns(),
                run_id=new_run_id(self.bench_id, time.time_ns()),  # named for when it ran, not bench time
            )
        else:
            self.journal.reopen_run(run_id)
            self.journal.add_devices(run_id, schemas)
            self.context.run_id = run_id
        self._run_open = True
        if self.loaded.config.safety is not None:
            # Before the pollers: its hook must see the very first record, and a device limit
            # that does not read back must stop the start.
            from daq.safety.monitor import SafetyMonitor

            safety_cfg = self.loaded.config.safety
            try:
                self.safety = SafetyMonitor(
                    safety_cfg,
                    limits_path=self.loaded.resolve(safety_cfg.limits, "limits"),
                    limits=self.loaded.limits,
                    journal=self.journal,
                    run_id=self.context.run_id,
                    clock=self.clock,
                    cyclers=self.cyclers,
                    spawn=self.add_task,
                )
                await self.safety.start()
                self.hooks.insert(0, self.safety.hook)
                self.status_providers["safety"] = self.safety.status
            except BaseException:
                await self.stop(status="aborted", reason="safety monitor could not start")
                raise
        self.started_ns = self.clock.wall_ns()
        for name, poller in self.pollers.items():
            self._tasks.append(asyncio.create_task(poller.run(), name=f"poll:{name}"))
        self.status_reporter = StatusReporter(self, on_snapshot=self._keep_status)
        self._tasks.append(asyncio.create_task(self.status_reporter.run(), name="status"))
        try:
            self._start_sinks()
        except BaseException:
            await self.stop(status="aborted", reason="a sink could not be set up")
            raise
        for dev in self.loaded.config.devices:
            if dev.name in self.cyclers and dev.watchdog_timeout_s > 0:
                ctl = self.cyclers[dev.name]
                self._tasks.append(
                    asyncio.create_task(ctl.keep_watchdog(dev.watchdog_timeout_s), name=f"watchdog:{dev.name}")
                )
        # Everything built so far lives as long as the bench, the sinks' libraries (aiomqtt, paho,
        # aiohttp: imported just above) included: keep it out of the collector's full scans, which
        # otherwise pause every poll for 12-23 ms at 200 devices (docs/benchmarks.md).
        gc.freeze()
        return self.context.run_id

    def _start_sinks(self) -> None:
        """Each sink forwards from the journal in its own task; none is on the record path."""
        from daq.sinks import build_sink  # only benches with sinks pay for aiomqtt/aiohttp

        cfg = self.loaded.config
        for i, sink_cfg in enumerate(cfg.sinks):
            sink = build_sink(
                sink_cfg,
                bench_id=self.bench_id,
                journal_path=self.journal.path,
                journal=self.journal,
                clock=self.clock,
                metrics_source=lambda: self.last_status or {},
                where=f"{self.loaded.path}: sinks[{i}]({sink_cfg.name})",
            )
            self.sinks.append(sink)
            self._tasks.append(asyncio.create_task(sink.run(), name=f"sink:{sink.name}"))
        if self.sinks:
            self.status_providers["sinks"] = lambda: {s.name: s.metrics() for s in self.sinks}
        if cfg.journal.max_size_mb is not None:
            from daq.journal_budget import JournalBudget

            budget = JournalBudget(
                self.journal,
                run_id=self.run_id,
                clock=self.clock,
                sink_names=lambda: [s.name for s in self.sinks],
                max_bytes=int(cfg.journal.max_size_mb * 1e6),
                warn_fraction=cfg.journal.warn_at_fraction,
            )
            self._tasks.append(asyncio.create_task(budget.run(), name="journal-budget"))
            self.status_providers["journal_budget"] = budget.status

    def _keep_status(self, snapshot: dict[str, Any]) -> None:
        self.last_status = snapshot

    def add_task(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    async def drain_sinks(self) -> None:
        """Stop everything but the sinks, then give each sink its ``drain_on_stop_s`` to deliver
        the backlog before it is cancelled. What is left stays in the journal (``sink_drain``)."""
        sink_tasks = [t for t in self._tasks if t.get_name().startswith("sink:") and not t.done()]
        if not sink_tasks:
            return
        others = [t for t in self._tasks if t not in sink_tasks]
        for task in others:
            task.cancel()
        for task in others:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = sink_tasks
        from daq.errors import JournalError
        from daq.sinks.drain import drain_sinks

        try:
            await asyncio.to_thread(self.journal.flush)
        except JournalError as exc:
            log.error("sinks not drained: %s", exc)
            return
        self.sink_drain = await drain_sinks(
            self.sinks,
            record_seq=self.journal.committed_record_seq,
            event_seq=self.journal.committed_event_seq,
            timeout_for=lambda sink: sink.config.drain_on_stop_s,
        )

    async def stop(self, *, status: str = "completed", reason: str = "") -> None:
        await self.drain_sinks()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for link in self._links.values():
            link.close()
        if self._run_open:
            if self.safety is not None and self.safety.abort_reason and status == "completed":
                status, reason = "aborted", f"safety trip: {self.safety.abort_reason}"
            if self.status_reporter is not None:  # daq status of the finished run shows these figures
                self.last_status = self.status_reporter.final_snapshot(status=status, reason=reason)
                self.journal.queue_run_value(self.context.run_id, STATUS_KEY, self.last_status)  # end_run flushes
            self.journal.end_run(self.context.run_id, status=status, reason=reason, ended_ns=self.clock.wall_ns())
            self.final_status = (status, reason)
            self._run_open = False
        self.journal.close()
        if self.simulation is not None:
            await self.simulation.stop()
            self.simulation = None

    async def run_for(self, duration_s: float | None) -> None:
        """Wait ``duration_s`` of bench time (forever if None)."""
        if duration_s is None:
            await asyncio.Event().wait()
        else:
            await self.clock.sleep(duration_s)
