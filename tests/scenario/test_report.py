"""The report's machine (preset "report-2016"): with mwait_play_dead CPU 1 faults at exactly
0xffff8800ba800010, as in "unable to handle kernel paging request at 0xffff8800ba800010"
(FACTS.md section 1); with hlt_play_dead (406f992e4a37, section 2) the same machine resumes.
"""
from __future__ import annotations

import pytest

from lab.hw.paging import P, split
from lab.kernel.layout import PAGE_SIZE, direct_va
from lab.scenario import Resume

from scenario_kit import is_store_wake

REPORT_VA = 0xFFFF8800BA800010


BOOT_WALKS: dict = {}


@pytest.fixture(scope="module")
def mwait_run() -> Resume:
    r = Resume(preset="report-2016", fix="mwait", seed=0)
    BOOT_WALKS["cpu1"] = r.walk(1, REPORT_VA)  # before the run: the restore kernel's tables as booted
    r.run()
    return r


@pytest.fixture(scope="module")
def hlt_run() -> Resume:
    r = Resume(preset="report-2016", fix="hlt", seed=0)
    r.run()
    return r


def first_fault(r: Resume) -> dict:
    faults = r.faults()
    assert faults, f"no fault in a run that ended {r.outcome!r}"
    return faults[0]


def first_faulting_walk(r: Resume):
    return next(e for e in r.events if e.kind == "walk" and e.data.get("fault"))


# -- mwait: the bug -------------------------------------------------------------------------

def test_report_mwait_panics(mwait_run: Resume) -> None:
    assert mwait_run.outcome == "panic"
    assert mwait_run.machine.shutdown is None  # a panic, not a reset


def test_report_first_fault_is_the_reported_page_fault(mwait_run: Resume) -> None:
    f = first_fault(mwait_run)
    assert f["vector"] == "#PF"
    assert f["address"] == "0xffff8800ba800010"
    assert f["cpu"] == 1
    assert f["during"] is None  # raised by an instruction, not while delivering another
    assert f["error_code"] == 0  # not present, read access, supervisor


def test_report_fault_walk_meets_a_zero_entry(mwait_run: Resume) -> None:
    walk = first_fault(mwait_run)["walk"]
    assert walk, "the fault carries no walk"
    assert "0x0" in [step["entry"] for step in walk]
    assert walk[-1]["entry"] == "0x0"  # the walk stopped at the zeroed entry
    assert all(step["frame"].startswith("0x") for step in walk)


def test_report_walk_indices_are_those_of_the_address(mwait_run: Resume) -> None:
    ev = first_faulting_walk(mwait_run)
    assert ev.data["va"] == REPORT_VA
    indices = [(level, index) for level, _, index, _ in ev.data["steps"]]
    assert indices[:3] == [(0, 272), (1, 2), (2, 468)]
    # and that is what the address decodes to (FACTS.md section 3)
    assert split(REPORT_VA) == (272, 2, 468, 0, 0x10)
    assert REPORT_VA == direct_va(0xBA800010)


def test_report_faulting_instruction_touches_the_monitored_line(mwait_run: Resume) -> None:
    """The faulting access is CPU 1's clflush/monitor of its own &thread_info->flags."""
    ev = first_faulting_walk(mwait_run)
    assert ev.cpu == 1
    assert ev.data["why"] in ("clflush", "monitor")
    assert mwait_run.mwait_ptr(1) == REPORT_VA


def test_report_fault_follows_a_store_wake(mwait_run: Resume) -> None:
    """CPU 1 was woken by the boot CPU's store to the line it monitored, then walked."""
    wakes = [e for e in mwait_run.events if is_store_wake(e) and e.cpu == 1]
    assert wakes, "CPU 1 was never woken by a store to its monitored line"
    assert "by cpu0" in wakes[0].data["reason"]
    fault_walk = first_faulting_walk(mwait_run)
    assert wakes[0].t < fault_walk.t


def test_report_oops_text(mwait_run: Resume) -> None:
    oops = mwait_run.summary()["oops"]
    assert oops is not None
    assert "CR2: ffff8800ba800010" in oops
    assert "mwait_play_dead" in oops
    assert "CPU: 1 " in oops
    assert "Kernel panic - not syncing" in oops


