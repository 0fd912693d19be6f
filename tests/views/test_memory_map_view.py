"""The memory map's Bokeh sources hold the lab.memmap aggregation, keep their length and
follow the copy; a tap shows a bin's frame in the page walk."""
from __future__ import annotations

import numpy as np

import widgets
from lab import memmap
from lab.kernel.layout import PAGE_OFFSET

from widgetkit import error_text


def sources_match(lab: widgets.ResumeLab) -> None:
    r, view = lab.resume, lab.memmap
    mm = memmap.build(r, bins=view.bins)
    d = view.cells.data
    assert len(d["pending"]) == mm.nbins
    assert {len(v) for v in d.values()} == {mm.nbins}
    pending, restored = mm.split(r.runtime.copied)
    assert list(d["pending"]) == pending.tolist()
    assert list(d["restored"]) == restored.tolist()
    assert int(np.sum(d["pending"])) + int(np.sum(d["restored"])) == len(r.loaded.pblist)
    assert int(np.sum(d["restored"])) == r.runtime.copied
    assert view.map.counts.sum() == r.machine.memory.nr_frames
    assert view.map.counts.tolist() == mm.counts.tolist()
    labels = [memmap.DISPLAY[i] for i in mm.display(pending, restored)]
    assert list(d["label"]) == labels
    p = view.progress.data
    assert len(p["left"]) == int((mm.pblist_total > 0).sum())
    assert {len(v) for v in p.values()} == {len(p["left"])}


def test_sources_equal_the_aggregation_after_each_step(report_lab: widgets.ResumeLab) -> None:
    s, r = report_lab.stepper, report_lab.resume
    report_lab.tabs.selected_index = 1  # the memory map is drawn while its tab is shown
    sources_match(report_lab)
    s.target.value = "phase change"
    while r.phase != "copy":
        s.next_button.click()
    restored = []
    for _ in range(12):
        s.step_button.click()
        sources_match(report_lab)
        restored.append(int(np.sum(report_lab.memmap.cells.data["restored"])))
    assert restored[-1] > restored[0] and restored[-1] > 0, "the copy's progress did not move"


def test_lengths_do_not_grow_with_clicks(workshop_lab: widgets.ResumeLab) -> None:
    view = workshop_lab.memmap
    workshop_lab.tabs.selected_index = 1
    n = len(view.cells.data["left"])
    for _ in range(50):
        workshop_lab.stepper.step_button.click()
        assert len(view.cells.data["left"]) == n
        assert {len(v) for v in view.cells.data.values()} == {n}


def test_tap_shows_the_bins_frame_in_the_walk(report_lab: widgets.ResumeLab) -> None:
    view, r = report_lab.memmap, report_lab.resume
    ti = (r.mwait_ptr(1) - PAGE_OFFSET) >> 12
    b = view.map.bin_of(ti)
    view.cells.selected.indices = [b]  # what a tap in the browser sets
    pfn = int(view.map.interesting[b])
    assert view.selected_pfn == pfn
    assert report_lab.walk.va == PAGE_OFFSET + pfn * 4096
    assert f"{pfn:#x}" in view.info.value
    assert report_lab.walk.rows and report_lab.walk.check(r) == []


def test_a_bin_that_does_not_exist(report_lab: widgets.ResumeLab) -> None:
    view = report_lab.memmap
    va = report_lab.walk.va
    view.select_bin(view.map.nbins)
    assert "no bin" in error_text(view.message)
    assert report_lab.walk.va == va and view.selected_pfn is None


def test_default_preset_map() -> None:
    from lab.scenario import Resume

    r = Resume(preset="default", fix="mwait")
    view = widgets.MemoryMapView(r)
    assert len(view.cells.data["left"]) == view.map.nbins <= 1024
    assert view.map.counts.sum() == r.machine.memory.nr_frames > 2_000_000
    assert int(np.sum(view.cells.data["pending"])) == len(r.loaded.pblist)


def test_hidden_map_waits_and_catches_up(report_lab: widgets.ResumeLab) -> None:
    s, r = report_lab.stepper, report_lab.resume
    assert report_lab.tabs.selected_index == 0 and not report_lab.memmap.live
    s.step_to("phase change")
    while r.phase != "copy":
        s.step_to("phase change")
    for _ in range(5):
        s.step_button.click()
    assert int(np.sum(report_lab.memmap.cells.data["restored"])) < r.runtime.copied, "not drawn while hidden"
    report_lab.tabs.selected_index = 1
    sources_match(report_lab)
