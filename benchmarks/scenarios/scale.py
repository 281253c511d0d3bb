"""Scale curve: K devices x V values per poll at 10 Hz, everything on, beside a bare paced loop.

The project's bench (real composition root) polls K simulated meters of V values each at 10 Hz
with the journal, the MQTT sink (data at QoS 1) and the InfluxDB v2 sink (VictoriaMetrics) on.
Then, in the same process and against the same farm and broker, the bare loop polls the same
devices on the same schedule: pymodbus reads of the same registers + one aiomqtt publish (QoS 1)
of the raw registers per poll, no decoding, journal or InfluxDB.

Reported per row: achieved rate, poll-start jitter and missed polls of the project (all sinks on),
CPU per value of both and their ratio, RSS of the bench process and RSS per device (growth from
just before the bench started), and whether both sinks kept up.
"""

from __future__ import annotations

import asyncio
import math
from array import array
from typing import Any

import aiomqtt

from benchmarks.common import CpuWindow, goal, jitter_ms, rss_mb, scenario_result
from benchmarks.devices import meter_regmap_spec, regmap_from_spec
from benchmarks.harness import (
    HOST,
    BenchDevice,
    SinkSet,
    bare_client,
    blocks_of,
    make_bench,
    servers,
    wait_until,
    workdir,
    write_bench,
)
from benchmarks.simfarm import SimDevice, SimFarm

NAME = "scale"
TITLE = "Scale: K devices x V values at 10 Hz, journal + MQTT QoS 1 + InfluxDB v2, beside a bare paced loop"
RATE_HZ = 10.0
_READ = {"input": "read_input_registers", "holding": "read_holding_registers"}


def cases(smoke: bool) -> list[str]:
    if smoke:
        return ["2x16"]
    return ["1x64", "10x64", "50x64", "200x64", "500x64", "10x16", "10x256", "10x1024"]


