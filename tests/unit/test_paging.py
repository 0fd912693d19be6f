"""4-level paging (lab/hw/paging.py, pagetable.py) against SDM vol. 3A ch. 4 and FACTS section 3:
entry format, walks with 4 KiB / 2 MiB / 1 GiB pages, #PF error codes, reserved bits, A/D
flags, TLB and paging-structure caches."""
from __future__ import annotations

import pytest

from hwkit import DIRECT_MAP, BumpAllocator
from lab.hw.memory import ContentTag, PhysicalMemory
from lab.hw.pagetable import PageTables
from lab.hw.paging import (ADDR_MASK, NX, PF_ID, PF_P, PF_RSVD, PF_US, PF_WR, TLB, A, D, Fault,
                           G, P, PCD, PS, PWT, RW, US, decode, is_canonical, make_entry,
                           reserved_mask, split, walk)

KiB4, MiB2, GiB1 = 1 << 12, 1 << 21, 1 << 30
REPORT_VA = 0xFFFF_8800_BA80_0010


def space(ram: int = 64 << 20, phys_bits: int = 46) -> tuple[PhysicalMemory, PageTables]:
    """Memory and an empty address space whose entries are written with A and D clear, so
    that walks show their own A/D updates."""
    mem = PhysicalMemory(ram, phys_bits)
    return mem, PageTables(mem, BumpAllocator(0x100, mem.nr_frames), accessed=False)


def entry_addr(mem: PhysicalMemory, cr3: int, va: int, level: int) -> int:
    """Physical address of the entry used at ``level`` to translate ``va``."""
    w = walk(mem, cr3, va, set_accessed=False)
    step = w.steps[level]
    return step.table + step.index * 8


# -- entry format (SDM tables 4-14 .. 4-20) --------------------------------------------------
@pytest.mark.parametrize("flag, bit", [
    ("p", 0), ("rw", 1), ("us", 2), ("pwt", 3), ("pcd", 4), ("a", 5), ("d", 6), ("ps", 7),
    ("g", 8), ("nx", 63),
])
def test_each_flag_has_its_sdm_bit(flag, bit):
    kwargs = dict(p=False, rw=False)
    kwargs[flag] = True
    assert make_entry(0, **kwargs) == 1 << bit


def test_flag_constants_match_the_sdm():
    assert (P, RW, US, PWT, PCD, A, D, PS, G, NX) == (1, 2, 4, 8, 16, 32, 64, 128, 256, 1 << 63)
    assert ADDR_MASK == ((1 << 52) - 1) ^ 0xFFF
    assert (PF_P, PF_WR, PF_US, PF_RSVD, PF_ID) == (1, 2, 4, 8, 16)


def test_address_goes_in_bits_51_to_12():
    e = make_entry(0x000F_FFFF_FFFF_F000, p=True, rw=False)
    assert e == 0x000F_FFFF_FFFF_F001
    d = decode(e, 3)
    assert d.addr == 0x000F_FFFF_FFFF_F000 and d.flags == ("P",)


def test_default_entry_is_present_and_writable():
    assert make_entry(0x1000) == 0x1000 | P | RW


@pytest.mark.parametrize("addr, kwargs, words", [
    (-0x1000, {}, ["must be >= 0"]),
    (0x1234, {}, ["0x1234 is not 4 KiB aligned"]),
    (1 << 46, dict(phys_bits=46), ["beyond the 46-bit physical address width"]),
    (1 << 52, {}, ["beyond the 52-bit physical address width"]),
])
def test_make_entry_rejects_bad_addresses(addr, kwargs, words):
    with pytest.raises(ValueError) as exc:
        make_entry(addr, **kwargs)
    for w in words:
        assert w in str(exc.value)


def test_decode_large_page_masks_offset_bits():
    e = make_entry(0x4020_0000, ps=True)  # a 2 MiB frame
    assert decode(e, 2).addr == 0x4020_0000
    e1g = make_entry(0x8000_0000, ps=True)
    assert decode(e1g, 1).addr == 0x8000_0000


def test_decode_reports_reserved_bits_and_text():
    e = make_entry(0x2000) | 1 << 50
    d = decode(e, 3, phys_bits=46)
    assert d.reserved == 1 << 50
    assert "RESERVED 0x4000000000000" in str(d)
    assert str(decode(0x1234_5000, 3)) == "0x0000000012345000 (not present)"
    assert decode(0x1234_5000 | 1 << 50, 3, 46).reserved == 0  # not present: no check


