"""The timeline's lanes come from the run's state events and agree with the CPUs; markers and
the copy's progress match the events; repeated updates add no rows."""
from __future__ import annotations

import widgets
from widgets._common import state_label
from widgets.timeline import MIN_WHOLE_RUN_MS, SUBPIXEL


def lanes_consistent(lab: widgets.ResumeLab) -> None:
    r, tl = lab.resume, lab.timeline
    d = tl.rows()
    assert len({len(v) for v in d.values()}) == 1
    for c in range(r.config.cpus):
        mine = [(s, e, lab_) for s, e, lab_, cpu in zip(d["start"], d["end"], d["label"], d["cpu"]) if cpu == c]
        assert mine, f"no lane for cpu{c}"
        for (s0, e0, _), (s1, _, _) in zip(mine, mine[1:]):
            assert abs(e0 - s1) < 1e-9 and s0 <= e0, f"cpu{c}: gap or overlap"
        lo, hi = tl.window()  # a lane ends at now, or less than a pixel before it
        assert 0 <= r.now / 1e6 - mine[-1][1] <= (hi - lo) / SUBPIXEL + 1e-6
        v = r.cpu(c)
        assert mine[-1][2] in (state_label(v.state, v.cstate), "waking")
    assert tl.check(r) == []


def test_lanes_follow_the_run(report_lab: widgets.ResumeLab) -> None:
    s, r = report_lab.stepper, report_lab.resume
    s.target.value = "phase change"
    while r.phase != "copy":
        s.next_button.click()
        lanes_consistent(report_lab)
    labels = set(report_lab.timeline.rows()["label"])
    assert "mwait C6" in labels and "running" in labels
    s.target.value = "wake-up"
    s.next_button.click()
    lanes_consistent(report_lab)
    wakes = [e for e in r.events if e.kind == "wake"]
    assert len(report_lab.timeline.wakes.data["x"]) == len(wakes) >= 1
    assert "waking" in report_lab.timeline.rows()["label"]


def test_faults_and_progress_after_the_fault(faulted_lab: widgets.ResumeLab) -> None:
    r, tl = faulted_lab.resume, faulted_lab.timeline
    faulted_lab.tabs.selected_index = 4  # the copy's progress is drawn while its tab is shown
    lanes_consistent(faulted_lab)
    faults = [e for e in r.events if e.kind == "fault"]
    assert len(tl.faults.data["x"]) == len(faults) >= 1
    assert tl.faults.data["y"][0] == faults[0].cpu
    assert "ffff8800ba800010" in tl.faults.data["text"][0]
    copied = list(tl.progress.data["copied"])
    assert copied == sorted(copied) and int(copied[-1]) == r.runtime.copied
    assert tl.total_line.location == len(r.loaded.pblist)
    phases = list(tl.phases.data["name"])
    assert phases[-1] == r.phase and "copy" in phases


def test_no_rows_added_without_progress(faulted_lab: widgets.ResumeLab) -> None:
    tl = faulted_lab.timeline
    before = tl.rows()
    sizes = [len(src.data[next(iter(src.data))]) for src in (tl.wakes, tl.faults, tl.phases, tl.progress)]
    for _ in range(5):
        tl.update(faulted_lab.resume)
    assert tl.rows() == before
    assert [len(src.data[next(iter(src.data))]) for src in (tl.wakes, tl.faults, tl.phases, tl.progress)] == sizes


def test_a_step_that_moves_nothing_by_a_pixel_sends_nothing(report_lab: widgets.ResumeLab) -> None:
    """Steps of a nanosecond in a window of a fifth of a millisecond: no patch until the lanes
    would grow by a pixel; a state change is always drawn."""
    s, r, tl = report_lab.stepper, report_lab.resume, report_lab.timeline
    while r.now < 200_000:
        s.step_button.click()
    sent, now, segs = tl.bokeh.patches_sent, r.now, sum(len(x) for x in tl.segments.values())
    lo, hi = tl.window()
    quiet = 0
    for _ in range(8):
        s.step_button.click()
        grew = sum(len(x) for x in tl.segments.values()) != segs or tl.window() != (lo, hi)
        if not grew and (r.now - now) / 1e6 < (hi - lo) / SUBPIXEL / 2:
            quiet += 1
            assert tl.bokeh.patches_sent == sent, "a sub-pixel step repainted the timeline"
        sent, segs, lo, hi = tl.bokeh.patches_sent, sum(len(x) for x in tl.segments.values()), *tl.window()
    assert quiet >= 3, "the run did not give sub-pixel steps to check"
    s.target.value = "phase change"
    before = tl.bokeh.patches_sent
    s.next_button.click()
    assert tl.bokeh.patches_sent > before
    lanes_consistent(report_lab)


