"""Load profile files (YAML + CSV time series) and check them against a bench before a test.

``load_profile`` checks form: YAML syntax, known fields and kinds, phrases, CSV files. It does not
judge whether the profile can run; ``validate_profile`` does that against the bench (cycler and
limit-set currents, the cell voltage window) and also reports steps that can never end, loops
without an end and empty step lists. Every problem is one line:
``<file>: step <n> (<label or phrase>): <what is wrong>; <how to fix>``.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from daq.config.errors import unknown_key_message
from daq.config.yamlfile import read_config_text, read_yaml_mapping
from daq.errors import ConfigError
from daq.profiles.model import (
    STEP_KINDS,
    STEP_MODELS,
    CccvStep,
    CurrentProfileStep,
    CvStep,
    LeafStep,
    LoopStep,
    PowerProfileStep,
    Profile,
    PulseStep,
    Step,
    TimeSeries,
    describe_step,
)
from daq.profiles.phrases import PHRASE_EXAMPLES, PhraseError, parse_phrase
from daq.profiles.plan import ResolvedStep, Scale, resolve_step
from daq.resources import locate

MAX_CSV_PROBLEMS = 20
_SERIES_QUANTITIES = {
    "current_profile": ("current_a", "c_rate"),
    "power_profile": ("power_w", "power_pct"),
}


def load_profile(path: str | Path) -> Profile:
    """Read a profile file (or ``builtin:NAME``); raise ConfigError listing every problem of form found."""
    path = locate(path, "profile")
    data = read_yaml_mapping(path, "profile file", mapping_hint="start the file with 'name: ...' and 'steps:'")
    return profile_from_dict(data, source=path)


def profile_from_dict(data: Any, *, source: Path | None = None) -> Profile:
    """Build a profile from parsed YAML; CSV paths are relative to ``source``'s folder (else the cwd)."""
    where = str(source) if source is not None else "<profile>"
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: a profile must be a mapping with name and steps, not {type(data).__name__}; "
            "start the file with 'name: ...' and 'steps:'"
        )
    base_dir = source.parent if source is not None else Path.cwd()
    problems: list[str] = []
    fields = {key: value for key, value in data.items() if key != "steps"}
    steps = _build_steps(data.get("steps", []), _Context(where, base_dir), "", problems)
    try:
        profile = Profile.model_validate({**fields, "steps": steps})
    except ValidationError as exc:
        problems.extend(f"{where}: {line}" for line in _pydantic_lines(exc, Profile))
        profile = None
    if problems or profile is None:
        raise ConfigError(problems)
    return profile.with_source(source)


@dataclass(frozen=True, slots=True)
class _Context:
    where: str
    base_dir: Path


def _build_steps(raw: Any, ctx: _Context, prefix: str, problems: list[str]) -> list[Step]:
    if not isinstance(raw, list):
        owner = f"step {prefix[:-1]} steps" if prefix else "steps"
        problems.append(
            f"{ctx.where}: {owner} must be a list, not {type(raw).__name__}; write one step per line starting with '- '"
        )
        return []
    steps: list[Step] = []
    for i, item in enumerate(raw, start=1):
        number = f"{prefix}{i}"
        if isinstance(item, str):
            try:
                steps.append(parse_phrase(item))
            except PhraseError as exc:
                problems.append(f"{ctx.where}: step {number} ({item.strip()}): {exc}")
        elif isinstance(item, dict):
            step = _build_mapping_step(item, number, ctx, problems)
            if step is not None:
                steps.append(step)
        else:
            problems.append(
                f"{ctx.where}: step {number}: {item!r} is neither a phrase nor a mapping; "
                f"write a phrase like {PHRASE_EXAMPLES} or a mapping with kind:"
            )
    return steps


def _build_mapping_step(item: dict[str, Any], number: str, ctx: _Context, problems: list[str]) -> Step | None:
    kind = item.get("kind")
    head = f"{ctx.where}: step {number} ({item.get('label') or kind or 'no kind'})"
    if not isinstance(kind, str) or kind not in STEP_MODELS:
        what = "no kind" if kind is None else f"unknown kind {kind!r}"
        problems.append(
            f"{head}: {what}; use kind: one of {', '.join(STEP_KINDS)}, or write the step as a phrase "
            "like 'Rest for 30 minutes'"
        )
        return None
    model = STEP_MODELS[kind]
    fields = dict(item)
    if kind == "loop":
        fields["steps"] = _build_steps(fields.get("steps", []), ctx, f"{number}.", problems)
    csv_failed = False
    if kind in _SERIES_QUANTITIES:
        csv_failed = not _attach_series(fields, kind, head, ctx, problems)
    try:
        return model.model_validate(fields)  # type: ignore[return-value]
    except ValidationError as exc:
        lines = _pydantic_lines(exc, model)
        if csv_failed:  # the series placeholder must not add its own complaints
            lines = [line for line in lines if not line.startswith("series")]
        problems.extend(f"{head}: {line}" for line in lines)
        return None