@pytest.mark.parametrize("entry, level, words", [
    (1 << 64, 3, "an entry is a 64-bit value"),
    (-1, 3, "an entry is a 64-bit value"),
    (0, 4, "level must be 0 (PML4) to 3 (PT), got 4"),
])
def test_decode_rejects_bad_input(entry, level, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        decode(entry, level)


# -- addresses -----------------------------------------------------------------------------
def test_report_address_splits_as_in_the_report():
    assert split(REPORT_VA) == (272, 2, 468, 0, 0x10)
    assert REPORT_VA - DIRECT_MAP == 0xBA80_0010


@pytest.mark.parametrize("va, ok", [
    (0, True), ((1 << 47) - 1, True), (1 << 47, False), (0xFFFF_8000_0000_0000, True),
    (0xFFFF_7FFF_FFFF_FFFF, False), ((1 << 64) - 1, True), (0x0001_0000_0000_0000, False),
])
def test_canonical_addresses(va, ok):
    assert is_canonical(va) is ok


def test_non_canonical_address_gives_gp_without_reading_memory():
    mem, pt = space()
    w = walk(mem, pt.root, 0x0000_8000_0000_0000)
    assert w.fault == Fault("#GP", 0x0000_8000_0000_0000, 0)
    assert w.steps == () and w.paddr is None


# -- walks ---------------------------------------------------------------------------------
def test_4k_walk_reads_four_levels_and_adds_the_offset():
    mem, pt = space()
    va = 0xFFFF_C900_1234_5000
    pt.map(va, 0x0030_0000)
    w = walk(mem, pt.root, va + 0xABC)
    assert w.fault is None and w.paddr == 0x0030_0ABC and w.page_size == KiB4
    assert [s.level for s in w.steps] == [0, 1, 2, 3]
    assert [s.name for s in w.steps] == ["PML4", "PDPT", "PD", "PT"]
    assert [s.table for s in w.steps] == [pfn << 12 for pfn in pt.tables]
    assert [s.index for s in w.steps] == list(split(va)[:4])
    assert decode(w.steps[3].entry).addr == 0x0030_0000


def test_2m_walk_stops_at_the_pd():
    mem, pt = space()
    pt.map(0xFFFF_8800_0020_0000, 0x0060_0000, MiB2)
    w = walk(mem, pt.root, 0xFFFF_8800_0020_0000 + 0x1F_FFF8)
    assert w.paddr == 0x0060_0000 + 0x1F_FFF8 and w.page_size == MiB2
    assert len(w.steps) == 3 and w.steps[2].entry & PS


def test_1g_walk_stops_at_the_pdpt():
    mem, pt = space()
    pt.map(0xFFFF_8800_4000_0000, 0x1_0000_0000, GiB1)
    w = walk(mem, pt.root, 0xFFFF_8800_4000_0000 + 0x3ABC_DEF8)
    assert w.paddr == 0x1_3ABC_DEF8 and w.page_size == GiB1
    assert len(w.steps) == 2 and w.steps[1].entry & PS


@pytest.mark.parametrize("sizes, page_size, levels", [
    ((MiB2, KiB4), MiB2, 3),
    ((GiB1, MiB2, KiB4), GiB1, 2),
])
def test_report_address_through_a_linux_2016_direct_map(sizes, page_size, levels):
    """0xffff8800ba800010 is the direct-map address of physical 0xba800010 (FACTS 3)."""
    mem, pt = space(ram=4 << 30)
    pt.map_range(DIRECT_MAP, 0, 4 << 30, sizes=sizes)
    w = walk(mem, pt.root, REPORT_VA)
    assert w.paddr == 0xBA80_0010 and w.page_size == page_size
    assert [s.index for s in w.steps] == [272, 2, 468][:levels]


def test_map_range_uses_small_pages_at_unaligned_edges():
    mem, pt = space()
    used = pt.map_range(DIRECT_MAP + 0x1F_F000, 0x1F_F000, 0x40_2000)
    # one 4K page up to the 2 MiB boundary, two 2 MiB pages, one 4K page after
    assert used == {KiB4: 2, MiB2: 2}
    assert walk(mem, pt.root, DIRECT_MAP + 0x1F_F008).page_size == KiB4
    assert walk(mem, pt.root, DIRECT_MAP + 0x20_0000).page_size == MiB2
    assert walk(mem, pt.root, DIRECT_MAP + 0x60_0000).page_size == KiB4
    assert walk(mem, pt.root, DIRECT_MAP + 0x60_1000).fault is not None


def test_map_errors():
    mem, pt = space()
    with pytest.raises(ValueError, match="page size must be 4 KiB, 2 MiB or 1 GiB, got 0x2000"):
        pt.map(0, 0, 0x2000)
    with pytest.raises(ValueError, match="must both be aligned to the page size 0x200000"):
        pt.map(0x1000, 0, MiB2)
    pt.map(0x4000_0000, 0, MiB2)
    with pytest.raises(ValueError, match="a larger page already maps this range"):
        pt.map(0x4000_1000, 0x1000)
    with pytest.raises(ValueError, match="not 4 KiB aligned"):
        pt.map_range(0x800, 0, 0x1000)


# -- faults --------------------------------------------------------------------------------
@pytest.mark.parametrize("level", [0, 1, 2, 3])
@pytest.mark.parametrize("write, user, fetch", [
    (False, False, False), (True, False, False), (False, True, False), (False, False, True),
    (True, True, False),
])
def test_not_present_at_each_level_gives_pf_with_p_clear(level, write, user, fetch):
    mem, pt = space()
    va = 0x0000_7F12_3456_7000
    pt.map(va, 0x0050_0000, us=True)
    mem.write_u64(entry_addr(mem, pt.root, va, level), 0, "test")
    w = walk(mem, pt.root, va + 8, write=write, user=user, fetch=fetch)
    expected = (PF_WR if write else 0) | (PF_US if user else 0) | (PF_ID if fetch else 0)
    assert w.fault == Fault("#PF", va + 8, expected)
    assert len(w.steps) == level + 1 and w.steps[-1].entry == 0
    assert w.paddr is None


def test_not_present_entry_with_garbage_in_other_bits_still_faults_not_present():
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000)
    mem.write_u64(entry_addr(mem, pt.root, 0x1000_0000, 3), 0xFFFF_FFFF_FFFF_FFFE, "test")
    assert walk(mem, pt.root, 0x1000_0000).fault == Fault("#PF", 0x1000_0000, 0)


