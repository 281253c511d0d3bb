"""The bus budget: line time per request against DOMAIN.md's table, frame sizes from the codecs,
and a verdict per serial bus of a bench."""

from __future__ import annotations

from typing import Any

import pytest

from daq.busbudget import (
    BusBudget,
    Exchange,
    LineTiming,
    bus_budgets,
    daly_poll,
    jbd_poll,
    modbus_read_exchange,
)
from daq.config.bench import BenchConfig
from drivers.bms.daly import codec as daly
from drivers.bms.jbd import codec as jbd
from drivers.modbus.regmap import load_regmap
from tests.helpers import REPO

SIM_BMS = load_regmap(REPO / "configs" / "regmaps" / "sim_bms.yaml")


@pytest.mark.parametrize(
    ("baud", "registers", "per_s"),
    [(9600, 10, 24.0), (9600, 125, 3.6), (115200, 10, 157.0), (115200, 125, 38.0)],
)
def test_modbus_reads_per_second_match_the_domain_table(baud: int, registers: int, per_s: float) -> None:
    line = LineTiming(baud)
    # the table rounds ("~3.6"): 2 % is well below any change of frame size or gap
    assert 1 / line.exchange_s(modbus_read_exchange(registers, "holding"), "modbus") == pytest.approx(per_s, rel=0.02)


def test_modbus_frame_sizes() -> None:
    assert modbus_read_exchange(10, "input") == Exchange(8, 25)
    assert modbus_read_exchange(16, "coil") == Exchange(8, 7)  # bits are packed 8 to a byte
    assert modbus_read_exchange(17, "discrete") == Exchange(8, 8)


def test_parity_and_stop_bits_make_characters_longer() -> None:
    plain, even_2stop = LineTiming(9600, 10), LineTiming(9600, 12)
    ex = Exchange(8, 25)
    assert even_2stop.exchange_s(ex, "jbd") > plain.exchange_s(ex, "jbd") * 1.15


def test_jbd_poll_is_two_exchanges_sized_like_the_codec_frames() -> None:
    (basic, cells) = jbd_poll(14, 2)
    assert basic.request_bytes == len(jbd.encode_read_request(3)) == 7
    assert basic.reply_bytes == 7 + 23 + 2 * 2  # header and trailer, fixed fields, two NTCs
    assert cells.reply_bytes == 7 + 2 * 14


def test_daly_poll_counts_multi_frame_answers() -> None:
    exchanges = daly_poll(16, 8)  # 16 cells = 6 frames, 8 sensors = 2 frames
    assert [e.reply_bytes // daly.FRAME_LEN for e in exchanges] == [1, 1, 6, 2, 1, 1]
    assert all(e.request_bytes == 13 for e in exchanges)
    assert len(daly_poll(4, 0)) == 5  # no temperature query without sensors


def test_daly_idle_gap_dominates_at_high_baud() -> None:
    line = LineTiming(115200)
    one = line.exchange_s(Exchange(13, 13), "daly")
    assert one == pytest.approx(0.020 + 26 * 10 / 115200)


def bench(
    devices: list[dict[str, Any]], *, sims: list[dict[str, Any]] | None = None, time_scale: float = 1
) -> BenchConfig:
    data: dict[str, Any] = {"bench": {"id": "b"}, "devices": devices}
    if sims:
        data["simulation"] = {"time_scale": time_scale, "pack": {"series_cells": 14}, "simulators": sims}
    return BenchConfig.model_validate(data)


def jbd_dev(name: str, port: str, *, period: float = 1.0, baud: int = 9600) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "jbd",
        "cells": 14,
        "sensors": 2,
        "poll_period_s": period,
        "transport": {"kind": "serial", "port": port, "baud": baud},
    }


def test_one_budget_per_port_with_each_device_load() -> None:
    cfg = bench([jbd_dev("a", "/dev/ttyUSB0"), jbd_dev("b", "/dev/ttyUSB1", period=0.5)])
    budgets = {b.port: b for b in bus_budgets(cfg, {})}
    assert set(budgets) == {"/dev/ttyUSB0", "/dev/ttyUSB1"}
    a = budgets["/dev/ttyUSB0"]
    assert a.requests_per_s == pytest.approx(2.0)
    assert a.load == pytest.approx(a.devices[0].line_s)  # one poll per second
    assert budgets["/dev/ttyUSB1"].load == pytest.approx(2 * a.load)
    assert a.ok and not a.tight


def test_modbus_devices_share_a_bus_with_their_planned_reads() -> None:
    modbus = {
        "name": "m1",
        "kind": "modbus",
        "role": "bms",
        "regmap": "x.yaml",
        "unit_id": 1,
        "poll_period_s": 0.1,
        "transport": {"kind": "serial", "port": "/dev/ttyUSB0", "baud": 9600},
    }
    cfg = bench([modbus, {**modbus, "name": "m2", "unit_id": 2}])
    (budget,) = bus_budgets(cfg, {"m1": SIM_BMS, "m2": SIM_BMS})
    assert [d.exchanges for d in budget.devices] == [(Exchange(8, 5 + 2 * 52),)] * 2
    # 2 devices x 10 reads/s x (8 + 109 bytes + 2 x 3.5 characters of silence) at 9600 baud
    assert budget.load == pytest.approx(2 * 10 * 124 * 10 / 9600, rel=1e-6)
    assert not budget.ok
    line = budget.problem()
    assert "/dev/ttyUSB0 at 9600 baud cannot keep up" in line and "258 %" in line and "m1 alone" in line


def test_time_scale_makes_polls_faster_on_the_real_line() -> None:
    sims = [{"kind": "bms", "name": "s", "protocol": "jbd", "pacing": True}]
    slow = bench([jbd_dev("a", "sim:s")], sims=sims)
    fast = bench([jbd_dev("a", "sim:s")], sims=sims, time_scale=30)
    assert bus_budgets(fast, {})[0].load == pytest.approx(30 * bus_budgets(slow, {})[0].load)


def test_unpaced_simulated_bus_has_no_line_limit() -> None:
    sims = [{"kind": "bms", "name": "s", "protocol": "jbd", "pacing": False}]
    (budget,) = bus_budgets(bench([jbd_dev("a", "sim:s", period=0.01)], sims=sims), {})
    assert budget.load > 1 and budget.ok and "no line limit" in budget.describe()[0]


def test_tight_bus_is_flagged_but_allowed() -> None:
    cfg = bench([jbd_dev("a", "/dev/ttyUSB0", period=0.1)])  # ~94 ms of line time every 100 ms
    (budget,) = bus_budgets(cfg, {})
    assert budget.tight and budget.ok
    assert "tight" in budget.describe()[0]


def test_empty_budget_is_not_divided_by_zero() -> None:
    assert BusBudget("/dev/x", LineTiming(9600), ()).max_requests_per_s == float("inf")
