"""The report's figures (matplotlib, Agg backend: no display needed).

Every figure shares one look: time in the unit that suits the run's length, labelled axes with
units, thin grey lines at step changes, darker dashed lines and "C<n>" labels where cycles begin,
and excursions shaded (orange = warning, red = trip) on the panels they concern.
Long runs are drawn as a min/max envelope per pixel column, so a one-sample spike stays visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import itertools

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from daq.channels import CURRENT, SOC, VOLTAGE
from daq.export.cells import cell_number
from daq.report.data import RunData, Span

LEVEL_COLOURS = {"warning": "#f5a623", "trip": "#d0021b"}
WIDTH_IN = 11.0
MAX_POINTS = 4000


@dataclass(frozen=True, slots=True)
class ReportFigure:
    """A finished figure with what the report says about it."""

    key: str
    title: str
    caption: str
    figure: Figure


@dataclass(frozen=True, slots=True)
class TimeAxis:
    scale: float  # seconds per unit
    label: str

    @classmethod
    def for_duration(cls, duration_s: float) -> TimeAxis:
        if duration_s > 3 * 3600:
            return cls(3600.0, "test time / h")
        if duration_s > 600:
            return cls(60.0, "test time / min")
        return cls(1.0, "test time / s")


def envelope(t: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points that keep every bucket's minimum and maximum."""
    ok = ~np.isnan(y)
    if ok.sum() <= max_points:
        return t, y
    t, y = t[ok], y[ok]
    buckets = max_points // 2
    edges = np.linspace(0, len(t), buckets + 1).astype(int)
    ts, ys = [], []
    for a, b in itertools.pairwise(edges):
        if b <= a:
            continue
        lo, hi = a + int(np.argmin(y[a:b])), a + int(np.argmax(y[a:b]))
        for k in sorted({lo, hi}):
            ts.append(t[k])
            ys.append(y[k])
    return np.asarray(ts), np.asarray(ys)


def _mark_steps(ax: Axes, data: RunData, axis: TimeAxis, *, label_cycles: bool) -> None:
    last_cycle = data.steps[0].cycle if data.steps else None
    for span in data.steps[1:]:
        x = span.start_s / axis.scale
        if span.cycle != last_cycle:
            ax.axvline(x, color="#555555", lw=0.9, ls="--", zorder=1)
            if label_cycles and span.cycle > 0:
                ax.annotate(
                    f"C{span.cycle}", (x, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -11),
                    textcoords="offset points", fontsize=8, color="#333333",
                )  # fmt: skip
        else:
            ax.axvline(x, color="#bbbbbb", lw=0.6, zorder=1)
        last_cycle = span.cycle


def _merged(spans: list[Span], min_width_s: float) -> list[tuple[str, float, float]]:
    """Per level, the union of the intervals (many cells in warning at once shade once)."""
    merged: list[tuple[str, float, float]] = []
    for level in ("warning", "trip"):
        current: list[float] | None = None
        for s in sorted((s for s in spans if s.level == level), key=lambda s: s.start_s):
            end = max(s.end_s, s.start_s + min_width_s)
            if current is not None and s.start_s <= current[1]:
                current[1] = max(current[1], end)
                continue
            if current is not None:
                merged.append((level, current[0], current[1]))
            current = [s.start_s, end]
        if current is not None:
            merged.append((level, current[0], current[1]))
    return merged


def _shade(ax: Axes, spans: list[Span], axis: TimeAxis, duration_s: float) -> None:
    # at least 0.3 % of the plot wide, so a short excursion is still visible
    for level, start, end in _merged(spans, duration_s * 0.003):
        ax.axvspan(start / axis.scale, end / axis.scale, color=LEVEL_COLOURS[level],
                   alpha=0.18 if level == "warning" else 0.3, lw=0, zorder=0)  # fmt: skip