def test_write_to_read_only_page_is_a_protection_fault():
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000, rw=False)
    assert walk(mem, pt.root, 0x1000_0000).fault is None
    assert walk(mem, pt.root, 0x1000_0000, write=True).fault == Fault("#PF", 0x1000_0000, PF_P | PF_WR)


def test_read_only_upper_level_forbids_writes_below_it():
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000)
    pd_entry = entry_addr(mem, pt.root, 0x1000_0000, 2)
    mem.write_u64(pd_entry, mem.read_u64(pd_entry) & ~RW, "test")
    assert walk(mem, pt.root, 0x1000_0000, write=True).fault.error_code == PF_P | PF_WR


@pytest.mark.parametrize("missing_level, bad_bit, code", [(2, 0, PF_WR), (3, 1 << 50, PF_P | PF_WR | PF_RSVD)])
def test_entry_below_a_read_only_one_decides_the_error_code(missing_level, bad_bit, code):
    """Access rights belong to the whole translation (SDM 4.6): a write through a read-only
    PDPT entry to a not-present (or malformed) entry below reports P=0 (or RSVD), as there is
    no translation to have rights (SDM 4.7)."""
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000)
    pdpt_entry = entry_addr(mem, pt.root, 0x1000_0000, 1)
    lower = entry_addr(mem, pt.root, 0x1000_0000, missing_level)
    mem.write_u64(lower, (mem.read_u64(lower) | bad_bit) if bad_bit else 0, "test")
    mem.write_u64(pdpt_entry, mem.read_u64(pdpt_entry) & ~RW, "test")
    w = walk(mem, pt.root, 0x1000_0000, write=True)
    assert w.fault == Fault("#PF", 0x1000_0000, code) and len(w.steps) == missing_level + 1


