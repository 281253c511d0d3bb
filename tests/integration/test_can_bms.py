"""A CAN BMS described by a DBC file, on python-can's virtual bus (this sandbox has no vcan module).

The demo bench variant (configs/demo_can.yaml) with its journal moved to tmp: the simulated cycler
on Modbus TCP and the simulated CAN BMS encoding the same pack into the demo DBC's frames.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from daq.bench import Bench
from daq.channels import CyclerMode
from daq.config.loader import load_bench
from daq.cycler import CyclerCommand
from daq.errors import ConfigError
from daq.journal import JournalReader
from daq.records import Quality, Record
from tests.helpers import REPO, wait_until

DEMO = REPO / "configs" / "demo_can.yaml"
GOOD, STALE = int(Quality.GOOD), int(Quality.STALE)


def demo_bench(tmp_path: Path, *, channel: str, edit: Any = None) -> Path:
    cfg = yaml.safe_load(DEMO.read_text())
    cfg["journal"] = {"path": str(tmp_path / "journal.sqlite"), "commit_interval_s": 0.1}
    cfg["simulation"]["time_scale"] = 5
    sim = cfg["simulation"]["simulators"][1]
    dev = cfg["devices"][1]
    sim["channel"] = dev["channel"] = channel  # a virtual bus of its own per test
    sim["dbc"] = dev["dbc"] = str(REPO / "configs" / "dbc" / "demo_pack.dbc")
    cfg["devices"][0]["regmap"] = str(REPO / "configs" / "regmaps" / "sim_cycler.yaml")
    dev["poll_period_s"] = 0.2
    if edit is not None:
        edit(cfg)
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def latest(bench: Bench) -> Record | None:
    return bench.latest.get("bms-can")


def channel_quality(bench: Bench, name: str) -> int:
    rec = latest(bench)
    return -1 if rec is None else rec.quality[rec.schema.index[name]]


async def test_every_cell_equals_the_simulated_pack_and_current_is_plus_for_charge(tmp_path: Path) -> None:
    bench = Bench(load_bench(demo_bench(tmp_path, channel="can-cells")))
    await bench.start()
    try:
        await wait_until(lambda: (r := latest(bench)) is not None and r.all_good(), what="a good CAN BMS record")
        pack = bench.simulation.packs["sim-cycler"]
        rec = latest(bench)
        assert rec is not None
        snap = pack.snapshot()  # at rest: the cells do not move between the frame and now
        for n, v in enumerate(snap.cell_voltages_v, 1):
            assert abs(rec.get(f"cell{n}_v") - v) <= 0.0006, f"cell {n}"  # 1 mV resolution on the wire
        assert abs(rec.get("voltage_v") - snap.voltage_v) <= 0.006
        await bench.cyclers["cycler-1"].apply(CyclerCommand(CyclerMode.CC, current_a=10.0, voltage_v=14 * 4.2))
        await wait_until(lambda: latest(bench).get("current_a") > 9.9, what="the CAN BMS reports +10 A charging")
    finally:
        await bench.stop()
    with JournalReader(tmp_path / "journal.sqlite") as reader:
        records = [r for r in reader.iter_run_records(bench.run_id) if r.device == "bms-can"]
    assert [f"cell{n}_v" for n in range(1, 15)] == [c for c in records[0].schema.names if c.startswith("cell")]
    assert any(r.all_good() for r in records)


async def test_each_fault_marks_its_channels_and_clears(tmp_path: Path) -> None:
    bench = Bench(load_bench(demo_bench(tmp_path, channel="can-faults")))
    await bench.start()
    try:
        await wait_until(lambda: (r := latest(bench)) is not None and r.all_good(), what="a good CAN BMS record")
        faults = bench.simulation.can_bms["sim-can-bms"].faults

        faults.missing.add("BMS_Temperatures")  # missing frames: their values go stale, the rest stay good
        await wait_until(lambda: channel_quality(bench, "temp1_c") == STALE, what="temperatures stale")
        assert channel_quality(bench, "cell1_v") == GOOD
        assert latest(bench).values[latest(bench).schema.index["temp1_c"]] > 0  # the last value is kept
        faults.missing.clear()
        await wait_until(lambda: channel_quality(bench, "temp1_c") == GOOD, what="temperatures back")

        faults.wrong_dlc["BMS_Pack"] = 6
        await wait_until(lambda: channel_quality(bench, "voltage_v") == int(Quality.BAD_FRAME), what="bad DLC")
        assert channel_quality(bench, "cell1_v") == GOOD
        faults.wrong_dlc.clear()

        faults.out_of_range.add("Cell07_Voltage")
        await wait_until(lambda: channel_quality(bench, "cell7_v") == int(Quality.OUT_OF_RANGE), what="out of range")
        assert channel_quality(bench, "cell8_v") == GOOD
        assert channel_quality(bench, "voltage_v") == GOOD
        faults.out_of_range.clear()

        faults.silent = True
        await wait_until(
            lambda: (r := latest(bench)) is not None and set(r.quality) == {int(Quality.COMM_LOST)}, what="silent bus"
        )
        assert bench.latest["cycler-1"].all_good()  # one device's failure stays with that device
        faults.silent = False
        await wait_until(lambda: latest(bench).all_good(), what="the CAN BMS recovers by itself")
    finally:
        await bench.stop()


async def test_a_failing_adapter_is_comm_lost_and_reconnects_by_itself(tmp_path: Path) -> None:
    bench = Bench(load_bench(demo_bench(tmp_path, channel="can-unplug")))
    await bench.start()
    try:
        await wait_until(lambda: (r := latest(bench)) is not None and r.all_good(), what="a good CAN BMS record")
        bench.drivers["bms-can"]._bus.shutdown()  # the adapter goes away under the driver  # type: ignore[attr-defined]
        await wait_until(
            lambda: set(latest(bench).quality) == {int(Quality.COMM_LOST)}, what="COMM_LOST while the bus is gone"
        )
        poller = bench.pollers["bms-can"]
        await wait_until(lambda: poller.stats.reconnects >= 1 and latest(bench).all_good(), what="reconnected")
        assert "bus failed" in poller.stats.last_error
    finally:
        await bench.stop()


async def test_protections_set_in_the_simulator_reach_the_alarm_channels(tmp_path: Path) -> None:
    def protections(cfg: dict[str, Any]) -> None:
        cfg["simulation"]["simulators"][1]["faults"] = {
            "protections": {"cell_overvoltage": "alarm", "cell_imbalance": "warning"}
        }

    bench = Bench(load_bench(demo_bench(tmp_path, channel="can-alarms", edit=protections)))
    await bench.start()
    try:
        await wait_until(lambda: (r := latest(bench)) is not None and r.all_good(), what="a good CAN BMS record")
        rec = latest(bench)
        assert (rec.get("alarm_cell_overvoltage"), rec.get("alarm_cell_imbalance"), rec.get("alarm_level")) == (2, 1, 2)
        assert rec.get("alarm_charge_overcurrent") == 0
        assert rec.quality[rec.schema.index["alarm_fuse"]] == GOOD  # not in the DBC: NaN, "cannot tell"
    finally:
        await bench.stop()


async def test_the_safety_data_age_check_trips_on_a_silent_can_bms(tmp_path: Path) -> None:
    limits = tmp_path / "limits.yaml"
    limits.write_text(yaml.safe_dump({"name": "can data age", "data_age_max_s": {"trip": 2.0}}))

    def add_safety(cfg: dict[str, Any]) -> None:
        cfg["safety"] = {"limits": str(limits), "push_device_limits": False, "stale_check_period_s": 0.2}
        cfg["simulation"]["simulators"][1]["faults"] = {"missing": ["BMS_Pack"]}  # never a good record

    bench = Bench(load_bench(demo_bench(tmp_path, channel="can-safety", edit=add_safety)))
    await bench.start()
    try:
        assert bench.safety is not None
        await wait_until(lambda: bool(bench.safety.abort_reason), what="a data-age trip")
        assert "bms-can" in bench.safety.abort_reason
    finally:
        await bench.stop()


def daq_validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daq.cli.main", "validate", str(path)], capture_output=True, text=True, timeout=60
    )


def test_validate_names_a_signal_the_dbc_does_not_define(tmp_path: Path) -> None:
    def rename(cfg: dict[str, Any]) -> None:
        cfg["devices"][1]["signals"] = {**cfg["devices"][1]["signals"], "soc_pct": "Pack_SOC"}

    result = daq_validate(demo_bench(tmp_path, channel="v1", edit=rename))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "devices[1](bms-can).signals" in lines[0] and "'Pack_SOC', which the DBC does not define" in lines[0]


def test_validate_refuses_a_dbc_that_does_not_parse_and_an_unknown_interface(tmp_path: Path) -> None:
    bad = tmp_path / "broken.dbc"
    bad.write_text('VERSION ""\nBO_ 592 BMS_Pack: 8 BMS\n SG_ PackVoltage 0|16@1+ (0.01,0) [0|600] "V" DAQ\n')

    def break_it(cfg: dict[str, Any]) -> None:
        cfg["devices"][1]["dbc"] = str(bad)
        cfg["devices"][1]["interface"] = "nosuchcan"

    result = daq_validate(demo_bench(tmp_path, channel="v2", edit=break_it))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}: not a valid DBC file" in result.stderr
    assert "'nosuchcan' is not a python-can interface" in result.stderr


async def test_an_interface_that_cannot_open_stops_the_start(tmp_path: Path) -> None:
    def real_adapter(cfg: dict[str, Any]) -> None:
        cfg["devices"][1].update(interface="socketcan", channel="can-nonexistent0")

    bench = Bench(load_bench(demo_bench(tmp_path, channel="v3", edit=real_adapter)))
    try:
        await bench.start()
    except ConfigError as exc:
        assert "device bms-can: cannot open CAN socketcan channel 'can-nonexistent0'" in str(exc)
    else:
        await bench.stop()
        raise AssertionError("the bench started without its CAN adapter")