def _spans_for(data: RunData, quantity: str) -> list[Span]:
    """Excursions (limit check) or alarms (journal) that concern one panel's quantity."""
    spans = data.check_spans if data.check is not None else data.alarm_spans
    chosen = []
    for s in spans:
        ch, limit = s.channel, s.label
        if quantity == "voltage" and (ch == VOLTAGE or limit.startswith("pack_voltage")):
            chosen.append(s)
        elif quantity == "current" and (ch == CURRENT or "current" in limit):
            chosen.append(s)
        elif quantity == "temperature" and ("temp" in ch or "temperature" in limit):
            chosen.append(s)
        elif quantity == "cells" and ((cell_number(ch) is not None and ch.endswith("_v")) or "cell_voltage" in limit):
            chosen.append(s)
        elif quantity == "other" and not any(
            k in limit for k in ("voltage", "current", "temperature")
        ):  # data age, capacity, BMS alarm: the whole run is their context
            chosen.append(s)
    return chosen


def _finish(ax: Axes, ylabel: str) -> None:
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#e6e6e6", lw=0.6)
    ax.margins(x=0)


def _legend_for_levels(ax: Axes, spans: list[Span]) -> None:
    handles, labels = ax.get_legend_handles_labels()
    for level in ("warning", "trip"):
        if any(s.level == level for s in spans):
            handles.append(Patch(color=LEVEL_COLOURS[level], alpha=0.35))
            labels.append(f"{level} excursion")
    if handles:
        ax.legend(handles, labels, loc="best", fontsize=8, framealpha=0.85, ncols=min(len(handles), 4))


def overview(data: RunData) -> ReportFigure:
    """Voltage, current, temperature and SOC over the whole run."""
    axis = TimeAxis.for_duration(data.duration_s)
    soc = [(name, ser) for name, ser in data.devices.items() if SOC in ser.schema.index]
    fig, axes = plt.subplots(4, 1, figsize=(WIDTH_IN, 10.5), sharex=True, layout="constrained")
    v_ax, i_ax, t_ax, s_ax = axes
    for name, ser in data.devices.items():
        style = "-" if name == data.cycler else "--"
        for ax, ch in ((v_ax, VOLTAGE), (i_ax, CURRENT)):
            y = ser.channel(ch)
            if y is not None and not np.isnan(y).all():
                ax.plot(*envelope(ser.t_s / axis.scale, y), style, lw=1.1, label=f"{name}")
        temps = ser.temperature_columns()
        if len(temps) > 3:  # many sensors: min-max band and mean
            block = ser.values[:, [i for _, i in temps]]
            ok = ~np.isnan(block).all(axis=1)
            if ok.any():
                x = ser.t_s[ok] / axis.scale
                lo, hi = np.nanmin(block[ok], axis=1), np.nanmax(block[ok], axis=1)
                t_ax.fill_between(x, lo, hi, alpha=0.3, lw=0, label=f"{name} min-max ({len(temps)} sensors)")
                t_ax.plot(x, hi, lw=1.0, label=f"{name} hottest sensor")
        else:
            for ch, i in temps:
                y = ser.values[:, i]
                if not np.isnan(y).all():
                    t_ax.plot(*envelope(ser.t_s / axis.scale, y), lw=1.1, label=f"{name}.{ch}")
    if soc:
        for name, ser in soc:
            s_ax.plot(*envelope(ser.t_s / axis.scale, ser.channel(SOC)), lw=1.1, label=f"{name} (BMS)")
        _finish(s_ax, "state of charge / %")
        s_ax.set_ylim(-2, 102)
    elif data.cycler is not None:
        t, net = net_charge(data)
        s_ax.plot(t / axis.scale, net, lw=1.1, label="net charge counted from the cycler")
        _finish(s_ax, "net charge / Ah")
    for ax, quantity, ylabel in (
        (v_ax, "voltage", "pack voltage / V"),
        (i_ax, "current", "current / A (+ = charge)"),
        (t_ax, "temperature", "temperature / degC"),
    ):
        _finish(ax, ylabel)
        _shade(ax, _spans_for(data, quantity), axis, data.duration_s)
    i_ax.axhline(0, color="#888888", lw=0.6)
    for ax in axes:
        _mark_steps(ax, data, axis, label_cycles=ax is v_ax)
    everything = data.check_spans if data.check is not None else data.alarm_spans
    _shade(s_ax, _spans_for(data, "other"), axis, data.duration_s)
    for ax in axes:
        _legend_for_levels(
            ax, _spans_for(data, {v_ax: "voltage", i_ax: "current", t_ax: "temperature"}.get(ax, "other"))
        )
    s_ax.set_xlabel(axis.label)
    caption = (
        "Solid: the cycler; dashed: other devices. Dashed vertical lines: cycle starts (C1, C2, ...); "
        "thin grey lines: step changes."
    )
    if everything:
        caption += " Shaded: intervals beyond a limit (orange warning, red trip)."
    title = "Voltage, current, temperature and state of charge"
    if not soc:
        title = "Voltage, current, temperature and net charge (no SOC recorded)"
    return ReportFigure("overview", title, caption, fig)