@pytest.mark.parametrize("level, build, bad_bit", [
    (3, KiB4, 1 << 50),   # bits 51:MAXPHYADDR (46)
    (3, KiB4, 1 << 46),
    (2, KiB4, 1 << 51),   # same in a non-leaf entry
    (0, KiB4, PS),        # PS is reserved in a PML4E
    (2, MiB2, 1 << 13),   # 2 MiB page: bits 20:13 reserved
    (2, MiB2, 1 << 20),
    (1, GiB1, 1 << 13),   # 1 GiB page: bits 29:13 reserved
    (1, GiB1, 1 << 29),
])
def test_reserved_bit_in_a_present_entry_gives_pf_with_rsvd_and_p(level, build, bad_bit):
    mem, pt = space(phys_bits=46)
    va = 0xFFFF_8800_4000_0000
    pt.map(va, 0x4000_0000, build)
    ea = entry_addr(mem, pt.root, va, level)
    mem.write_u64(ea, mem.read_u64(ea) | bad_bit, "test")
    w = walk(mem, pt.root, va, write=True)
    assert w.fault == Fault("#PF", va, PF_P | PF_RSVD | PF_WR)
    assert len(w.steps) == level + 1
    assert reserved_mask(level, w.steps[-1].entry, 46) & bad_bit


def test_bits_62_to_52_are_ignored_not_reserved():
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000)
    ea = entry_addr(mem, pt.root, 0x1000_0000, 3)
    mem.write_u64(ea, mem.read_u64(ea) | (0x7FF << 52), "test")
    assert walk(mem, pt.root, 0x1000_0000).paddr == 0x0050_0000


def test_garbage_without_reserved_bits_translates_to_a_wrong_frame():
    """FACTS 3: garbage read as an entry can translate to a wrong frame."""
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000)
    ea = entry_addr(mem, pt.root, 0x1000_0000, 3)
    mem.write_u64(ea, 0x0000_1234_5678_9063, "garbage")
    w = walk(mem, pt.root, 0x1000_0010)
    assert w.fault is None and w.paddr == 0x1234_5678_9010


def test_fault_describe():
    assert Fault("#PF", 0xFFFF_8800_BA80_0010, 0).describe() == (
        "#PF at 0xffff8800ba800010, error code 0x0 (not present; -)")
    assert Fault("#PF", 0x10, PF_P | PF_RSVD).describe() == (
        "#PF at 0x10, error code 0x9 (protection violation; P RSVD)")
    assert Fault("#GP", 0x10, 0).describe() == "#GP at 0x10"


# -- A and D flags (SDM 4.8) ---------------------------------------------------------------
def test_walk_sets_accessed_on_every_level_and_dirty_only_on_the_leaf_for_a_write():
    mem, pt = space()
    va = 0x1000_0000
    pt.map(va, 0x0050_0000)
    eas = [entry_addr(mem, pt.root, va, lvl) for lvl in range(4)]
    assert not any(mem.read_u64(ea) & (A | D) for ea in eas)
    walk(mem, pt.root, va)
    assert all(mem.read_u64(ea) & A for ea in eas)
    assert not any(mem.read_u64(ea) & D for ea in eas)
    walk(mem, pt.root, va, write=True)
    assert mem.read_u64(eas[3]) & D
    assert not any(mem.read_u64(ea) & D for ea in eas[:3])


def test_dirty_set_on_a_large_page_leaf():
    mem, pt = space()
    pt.map(0x4000_0000, 0x20_0000, MiB2)
    walk(mem, pt.root, 0x4000_0000, write=True)
    assert mem.read_u64(entry_addr(mem, pt.root, 0x4000_0000, 2)) & (A | D) == A | D


def test_accessed_update_is_a_store_by_the_walker_and_only_when_clear():
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000)
    seen = []
    mem.observers.append(lambda *a: seen.append(a))
    walk(mem, pt.root, 0x1000_0000, agent="cpu3")
    assert len(seen) == 4 and {s[2] for s in seen} == {"cpu3"} and {s[3] for s in seen} == {"store"}
    seen.clear()
    walk(mem, pt.root, 0x1000_0000, agent="cpu3")
    assert seen == []  # already set: no store
    walk(mem, pt.root, 0x1000_0000, agent="cpu3", write=True)
    assert len(seen) == 1  # the leaf's D


