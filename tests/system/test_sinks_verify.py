"""``daq sinks verify``: every record of a run looked up in the real database, the missing ones
listed by seq and written again on request."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from daq.cli.main import main
from daq.config.sinks import InfluxSinkConfig
from daq.journal import Journal
from daq.sinks import InfluxSink
from tests.helpers import sim_bench
from tests.servers import *  # noqa: F403  (fixtures)
from tests.servers import InfluxV1Server, VictoriaMetricsServer, wait_until
from tests.system.sink_helpers import SyntheticBench, eventually, influx_config, stop_task

pytestmark = pytest.mark.system

BENCH = "testbench"  # sim_bench's id


def stored_points(server: VictoriaMetricsServer) -> int:
    return len({(s["metric"]["device"], t) for s in server.export() for t in s["timestamps"]})


def bench_file(tmp_path: Path, sink: dict[str, Any]) -> tuple[Path, Path]:
    path = sim_bench(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["sinks"] = [sink]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, Path(cfg["journal"]["path"])


async def journal_and_deliver(journal_path: Path, sink_cfg: dict[str, Any], *, delivered: int, more: int) -> str:
    """Journal ``delivered`` polls and let the sink deliver them; then ``more`` polls with no sink."""
    journal = Journal(journal_path, commit_interval_s=0.05)
    journal.open()
    try:
        bench = SyntheticBench(journal, bench_id=BENCH)
        sink = InfluxSink(InfluxSinkConfig.model_validate(sink_cfg), bench_id=BENCH, journal_path=journal_path)
        task = asyncio.create_task(sink.run(), name="sink:history")
        try:
            bench.write(delivered)
            n = len(bench.expected)
            await eventually(lambda: sink.metrics()["cursor"] == n, what="delivered")
        finally:
            await stop_task(task)
        bench.write(more)
        return bench.run_id
    finally:
        journal.close()


def test_v2_verify_lists_the_missing_and_resend_writes_them(
    tmp_path: Path, victoria_metrics: VictoriaMetricsServer, capsys
):
    sink = influx_config(victoria_metrics.url, name="history", api="v2", bucket="battery", org="lab")
    bench, journal = bench_file(tmp_path, sink)
    run_id = asyncio.run(journal_and_deliver(journal, sink, delivered=100, more=30))
    # the sink delivered seqs 1-200 (two devices per poll); 201-260 never left the journal
    # a new series shows in VictoriaMetrics' answers a moment after the write was confirmed
    wait_until(lambda: stored_points(victoria_metrics) == 200, timeout_s=30, what="the delivered part searchable")
    assert main(["sinks", "verify", run_id, "--sink", "history", "--bench", str(bench)]) == 1
    out = capsys.readouterr().out
    assert f"run {run_id}: sink history" in out and "has 200 of 260 records; missing seqs 201-260" in out

    assert main(["sinks", "verify", run_id, "--sink", "history", "--bench", str(bench), "--resend"]) == 0
    out = capsys.readouterr().out
    assert "wrote 60 missing records again" in out and "has 260 of 260 records" in out
    assert main(["sinks", "verify", "latest", "--sink", "history", "--bench", str(bench)]) == 0


def test_v1_verify_of_a_complete_run(tmp_path: Path, influxdb_v1: InfluxV1Server, capsys):
    influxdb_v1.create_database("battery")
    sink = influx_config(influxdb_v1.url, name="history", api="v1", database="battery")
    bench, journal = bench_file(tmp_path, sink)
    run_id = asyncio.run(journal_and_deliver(journal, sink, delivered=50, more=0))
    assert main(["sinks", "verify", run_id, "--sink", "history", "--bench", str(bench)]) == 0
    assert "has 100 of 100 records" in capsys.readouterr().out


def test_verify_of_an_mqtt_sink_is_one_line_and_exit_2(tmp_path: Path, capsys):
    mqtt = {"kind": "mqtt", "name": "live", "host": "127.0.0.1", "port": 1}
    bench, journal = bench_file(tmp_path, mqtt)
    with Journal(journal) as j:
        SyntheticBench(j, bench_id=BENCH).write(1)
    assert main(["sinks", "verify", "--sink", "live", "--bench", str(bench)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a broker keeps no history" in err
