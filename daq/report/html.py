"""One self-contained HTML file: metadata, verdict, summary, figures (PNG, base64), tables.

No external resources at all (styles inline, images as data URIs), so the file can be mailed,
archived with the test record and opened years later on a machine without network.
A small inline script counts the images the browser could decode and writes the count to
``<html data-images-loaded="n/m">``: a headless browser check reads it back.
"""

from __future__ import annotations

import base64
import io
import math
from datetime import UTC, datetime
from html import escape
from typing import Any

import numpy as np

from daq import __version__
from daq.channels import CURRENT, VOLTAGE
from daq.report.data import RunData, flat_metadata
from daq.report.plots import ReportFigure
from daq.timebase import run_times

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;color:#1d1d1f;background:#f4f5f7}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:1.55em;margin:0 0 4px}h2{font-size:1.2em;margin:32px 0 10px;border-bottom:2px solid #e3e5e8;
padding-bottom:4px}.sub{color:#5f6368;margin:0 0 18px}
.verdict{display:flex;align-items:center;gap:16px;padding:14px 18px;border-radius:8px;margin:12px 0 6px;
font-size:1.05em}.verdict .word{font-size:1.6em;font-weight:700;letter-spacing:.04em}
.pass{background:#e6f4ea;border:1px solid #34a853}.fail{background:#fce8e6;border:1px solid #d93025}
.none{background:#f1f3f4;border:1px solid #9aa0a6}.banner{background:#fef7e0;border:1px solid #f9ab00;
padding:8px 14px;border-radius:6px;margin:8px 0}
table{border-collapse:collapse;font-size:.9em;margin:6px 0}th,td{padding:4px 10px;border-bottom:1px solid #e3e5e8;
text-align:left;vertical-align:top}th{background:#f8f9fa;font-weight:600}td.n,th.n{text-align:right;
font-variant-numeric:tabular-nums}table.meta th{width:170px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px}
.card{border:1px solid #e3e5e8;border-radius:6px;padding:8px 12px}.card .v{font-size:1.25em;font-weight:600}
.card .k{color:#5f6368;font-size:.85em}figure{margin:18px 0}figure img{width:100%;height:auto;
border:1px solid #e3e5e8}figcaption{color:#5f6368;font-size:.9em;margin-top:4px}
.lvl-trip{color:#d93025;font-weight:600}.lvl-warning{color:#b06000;font-weight:600}
footer{color:#80868b;font-size:.8em;margin-top:36px}
@media print{body{background:#fff}main{padding:0}figure{break-inside:avoid}}
"""

_SCRIPT = """
window.__errors=0;window.addEventListener('error',function(){window.__errors++;},true);
window.addEventListener('load',function(){var imgs=document.images,ok=0;
for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}
document.documentElement.setAttribute('data-images-loaded',ok+'/'+imgs.length);
document.documentElement.setAttribute('data-errors',String(window.__errors));});
"""


def png_base64(fig: ReportFigure, *, dpi: int = 110) -> str:
    buf = io.BytesIO()
    fig.figure.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _num(x: Any, fmt: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return format(x, fmt)
    return escape(str(x))


def _utc(ns: int | None) -> str:
    if ns is None:
        return "–"
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clock(seconds: float) -> str:
    """Test time as h:mm:ss (a 7-hour run's 26607 s reads better as 7:23:27)."""
    h, rest = divmod(round(max(seconds, 0.0)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    h, rest = divmod(round(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s"


def _table(header: list[str], rows: list[list[str]], numeric: set[int] | None = None, cls: str = "") -> str:
    numeric = numeric or set()
    head = "".join(
        f'<th class="n">{escape(h)}</th>' if i in numeric else f"<th>{escape(h)}</th>" for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _meta_value(meta: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = meta.get(key)
        if isinstance(value, dict):  # e.g. pack: {id: ..., chemistry: ...}
            return escape(", ".join(f"{k} {v}" for k, v in value.items()))
        if value not in (None, ""):
            return escape(str(value))
    return "<i>not recorded</i>"


def _metadata(data: RunData, limits_name: str | None) -> str:
    run, meta = data.run, flat_metadata(data.run.metadata)
    checked = limits_name or (data.check.limits_name if data.check is not None else None)
    limit_set = escape(checked) if checked else _meta_value(meta, "limit_set", "limits")
    times = run_times(run.started_ns, run.ended_ns, run.metadata)  # wall clock, with bench time beside it
    sim = times.time_scale != 1.0
    rows = [
        ("Pack", _meta_value(meta, "pack_serial", "pack", "pack_id", "dut")),
        ("Operator", _meta_value(meta, "operator", "user")),
        ("Profile", _meta_value(meta, "profile", "profile_name")),
        ("Notes", _meta_value(meta, "notes")),
        ("Limit set", limit_set),
        ("Bench", escape(run.bench_id)),
        ("Run", escape(run.run_id)),
        ("Status", escape(run.status + (f" ({run.reason})" if run.reason else ""))),
        ("Started", _utc(times.wall_started_ns)),
        ("Ended", _utc(times.wall_ended_ns) if times.wall_ended_ns else "still running"),
        ("Duration recorded", _duration(data.duration_s) + (f" of bench time at ×{times.time_scale:g}" if sim else "")),
        ("Recorded with", "daq " + _meta_value(meta, "software_version")),
        ("Config hash", escape(run.config_hash) or "<i>not recorded</i>"),
        ("Journal", escape(str(data.journal))),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="meta">{body}</table>'


def _verdict(data: RunData) -> str:
    check = data.check
    if check is None:
        return (
            '<div class="verdict none"><span class="word">NO VERDICT</span><span>No limit set was given: run '
            "<code>daq report RUN --limits FILE</code> for the pass/fail check.</span></div>"
        )
    cls = "pass" if check.passed else "fail"
    return (
        f'<div class="verdict {cls}" id="verdict"><span class="word">{check.verdict.upper()}</span>'
        "<span>against limit set "
        f"<b>{escape(check.limits_name or '(unnamed)')}</b>: {len(check.trips)} trip, {len(check.warnings)} "
        f"warning excursion(s) in {check.records} records. Rule: {escape(check.rule)}.</span></div>"
    )


def _cards(data: RunData) -> str:
    cards: list[tuple[str, str]] = [("duration", _duration(data.duration_s)), ("cycles judged", str(len(data.cycles)))]
    if data.cycler is not None:
        ser = data.devices[data.cycler]
        v, i = ser.channel(VOLTAGE), ser.channel(CURRENT)
        if v is not None and not np.isnan(v).all():
            cards.append(("pack voltage min / max", f"{np.nanmin(v):.2f} / {np.nanmax(v):.2f} V"))
        if i is not None and not np.isnan(i).all():
            cards.append(
                ("max charge / discharge current", f"{max(np.nanmax(i), 0):.1f} / {max(-np.nanmin(i), 0):.1f} A")
            )
    if data.cycles:
        cards.append(("charged / discharged", f"{sum(c.charge_ah for c in data.cycles):.2f} / "
                      f"{sum(c.discharge_ah for c in data.cycles):.2f} Ah"))  # fmt: skip
    temps = [
        ser.values[:, i] for ser in data.devices.values() for _, i in ser.temperature_columns()
    ]  # fmt: skip
    temps = [t for t in temps if not np.isnan(t).all()]
    if temps:
        cards.append(("max temperature", f"{max(float(np.nanmax(t)) for t in temps):.1f} degC"))
    for ser in data.bms:
        block = ser.values[:, ser.cell_columns()]
        ok = ~np.isnan(block).all(axis=1)
        if ok.any():
            b = block[ok]
            spread = (np.nanmax(b, axis=1) - np.nanmin(b, axis=1)) * 1000
            cards.append((f"{ser.schema.device} cell min / max", f"{np.nanmin(b):.3f} / {np.nanmax(b):.3f} V"))
            cards.append((f"{ser.schema.device} max cell spread", f"{np.nanmax(spread):.0f} mV"))
    cards.append(("limit excursions", "–" if data.check is None else str(len(data.check.excursions))))
    cards.append(("alarms journaled", str(len(data.alarm_events))))
    items = "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{v}</div></div>' for k, v in cards
    )
    return f'<div class="grid">{items}</div>'


def _cycle_table(data: RunData) -> str:
    if not data.cycles:
        return f"<p>No per-cycle values: {escape(data.cycles_source or 'no cycles recorded')}.</p>"
    rows = [
        [
            str(c.cycle), _num(c.charge_ah, ".3f"), _num(c.discharge_ah, ".3f"), _num(c.charge_wh, ".1f"),
            _num(c.discharge_wh, ".1f"), _num(c.coulombic_efficiency_pct, ".2f"), _num(c.energy_efficiency_pct, ".2f"),
            _num(c.retention_pct, ".2f"), _num(c.end_charge_voltage_v, ".3f"), _num(c.end_discharge_voltage_v, ".3f"),
            _num(c.max_temperature_c, ".1f"),
        ]
        for c in data.cycles
    ]  # fmt: skip
    header = [
        "cycle", "charged / Ah", "discharged / Ah", "charged / Wh", "discharged / Wh", "coulombic eff. / %",
        "energy eff. / %", "retention / %", "end of charge / V", "end of discharge / V", "max temp. / degC",
    ]  # fmt: skip
    return f"<p class='sub'>Source: {escape(data.cycles_source)}.</p>" + _table(header, rows, set(range(11)))


MAX_TABLE_ROWS = 200


def _excursions(data: RunData) -> str:
    check = data.check
    if check is None:
        return "<p>Not checked: no limit set given (<code>--limits FILE</code>).</p>"
    if not check.excursions:
        return "<p>No excursions: every recorded value stayed inside the limit set.</p>"
    rows = []
    for e in check.excursions[:MAX_TABLE_ROWS]:
        rows.append(
            [
                f'<span class="lvl-{e.level}">{escape(e.level)}</span>', escape(e.limit), escape(e.device),
                escape(e.channel), _clock(data.time_s(e.start_ns)),
                _clock(data.time_s(e.end_ns)) + ("" if e.ended else "+"),
                _num(e.duration_s, ".1f"), _num(e.peak), _num(e.threshold), escape(e.unit),
            ]
        )  # fmt: skip
    header = ["level", "limit", "device", "channel", "from", "to", "lasted / s", "peak", "threshold", "unit"]
    notes = []
    if any(not e.ended for e in check.excursions):
        notes.append("+ = still beyond the threshold when the data ended.")
    if len(check.excursions) > MAX_TABLE_ROWS:
        notes.append(
            f"The first {MAX_TABLE_ROWS} of {len(check.excursions)} excursions; <code>daq check</code> lists them all."
        )
    notes.append("Times are test time (h:mm:ss since the run started).")
    return _table(header, rows, {4, 5, 6, 7, 8}) + f"<p class='sub'>{' '.join(notes)}</p>"


def _alarms(data: RunData) -> str:
    if not data.alarm_events:
        return "<p>No alarm was raised by the safety monitor during the run.</p>"
    rows = []
    for ev in data.alarm_events:
        d = ev.data
        level = str(d.get("level", ""))
        rows.append(
            [
                _clock(data.time_s(ev.t_ns)), escape(ev.kind),
                f'<span class="lvl-{escape(level)}">{escape(level)}</span>',
                escape(str(d.get("limit", ""))), escape(str(d.get("device", ""))), escape(str(d.get("channel", ""))),
                _num(d.get("value")), _num(d.get("threshold")), escape(str(d.get("message", ""))),
            ]
        )  # fmt: skip
    header = ["test time", "event", "level", "limit", "device", "channel", "value", "threshold", "message"]
    return _table(header, rows, {0, 6, 7})


def _runner_events(data: RunData) -> str:
    if not data.runner_events:
        return ""
    rows = []
    for ev in data.runner_events:
        summary = ", ".join(f"{k}={v}" for k, v in ev.data.items() if not isinstance(v, dict | list))
        rows.append([_clock(data.time_s(ev.t_ns)), escape(ev.kind), escape(summary[:300])])
    table = _table(["test time", "event", "details"], rows, {0})
    return f"<details><summary>Runner events ({len(rows)})</summary>{table}</details>"


def _steps(data: RunData) -> str:
    rows = [
        [str(s.cycle), str(s.step), escape(s.name), _clock(s.start_s), _num(s.end_s - s.start_s, ".1f")]
        for s in data.steps
    ]
    table = _table(["cycle", "step", "name", "from", "lasted / s"], rows, {0, 1, 3, 4})
    return f"<details><summary>Steps ({len(rows)})</summary>{table}</details>"


def render(data: RunData, figures: list[ReportFigure], *, limits_name: str | None = None) -> str:
    run = data.run
    banners = "".join(f'<div class="banner">{escape(n)}</div>' for n in data.notes)
    if run.status not in ("completed", "running"):
        banners = f'<div class="banner">Run status: <b>{escape(run.status)}</b> {escape(run.reason)}</div>' + banners
    figure_html = "".join(
        f'<figure id="fig-{escape(f.key)}"><h3>{escape(f.title)}</h3>'
        f'<img alt="{escape(f.title)}" src="data:image/png;base64,{png_base64(f)}">'
        f"<figcaption>{escape(f.caption)}</figcaption></figure>"
        for f in figures
    )
    generated = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    started = _utc(run_times(run.started_ns, run.ended_ns, run.metadata).wall_started_ns)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Test report {escape(run.run_id)}</title><style>{_CSS}</style><script>{_SCRIPT}</script></head>
<body><main>
<h1>Test report: {escape(run.run_id)}</h1>
<p class="sub">Bench {escape(run.bench_id)} · {started} · {escape(run.status)}</p>
{_verdict(data)}{banners}
<h2>Run</h2>{_metadata(data, limits_name)}
<h2>Summary</h2>{_cards(data)}
<h2>Plots</h2>{figure_html}
<h2>Per cycle</h2>{_cycle_table(data)}
<h2>Limit excursions</h2>{_excursions(data)}
<h2>Alarms during the run</h2>{_alarms(data)}
<h2>Steps and events</h2>{_steps(data)}{_runner_events(data)}
<footer>Generated {generated} by daq {escape(__version__)} from {escape(str(data.journal))}.
Current is positive when charging the battery. Test time counts from the start of the run.</footer>
</main></body></html>
"""