def test_page_tables_can_preset_accessed_and_dirty_as_linux_does():
    mem = PhysicalMemory(64 << 20)
    pt = PageTables(mem, BumpAllocator(0x100, mem.nr_frames))  # accessed=True by default
    pt.map(0x1000_0000, 0x0050_0000)
    seen = []
    mem.observers.append(lambda *a: seen.append(a))
    w = walk(mem, pt.root, 0x1000_0000, write=True)
    assert all(s.entry & (A | D) == A | D for s in w.steps) and seen == []


def test_set_accessed_false_leaves_tables_untouched():
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000)
    walk(mem, pt.root, 0x1000_0000, write=True, set_accessed=False)
    assert not mem.read_u64(entry_addr(mem, pt.root, 0x1000_0000, 3)) & (A | D)


# -- TLB and paging-structure caches (SDM 4.10) ----------------------------------------------
class CountingMemory:
    """Wraps PhysicalMemory, counting 8-byte loads.  It hides the frame dict so the walker
    cannot read table frames directly: every load goes through read_u64 and is counted."""

    _frames: dict = {}

    def __init__(self, mem: PhysicalMemory) -> None:
        self.mem, self.loads = mem, 0

    def __getattr__(self, name):
        return getattr(self.mem, name)

    def read_u64(self, paddr: int) -> int:
        self.loads += 1
        return self.mem.read_u64(paddr)


def test_tlb_hit_reads_no_memory_and_survives_table_overwrite_until_flushed():
    mem, pt = space()
    va = 0xFFFF_C900_0000_3000
    pt.map(va, 0x0070_0000)
    tlb = TLB()
    first = walk(mem, pt.root, va, tlb=tlb)
    assert not first.tlb_hit and len(first.steps) == 4 and len(tlb) == 1
    for pfn in pt.tables:  # the tables' frames get other contents
        mem.write_page(pfn, ContentTag("data", 1, pfn), "loader")
    counting = CountingMemory(mem)
    hit = walk(counting, pt.root, va + 0x18, tlb=tlb)  # type: ignore[arg-type]
    assert hit.tlb_hit and hit.steps == () and hit.paddr == 0x0070_0018
    assert counting.loads == 0
    tlb.flush_all()
    miss = walk(counting, pt.root, va, tlb=tlb)  # type: ignore[arg-type]
    assert counting.loads >= 1 and not miss.tlb_hit
    assert miss.fault is not None or miss.paddr != 0x0070_0000


def test_paging_structure_cache_lets_a_walk_start_below_the_pml4():
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000)
    pt.map(0x1000_1000, 0x0060_0000)
    pt.map(0x1020_0000, 0x0070_0000)
    tlb = TLB()
    walk(mem, pt.root, 0x1000_0000, tlb=tlb)
    same_pt = walk(mem, pt.root, 0x1000_1000, tlb=tlb)
    assert same_pt.started_at == 3 and [s.level for s in same_pt.steps] == [3]
    assert same_pt.paddr == 0x0060_0000
    same_pd = walk(mem, pt.root, 0x1020_0000, tlb=tlb)
    assert same_pd.started_at == 2 and len(same_pd.steps) == 2


def test_mov_to_cr3_flush_keeps_global_entries_only():
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000, g=True)
    pt.map(0x2000_0000, 0x0060_0000, g=False)
    tlb = TLB()
    walk(mem, pt.root, 0x1000_0000, tlb=tlb)
    walk(mem, pt.root, 0x2000_0000, tlb=tlb)
    tlb.flush_non_global()
    assert walk(mem, pt.root, 0x1000_0000, tlb=tlb).tlb_hit
    again = walk(mem, pt.root, 0x2000_0000, tlb=tlb)
    assert not again.tlb_hit and again.started_at == 0  # paging-structure caches gone too
    tlb.flush_all()
    assert not walk(mem, pt.root, 0x1000_0000, tlb=tlb).tlb_hit


def test_invlpg_drops_only_that_page_and_the_structure_caches():
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000)
    pt.map(0x1000_1000, 0x0060_0000)
    tlb = TLB()
    walk(mem, pt.root, 0x1000_0000, tlb=tlb)
    walk(mem, pt.root, 0x1000_1000, tlb=tlb)
    tlb.invlpg(0x1000_0abc)
    assert tlb.lookup(0x1000_0000) is None
    assert walk(mem, pt.root, 0x1000_1000, tlb=tlb).tlb_hit
    w = walk(mem, pt.root, 0x1000_0000, tlb=tlb)
    assert not w.tlb_hit and w.started_at == 0


