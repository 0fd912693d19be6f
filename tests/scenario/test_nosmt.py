"""CPUs that were already offline before the resume (nosmt SMT siblings): the 2019 triple
fault that ec527c318036 fixed by bringing them online before taking every CPU down with hlt."""
from __future__ import annotations

import pytest

from lab.scenario import Resume


@pytest.fixture(scope="module")
def runs():
    out = {}
    for fix in ("hlt", "hlt-smt"):
        r = Resume(preset="report-2016", fix=fix, nosmt=True)
        r.run()
        out[fix] = r
    return out


def test_siblings_are_offline_in_mwait_before_the_resume():
    r = Resume(preset="report-2016", fix="hlt", nosmt=True)
    assert r.restore_kernel.online == {0, 2}  # 4 CPUs as 2 cores x 2 threads: 1 and 3 are siblings
    r.run(until="copy")
    assert r.cpu(1).state == "mwait" and r.cpu(3).state == "mwait"
    assert r.cpu(2).state == "hlt"  # taken down for the resume: the 2016 fix applies to it
    assert r.cpu(1).armed_line == (r.mwait_ptr(1) - 0xFFFF880000000000) & ~63


def test_hlt_alone_still_faults_on_an_offline_sibling(runs):
    r = runs["hlt"]
    assert r.outcome == "panic"
    first = r.faults()[0]
    assert (first["cpu"], first["vector"], first["address"]) == (1, "#PF", "0xffff8800ba800010")


def test_hlt_smt_onlines_the_siblings_first_and_resumes(runs):
    r = runs["hlt-smt"]
    assert r.outcome == "resumed"
    assert not [e for e in r.events if e.kind == "wake" and "monitored line" in e.data["reason"]]
    parked = {e.cpu: e.data["program"] for e in r.events if e.kind == "play_dead" and "why" not in e.data}
    assert parked == {1: "hlt_play_dead", 2: "hlt_play_dead", 3: "hlt_play_dead"}
    onlined_in_restore = [e.cpu for e in r.events if e.kind == "cpu_online" and e.data["kernel"] == "restore"]
    assert onlined_in_restore == [1, 3]


def test_without_nosmt_hlt_smt_behaves_as_hlt():
    a = Resume(preset="workshop", fix="hlt", seed=2)
    b = Resume(preset="workshop", fix="hlt-smt", seed=2)
    a.run()
    b.run()
    assert a.outcome == b.outcome == "resumed"
    assert [(e.t, e.kind, e.cpu) for e in a.events] == [(e.t, e.kind, e.cpu) for e in b.events]