def _attach_series(fields: dict[str, Any], kind: str, head: str, ctx: _Context, problems: list[str]) -> bool:
    """Replace ``file`` by the loaded ``series``; on failure put a placeholder so other fields are checked."""
    file = fields.get("file")
    if file is None:
        if "series" in fields:
            return True
        problems.append(f"{head}: no file; add file: <CSV path relative to the profile>")
    elif "series" in fields:
        problems.append(f"{head}: both file and series are given; keep one")
    elif not isinstance(file, str):
        problems.append(f"{head}: file must be a path, not {file!r}; write file: name.csv")
    else:
        path = Path(file) if Path(file).is_absolute() else ctx.base_dir / file
        try:
            fields["series"] = read_series_csv(path, allowed=_SERIES_QUANTITIES[kind])
            return True
        except ConfigError as exc:
            problems.extend(exc.problems)
    fields["series"] = {"quantity": _SERIES_QUANTITIES[kind][0], "time_s": [0, 1], "values": [0, 0]}
    return False


def read_series_csv(
    path: Path, *, allowed: tuple[str, ...] = ("current_a", "c_rate", "power_w", "power_pct")
) -> TimeSeries:
    """Read a ``time_s,<quantity>`` CSV ('#' lines are comments). Problems name ``<file>:<line>``."""
    text = read_config_text(
        path,
        "time-series file",
        not_found_hint="put the CSV next to the profile or fix the path (it is relative to the profile file)",
    )

    problems: list[str] = []
    quantity: str | None = None
    times: list[float] = []
    values: list[float] = []
    last_time_line = 0
    for line_number, row in _csv_rows(text):
        where = f"{path}:{line_number}"
        if quantity is None:
            header = [cell.strip() for cell in row]
            if len(header) != 2 or header[0] != "time_s" or header[1] not in allowed:
                raise ConfigError(
                    f"{where}: header {','.join(header)!r} is not 'time_s,<quantity>'; "
                    f"write the header as time_s,{' or time_s,'.join(allowed)}"
                )
            quantity = header[1]
            continue
        if len(row) != 2:
            problems.append(f"{where}: {len(row)} columns; write time_s,{quantity} (two numbers)")
            continue
        parsed = [_finite(cell) for cell in row]
        for cell, number, column in zip(row, parsed, ("time_s", quantity), strict=True):
            if number is None:
                problems.append(f"{where}: {cell.strip()!r} in {column} is not a finite number; fix the value")
        if None in parsed:
            continue
        t, value = parsed[0], parsed[1]
        assert t is not None and value is not None
        if times and t <= times[-1]:
            problems.append(
                f"{where}: time_s {t:g} does not come after {times[-1]:g} (line {last_time_line}); "
                "times must strictly increase: sort the rows and remove duplicates"
            )
            continue
        times.append(t)
        values.append(value)
        last_time_line = line_number
    if quantity is None:
        raise ConfigError(f"{path}: no header and no data; write a header time_s,<quantity> and rows")
    if not problems and len(times) < 2:
        problems.append(f"{path}: fewer than two rows; add at least a start and an end row")
    if problems:
        extra = len(problems) - MAX_CSV_PROBLEMS
        shown = problems[:MAX_CSV_PROBLEMS]
        if extra > 0:
            shown.append(f"{path}: ... and {extra} more problems of the same kind; fix the ones above first")
        raise ConfigError(shown)
    return TimeSeries(quantity=quantity, time_s=tuple(times), values=tuple(values))  # type: ignore[arg-type]


def _csv_rows(text: str) -> list[tuple[int, list[str]]]:
    """Non-blank, non-comment CSV rows with their 1-based line numbers."""
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        rows.append((line_number, next(csv.reader([line]))))
    return rows


def _finite(cell: str) -> float | None:
    try:
        number = float(cell)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


# --- pydantic errors as one line each ---------------------------------------------------------

_TYPE_WORDS = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "string_type": "text",
    "dict_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
}
_UNION_MEMBER = re.compile(r"^(?:str|int|float|bool|none|list|tuple|dict)$|[^A-Za-z0-9_]")


