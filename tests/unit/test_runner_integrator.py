"""Ah/Wh integration: trapezoid with the sign split, and command switches between samples."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daq.runner.integrator import NS, SampleIntegrator, Totals


def test_constant_discharge_counts_as_discharge_only() -> None:
    t = Totals()
    t.add_trapezoid(-27.0, 50.0, -27.0, 48.0, 3600.0)
    assert t.discharge_ah == pytest.approx(27.0)
    assert t.discharge_wh == pytest.approx(27.0 * 49.0)
    assert t.charge_ah == 0 and t.charge_wh == 0
    assert t.net_ah == pytest.approx(-27.0)


def test_a_ramp_through_zero_is_split_at_the_crossing() -> None:
    # +10 A to -30 A over 40 s crosses zero at 10 s: a 10 s charge triangle, a 30 s discharge one
    t = Totals()
    t.add_trapezoid(10.0, 50.0, -30.0, 50.0, 40.0)
    assert t.charge_ah == pytest.approx(10.0 * 10.0 / 2 / 3600)
    assert t.discharge_ah == pytest.approx(30.0 * 30.0 / 2 / 3600)
    assert t.charge_wh == pytest.approx(500.0 * 10.0 / 2 / 3600)
    assert t.discharge_wh == pytest.approx(1500.0 * 30.0 / 2 / 3600)


def s(t_s: float) -> int:
    return int(t_s * NS)


def test_samples_integrate_by_trapezoid_into_the_current_target() -> None:
    step = Totals()
    integ = SampleIntegrator(step)
    integ.sample(s(0), 10.0, 50.0)
    integ.sample(s(10), 20.0, 50.0)
    assert step.charge_ah == pytest.approx(15.0 * 10 / 3600)


def test_a_step_switch_between_samples_books_held_values_on_each_side() -> None:
    # 27 A discharge sampled at 0 and 20 s; the step ends at 25 s (rest, 0 A), next sample at 40 s.
    discharge, rest = Totals(), Totals()
    integ = SampleIntegrator(discharge)
    integ.sample(s(0), -27.0, 45.0)
    integ.sample(s(20), -27.0, 44.0)
    integ.switch(s(25), rest, commanded_a=0.0)
    assert discharge.discharge_ah == pytest.approx(27.0 * 25 / 3600)  # final at the switch
    integ.sample(s(40), 0.0, 46.0)
    assert discharge.discharge_ah == pytest.approx(27.0 * 25 / 3600)
    assert rest.charge_ah == 0 and rest.discharge_ah == 0  # a plain trapezoid would book 27 A x 10 s here


def test_pulse_edges_between_polls_use_the_commanded_current() -> None:
    # polls every 60 s; a 10 s 27 A discharge pulse from 20 s to 30 s happens between two of them
    step = Totals()
    integ = SampleIntegrator(step)
    integ.sample(s(0), 0.0, 50.0)
    integ.switch(s(20), step, commanded_a=-27.0)
    integ.switch(s(30), step, commanded_a=0.0)
    integ.sample(s(60), 0.0, 50.0)
    assert step.discharge_ah == pytest.approx(27.0 * 10 / 3600)
    assert step.charge_ah == 0


def test_a_switch_to_a_mode_without_a_fixed_current_holds_the_next_sample_back() -> None:
    cc, cv = Totals(), Totals()
    integ = SampleIntegrator(cc)
    integ.sample(s(0), 27.0, 57.0)
    integ.switch(s(5), cv, commanded_a=None)  # CV: the pack decides the current
    integ.sample(s(15), 20.0, 58.8)
    assert cc.charge_ah == pytest.approx(27.0 * 5 / 3600)
    assert cv.charge_ah == pytest.approx(20.0 * 10 / 3600)


def test_older_samples_than_the_last_are_ignored() -> None:
    step = Totals()
    integ = SampleIntegrator(step)
    integ.sample(s(10), 10.0, 50.0)
    integ.sample(s(5), 99.0, 50.0)
    integ.sample(s(20), 10.0, 50.0)
    assert step.charge_ah == pytest.approx(10.0 * 10 / 3600)


@settings(max_examples=200, deadline=None)
@given(
    amps=st.floats(-300, 300),
    sample_gaps=st.lists(st.floats(0.01, 100), min_size=1, max_size=30),
    switch_fractions=st.lists(st.floats(0.0, 1.0), max_size=10),
)
def test_a_constant_current_integrates_exactly_whatever_the_sampling_and_switches(
    amps: float, sample_gaps: list[float], switch_fractions: list[float]
) -> None:
    total = Totals()
    integ = SampleIntegrator(total)
    times = [0.0]
    for gap in sample_gaps:
        times.append(times[-1] + gap)
    switches = sorted(f * times[-1] for f in switch_fractions)
    events = sorted([(t, "sample") for t in times] + [(t, "switch") for t in switches if 0 < t < times[-1]])
    for t, kind in events:
        if kind == "sample":
            integ.sample(s(t), amps, 50.0)
        else:
            integ.switch(s(t), total, commanded_a=amps)
    expected = abs(amps) * (s(times[-1]) - s(0)) / NS / 3600
    moved = total.charge_ah if amps >= 0 else total.discharge_ah
    assert moved == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert (total.discharge_ah if amps >= 0 else total.charge_ah) == 0


@pytest.mark.parametrize("stale_amps", [-27.0, 0.0])
def test_a_sample_stamped_before_a_switch_but_arriving_after_it_is_not_counted(stale_amps: float) -> None:
    # a poll starts at 15 s, the step switches at 20 s, the poll's answer (from before or after the
    # command: unknown) arrives after the switch
    rest, discharge = Totals(), Totals()
    integ = SampleIntegrator(rest)
    integ.sample(s(0), 0.0, 50.0)
    integ.switch(s(20), discharge, commanded_a=-27.0)
    integ.sample(s(15), stale_amps, 49.0)
    integ.sample(s(40), -27.0, 48.0)
    assert rest.discharge_ah == 0
    assert discharge.discharge_ah == pytest.approx(27.0 * 20 / 3600)  # 20 s to 40 s, not 15 s to 40 s