def test_report_pf_becomes_a_double_fault(mwait_run: Resume) -> None:
    """The #PF frame cannot be pushed (the stack is in the same broken direct-map region),
    so the #PF turns into a #DF taken on its IST stack, and that oops is what gets printed."""
    faults = mwait_run.faults()
    assert len(faults) >= 2
    assert faults[1]["vector"] == "#PF" and faults[1]["during"] == "#PF"
    oops = mwait_run.oopses[0]
    assert oops.cpu == 1
    assert oops.kind == "double fault"
    assert oops.text.startswith("double fault")


def test_report_fault_table_is_a_restore_kernel_pt_overwritten_by_the_image(mwait_run: Resume) -> None:
    """The report: "the pte entry for this vaddr is zero", in a table "allocated dynamically by
    kernel_physical_mapping_init": the 4 KiB-mapped stretch between the last 2 MiB boundary and
    the end of RAM below 4 GiB has a PT from memblock; the image put other bytes in its frame."""
    ev = first_faulting_walk(mwait_run)
    level, table, index, entry = ev.data["steps"][-1]
    pfn = table // PAGE_SIZE
    assert (level, index, entry) == (3, 0, 0)
    lay = mwait_run.restore_kernel.layout
    assert lay.roles.get(pfn) == "direct-map PT"  # from memblock, not the brk buffer
    assert pfn in lay.table_frames and pfn not in mwait_run.image_kernel.layout.table_frames
    pbl = mwait_run.loaded.pblist
    assert pbl.index_of(pfn) is not None  # restored from the image over the restore kernel's table
    # the PD above it is in the brk buffer at the end of .bss: copied last, intact during the walk
    pd = ev.data["steps"][-2][1] // PAGE_SIZE
    assert pd in lay.image.brk_pgt_buf
    assert pbl.index_of(pd) > pbl.index_of(pfn) > pbl.index_of(lay.idle_stacks[1])
    assert 0xBA800000 <= mwait_run.config.e820_end_below_4g < 0xBAA00000  # the 4 KiB stretch


# -- hlt: the merged fix --------------------------------------------------------------------

def test_report_hlt_resumes(hlt_run: Resume) -> None:
    assert hlt_run.outcome == "resumed"
    assert hlt_run.faults() == []
    assert hlt_run.oopses == []


def test_report_hlt_every_cpu_online_in_the_image_kernel(hlt_run: Resume) -> None:
    cpus = set(range(hlt_run.config.cpus))
    assert hlt_run.image_kernel.online == cpus
    online_events = {e.cpu for e in hlt_run.events if e.kind == "cpu_online" and e.data.get("kernel") == "image"}
    assert online_events == cpus - {0}
    assert hlt_run.runtime.done
    assert hlt_run.phase == "resumed"


def test_report_hlt_restores_every_frame(hlt_run: Resume) -> None:
    assert hlt_run.mismatched_frames() == []
    assert hlt_run.runtime.copied == len(hlt_run.loaded.pblist)
    assert hlt_run.summary()["pages_copied"] == len(hlt_run.loaded.pblist)


def test_report_hlt_no_store_wakes(hlt_run: Resume) -> None:
    assert [e for e in hlt_run.events if is_store_wake(e)] == []
    # nothing was monitoring: the parked CPUs sat in HLT until INIT
    assert not any(e.kind in ("monitor", "mwait_fallthrough") for e in hlt_run.events)


def test_report_hlt_parks_in_hlt_play_dead(hlt_run: Resume) -> None:
    programs = {e.cpu: e.data["program"] for e in hlt_run.events if e.kind == "play_dead"}
    assert programs == {c: "hlt_play_dead" for c in range(1, hlt_run.config.cpus)}


def test_report_both_runs_copy_the_same_pblist(mwait_run: Resume, hlt_run: Resume) -> None:
    """Only the fix differs: same layout, same image, same restore_pblist."""
    assert [p.orig_address for p in mwait_run.loaded.pblist] == [p.orig_address for p in hlt_run.loaded.pblist]
    assert mwait_run.runtime.copied < len(mwait_run.loaded.pblist)  # the panic stopped the copy


def test_report_mwait_walk_was_fine_at_boot(mwait_run: Resume) -> None:
    """The same walk through the same tables worked before the copy: the restore kernel's
    PD frame had a present entry for this address at boot."""
    w = BOOT_WALKS["cpu1"]
    assert w.fault is None and w.paddr == 0xBA800010
    pd_step = [s for s in w.steps if s.level == 2][0]
    assert pd_step.entry & P
    bad = first_faulting_walk(mwait_run).data["steps"][2]
    assert pd_step.table == bad[1] and pd_step.index == bad[2] == 468