def _pydantic_lines(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for error in exc.errors(include_url=False):
        # drop union member tags such as 'constrained-int' or "literal['forever']" from the location
        path = tuple(p for p in error["loc"] if isinstance(p, int) or not _UNION_MEMBER.search(p))
        grouped.setdefault(path, []).append(dict(error))
    return [_one_line(path, errors, model) for path, errors in grouped.items()]


def _one_line(path: tuple[Any, ...], errors: list[dict[str, Any]], model: type[BaseModel]) -> str:
    field = ".".join(str(p) for p in path)
    first = errors[0]
    if first["type"] == "extra_forbidden":
        return f"{field}: {unknown_key_message(model, path)}"
    if first["type"] == "missing":
        return f"{field!r} is missing; add it"
    if first["type"] == "value_error":
        text = str(first["msg"]).removeprefix("Value error, ")
        text = text if "; " in text else f"{text}; correct it"
        return f"{field}: {text}" if field else text
    expected = []
    for error in errors:
        words = _TYPE_WORDS.get(error["type"]) or str(error["msg"]).removeprefix("Input should be ")
        if words not in expected:
            expected.append(words)
    return f"{field or 'value'} = {first['input']!r} is not valid; it should be {' or '.join(expected)}"


# --- validation against a bench ----------------------------------------------------------------


def validate_profile(
    profile: Profile,
    *,
    series_cells: int,
    max_charge_current_a: float,
    max_discharge_current_a: float,
    cell_voltage_min_v: float,
    cell_voltage_max_v: float,
    capacity_ah: float,
) -> list[str]:
    """Everything that stops this profile running on this bench, one line per problem.

    Currents are magnitudes: pass the tighter of the cycler's and the limit set's maxima. C-rates
    use the profile's ``capacity_ah`` if set, else ``capacity_ah`` (the bench pack's)."""
    bench = _Bench(
        where=profile.source_name,
        scale=Scale.for_profile(profile, series_cells=series_cells, capacity_ah=capacity_ah),
        max_charge_a=abs(max_charge_current_a),
        max_discharge_a=abs(max_discharge_current_a),
        cell_min_v=cell_voltage_min_v,
        cell_max_v=cell_voltage_max_v,
    )
    problems: list[str] = []
    if not profile.steps:
        problems.append(f"{bench.where}: steps is empty; add at least one step, e.g. {PHRASE_EXAMPLES}")
    _check_steps(profile.steps, "", profile.record_period_s, bench, problems)
    return problems


def require_valid_profile(profile: Profile, **bench: Any) -> None:
    """``validate_profile`` that raises ConfigError with all problems (same keyword arguments)."""
    problems = validate_profile(profile, **bench)
    if problems:
        raise ConfigError(problems)


@dataclass(frozen=True, slots=True)
class _Bench:
    where: str
    scale: Scale
    max_charge_a: float
    max_discharge_a: float
    cell_min_v: float
    cell_max_v: float

    @property
    def pack_max_v(self) -> float:
        return self.cell_max_v * self.scale.series_cells


def _check_steps(steps: tuple[Step, ...], prefix: str, record_period_s: float, bench: _Bench, out: list[str]) -> None:
    for i, step in enumerate(steps, start=1):
        number = f"{prefix}{i}"
        head = f"{bench.where}: step {number} ({describe_step(step)})"
        if isinstance(step, LoopStep):
            _check_loop(step, head, bench, out)
            _check_steps(step.steps, f"{number}.", step.record_period_s or record_period_s, bench, out)
            continue
        _check_ends(step, head, out)
        _check_voltages(step, head, bench, out)
        try:
            resolved = resolve_step(step, bench.scale, record_period_s=record_period_s)
        except ConfigError as exc:
            out.append(f"{head}: {exc}")
            continue
        _check_currents(step, resolved, head, bench, out)


def _check_loop(loop: LoopStep, head: str, bench: _Bench, out: list[str]) -> None:
    if not loop.steps:
        out.append(f"{head}: the loop has no steps; add steps under it or remove the loop")
    if loop.repeat is None and loop.until is None:
        out.append(
            f"{head}: the loop has neither repeat nor until, so nothing says when it stops; "
            "add repeat: N and/or until: {discharge_capacity_below_pct: 80}"
        )
    if loop.until is not None and loop.steps and not _has_discharge(loop.steps):
        out.append(
            f"{head}: the loop ends on discharge capacity but has no discharge step inside, so the "
            "condition is never met; add a discharge step to the loop or use repeat: N"
        )
    if (
        loop.until is not None
        and loop.until.discharge_capacity_below_pct is not None
        and bench.scale.capacity_ah is None
    ):
        out.append(f"{head}: discharge_capacity_below_pct needs a capacity; set capacity_ah in the profile")


def _has_discharge(steps: tuple[Step, ...]) -> bool:
    for step in steps:
        if isinstance(step, LoopStep):
            if _has_discharge(step.steps):
                return True
        elif getattr(step, "direction", None) == "discharge" or isinstance(step, CurrentProfileStep | PowerProfileStep):
            return True
    return False


def _check_ends(step: LeafStep, head: str, out: list[str]) -> None:
    until = step.until
    has_time = step.time_limit_s is not None
    if isinstance(step, CvStep | CccvStep):
        if not (until.has_current_end or has_time):
            out.append(
                f"{head}: the constant-voltage phase ends only on current or time and has neither; "
                "add until: [current_below_c_rate: 0.05] (C/20) or duration_s"
            )
    elif isinstance(step, CurrentProfileStep | PowerProfileStep):
        if step.repeat == "forever" and until.is_empty and not has_time:
            out.append(
                f"{head}: repeat: forever with no end condition never ends; "
                "add until: [voltage_below_v: ...] or duration_s, or give repeat: N"
            )
    elif not isinstance(step, PulseStep) and until.is_empty and not has_time:
        hint = {"charge": "voltage_above_v: 4.2", "discharge": "voltage_below_v: 3.0"}.get(
            getattr(step, "direction", ""), "time_s: 1800"
        )
        out.append(
            f"{head}: no end condition and no duration, so the step never ends; add duration_s or until: [{hint}]"
        )
    direction = getattr(step, "direction", None)
    if direction == "charge" and until.voltage_below_v is not None and until.voltage_above_v is None:
        out.append(
            f"{head}: a charge step ends on voltage_below_v, but charging raises the voltage; use voltage_above_v"
        )
    if direction == "discharge" and until.voltage_above_v is not None and until.voltage_below_v is None:
        out.append(
            f"{head}: a discharge step ends on voltage_above_v, but discharging lowers the voltage; use voltage_below_v"
        )


def _check_voltages(step: LeafStep, head: str, bench: _Bench, out: list[str]) -> None:
    scale = bench.scale
    per_cell = 1.0 if scale.voltage_basis == "cell" else 1.0 / scale.series_cells
    basis = "per cell" if scale.voltage_basis == "cell" else "at the pack"
    named = [
        ("until voltage_above_v", step.until.voltage_above_v),
        ("until voltage_below_v", step.until.voltage_below_v),
    ]
    if isinstance(step, CvStep | CccvStep):
        named.append(("voltage_v", step.voltage_v))
    for name, value in named:
        if value is None:
            continue
        cell_v = value * per_cell
        window = f"{bench.cell_min_v:g}-{bench.cell_max_v:g} V per cell"
        if scale.voltage_basis == "pack":
            window += (
                f" ({bench.cell_min_v * scale.series_cells:g}-{bench.cell_max_v * scale.series_cells:g} V "
                f"for {scale.series_cells} cells)"
            )
        if cell_v > bench.cell_max_v + 1e-9 or cell_v < bench.cell_min_v - 1e-9:
            out.append(
                f"{head}: {name} {value:g} V {basis} is outside the cell window {window}, so the limits "
                f"would trip before the step ends; use a voltage inside the window"
            )


def _check_currents(step: LeafStep, resolved: ResolvedStep, head: str, bench: _Bench, out: list[str]) -> None:
    charge_a, discharge_a = _peak_currents(step, resolved, bench)
    capacity = bench.scale.capacity_ah
    for amps, limit, verb in (
        (charge_a, bench.max_charge_a, "charges"),
        (discharge_a, bench.max_discharge_a, "discharges"),
    ):
        if amps > limit + 1e-9:
            rate = f" ({amps / capacity:.3g}C of {capacity:g} Ah)" if capacity else ""
            top = f" ({limit / capacity:.3g}C)" if capacity else ""
            out.append(
                f"{head}: {verb} at {amps:.4g} A{rate} but the cycler and limit set allow {limit:g} A; "
                f"lower the current to at most {limit:g} A{top}"
            )


def _peak_currents(step: LeafStep, resolved: ResolvedStep, bench: _Bench) -> tuple[float, float]:
    """Largest charge and discharge current magnitudes the step can ask for (power at the top voltage)."""
    samples: list[float] = []
    if resolved.waveform is not None:
        samples = [resolved.waveform.max_value, resolved.waveform.min_value]
        if resolved.waveform.quantity == "power_w":
            samples = [w / bench.pack_max_v for w in samples]
    elif resolved.current_a is not None:
        samples = [resolved.current_a]
    elif resolved.power_w is not None:
        samples = [resolved.power_w / bench.pack_max_v]  # the least current this power can take
    elif isinstance(step, CvStep) and resolved.current_limit_a is not None:
        samples = [resolved.current_limit_a, -resolved.current_limit_a]
    charge = max((s for s in samples if s > 0), default=0.0)
    discharge = max((-s for s in samples if s < 0), default=0.0)
    return charge, discharge


__all__ = [
    "load_profile",
    "profile_from_dict",
    "read_series_csv",
    "require_valid_profile",
    "validate_profile",
]