def net_charge(data: RunData) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative net Ah from the cycler's current (trapezoid; for the SOC panel's stand-in)."""
    assert data.cycler is not None
    ser = data.devices[data.cycler]
    i = ser.channel(CURRENT)
    assert i is not None
    ok = ~np.isnan(i)
    t, i = ser.t_s[ok], i[ok]
    if len(t) < 2:
        return t, np.zeros_like(t)
    steps = np.diff(t) * (i[1:] + i[:-1]) / 2 / 3600.0
    return t, np.concatenate([[0.0], np.cumsum(steps)])


def cells(data: RunData) -> list[ReportFigure]:
    """Per device with cell voltages: min/mean/max and spread; deviation of each cell as a heatmap."""
    figures = []
    axis = TimeAxis.for_duration(data.duration_s)
    for ser in data.bms:
        cols = ser.cell_columns()
        block = ser.values[:, cols]
        ok = ~np.isnan(block).all(axis=1)
        if not ok.any():
            continue
        t, block = ser.t_s[ok] / axis.scale, block[ok]
        lo, hi, mean = np.nanmin(block, axis=1), np.nanmax(block, axis=1), np.nanmean(block, axis=1)
        spread_mv = (hi - lo) * 1000.0
        fig, (v_ax, s_ax, h_ax) = plt.subplots(
            3, 1, figsize=(WIDTH_IN, 10.5), sharex=True, layout="constrained", height_ratios=[1.1, 0.8, 1.4]
        )
        v_ax.fill_between(t, lo, hi, color="#4a90d9", alpha=0.3, lw=0, label="min-max of all cells")
        v_ax.plot(t, mean, color="#1f4e79", lw=1.0, label="mean cell")
        _finish(v_ax, "cell voltage / V")
        s_ax.plot(*envelope(t, spread_mv), color="#7b3294", lw=1.0, label="max - min")
        _finish(s_ax, "cell spread / mV")
        spans = _spans_for(data, "cells")
        for ax in (v_ax, s_ax):
            _shade(ax, spans, axis, data.duration_s)
            _mark_steps(ax, data, axis, label_cycles=ax is v_ax)
        _legend_for_levels(v_ax, spans)
        s_ax.legend(loc="best", fontsize=8)
        deviation = (block - mean[:, None]) * 1000.0
        limit = float(np.nanpercentile(np.abs(deviation), 99.5)) or 1.0
        image = h_ax.imshow(
            _resample_columns(deviation, t, 800).T, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-limit,
            vmax=limit, extent=(float(t[0]), float(t[-1]), 0.5, len(cols) + 0.5), interpolation="nearest",
        )  # fmt: skip
        fig.colorbar(image, ax=h_ax, label="deviation from mean / mV", pad=0.01)
        h_ax.set_ylabel("cell")
        h_ax.set_yticks(range(1, len(cols) + 1, max(1, len(cols) // 16)))
        for s in spans:
            n = cell_number(s.channel) if s.device == ser.schema.device else None
            if n is not None:
                x0, x1 = s.start_s / axis.scale, max(s.end_s, s.start_s + data.duration_s * 0.003) / axis.scale
                h_ax.add_patch(Rectangle((x0, n - 0.5), x1 - x0, 1.0, fill=False, ec=LEVEL_COLOURS[s.level], lw=2))
        h_ax.set_xlabel(axis.label)
        name = ser.schema.device
        figures.append(
            ReportFigure(
                f"cells-{name}",
                f"Cell voltages of {name} ({len(cols)} cells)",
                "Top: band between the lowest and highest cell, and the mean. Middle: spread (highest minus "
                "lowest cell). Bottom: each cell's deviation from the mean (red above, blue below); a boxed "
                "cell had an alarm then.",
                fig,
            )
        )
    return figures


def _resample_columns(block: np.ndarray, t: np.ndarray, width: int) -> np.ndarray:
    """At most ``width`` time columns on an even time grid (imshow draws columns evenly)."""
    if len(t) < 2:
        return block
    grid = np.linspace(t[0], t[-1], min(width, len(t)))
    idx = np.clip(np.searchsorted(t, grid), 0, len(t) - 1)
    return block[idx]


def per_cycle(data: RunData) -> ReportFigure | None:
    rows = data.cycles
    if not rows:
        return None
    n = np.array([r.cycle for r in rows])
    fig, (c_ax, e_ax, f_ax) = plt.subplots(3, 1, figsize=(WIDTH_IN, 9.0), sharex=True, layout="constrained")
    width = 0.38
    c_ax.bar(n - width / 2, [r.charge_ah for r in rows], width, label="charged", color="#4a90d9")
    c_ax.bar(n + width / 2, [r.discharge_ah for r in rows], width, label="discharged", color="#f5a623")
    _finish(c_ax, "capacity / Ah")
    c_ax.legend(loc="lower right", fontsize=8)
    e_ax.plot(n, [r.coulombic_efficiency_pct for r in rows], "o-", label="coulombic (Ah out / Ah in)")
    e_ax.plot(n, [r.energy_efficiency_pct for r in rows], "s-", label="energy (Wh out / Wh in)")
    _finish(e_ax, "efficiency / %")
    e_ax.legend(loc="lower right", fontsize=8)
    retention = [r.retention_pct for r in rows]
    f_ax.plot(n, retention, "o-", color="#7b3294", label="discharge capacity vs first cycle")
    f_ax.axhline(80.0, color=LEVEL_COLOURS["trip"], ls="--", lw=1.0, label="80 % (common end-of-life criterion)")
    finite = [r for r in retention if not math.isnan(r)]
    if finite:
        f_ax.set_ylim(min(75.0, min(finite) - 2), max(102.0, max(finite) + 1))
    _finish(f_ax, "capacity retention / %")
    f_ax.legend(loc="lower left", fontsize=8)
    f_ax.set_xlabel("cycle")
    f_ax.set_xticks(n if len(n) <= 25 else np.linspace(n[0], n[-1], 11).round())
    return ReportFigure(
        "cycles",
        "Per-cycle capacity, efficiency and fade",
        f"Values {data.cycles_source}. Retention is each cycle's discharge capacity relative to the first full cycle.",
        fig,
    )


def all_figures(data: RunData) -> list[ReportFigure]:
    figures = [overview(data), *cells(data)]
    cycle_fig = per_cycle(data)
    if cycle_fig is not None:
        figures.append(cycle_fig)
    return figures


def close(figures: list[ReportFigure]) -> None:
    for f in figures:
        plt.close(f.figure)