async def _bare_paced(ports: list[int], values: int, mqtt_port: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    """The bare loop on the project's schedule: each device every 100 ms, phases spread."""
    blocks = blocks_of(regmap_from_spec(meter_regmap_spec(values)))
    clients = [await bare_client(p) for p in ports]
    period = 1.0 / RATE_HZ
    polls, stop = [0], asyncio.Event()
    loop = asyncio.get_running_loop()
    async with aiomqtt.Client(HOST, mqtt_port, identifier="scale-bare", max_inflight_messages=len(ports) + 10) as mqtt:
        mqtt.pending_calls_threshold = len(ports) * 2 + 10

        async def device(i: int, client: Any) -> None:
            calls = [(getattr(client, _READ[b.table]), b.start, b.count) for b in blocks]
            topic = f"bare/meter-{i}/data"
            deadline = loop.time() + period * (i / len(clients))
            while not stop.is_set():
                await asyncio.sleep(max(0.0, deadline - loop.time()))
                payload: list[int] = []
                for read, start, count in calls:
                    payload.extend((await read(start, count=count, device_id=1)).registers)
                await mqtt.publish(topic, array("H", payload).tobytes(), qos=1)
                polls[0] += 1
                deadline = max(deadline + period, loop.time())

        tasks = [asyncio.create_task(device(i, c)) for i, c in enumerate(clients)]
        await asyncio.sleep(warmup_s)
        start, window = polls[0], CpuWindow()
        await asyncio.sleep(seconds)
        window.stop()
        n = polls[0] - start
        stop.set()
        await asyncio.gather(*tasks)
    for c in clients:
        c.close()
    return {
        "polls_per_s": n / window.wall_s,
        "cpu_us_per_value": 1e6 * window.cpu_s / max(n * values, 1),
        "cpu_pct": window.cpu_pct,
    }


async def _project(folder: Any, ports: list[int], values: int, srv: Any, seconds: float, warmup_s: float) -> dict:
    kind = f"meter:{values}"
    devices = [BenchDevice(f"meter-{i}", kind, port, 1.0 / RATE_HZ) for i, port in enumerate(ports)]
    bench = make_bench(write_bench(folder, devices))
    rss_before = rss_mb()
    await bench.start()
    sinks = SinkSet(bench).start(srv)
    try:
        await asyncio.sleep(warmup_s)
        pollers = list(bench.pollers.values())
        for p in pollers:
            p.stats.lateness_s.clear()
        polls0 = sum(p.stats.polls for p in pollers)
        missed0 = sum(p.stats.missed for p in pollers)
        delivered0 = sinks.delivered()
        window = CpuWindow()
        await asyncio.sleep(seconds)
        window.stop()
        polls = sum(p.stats.polls for p in pollers) - polls0
        missed = sum(p.stats.missed for p in pollers) - missed0
        delivered = sinks.delivered() - delivered0
        lateness = [x for p in pollers for x in p.stats.lateness_s]
        rss = rss_mb()
        lag = bench.journal.committed_record_seq - sinks.cursors()
        # both sinks at the head within a few seconds of a final commit: they kept up
        await asyncio.to_thread(bench.journal.flush)
        head = bench.journal.committed_record_seq
        kept_up = await wait_until(lambda: sinks.cursors() >= head, timeout_s=10.0)
        feeds = {m["name"]: (m.get("records_from_ring", 0), m.get("records_from_journal", 0)) for m in sinks.metrics()}
    finally:
        await bench.stop()
    live = sum(v[0] for v in feeds.values())
    return {
        "achieved_hz_per_device": polls / window.wall_s / len(ports),
        **jitter_ms(lateness),
        "missed_polls": missed,
        "cpu_pct": window.cpu_pct,
        "cpu_us_per_value": 1e6 * window.cpu_s / max(polls * values, 1),
        "delivered_values_per_s": delivered * values / window.wall_s,
        "rss_mb": rss,
        "rss_kb_per_device": 1024 * (rss - rss_before) / len(ports),
        "sink_lag_records": lag,
        "sinks_kept_up": kept_up,
        "live_fraction": live / max(live + sum(v[1] for v in feeds.values()), 1),
    }


async def run_case(case: str, smoke: bool) -> dict[str, Any]:
    k_text, v_text = case.split("x")
    k, values = int(k_text), int(v_text)
    seconds, warmup_s, bare_s = (0.8, 0.3, 0.5) if smoke else (15.0, 3.0, 8.0)
    with (
        SimFarm([SimDevice(f"sim-{i}", f"meter:{values}") for i in range(k)]) as farm,
        workdir("scale") as folder,
        servers(folder) as srv,
    ):
        ports = list(farm.ports.values())
        project = await _project(folder, ports, values, srv, seconds, warmup_s)
        bare = await _bare_paced(ports, values, srv.mqtt_port, bare_s, warmup_s)
    return {
        "devices": k,
        "values_per_poll": values,
        "project_hz_per_device": project["achieved_hz_per_device"],
        "bare_hz_per_device": bare["polls_per_s"] / k,
        "jitter_p50_ms": project["jitter_p50_ms"],
        "jitter_p99_ms": project["jitter_p99_ms"],
        "jitter_max_ms": project["jitter_max_ms"],
        "missed_polls": project["missed_polls"],
        "project_cpu_us_per_value": project["cpu_us_per_value"],
        "bare_cpu_us_per_value": bare["cpu_us_per_value"],
        "cpu_ratio_project_to_bare": project["cpu_us_per_value"] / bare["cpu_us_per_value"],
        "project_cpu_pct": project["cpu_pct"],
        "bare_cpu_pct": bare["cpu_pct"],
        "delivered_values_per_s": project["delivered_values_per_s"],
        "rss_mb": project["rss_mb"],
        "rss_kb_per_device": project["rss_kb_per_device"],
        "sink_lag_records": project["sink_lag_records"],
        "sinks_kept_up": project["sinks_kept_up"],
        "live_fraction": project["live_fraction"],
    }


def summarize(rows: list[dict[str, Any]], smoke: bool) -> dict[str, Any]:
    goals = []
    for r in rows:
        if r["devices"] == 200 and r["values_per_poll"] == 64:
            p99 = r["jitter_p99_ms"]
            goals.append(
                goal("200 devices at 10 Hz, all sinks on: p99 poll-start jitter", "<= 5 ms", p99, p99 <= 5, "ms")
            )
            missed = r["missed_polls"]
            goals.append(goal("200 devices at 10 Hz, all sinks on: missed polls", "0", missed, missed == 0))
            rss = r["rss_mb"]
            goals.append(goal("RSS at 200 devices, all sinks on", "<= 200 MB (informative)", rss, rss <= 200, "MB"))
    notes = [
        "Project = bench with journal + MQTT (QoS 1) + InfluxDB v2 at 10 Hz per device; bare = pymodbus reads "
        "of the same registers + one aiomqtt publish (QoS 1) per poll on the same schedule, same run, same farm.",
        "CPU per value = process CPU (all threads) / values polled in the window; RSS per device = growth of the "
        "bench process's RSS from just before start, per device.",
        "live_fraction = records the sinks took from the journal's in-memory ring (the rest read back from SQLite).",
        "rss_kb_per_device includes the bench's fixed start-up cost spread over K; the slope between rows is the "
        "marginal cost of a device.",
        "Cases above what the machine can poll at 10 Hz show it as achieved Hz < 10 and missed polls.",
    ]
    if any(math.isnan(r["jitter_p99_ms"]) for r in rows):
        notes.append("A NaN jitter means no poll started in the window.")
    return scenario_result(NAME, TITLE, rows, goals=goals, notes=notes)
