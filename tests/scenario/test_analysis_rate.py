"""From one seed to a rate: lab.analysis.fault_probability (sympy) against Monte Carlo campaigns.

Parameter range checked: the workshop preset, mwait, seeds 0-15, the C6 exit latency at 20 us,
100 us (the default) and 12 ms (past the window: the image's own tables are back before the
woken CPU walks), page_copy_ns 1000, jitter 0.1."""
from __future__ import annotations

import dataclasses

import pytest
import sympy as sp

from lab.analysis import (L, b, c, exposures, fault_probability, predicted_failure, predicted_rate,
                          run_fault_probability, s, t, w)
from lab.campaign import stats, sweep
from lab.scenario import Config, Resume

SEEDS = range(16)
LATENCIES = (20_000, 100_000, 12_000_000)


def test_fault_probability_is_the_overlap_of_the_jitter_band_and_the_window():
    p = fault_probability()
    at = {w: 0, t: 50, b: 100, c: 1}
    assert p.subs({**at, L: 100, s: sp.Rational(1, 10)}) == sp.Rational(1, 2)  # L' in [90, 110], window (50, 100)
    assert p.subs({**at, L: 75, s: sp.Rational(1, 10)}) == 1  # the whole band inside
    assert p.subs({**at, L: 200, s: sp.Rational(1, 10)}) == 0  # past the window
    assert p.subs({**at, L: 75, s: 0}) == 1 and p.subs({**at, L: 40, s: 0}) == 0
    two, (w2, t2, b2) = run_fault_probability()
    half = {**at, L: 100, s: sp.Rational(1, 10), w2: 0, t2: 50, b2: 100}
    assert two.subs(half) == sp.Rational(3, 4)


def test_predicted_failure_combines_cpus():
    from lab.analysis import Exposure

    e = Exposure(1, 0, 50, 100)
    assert predicted_failure([e], 100, 1, 0.1) == pytest.approx(0.5)
    assert predicted_failure([e, Exposure(2, 0, 50, 100)], 100, 1, 0.1) == pytest.approx(0.75)
    assert predicted_failure([], 100, 1, 0.1) == 0


@pytest.fixture(scope="module")
def layouts():
    return [exposures(Resume(preset="workshop", fix="mwait", seed=seed)) for seed in SEEDS]


@pytest.mark.slow
@pytest.mark.parametrize("latency", LATENCIES)
def test_predicted_rate_inside_the_simulated_interval(layouts, latency):
    base = dataclasses.replace(Config.from_preset("workshop"), c6_exit_ns=latency)
    row = stats(sweep(base, ["mwait"], SEEDS, progress=False)).loc["mwait"]
    predicted = predicted_rate(layouts, latency, base.page_copy_ns, base.jitter)
    assert row["ci_low"] <= predicted <= row["ci_high"], (predicted, row["failure_rate"], row["ci_low"], row["ci_high"])
    if latency == 12_000_000:
        assert predicted == 0 == row["failures"]  # the window has closed before the walk
    else:
        assert predicted > 0 and row["failures"] > 0  # workshop seed 0 is exposed
