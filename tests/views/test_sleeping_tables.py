"""The overwrite under the sleeping CPU (lab.watch and the views that show it), time travel,
breakpoints, readability without colour and argument checks.  Expectations are derived from
the model (which level the overwritten entry is at, when, which values), never hard-coded."""
from __future__ import annotations

import html

import pytest

import widgets
from lab.hw.paging import walk
from lab.scenario import Resume
from widgets import memory_map, timeline
from widgets._common import STATE_STYLES
from widgets.exercise import Exercise
from widgets.history import state_digest
from widgets.matrix import MatrixView

TARGET = "sleeping CPU's table overwritten"


def asleep_or_waking(r: Resume, cpu: int, t: int) -> bool:
    """In MWAIT/HLT, or woken and still leaving its C-state at ``t`` (it has not run again)."""
    if str(r.machine.cpus[cpu].state) in ("mwait", "hlt"):
        return True
    wakes = [e for e in r.events if e.kind == "wake" and e.cpu == cpu and e.t <= t]
    return bool(wakes) and wakes[-1].data["resumes_at"] > t


@pytest.fixture(scope="module")
def stopped() -> widgets.ResumeLab:
    """report-2016 with mwait, stopped at the first table overwritten under a sleeping CPU
    (shared: read it, do not step it)."""
    lab = widgets.ResumeLab(preset="report-2016", fix="mwait", seed=0)
    lab.stepper.target.value = TARGET
    lab.stepper.next_button.click()
    return lab


def test_the_watch_follows_the_sleeping_cpus_walks() -> None:
    r = Resume(preset="report-2016", fix="mwait", seed=0)
    w = r.watch()
    r.run("copy")
    m = r.machine
    assert m.watched_frames == set(w.uses)
    for cpu in range(1, r.config.cpus):
        c = m.cpus[cpu]
        assert str(c.state) in ("mwait", "hlt")
        for why, va in w.targets(cpu):
            for s in walk(m.memory, c.cr3, va, set_accessed=False).steps:
                assert s.table >> 12 in m.watched_frames, (cpu, why, hex(va))
    assert not any(u.cpu == 0 for us in w.uses.values() for u in us), "the boot CPU is not watched"


def test_an_overwrite_is_seen_at_its_time_with_old_and_new_entries() -> None:
    r = Resume(preset="report-2016", fix="mwait", seed=0)
    r.watch()
    r.run("table_overwritten")
    e = r.overwrites()[0]
    d = e.data
    assert asleep_or_waking(r, e.cpu, e.t), "overwritten while its CPU sleeps (or has not run again yet)"
    assert d["by"] == "cpu0" and d["old"] != d["new"]
    before = r.frame_before_copy(d["pfn"])
    assert int(before[d["index"]]) == d["old"]
    copied = next(x for x in r.events if x.kind == "page_copied" and x.data["pfn"] == d["pfn"])
    assert copied.t == e.t, "the event is at the time of the page's copy"
    assert int(r.frame_at(d["pfn"], e.t)[d["index"]]) == d["new"]
    assert int(r.frame_at(d["pfn"], e.t - 1)[d["index"]]) == d["old"]
    while not r.finished and not any(x.kind == "exec" and x.cpu == e.cpu and x.t > e.t for x in r.events[-64:]):
        r.step()
    ran = next(x for x in r.events if x.kind == "exec" and x.cpu == e.cpu and x.t > e.t)
    assert e.t < ran.t, "the overwrite comes ahead of the CPU running again"


def test_watching_is_opt_in_and_changes_nothing_else() -> None:
    plain = Resume(preset="workshop", fix="mwait", seed=0)
    watched = Resume(preset="workshop", fix="mwait", seed=0)
    watched.watch()
    plain.run()
    watched.run()
    # the copy may end a streamed run before a watched frame (more steps), nothing else changes
    assert plain.outcome == watched.outcome and plain.now == watched.now
    assert plain.faults() == watched.faults() and plain.wakeups() == watched.wakeups()
    kinds = ("table_overwritten", "page_copied", "pages_copied", "exec")
    assert [e for e in watched.events if e.kind not in kinds] == [e for e in plain.events if e.kind not in kinds]
    assert plain.overwrites() == [] and not getattr(plain.machine, "watched_frames", set())


