"""The restore as Linux does it: the page allocator's order, the v4.7 loader, the bulk copy
that keeps the interleaving exact, the verdict taken when the resume ends, the per-boot text
mapping (ab76f7b4ab23), thread_info per kernel version and the NMI entry's memory.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lab.hw.memory import ContentTag, PhysicalMemory, TaggedRange, stride_runs
from lab.kernel.hibernate import PBES_PER_LINKED_PAGE
from lab.kernel.pagealloc import allocation_order, first_frames
from lab.scenario import Resume


# -- the page allocator (mm/page_alloc.c) -----------------------------------------------------

def test_allocation_order_takes_the_top_block_first_and_climbs_inside_it() -> None:
    free = [(0, 10), (1020, 1030), (2000, 2050)]
    got = first_frames(free, 60).tolist()
    assert got[:2] == [2048, 2049]  # the highest 4 MiB block
    assert got[2:8] == list(range(1024, 1030))  # then the next block down, from its lowest page
    assert got[8:56] == list(range(2000, 2048))
    assert got[56:] == [0, 1, 2, 3]


@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 300)), min_size=1, max_size=8))
@settings(max_examples=60, deadline=None)
def test_allocation_order_hands_out_every_free_frame_once(spans) -> None:
    from lab.kernel.intervals import normalize
    free = normalize([(s, s + n) for s, n in spans])
    order = np.concatenate(list(allocation_order(free)))
    want = sorted(p for s, e in free for p in range(s, e))
    assert sorted(order.tolist()) == want
    blocks = order >> 10  # never back up to a higher block once a lower one started
    assert all(a >= b for a, b in zip(blocks, blocks[1:]))


# -- memory: ranges put over ranges, bulk copies --------------------------------------------

def _content(mem: PhysicalMemory, pfns) -> list:
    return [mem.read_page(p).tobytes() for p in pfns]


@given(st.integers(0, 40), st.integers(1, 30), st.integers(0, 40), st.booleans(), st.integers(0, 3))
@settings(max_examples=80, deadline=None)
def test_copy_frames_equals_page_by_page(src0, n, dst0, descending, poke) -> None:
    """copy_frames (one range per run) leaves the same bytes as copy_page one by one."""
    def machine() -> PhysicalMemory:
        m = PhysicalMemory(160 * 4096)
        m.fill_range(0, 60, "data", 7)
        m.fill_range(60, 40, "sparse", 9)
        for k in range(poke):  # frames with content of their own inside the ranges
            m.write_u64((5 + 17 * k) * 4096, 0xABC + k, "test")
        return m
    src = np.arange(src0 + n - 1, src0 - 1, -1) if descending else np.arange(src0, src0 + n)
    dst = np.arange(100 + dst0 % 20, 100 + dst0 % 20 + n)[: len(src)]
    if len(dst) < len(src):
        return
    a, b = machine(), machine()
    a.copy_frames(src, dst, "cpu0")
    for s, d in zip(src.tolist(), dst.tolist()):
        b.copy_page(s, d, "cpu0")
    assert _content(a, range(160)) == _content(b, range(160))


def test_put_range_cuts_the_ranges_it_covers() -> None:
    m = PhysicalMemory(64 * 4096)
    m.fill_range(0, 40, "data", 1)
    m.put_range(TaggedRange(10, 5, "sparse", 2, 100, -1), "cpu0")
    assert m.tag(9) == ContentTag("data", 1, 9) and m.tag(15) == ContentTag("data", 1, 15)
    assert [m.tag(p).index for p in range(10, 15)] == [100, 99, 98, 97, 96]
    assert stride_runs(np.array([1, 2, 3, 10, 9]), np.array([5, 4, 3, 1, 2])) == [0, 3, 5]


# -- the v4.7 loader (kernel/power/snapshot.c prepare_image, get_buffer) ---------------------

@pytest.fixture(scope="module")
def report() -> Resume:
    r = Resume(preset="report-2016", fix="mwait")
    r.run()
    return r


def test_load_counts_add_up(report: Resume) -> None:
    c = report.summary()["load"]
    assert c["direct"] + c["via_pbe"] == report.image.nr_pages
    assert c["pbe_pages"] == math.ceil(report.image.nr_pages / PBES_PER_LINKED_PAGE)
    assert c["safe_pages"] == c["via_pbe"] + c["pbe_pages"]
    # most pages go through pbes: the copy the sleeping CPUs sit through is long
    assert c["via_pbe"] > c["direct"]


# -- the bulk copy keeps the interleaving exact ----------------------------------------------

def test_bulk_copy_matches_a_page_by_page_copy() -> None:
    """Watching every pblist frame forces one page per step: same wake-ups, same fault, same
    verdict as the bulk copy."""
    bulk = Resume(preset="workshop", fix="mwait")
    bulk.run()
    single = Resume(preset="workshop", fix="mwait")
    single.machine.watched_frames.update(single.loaded.pblist.orig.tolist())
    single.run()
    pick = lambda r: [(e.t, e.kind, e.cpu) for e in r.events if e.kind in ("wake", "fault", "oops", "verdict")]  # noqa: E731
    assert pick(bulk) == pick(single)
    assert bulk.outcome == single.outcome and bulk.runtime.copied == single.runtime.copied
    assert bulk.steps < single.steps  # and the bulk run took fewer steps


# -- the verdict is taken when the resume ends ------------------------------------------------

def test_an_nmi_after_the_resume_cannot_change_its_verdict() -> None:
    r = Resume(preset="workshop", fix="init", inject=("nmi:0@50000000",))
    r.run()
    assert r.outcome == "resumed"
    assert r.resume_ended_ns is not None and r.resume_ended_ns < 50_000_000
    verdict = next(i for i, e in enumerate(r.events) if e.kind == "verdict")
    handled = [i for i, e in enumerate(r.events) if e.kind == "nmi_handled"]
    assert handled and min(handled) > verdict  # simulated and shown, after the verdict


# -- the text mapping per boot (ab76f7b4ab23) ---------------------------------------------------

def test_each_boot_splits_the_text_page_at_its_own_frame() -> None:
    r = Resume(preset="text-mapping", fix="hlt")
    rs, im = r.restore_kernel.text_split, r.image_kernel.text_split
    assert rs is not None and im is not None and rs != im
    img = r.restore_kernel.layout.image
    assert len(img.gap) and img.gap.stop % 512 == 0  # rodata starts on a 2 MiB boundary
    assert not r.restore_kernel.layout.memblock.is_reserved(img.gap.start)  # the gap was freed


def test_mwait_hlt_fails_on_an_instruction_fetch_and_hlt_resumes() -> None:
    bad = Resume(preset="text-mapping", fix="mwait-hlt")
    bad.run()
    f = bad.faults()[0]
    assert bad.outcome == "panic"
    assert f["error_code"] & 0x10  # I/D: an instruction fetch
    assert int(f["walk"][-1]["frame"], 16) // 4096 == bad.restore_kernel.text_split
    assert f["walk"][-1]["entry"] == "0x0"
    good = Resume(preset="text-mapping", fix="hlt")
    good.run()
    assert good.outcome == "resumed"


# -- kernel versions ----------------------------------------------------------------------------

@pytest.mark.parametrize("version, offset", [("4.0", 0x10), ("4.7", 0x08)])
def test_thread_info_flags_offset_follows_the_version(version, offset) -> None:
    r = Resume(preset="workshop", kernel_version=version)
    lay = r.restore_kernel.layout
    assert r.mwait_ptr(1) & 0x3FFF == offset and (r.mwait_ptr(1) - offset) % 4096 == 0
    assert lay.ti_flags == offset


# -- the NMI entry touches memory ------------------------------------------------------------

def test_nmi_entry_reads_per_cpu_data_through_gs() -> None:
    r = Resume(preset="workshop", fix="hlt", inject=("nmi:1@6000",))
    r.run(until="nmi_handled")
    percpu = r.restore_kernel.layout.percpu[1] * 4096
    loads = [e for e in r.events if e.kind == "walk" and e.cpu == 1 and e.data["paddr"] is not None
             and e.data["paddr"] // 4096 == percpu // 4096]
    assert loads, "the NMI entry did not touch this CPU's per-CPU area"
