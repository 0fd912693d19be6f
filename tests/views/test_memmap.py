"""lab.memmap: the aggregation the memory map draws, checked against a frame-by-frame count."""
from __future__ import annotations

import numpy as np
import pytest

from lab import memmap
from lab.kernel.layout import PAGE_OFFSET
from lab.scenario import Resume


@pytest.fixture(scope="module")
def workshop() -> Resume:
    return Resume(preset="workshop", fix="mwait", seed=0)


def brute_categories(r: Resume) -> np.ndarray:
    """Each frame's category the slow way, one frame at a time, from the same public facts."""
    lay = r.restore_kernel.layout
    usable = lay.memblock.usable_pfns()
    image = r.image.intervals()
    safe = set(r.loaded.safe.taken)
    out = np.empty(r.machine.memory.nr_frames, dtype=np.int64)
    for pfn in range(len(out)):
        role = lay.roles.get(pfn)
        c = memmap.role_category(role)
        if c is not None:
            out[pfn] = c
        elif pfn in lay.image.frames:
            out[pfn] = memmap.KERNEL_IMAGE
        elif pfn in safe:
            out[pfn] = memmap.SAFE
        elif lay.memblock.is_reserved(pfn):
            out[pfn] = memmap.OTHER
        elif any(lo <= pfn < hi for lo, hi in image):
            out[pfn] = memmap.IN_PLACE
        elif any(lo <= pfn < hi for lo, hi in usable):
            out[pfn] = memmap.FREE
        else:
            out[pfn] = memmap.NOT_RAM
    return out


def test_counts_match_a_frame_by_frame_count(workshop: Resume) -> None:
    mm = memmap.build(workshop, bins=256)
    want = brute_categories(workshop)
    assert mm.counts.sum() == workshop.machine.memory.nr_frames
    for b in range(mm.nbins):
        lo, hi = mm.starts[b], mm.stops[b]
        got = mm.counts[b]
        exp = np.bincount(want[lo:hi], minlength=len(memmap.CATEGORIES))
        assert got.tolist() == exp.tolist(), f"bin {b}"


def test_bins_cover_memory_and_pblist(workshop: Resume) -> None:
    mm = memmap.build(workshop, bins=1024)
    n = workshop.machine.memory.nr_frames
    assert mm.nbins <= 1024 and mm.frames_per_bin * mm.nbins >= n
    assert (mm.counts.sum(axis=1) == mm.stops - mm.starts).all()
    assert mm.pblist_total.sum() == len(workshop.loaded.pblist)
    orig = [p.orig_address for p in workshop.loaded.pblist]
    assert mm.pblist_total.tolist() == np.bincount(np.array(orig) // mm.frames_per_bin,
                                                   minlength=mm.nbins).tolist()


def test_special_frames_land_in_their_category() -> None:
    r = Resume(preset="workshop", fix="mwait", seed=0)
    cat = memmap.frame_categories(r)
    lay = r.restore_kernel.layout
    assert cat[(r.mwait_ptr(1) - PAGE_OFFSET) >> 12] == memmap.MONITORED
    assert cat[lay.image.init_level4_pgt] == memmap.PAGE_TABLE
    assert cat[lay.image.empty_zero_page] == memmap.ZERO_PAGE
    assert cat[lay.image.text.start] == memmap.KERNEL_IMAGE
    assert cat[r.loaded.pblist[0].address] == memmap.SAFE
    for pfn in lay.table_frames:
        assert cat[pfn] == memmap.PAGE_TABLE


def test_split_follows_the_copy_and_is_incremental() -> None:
    r = Resume(preset="workshop", fix="mwait", seed=0)
    mm = memmap.build(r)
    total = len(r.loaded.pblist)
    p0, r0 = mm.split(0)
    assert r0.sum() == 0 and p0.sum() == total
    seen = []
    r.run("copy")
    while r.runtime.copied < total and not r.finished:
        r.step()
        pending, restored = mm.split(r.runtime.copied)
        assert pending.sum() + restored.sum() == total
        assert restored.sum() == r.runtime.copied
        seen.append(r.runtime.copied)
    assert seen and seen[-1] == r.runtime.copied and max(seen) > 64
    fresh = memmap.build(r)
    assert fresh.split(r.runtime.copied)[1].tolist() == mm.split(r.runtime.copied)[1].tolist()
    # going back (a smaller count) recomputes instead of adding
    assert mm.split(10)[1].sum() == 10


def test_restored_bins_are_where_the_copy_went() -> None:
    r = Resume(preset="workshop", fix="mwait", seed=0)
    mm = memmap.build(r)
    r.run("copy")
    for _ in range(6):
        r.step()
    copied = r.runtime.copied
    assert copied > 0
    _, restored = mm.split(copied)
    for pbe in r.loaded.pblist[:copied]:
        assert restored[mm.bin_of(pbe.orig_address)] > 0
        assert r.frame(pbe.orig_address).status == "restored"


def test_refresh_rebuilds_when_the_temporary_tables_appear() -> None:
    r = Resume(preset="workshop", fix="mwait", seed=0)
    mm = memmap.build(r)
    assert memmap.refresh(r, mm) is mm
    before = mm.counts[:, memmap.PAGE_TABLE].sum()
    r.run("copy")
    mm2 = memmap.refresh(r, mm)
    assert mm2 is not mm
    assert mm2.counts[:, memmap.PAGE_TABLE].sum() == before + len(r.runtime.temp_tables)
    assert mm2.counts.sum() == r.machine.memory.nr_frames
    assert mm2.pblist_bins is mm.pblist_bins  # the copy order was reused


def test_display_prefers_tables_then_pending() -> None:
    r = Resume(preset="workshop", fix="mwait", seed=0)
    mm = memmap.build(r)
    pending, restored = mm.split(0)
    disp = mm.display(pending, restored)
    b_pml4 = mm.bin_of(r.restore_kernel.layout.image.init_level4_pgt)
    assert memmap.DISPLAY[disp[b_pml4]] in ("page tables",)
    only_pblist = [b for b in range(mm.nbins) if mm.pblist_total[b] and mm.counts[b, :4].sum() == 0]
    assert only_pblist
    assert all(memmap.DISPLAY[disp[b]] == "image pages pending" for b in only_pblist)
    _, restored = mm.split(len(r.loaded.pblist))
    disp = mm.display(mm.pblist_total - restored, restored)
    assert all(memmap.DISPLAY[disp[b]] == "image pages restored" for b in only_pblist)


def test_interesting_frame_of_a_bin() -> None:
    r = Resume(preset="workshop", fix="mwait", seed=0)
    mm = memmap.build(r)
    ti = (r.mwait_ptr(1) - PAGE_OFFSET) >> 12
    b = mm.bin_of(ti)
    pick = int(mm.interesting[b])
    assert mm.bin_of(pick) == b
    assert memmap.role_category(r.restore_kernel.layout.roles.get(pick)) in (memmap.PAGE_TABLE, memmap.MONITORED)


def test_bad_arguments() -> None:
    r = Resume(preset="workshop", fix="mwait", seed=0)
    with pytest.raises(ValueError, match="bins"):
        memmap.build(r, bins=0)
    mm = memmap.build(r)
    with pytest.raises(ValueError, match="no frame"):
        mm.bin_of(r.machine.memory.nr_frames)


def test_importing_lab_does_not_import_jupyter() -> None:
    import subprocess
    import sys

    code = ("import sys, lab, lab.memmap, lab.scenario; "
            "bad = [m for m in ('ipywidgets', 'bokeh', 'jupyter_bokeh') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
