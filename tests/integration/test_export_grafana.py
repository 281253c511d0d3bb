"""The Grafana dashboards in configs/grafana: well-formed, provisioned, and every query they make
runs against a real InfluxDB holding a recorded run written in the InfluxDB sink's schema."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from daq.journal import JournalEvent, JournalReader
from daq.records import Channel, DeviceSchema, Quality, Record
from daq.sinks.lineprotocol import LineProtocolEncoder
from tests.helpers import REPO
from tests.integration.sim_run import RecordedRun, shared_recording
from tests.servers import InfluxV1Server

GRAFANA = REPO / "configs" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATABASE = "battery"


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return board["panels"]


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, InfluxQL) for every panel target, annotation and template variable."""
    found = [(f"panel {p['title']!r}", t["query"]) for p in panels(board) for t in p["targets"]]
    found += [(f"annotation {a['name']!r}", a["query"]) for a in board["annotations"]["list"] if "query" in a]
    found += [(f"variable {v['name']!r}", v["query"]) for v in board["templating"]["list"] if v["type"] == "query"]
    return found


def test_the_three_dashboards_are_there_with_unique_uids() -> None:
    titles = {load(p)["uid"]: load(p)["title"] for p in DASHBOARDS}
    assert set(titles) == {"daq-bench-overview", "daq-pack-detail", "daq-alarms"}
    pack = load(GRAFANA / "dashboards" / "pack-detail.json")
    heatmaps = [p for p in panels(pack) if p["type"] == "status-history" and "cell" in p["title"].lower()]
    assert heatmaps and "cell[0-9]+_v" in heatmaps[0]["targets"][0]["query"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_uses_the_provisioned_data_source_and_defined_variables(path: Path) -> None:
    board = load(path)
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "daq-influxdb.yaml").read_text())
    uid = source["datasources"][0]["uid"]
    assert source["datasources"][0]["jsonData"]["version"] == "InfluxQL"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for p in panels(board):
        assert p["datasource"]["uid"] == uid and all(t["datasource"]["uid"] == uid for t in p["targets"])
        assert p["gridPos"]["w"] <= 24
    defined = {v["name"] for v in board["templating"]["list"]}
    for where, q in queries(board):
        used = set(re.findall(r"\$(\w+)", q)) - {"timeFilter", "__interval"}
        assert used <= defined, f"{path.name} {where}: undefined variables {used - defined}"


def test_dashboard_provider_points_at_a_folder() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "daq.yaml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"].startswith("/")


# -- against a real InfluxDB --------------------------------------------------------------------


def write_lines(server: InfluxV1Server, lines: list[str]) -> None:
    for k in range(0, len(lines), 5000):
        body = "\n".join(lines[k : k + 5000]).encode()
        request = urllib.request.Request(
            f"{server.url}/write?db={DATABASE}&precision=n", data=body, method="POST"
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 204


@pytest.fixture(scope="module")
def influx_with_run(tmp_path_factory: pytest.TempPathFactory):
    recorded: RecordedRun = shared_recording(tmp_path_factory.getbasetemp())
    server = InfluxV1Server(tmp_path_factory.mktemp("influxdb"))
    server.start()
    try:
        server.create_database(DATABASE)
        with JournalReader(recorded.journal) as reader:
            run = reader.run(recorded.run_id)
            encoder = LineProtocolEncoder(run.bench_id)
            lines = [line for rec in reader.iter_run_records(run.run_id) if (line := encoder.record_line(rec))]
            events = reader.run_events(run.run_id)
            last = reader.run(run.run_id).ended_ns or events[-1].t_ns
        # what this recording lacks: a trip, a runner event and a value that was not good
        trip = {"kind": "tripped", "level": "trip", "limit": "cell_voltage_max_v", "device": "bms-1",
                "channel": "cell2_v", "value": 4.3, "threshold": 4.25, "message": "test trip"}  # fmt: skip
        events.append(JournalEvent(0, run.run_id, last - 10**9, "alarm.tripped", trip))
        events.append(JournalEvent(0, run.run_id, last - 3 * 10**9, "runner.step", {"cycle": 3, "step": 4}))
        schema = DeviceSchema("cycler-0", "cycler", (Channel("voltage_v", "V"), Channel("current_a", "A")))
        bad = Record(schema, last - 2 * 10**9, [float("nan"), 0.0], bytes([Quality.TIMEOUT, 0]), run.run_id, 4, 3)
        lines.append(encoder.record_line(bad) or "")
        lines += [encoder.event_line(e) for e in events]
        write_lines(server, lines)
        yield server, run
    finally:
        server.kill()


def expand(query: str, run_id: str, bench: str, start_ns: int, end_ns: int) -> str:
    """What Grafana sends for this query: macros and variables filled in."""
    return (
        query.replace("$timeFilter", f"time >= {start_ns // 10**6}ms and time <= {end_ns // 10**6}ms")
        .replace("$__interval", "120s")
        .replace("$bench", re.escape(bench))
        .replace("$run", re.escape(run_id))
        .replace("$bms", "bms-1")
    )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_finds_data_in_the_sink_schema(influx_with_run, path: Path) -> None:
    server, run = influx_with_run
    board = load(path)
    end_ns = (run.ended_ns or time.time_ns()) + 10**9
    for where, q in queries(board):
        answer = server.query(expand(q, run.run_id, run.bench_id, run.started_ns, end_ns), db=DATABASE)
        series = [s for r in answer["results"] for s in r.get("series", [])]
        assert series and any(s["values"] for s in series), f"{path.name} {where}: no data for {q}"
        if where.startswith("variable"):
            values = {v[-1] for s in series for v in s["values"]}
            assert values & {run.bench_id, run.run_id, "bms-1"}, f"{where}: {values}"
