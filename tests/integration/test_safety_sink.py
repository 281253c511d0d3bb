"""A trip while the MQTT broker is down: the monitor does not wait for any sink; the alarm reaches
MQTT from the journal once the broker is back (real Mosquitto started by the test)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from daq.bench import Bench
from daq.channels import CyclerMode
from daq.config.loader import load_bench
from daq.config.sinks import MqttSinkConfig
from daq.cycler import CyclerCommand
from daq.sinks import MqttSink
from tests.helpers import wait_until
from tests.integration.test_safety_support import journal_events, journal_record_count, safety_bench
from tests.servers import MosquittoServer, mosquitto  # noqa: F401  (the fixture)
from tests.system.sink_helpers import MqttCollector, mqtt_config

CHARGE = CyclerCommand(CyclerMode.CC, current_a=13.5, voltage_v=14 * 4.2)
PACK_TRIP = {"pack_voltage_max_v": {"trip": 56.0}}
TRIP_KEY = "cycler-0:pack_voltage_max_v:voltage_v:trip"


def active_keys(collector: MqttCollector) -> set[str]:
    """Keys of the latest retained active-alarm set seen."""
    sets = collector.payloads("/alarms/active")
    return {a["key"] for a in sets[-1]["alarms"]} if sets else set()


async def test_trip_while_the_mqtt_broker_is_down(tmp_path: Path, mosquitto: MosquittoServer) -> None:  # noqa: F811
    collector = await MqttCollector(mosquitto.port, "test/testbench/#", identifier="safety-test").start()
    bench = Bench(load_bench(safety_bench(tmp_path, PACK_TRIP, time_scale=5, poll_period_s=0.1)))
    await bench.start()
    config = MqttSinkConfig.model_validate(mqtt_config(mosquitto.port))
    sink = MqttSink(config, bench_id=bench.bench_id, journal_path=bench.journal.path, journal=bench.journal)
    sink_task = asyncio.create_task(sink.run(), name="sink:mqtt")

    def forwarded(kind: str) -> bool:
        return any(p["kind"] == kind for p in collector.payloads("/events"))

    try:
        await wait_until(lambda: forwarded("safety.limits"), what="the sink forwarding the run's events")
        await asyncio.to_thread(mosquitto.stop)
        await wait_until(lambda: not sink.metrics()["connected"], what="the sink noticing the outage")

        await bench.cyclers["cycler-0"].apply(CHARGE)
        bench.simulation.pack.model.drift_cell_voltage(3, 1.0)
        await wait_until(lambda: bench.safety.ladder_runs >= 1, what="the safe state with the sink down")
        assert not bench.simulation.cyclers["sim-0"].read("output_on")
        assert not sink.metrics()["connected"]  # the whole trip happened during the outage
        assert not forwarded("alarm.tripped")

        await asyncio.to_thread(mosquitto.start)
        await wait_until(lambda: forwarded("safety.safe_state"), timeout=60, what="the alarm delivered after")
        await wait_until(lambda: TRIP_KEY in active_keys(collector), what="the trip in the active alarms")
    finally:
        sink_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sink_task
        await collector.stop()
        await bench.stop()
    trip = next(p["data"] for p in collector.payloads("/events") if p["kind"] == "alarm.tripped")
    assert (trip["limit"], trip["device"]) == ("pack_voltage_max_v", "cycler-0")
    assert "alarm.tripped" in [p["kind"] for p in collector.payloads("/alarms")]  # the alarm topic too
    journaled = [k for k, _ in journal_events(bench.journal.path, bench.run_id, "alarm.tripped")]
    assert journaled == ["alarm.tripped"]
    assert journal_record_count(bench.journal.path, bench.run_id) == bench.records_seen
