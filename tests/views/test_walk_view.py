"""The page walk view: its rows are the model's walk; overwritten and failing entries marked;
bad input shows lab-error and changes nothing."""
from __future__ import annotations

import re

import pytest

import widgets
from lab.hw.paging import decode

from widgetkit import FAULT_ADDRESS, error_text

ROW = re.compile(r'<tr class="([^"]*)">')


def row_classes(view: widgets.WalkView) -> list[str]:
    return [m for m in ROW.findall(view.table.value) if "lab-walk-row" in m.split()]


def rows_match(view: widgets.WalkView) -> None:
    r = view.resume
    w = r.walk(view.cpu, view.va)
    assert [(x.level, x.table, x.index, x.entry) for x in view.rows] == \
           [(s.level, s.table, s.index, s.entry) for s in w.steps]
    assert [x.decoded for x in view.rows] == [str(decode(s.entry, s.level, r.machine.memory.phys_bits))
                                              for s in w.steps]
    assert len(row_classes(view)) == len(w.steps)
    for x in view.rows:
        assert x.status == r.frame(x.table >> 12).status
        assert f"{x.entry:#018x}" in view.table.value


def test_default_is_cpu1_mwait_ptr_and_rows_follow_the_steps(workshop_lab: widgets.ResumeLab) -> None:
    view, r = workshop_lab.walk, workshop_lab.resume
    assert view.cpu == 1 and view.va == r.mwait_ptr(1)
    assert view.address.value == f"{r.mwait_ptr(1):#x}"
    assert "lab-walk" in view.table._dom_classes
    for _ in range(40):
        workshop_lab.stepper.step_button.click()
        rows_match(view)


def test_pending_table_frames_are_marked_before_the_copy(report_lab: widgets.ResumeLab) -> None:
    view = report_lab.walk
    rows_match(view)
    pending = [x for x in view.rows if x.status == "pending"]
    assert pending, "the restore kernel's tables should all still be pending"
    for x in pending:
        assert x.mark == "pending" and x.old == x.entry
        img = report_lab.resume.image.content(x.table >> 12)
        arr = img.materialize() if hasattr(img, "materialize") else img
        assert x.new == int(arr[x.index])
    assert all("lab-walk-pending" in c.split() for c in row_classes(view))
    assert "lab-walk-fault" not in view.table.value


def test_the_failing_walk_after_the_fault(faulted_lab: widgets.ResumeLab) -> None:
    view, r = faulted_lab.walk, faulted_lab.resume
    fault = r.faults()[0]
    assert view.cpu == fault["cpu"] and view.va == int(fault["address"], 16)
    assert view.va == 0xFFFF8800BA800010
    rows_match(view)
    classes = row_classes(view)
    assert "lab-walk-fault" in classes[-1].split()
    assert sum("lab-walk-fault" in c.split() for c in classes) == 1
    bad = view.rows[-1]
    assert bad.fault and not bad.entry & 1
    # that entry lived in a restore-kernel table frame the copy overwrote with something else
    assert bad.status == "restored" and bad.mark == "overwritten"
    assert bad.restore_role != bad.image_role
    assert bad.old is not None and bad.old & 1, "the old entry was present"
    assert "OVERWRITTEN" in view.table.value
    assert FAULT_ADDRESS in view.title.value.replace("0x", "")


@pytest.mark.parametrize("text, why", [
    ("zzz", "not a hex address"),
    ("0x", "not a hex address"),
    ("", "not a hex address"),
    ("-0x10", "not a hex address"),
    ("0x0000900000000000", "not canonical"),
    ("0x1ffffffffffffffff", "64 bits"),
])
def test_bad_addresses_show_an_error_and_change_nothing(workshop_lab: widgets.ResumeLab, text: str,
                                                        why: str) -> None:
    view = workshop_lab.walk
    before = (view.cpu, view.va, view.table.value, list(view.rows))
    view.address.value = text
    assert why in error_text(view.message)
    assert (view.cpu, view.va, view.table.value, list(view.rows)) == before
    # a good address clears the error
    view.address.value = "ffff8800000a0000"
    assert error_text(view.message) == ""
    assert view.va == 0xFFFF8800000A0000 and view.address.value == "0xffff8800000a0000"
    rows_match(view)


def test_a_cpu_that_does_not_exist(workshop_lab: widgets.ResumeLab) -> None:
    view = workshop_lab.walk
    before = (view.cpu, view.va, view.table.value)
    for bad in (9, -1, "1", True):
        view.show(cpu=bad)
        assert "no CPU" in error_text(view.message)
        assert (view.cpu, view.va, view.table.value) == before


def test_picking_a_cpu_walks_its_mwait_ptr(workshop_lab: widgets.ResumeLab) -> None:
    view, r = workshop_lab.walk, workshop_lab.resume
    view.cpu_select.value = 2
    assert view.cpu == 2 and view.va == r.mwait_ptr(2)
    rows_match(view)
    view.mwait_button.click()
    assert view.va == r.mwait_ptr(2)


def test_a_cpu_with_paging_off_is_said_not_an_error() -> None:
    lab = widgets.ResumeLab(preset="report-2016", fix="hlt")
    lab.stepper.target.value = "phase change"
    r = lab.resume
    while r.phase != "online" and not r.finished:
        lab.stepper.next_button.click()
    seen_off = False
    while not r.finished and not seen_off:
        lab.stepper.step_button.click()
        seen_off = r.cpu(1).cr3 is None
    assert seen_off, "CPU 1 never went through INIT (paging off)"
    assert lab.walk.rows == [] and lab.walk.walk is None
    assert "paging off" in lab.walk.table.value
    assert error_text(lab.walk.message) == ""
    assert lab.check() == []


def test_a_step_that_changes_none_of_the_walks_inputs_redraws_nothing(report_lab: widgets.ResumeLab,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """WalkView.update skips the rows' lookups and HTML when the walk's inputs are the same
    (most steps); a store into a table the walk reads is drawn at the next update, marked
    changed for one step."""
    view, r = report_lab.walk, report_lab.resume
    computed = []
    compute = view.compute
    monkeypatch.setattr(view, "compute", lambda *a, **k: computed.append(1) or compute(*a, **k))
    skipped = 0
    for _ in range(30):
        before, n = view.table.value, len(computed)
        report_lab.stepper.step_button.click()
        rows_match(view)
        if len(computed) == n:
            skipped += 1
            assert view.table.value == before
    assert skipped >= 10, "no step left the walk's inputs alone"
    # a store the copy did not make: the PT entry the walk reads, changed under it
    last = view.rows[-1]
    paddr = last.table + 8 * last.index
    r.machine.memory.write_u64(paddr, last.entry ^ (1 << 52), agent="test")
    view.update(r)
    rows_match(view)
    assert view.rows[-1].entry == last.entry ^ (1 << 52) and view.rows[-1].changed
    assert "lab-changed" in row_classes(view)[-1]
    view.update(r)  # nothing new: the highlight goes, the entry stays
    assert not view.rows[-1].changed and "lab-changed" not in row_classes(view)[-1]