def test_the_first_nanoseconds_do_not_rescale_the_axis(report_lab: widgets.ResumeLab) -> None:
    """The run's first steps take a nanosecond each: the whole run is drawn MIN_WHOLE_RUN_MS
    wide until it is longer, so those steps keep the axis (and its ticks) where it is: each of
    them rescaled it, a redraw of every lane, before."""
    s, tl = report_lab.stepper, report_lab.timeline
    s.reset_button.click()
    r = report_lab.resume  # Reset built the run again
    assert r.steps == 0
    seen = []  # (now, the axis's end) after each step of the run's first microsecond
    while r.now * 1.02 / 1e6 < MIN_WHOLE_RUN_MS:
        s.step_button.click()
        seen.append((r.now, tl.lanes_figure.x_range.end))
        lanes_consistent(report_lab)
    first = [end for now, end in seen if now * 1.02 / 1e6 < MIN_WHOLE_RUN_MS]
    assert len(first) >= 4 and r.now > 0, "the run has no nanosecond steps at its start"
    assert set(first) == {MIN_WHOLE_RUN_MS} and tl.lanes_figure.x_range.start == 0
    # past it, the window is the run's again: it ends at now (rounded up), not before
    assert r.now / 1e6 <= tl.lanes_figure.x_range.end <= 1.1 * r.now / 1e6 + 1e-9


def test_a_step_that_only_extends_the_current_segments_touches_only_the_overlay(report_lab: widgets.ResumeLab) -> None:
    """Each CPU's current segment is drawn on Bokeh's overlay layer (widgets.timeline.Layer),
    with one right edge for all of them (``open_right``, now): a step that changes no state, no
    marker and not the window changes that number on the shown quads and no data at all, so
    that BokehJS repaints that layer, not the ended segments under it."""
    s, tl = report_lab.stepper, report_lab.timeline
    sources = [tl.lanes, tl.lane_text, *tl.layers["ended"].hatches.values(), tl.phases, tl.wakes, tl.faults,
               tl.overwrites, tl.open_lanes, tl.open_text, *tl.layers["open"].hatches.values()]
    over = (tl.phases, tl.wakes, tl.faults, tl.overwrites, tl.open_lanes, tl.open_text,
            *tl.layers["open"].hatches.values())
    assert {r.level for r in tl.lanes_figure.renderers if r.data_source in over} == {"overlay"}
    assert {r.level for r in tl.lanes_figure.renderers if r.data_source not in over} == {"glyph"}
    assert "right" not in tl.open_lanes.data and "right" in tl.lanes.data
    checked = 0
    while checked < 5 and not report_lab.resume.finished:
        shape = (sum(len(x) for x in tl.segments.values()), tl.window(), len(tl._phases), len(tl._wakes),
                 len(tl._faults), len(tl._overwrites))
        data, right, sent = [src.data for src in sources], tl.open_right, tl.bokeh.patches_sent
        s.step_button.click()
        after = (sum(len(x) for x in tl.segments.values()), tl.window(), len(tl._phases), len(tl._wakes),
                 len(tl._faults), len(tl._overwrites))
        shown = [r for r in tl.layers["open"].quads if r.visible]
        assert shown and all(r.glyph.right == tl.open_right for r in shown)
        changed = [src.name for src, d in zip(sources, data) if src.data is not d]
        if after == shape and tl.open_right != right and not changed:
            assert tl.bokeh.patches_sent == sent + 1, "the new right edge was not sent"
            checked += 1
    assert checked == 5, "the run gave no steps that only extend the current segments"
    lanes_consistent(report_lab)
