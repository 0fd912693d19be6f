"""The stepper, driven through its buttons: what it shows equals the model's state."""
from __future__ import annotations

import re

import pytest

import widgets
from lab.memmap import is_page_table_role
from widgets.stepper import TARGETS

from widgetkit import error_text


def test_dom_contract_buttons_and_classes(workshop_lab: widgets.ResumeLab) -> None:
    s = workshop_lab.stepper
    descriptions = {s.back_button.description, s.step_button.description, s.next_button.description,
                    s.fault_button.description, s.run_button.description, s.goto_button.description,
                    s.reset_button.description}
    assert descriptions == {"Step back", "Step", "Step to next", "Step to next fault", "Run", "Go", "Reset"}
    assert s.play.layout.display == "none", "Run is the one visible run control"
    assert not hasattr(s, "pause_button")
    assert "lab-status" in s.status._dom_classes
    assert "lab-step-count" in s.count._dom_classes
    assert "lab-root" in workshop_lab._dom_classes
    assert set(s.target.options) == set(TARGETS)


def test_each_step_click_is_one_model_step_and_changes_the_status(workshop_lab: widgets.ResumeLab) -> None:
    s, r = workshop_lab.stepper, workshop_lab.resume
    for i in range(1, 31):
        before_events = len(r.events)
        s.step_button.click()
        assert r.steps == i
        assert s.requests == i
        assert re.search(rf"\bstep {i}\b", s.count.value), "the one step counter is the model's step"
        assert "t=" in s.status.value and r.phase in s.status.value
        assert f"{r.now / 1e6:.3f} ms" in s.status.value
        assert "model step" not in s.status.value and "#" not in s.count.value
        assert len(r.events) >= before_events
    assert workshop_lab.check() == []


def test_last_events_in_plain_words(workshop_lab: widgets.ResumeLab) -> None:
    s, r = workshop_lab.stepper, workshop_lab.resume
    workshop_lab.tabs.selected_index = 2  # the events are rendered while their tab is shown
    s.step_to("phase change")
    while r.phase != "copy":
        s.step_to("phase change")
    for _ in range(4):
        s.step_button.click()
    shown = s.last_events()
    assert 0 < len(shown) <= 8
    assert all(e.kind != "exec" for e in shown)
    non_exec = [e for e in r.events if e.kind != "exec"]
    assert shown == non_exec[-len(shown):]
    text = s.events_html.value
    last = shown[-1]
    assert last.kind in ("page_copied", "pages_copied")  # a page, or a streamed run of pages
    if last.kind == "page_copied":
        assert f"cpu{last.cpu} copied frame {last.data['pfn']:#x} (" in text.replace("&#x27;", "'")
    else:
        assert f"cpu{last.cpu} copied {last.data['count']} frames" in text
    assert f"t={last.t / 1e6:.3f} ms" in text


@pytest.mark.parametrize("target", list(TARGETS))
def test_step_to_next_stops_at_the_target(target: str) -> None:
    lab = widgets.ResumeLab(preset="report-2016", fix="mwait")
    s, r = lab.stepper, lab.resume
    start = len(r.events)
    s.target.value = target
    s.next_button.click()
    found = s.last_target_event
    assert found is not None, s.message.value
    assert found in r.events
    assert TARGETS[target][1](found)
    # nothing of that kind happened before it
    first = next(e for e in r.events[start:] if TARGETS[target][1](e))
    assert first is found
    if target == "page-table frame overwritten":
        assert is_page_table_role(found.data["role"])
        assert r.frame(found.data["pfn"]).status == "restored"
    assert "Stopped at" in s.message.value
    assert lab.check() == []


def test_step_to_next_says_so_when_the_target_never_comes() -> None:
    lab = widgets.ResumeLab(preset="report-2016", fix="hlt")
    s, r = lab.stepper, lab.resume
    s.fault_button.click()
    assert r.finished and r.outcome == "resumed"
    assert s.last_target_event is None
    assert "without a fault" in s.message.value and "resumed" in s.message.value
    assert error_text(s.message) == ""
    steps = r.steps
    s.fault_button.click()  # again, at the end: says so, changes nothing
    assert r.steps == steps
    assert "has ended" in s.message.value
    assert lab.check() == []


def test_step_after_the_end_changes_nothing_but_the_count(faulted_lab: widgets.ResumeLab) -> None:
    s, r = faulted_lab.stepper, faulted_lab.resume
    assert r.finished
    steps, now, count = r.steps, r.now, s.requests
    lens = {src.name: len(src.data[next(iter(src.data))]) for src in
            (faulted_lab.memmap.cells, faulted_lab.memmap.progress, faulted_lab.timeline.lanes,
             faulted_lab.timeline.progress, faulted_lab.timeline.faults, faulted_lab.timeline.wakes)}
    for i in range(5):
        s.step_button.click()
        assert s.requests == count + i + 1
        assert f"step {r.steps}" in s.count.value
    assert (r.steps, r.now) == (steps, now)
    assert "has ended" in s.message.value
    after = {src.name: len(src.data[next(iter(src.data))]) for src in
             (faulted_lab.memmap.cells, faulted_lab.memmap.progress, faulted_lab.timeline.lanes,
              faulted_lab.timeline.progress, faulted_lab.timeline.faults, faulted_lab.timeline.wakes)}
    assert after == lens


def test_run_plays_a_few_steps_per_tick_and_stops_at_the_end() -> None:
    lab = widgets.ResumeLab(preset="report-2016", fix="hlt")
    s, r = lab.stepper, lab.resume
    s.speed.value = 50
    s.run_button.value = True
    assert s.play.playing is True
    before = r.steps
    s.play.value += 1  # one tick, as the browser's Play widget sends it
    assert 0 < r.steps - before <= 50
    s.run_button.value = False  # Run again: pause
    assert s.play.playing is False and s.run_button.value is False
    before = r.steps
    s.play.value += 1  # a tick that arrives after the pause does nothing
    assert r.steps == before
    s.run_button.value = True
    s.speed.value = 200
    ticks = 0
    while s.run_button.value and ticks < 1000:
        s.play.value += 1
        ticks += 1
    assert r.finished and r.outcome == "resumed"
    assert s.run_button.value is False and s.play.playing is False
    assert "has ended" in s.message.value
    s.run_button.value = True  # Run at the end: refused, untoggled
    assert s.run_button.value is False
    assert lab.check() == []


def test_reset_builds_the_same_run_again(workshop_lab: widgets.ResumeLab) -> None:
    s = workshop_lab.stepper
    old = workshop_lab.resume
    for _ in range(40):
        s.step_button.click()
    s.reset_button.click()
    r = workshop_lab.resume
    assert r is not old and r.steps == 0 and r.now == 0
    assert r.config == old.config
    assert "step 0" in s.count.value
    assert [c.state for c in workshop_lab.cards.cards] == [r.cpu(i).state for i in range(r.config.cpus)]
    assert workshop_lab.memmap.map.source is r.loaded.pblist
    assert int(sum(workshop_lab.memmap.cells.data["restored"])) == 0
    assert workshop_lab.check() == []
    for _ in range(40):
        s.step_button.click()
    assert r.steps == old.steps == 40
    assert r.events == old.events, "the same config and seed must give the same run"


def test_bad_target_shows_an_error_and_changes_nothing(workshop_lab: widgets.ResumeLab) -> None:
    s, r = workshop_lab.stepper, workshop_lab.resume
    s.step_button.click()
    steps = r.steps
    assert s.step_to("the heat death of the universe") is None
    assert "unknown target" in error_text(s.message)
    assert r.steps == steps
    s.step_button.click()
    assert error_text(s.message) == ""
