"""The sympy companions agree with the simulation they never look at."""
from __future__ import annotations

import pytest
import sympy as sp

from lab.analysis import address_indices, fault_window, line_capacity, predict
from lab.hw.paging import split
from lab.scenario import Resume


def test_address_indices_of_the_report():
    assert address_indices(0xFFFF8800BA800010) == {"PML4": 272, "PDPT": 2, "PD": 468, "PT": 0, "offset": 16}


@pytest.mark.parametrize("va", [0, 0xFFFF880000000000, 0xFFFFFFFF81001010, 0x00007FFF_FFFF_F008])
def test_address_indices_agree_with_the_walk_split(va):
    got = address_indices(va)
    assert tuple(int(got[k]) for k in ("PML4", "PDPT", "PD", "PT", "offset")) == split(va)


def test_line_capacity_is_64_and_symbolic():
    assert line_capacity() == 64
    page, line = sp.symbols("PAGE_SIZE L1_CACHE_BYTES", positive=True)
    assert line_capacity(page, line) == page / line
    assert line_capacity(4096, 128) == 32


def test_fault_window_bounds():
    lo, hi = fault_window()
    L, c, w, t, b = sp.symbols("L c w t b", positive=True)
    assert sp.simplify(lo - c * (t - w)) == 0
    assert sp.simplify(hi - c * (b - w)) == 0


@pytest.mark.parametrize("preset,seed", [("default", s) for s in range(8)] + [("report-2016", 0), ("workshop", 0),
                                                                             ("workshop", 1)])
def test_prediction_matches_simulation(preset, seed):
    r = Resume(preset=preset, fix="mwait", seed=seed)
    predicted = [p for p in (predict(r, c) for c in range(1, r.config.cpus)) if p.faults]
    r.run()
    failed = r.outcome in ("panic", "triple_fault")
    assert bool(predicted) == failed, [p.explain() for p in predicted] or r.outcome
    if failed:
        assert r.faults()[0]["cpu"] in {p.cpu for p in predicted}