def test_step_to_the_overwrite_shows_before_after_and_time(stopped: widgets.ResumeLab) -> None:
    lab, r = stopped, stopped.resume
    found = lab.stepper.last_target_event
    assert found is not None and found.kind == "table_overwritten"
    cpu = found.cpu
    assert asleep_or_waking(r, cpu, r.now), "still asleep"
    assert ("waking" if r.cpu(cpu).state == "running" else "mwait") in lab.cards[cpu].header.value
    assert lab.walk.cpu == cpu and lab.cards.selected == cpu
    rows = [row for row in lab.walk.rows if row.overwritten_at is not None]
    assert rows, lab.walk.table.value
    row = rows[0]
    ev = next(e for e in r.overwrites() if e.cpu == cpu and e.data["pfn"] == row.table >> 12
              and e.data["index"] == row.index)
    assert (row.old, row.entry, row.overwritten_at) == (ev.data["old"], ev.data["new"], ev.t)
    text = html.unescape(lab.walk.table.value)
    assert f"before {ev.data['old']:#x} -> after {ev.data['new']:#x}" in text
    assert f"t={ev.t / 1e6:.6f} ms" in text
    assert "lab-walk-overwritten" in lab.walk.table.value
    # the timeline marks it on the CPU's lane, the memory map marks the frame's bin
    ov = lab.timeline.overwrites.data
    assert (ev.t / 1e6, cpu) in list(zip(ov["x"], ov["y"]))
    lab.tabs.selected_index = 1  # the memory map is drawn while its tab is shown
    b = lab.memmap.map.bin_of(ev.data["pfn"])
    marks = lab.memmap.marks.data
    assert (b % memory_map.COLUMNS + 0.5, -(b // memory_map.COLUMNS) - 0.5) in list(zip(marks["x"], marks["y"]))
    assert lab.check() == []


def test_no_entry_unknown_in_a_resumed_run() -> None:
    lab = widgets.ResumeLab(preset="workshop", fix="hlt", seed=0)
    lab.stepper.fault_button.click()
    r = lab.resume
    assert r.outcome == "resumed"
    for cpu in range(r.config.cpus):
        lab.walk.show(cpu=cpu, va=r.mwait_ptr(cpu))
        text = lab.walk.table.value
        assert "unknown" not in text and "not recorded" not in text and "?" not in text


def test_cards_and_api_agree_on_wakeups() -> None:
    lab = widgets.ResumeLab(preset="workshop", fix="hlt", seed=0)
    lab.stepper.fault_button.click()
    r = lab.resume
    for cpu, n in r.wakeups().items():
        counts = r.wake_counts(cpu)
        assert counts["total"] == n
        assert counts["from_sleep"] == sum(1 for e in r.events if e.kind == "wake" and e.cpu == cpu)
        assert f"wake-ups {n} (sleep {counts['from_sleep']}, SIPI {counts['sipi']})" in lab.cards[cpu].summary.value
    assert lab.check() == []


def test_step_back_returns_to_the_same_state_as_stepping_forward() -> None:
    lab = widgets.ResumeLab(preset="report-2016", fix="mwait", seed=0)
    s = lab.stepper
    s.step_to(TARGET)
    n = lab.resume.steps
    at_n = state_digest(lab.resume)
    for _ in range(3):
        s.step_button.click()
    assert lab.resume.steps == n + 3
    for _ in range(3):
        s.back_button.click()
    assert lab.resume.steps == n
    assert state_digest(lab.resume) == at_n
    assert lab.check() == []
    s.go_to(n - 10)
    s.goto.value = n
    s.goto_button.click()
    assert state_digest(lab.resume) == at_n
    fresh = Resume(preset="report-2016", fix="mwait", seed=0)
    fresh.watch()
    while fresh.steps < n:
        fresh.step()
    assert state_digest(fresh) == at_n


def test_step_back_at_step_zero_says_so(workshop_lab: widgets.ResumeLab) -> None:
    s = workshop_lab.stepper
    s.back_button.click()
    assert workshop_lab.resume.steps == 0 and "no step to undo" in s.message.value


@pytest.mark.parametrize("kind", ["frame written", "address walked", "CPU changes state"])
def test_breakpoints_stop_where_the_model_says(kind: str) -> None:
    probe = Resume(preset="report-2016", fix="mwait", seed=0)
    probe.watch()
    probe.run("table_overwritten")
    ev = probe.overwrites()[0]
    value = {"frame written": hex(ev.data["pfn"]), "address walked": hex(probe.mwait_ptr(1)),
             "CPU changes state": "1"}[kind]
    lab = widgets.ResumeLab(preset="report-2016", fix="mwait", seed=0)
    s = lab.stepper
    s.step_to("phase change")  # past the boot, where CPU 1 changes state first
    bp = s.add_breakpoint(kind, value)
    assert bp is not None and bp.label() in s.break_list.options
    s.speed.value = 200
    s.run_button.value = True
    ticks = 0
    while s.run_button.value and ticks < 500:
        s.play.value += 1
        ticks += 1
    assert "Breakpoint" in s.message.value, s.message.value
    r = lab.resume
    evs = s.changed
    assert r.steps > 0
    if kind == "frame written":
        assert f"frame {ev.data['pfn']:#x} written by" in s.message.value
    elif kind == "address walked":
        assert any(e.kind == "walk" and e.data["va"] >> 12 == probe.mwait_ptr(1) >> 12 for e in evs)
    else:
        assert any(e.kind in ("state", "wake") and e.cpu == 1 for e in evs)
    s.remove_breakpoint(0)
    assert s.breakpoints == [] and s.break_list.options == ()


def test_bad_breakpoints_show_an_error(workshop_lab: widgets.ResumeLab) -> None:
    s = workshop_lab.stepper
    assert s.add_breakpoint("frame written", "0x" + "f" * 12) is None
    assert "no frame" in s.message.value
    assert s.add_breakpoint("address walked", "xyz") is None
    assert s.add_breakpoint("CPU changes state", "99") is None
    assert s.breakpoints == []


@pytest.mark.parametrize("make, match", [
    (lambda: widgets.ResumeLab(preset="workshop", bins=0), "bins"),
    (lambda: widgets.ResumeLab(preset="workshop", bins=10**6), "bins"),
    (lambda: widgets.ResumeLab(preset="workshop", follow_faults="yes"), "follow_faults"),
    (lambda: widgets.MemoryMapView(Resume(preset="workshop"), bins=True), "bins"),
    (lambda: widgets.MemoryMapView(Resume(preset="workshop"), width=10), "width"),
    (lambda: widgets.TimelineView(Resume(preset="workshop"), width=10), "width"),
    (lambda: widgets.TimelineView(Resume(preset="workshop"), zoom="all"), "zoom"),
    (lambda: widgets.WalkView(Resume(preset="workshop"), cpu=99), "cpu"),
    (lambda: widgets.CpuCards("not a resume"), "Resume"),
    (lambda: widgets.Stepper(factory=3), "factory"),
    (lambda: widgets.Stepper(Resume(preset="workshop"), background="yes"), "background"),
    (lambda: widgets.CpuCards(Resume(preset="workshop"), selected=99), "selected"),
    (lambda: widgets.MemoryMapView(Resume(preset="workshop"), on_select=3), "on_select"),
    (lambda: widgets.TimelineView(Resume(preset="workshop"), progress_inline="no"), "progress_inline"),
    (lambda: Exercise("q?", answer=3), "answer"),
    (lambda: Exercise("q?", answer=lambda: 1, seed=-1), "seed"),
    (lambda: MatrixView("not a frame"), "df"),
])
def test_constructors_check_their_arguments(make, match: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        make()


def test_readable_without_colour(stopped: widgets.ResumeLab) -> None:
    styles = {label: (hatch, short) for label, (_, hatch, short) in STATE_STYLES.items() if label != "mwait"}
    assert len({h for h, _ in styles.values()} | {"?"}) >= 5, "states differ by pattern"
    assert len({s for _, s in styles.values()}) == len(styles), "every state has its own text"
    pairs = [(c, h) for c, h in memory_map.DISPLAY_STYLES.values()]
    assert len(set(pairs)) == len(pairs)
    assert len({h for _, h in pairs if h.strip()}) >= 8, "memory-map categories carry patterns"
    lanes = stopped.timeline.rows()
    assert all(STATE_STYLES.get(label, ("", "?"))[1] == h for label, h in zip(lanes["label"], lanes["hatch"]))
    legend = stopped.timeline.legend.value
    assert all(f"</span>{name}</span>" in legend for name in ("wake-up", "table overwritten", "fault", "running",
                                                             "mwait C6", "hlt"))
    assert legend.count("repeating-linear-gradient") >= 3 and "radial-gradient" in legend, "legend swatches carry patterns"
    cells = stopped.memmap.cells.data
    assert [memory_map.DISPLAY_STYLES[label][1] for label in cells["label"]] == list(cells["hatch"])
    assert stopped.memmap.figure.yaxis[0].major_label_overrides, "the memory map has a frame axis"
    for b in (stopped.stepper.back_button, stopped.stepper.step_button, stopped.stepper.goto_button):
        assert b.description and b.tooltip, "buttons have accessible names and tooltips"


def test_timeline_stretches_and_labels_do_not_overlap(stopped: widgets.ResumeLab) -> None:
    tl = stopped.timeline
    assert tl.lanes_figure.sizing_mode == "stretch_width"
    assert tl.bokeh.layout.width == "100%"
    phases = [(0, "boot"), (0, "load-image"), (10_000, "disable-nonboot"), (20_000, "copy"), (9_000_000, "online")]
    rows = timeline.label_rows(phases, 0.0, 10.0)
    scale = 10.0 / timeline.PLOT_PX
    for i, (t, name) in enumerate(phases):
        for j in range(i):
            if rows[i] == rows[j]:
                tj, nj = phases[j]
                assert tj / 1e6 + (len(nj) * timeline.LABEL_PX + 6) * scale <= t / 1e6


def test_timeline_opens_on_the_wake_to_fault_window(faulted_lab: widgets.ResumeLab) -> None:
    tl, r = faulted_lab.timeline, faulted_lab.resume
    fault = next(e for e in r.events if e.kind == "fault")
    wake = [e for e in r.events if e.kind == "wake" and e.t <= fault.t][-1]
    lo, hi = tl.lanes_figure.x_range.start, tl.lanes_figure.x_range.end
    assert lo <= wake.t / 1e6 and fault.t / 1e6 <= hi
    assert hi - lo >= timeline.MIN_WINDOW_SHARE * r.now / 1e6
    assert hi - lo < r.now / 1e6, "zoomed in"
    tl.zoom.value = "whole run"
    assert tl.lanes_figure.x_range.start == 0 and tl.lanes_figure.x_range.end >= r.now / 1e6
    tl.zoom.value = "wake to fault"
    assert (tl.lanes_figure.x_range.start, tl.lanes_figure.x_range.end) == (lo, hi)