def test_tlb_lookup_matches_page_size():
    tlb = TLB()
    tlb.entries[0x4000_0000] = (0x20_0000, MiB2, True, False)
    assert tlb.lookup(0x4000_0000 + 0x1F_F000) == (0x20_0000, MiB2, True, False)
    assert tlb.lookup(0x4020_0000) is None


def test_read_only_tlb_entry_does_not_let_a_write_through():
    """SDM 4.10.2.2: the TLB entry holds the rights of the translation; a write it denies
    faults from the entry (no walk), and the fault drops the entry (SDM 4.10.4.1)."""
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000, rw=False)
    tlb = TLB()
    walk(mem, pt.root, 0x1000_0000, tlb=tlb)
    w = walk(mem, pt.root, 0x1000_0000, write=True, tlb=tlb)
    assert w.fault == Fault("#PF", 0x1000_0000, PF_P | PF_WR) and w.steps == ()
    assert tlb.lookup(0x1000_0000) is None


def test_write_after_a_read_sets_the_dirty_flag_even_with_a_tlb():
    """SDM 4.8: the first write through a translation sets D in the leaf, even if the
    translation was cached by a read (hardware walks again to set it)."""
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000)
    tlb = TLB()
    walk(mem, pt.root, 0x1000_0000, tlb=tlb)
    walk(mem, pt.root, 0x1000_0000, write=True, tlb=tlb)
    assert mem.read_u64(entry_addr(mem, pt.root, 0x1000_0000, 3)) & D
    assert walk(mem, pt.root, 0x1000_0000, write=True, tlb=tlb).tlb_hit  # now cached dirty


def test_read_only_upper_level_is_remembered_by_the_structure_cache():
    """A walk that starts from a paging-structure-cache entry still honours R/W=0 above it
    (SDM 4.10.3.1: the cache entries hold the combined R/W of the levels they skip)."""
    mem, pt = space()
    pt.map(0x1000_0000, 0x0050_0000)
    pt.map(0x1000_1000, 0x0060_0000)
    pd_entry = entry_addr(mem, pt.root, 0x1000_0000, 2)
    mem.write_u64(pd_entry, mem.read_u64(pd_entry) & ~RW, "test")
    tlb = TLB()
    walk(mem, pt.root, 0x1000_0000, tlb=tlb)           # fills the caches with a read
    w = walk(mem, pt.root, 0x1000_1000, write=True, tlb=tlb)
    assert w.fault == Fault("#PF", 0x1000_1000, PF_P | PF_WR)


@pytest.mark.parametrize("accessed", [True, False])
def test_4k_only_map_range_writes_the_same_tables_as_one_map_per_page(accessed):
    """map_range with 4 KiB pages fills whole page tables in one store (debug_pagealloc): the
    bytes must be those of 512 single map() calls."""
    length = (4 << 20) + 0x3000  # two whole PTs and an unaligned tail
    mem1, mem2 = PhysicalMemory(64 << 20), PhysicalMemory(64 << 20)
    pt1 = PageTables(mem1, BumpAllocator(0x100, mem1.nr_frames), accessed=accessed)
    pt2 = PageTables(mem2, BumpAllocator(0x100, mem2.nr_frames), accessed=accessed)
    used = pt1.map_range(DIRECT_MAP + (2 << 20), 2 << 20, length, sizes=(KiB4,), g=True, nx=True)
    for off in range(0, length, KiB4):
        pt2.map(DIRECT_MAP + (2 << 20) + off, (2 << 20) + off, g=True, nx=True)
    assert used == {KiB4: length // KiB4}
    assert pt1.tables == pt2.tables  # same frames, allocated in the same order
    for pfn in pt1.tables:
        assert (mem1.read_page(pfn) == mem2.read_page(pfn)).all()
    for off in (0, 0x1000, (2 << 20) + 0x5000, length - 8):
        w1 = walk(mem1, pt1.root, DIRECT_MAP + (2 << 20) + off, set_accessed=False)
        w2 = walk(mem2, pt2.root, DIRECT_MAP + (2 << 20) + off, set_accessed=False)
        assert w1.paddr == w2.paddr == (2 << 20) + off
        assert [s.entry for s in w1.steps] == [s.entry for s in w2.steps]
