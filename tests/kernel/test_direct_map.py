"""kernel_physical_mapping_init (arch/x86/mm/init.c init_mem_mapping, init_64.c
phys_pud_init/phys_pmd_init, v4.7): every usable e820 byte is mapped at PAGE_OFFSET + its
physical address, 2 MiB pages where alignment allows and 4 KiB pages at unaligned edges; the
ISA range (first MiB) is mapped whole; holes are not mapped; table frames come from the brk
pgt_buf first, then from memblock.
"""
from __future__ import annotations

import numpy as np
import pytest

from lab.hw.memory import PhysicalMemory
from lab.hw.paging import NX, PS, RW, US, G, walk
from lab.kernel.instance import BootParams, Kernel
from lab.kernel.layout import PAGE_OFFSET, PAGE_SIZE, direct_va, e820_for, punch_holes
from lab.scenario import Config

MiB, GiB = 1 << 20, 1 << 30
BLOCK = 2 * MiB
HOLE = (0x2345_6000, 0x2400_1000)  # unaligned at both ends


def boot(e820, size: int, seed: int = 0, **params) -> Kernel:
    params.setdefault("nr_cpus", 2)
    return Kernel("test", PhysicalMemory(size), e820, BootParams(**params), np.random.default_rng(seed))


def translate(k: Kernel, pa: int):
    return walk(k.memory, k.cr3, direct_va(pa), set_accessed=False)


def mapped(e820, pa: int) -> bool:
    """Linux maps the whole ISA range and every usable e820 byte above it."""
    return pa < MiB or any(e.usable and e.start <= pa < e.end for e in e820)


@pytest.fixture(scope="module")
def holey() -> Kernel:
    """1 GiB with a firmware hole whose ends are not 2 MiB aligned."""
    return boot(punch_holes(e820_for(GiB), (HOLE,)), GiB)


@pytest.fixture(scope="module")
def big() -> Kernel:
    """The default machine's memory map: 8 GiB, RAM above 3 GiB moved above 4 GiB."""
    c = Config.from_preset("default")
    return boot(c.e820(), c.phys_size, nr_cpus=8, early_noise_exact=1000)


def test_random_addresses_translate_to_themselves(holey: Kernel, big: Kernel) -> None:
    rng = np.random.default_rng(1234)
    for k in (holey, big):
        size = k.memory.size
        for pa in rng.integers(0, size + GiB, 3000):
            pa = int(pa) & ~7
            w = translate(k, pa)
            if pa < size and mapped(k.layout.e820, pa):
                assert w.fault is None, f"{pa:#x} does not translate: {w.fault}"
                assert w.paddr == pa
            else:
                assert w.fault is not None and w.fault.vector == "#PF", f"{pa:#x} translates to {w.paddr}"


def test_every_edge_page_of_the_hole(holey: Kernel) -> None:
    """Page by page across both unaligned ends of the hole: mapped exactly where RAM is, in
    4 KiB pages inside the 2 MiB blocks that the hole cuts."""
    lo_block, hi_block = HOLE[0] & ~(BLOCK - 1), HOLE[1] & ~(BLOCK - 1)
    for block in (lo_block, hi_block):
        for pa in range(block, block + BLOCK, PAGE_SIZE):
            w = translate(holey, pa + 0x18)
            if HOLE[0] <= pa < HOLE[1]:
                assert w.fault is not None, f"{pa:#x} is in the hole but translates"
            else:
                assert w.paddr == pa + 0x18 and w.page_size == PAGE_SIZE, (hex(pa), w.page_size)


def test_2m_pages_where_aligned(holey: Kernel) -> None:
    e820 = holey.layout.e820
    for block in range(0, GiB, BLOCK):
        inside = [e for e in e820 if e.usable and e.start <= block and block + BLOCK <= e.end]
        w = translate(holey, block + 0x1F_F000)
        if inside and block >= MiB:
            assert w.page_size == BLOCK, f"block {block:#x}: page size {w.page_size:#x}"
        elif mapped(e820, block + 0x1F_F000):
            assert w.page_size == PAGE_SIZE, f"block {block:#x}"
        else:
            assert w.fault is not None


def test_isa_range_is_mapped_whole(holey: Kernel) -> None:
    """init_memory_mapping(0, ISA_END_ADDRESS): the first MiB in 4 KiB pages, the e820 hole
    at 0x9f000..0x100000 (VGA, BIOS) included."""
    for pa in (0, 0x1000, 0x9E000, 0x9F000, 0xA0000, 0xFF000):
        w = translate(holey, pa)
        assert w.paddr == pa and w.page_size == PAGE_SIZE
    assert translate(holey, MiB).page_size == PAGE_SIZE  # [1 MiB, 2 MiB) shares the ISA block


def test_page_counts_match_the_e820_map(holey: Kernel) -> None:
    two_m = four_k = 0
    for e in holey.layout.e820:
        if not e.usable or e.end <= MiB:
            continue
        s = max(e.start, MiB)
        a, b = -(-s // BLOCK) * BLOCK, e.end // BLOCK * BLOCK
        if a < b:
            two_m += (b - a) // BLOCK
            four_k += (a - s + e.end - b) // PAGE_SIZE
        else:
            four_k += (e.end - s) // PAGE_SIZE
    four_k += MiB // PAGE_SIZE  # the ISA range
    assert holey.direct_map_pages == {PAGE_SIZE: four_k, BLOCK: two_m}


def test_leaf_entries_are_kernel_data_mappings(holey: Kernel) -> None:
    for pa in (0x5000, 0x1234_5000, HOLE[0] - PAGE_SIZE, HOLE[1], GiB - PAGE_SIZE):
        w = translate(holey, pa)
        leaf = w.steps[-1].entry
        assert leaf & RW and leaf & G and leaf & NX and not leaf & US, hex(leaf)
        assert bool(leaf & PS) == (w.page_size == BLOCK)


def test_the_pci_hole_is_not_mapped(big: Kernel) -> None:
    for pa in (3 * GiB, 3 * GiB + 0x1234_5000, 4 * GiB - PAGE_SIZE):
        assert translate(big, pa).fault is not None
    assert translate(big, 3 * GiB - 8).paddr == 3 * GiB - 8
    assert translate(big, 4 * GiB).paddr == 4 * GiB
    assert translate(big, big.memory.size - 8).paddr == big.memory.size - 8
    assert translate(big, big.memory.size).fault is not None


def test_report_machine_maps_the_unaligned_tail_in_4k_pages() -> None:
    """The report's e820: RAM below 4 GiB ends at 0xba9f7000, so 0xba800000..0xba9f7000 needs
    a PT; 0xffff8800ba800010 is mapped by PD entry 468 of the PDPT entry 2's PD, in 4 KiB."""
    c = Config.from_preset("report-2016")
    k = boot(c.e820(), c.phys_size, nr_cpus=4, early_noise_exact=300)
    w = translate(k, 0xBA800010)
    assert w.paddr == 0xBA800010 and w.page_size == PAGE_SIZE
    assert [(s.level, s.index) for s in w.steps] == [(0, 272), (1, 2), (2, 468), (3, 0)]
    assert translate(k, 0xBA9F6FF8).paddr == 0xBA9F6FF8
    assert translate(k, 0xBA9F7000).fault is not None
    assert translate(k, 0xBA7FF000).page_size == BLOCK


def test_brk_pgt_buf_is_used_first(holey: Kernel, big: Kernel) -> None:
    for k in (holey, big):
        brk = list(k.layout.image.brk_pgt_buf)
        tables = k.layout.table_frames
        assert tables[0] == brk[0]  # the first table (the PDPT under PML4 slot 272)
        from_brk = [t for t in tables if t in brk]
        assert from_brk == brk[: len(from_brk)]  # handed out in order
        # the PDPT hanging off init_level4_pgt[272] is the first brk frame
        pml4e = k.memory.read_u64(k.cr3 + 272 * 8)
        assert (pml4e >> 12) & ((1 << 40) - 1) == brk[0]
    # with 8 GiB, the step that covers the brk buffer itself cannot use it (can_use_brk_pgt):
    # its tables come from memblock, top-down; the other steps take brk frames in order
    tables = big.layout.table_frames
    brk = list(big.layout.image.brk_pgt_buf)
    rest = [t for t in tables if t not in brk]
    assert rest and rest == sorted(rest, reverse=True)
    assert all(t > brk[-1] for t in rest)
    assert all(big.layout.memblock.is_reserved(t) for t in tables)
    assert all(t not in big.layout.image.frames for t in rest)


def test_memblock_tables_sit_just_below_the_top_free_2m_block(big: Kernel) -> None:
    """The first RAM range mapped is the highest free 2 MiB block; tables for it come from
    memblock below what is mapped: right under that block's end, above everything else."""
    rest = [t for t in big.layout.table_frames if t not in big.layout.image.brk_pgt_buf]
    top = max(rest) + 1
    assert top % (BLOCK // PAGE_SIZE) == 0  # the end of a 2 MiB block
    early = [p for p, role in big.layout.roles.items() if role.startswith("early reservation")]
    assert min(early) >= top  # the early reservations are above it


def test_table_roles_name_their_level(big: Kernel) -> None:
    roles = big.layout.roles
    kinds = [roles[t] for t in big.layout.table_frames]
    assert kinds.count("direct-map PDPT in brk") == 1
    assert all(r.startswith(("direct-map PDPT", "direct-map PD", "direct-map PT")) for r in kinds)
    pdpt = big.layout.table_frames[0]
    # every present PDPT entry of the direct map points at a table whose role says PD
    for i in range(512):
        e = big.memory.read_u64(pdpt * PAGE_SIZE + i * 8)
        if e & 1:
            assert roles[(e >> 12) & ((1 << 40) - 1)] in ("direct-map PD", "direct-map PD in brk"), i


def test_kernel_text_mapping(holey: Kernel) -> None:
    img = holey.layout.image
    for pfn in (img.text.start, img.text.start + 17, img.idt_table, img.bss.stop - 1):
        w = walk(holey.memory, holey.cr3, img.text_va(pfn), set_accessed=False)
        assert w.paddr == pfn * PAGE_SIZE and w.steps[0].index == 511


def test_debug_pagealloc_maps_in_4k_only() -> None:
    k = boot(e820_for(256 * MiB), 256 * MiB, debug_pagealloc=True)
    assert set(k.direct_map_pages) == {PAGE_SIZE}
    # the ISA range whole plus every page above 1 MiB: every page of this machine
    assert k.direct_map_pages[PAGE_SIZE] == 256 * MiB // PAGE_SIZE
    for pa in (0x20_0000, 0x0234_5678, 256 * MiB - 8):
        w = translate(k, pa)
        assert w.paddr == pa and w.page_size == PAGE_SIZE


def test_gbpages_map_aligned_gigabytes_in_1g() -> None:
    c = Config.from_preset("default")
    k = boot(c.e820(), c.phys_size, nr_cpus=8, gbpages=True, early_noise_exact=1000)
    assert k.direct_map_pages.get(GiB, 0) >= 4
    assert translate(k, 5 * GiB + 0x1234_5000).page_size == GiB
    assert translate(k, 5 * GiB + 0x1234_5000).paddr == 5 * GiB + 0x1234_5000
    assert translate(k, 3 * GiB).fault is not None


def test_direct_va() -> None:
    assert direct_va(0xBA800010) == 0xFFFF8800BA800010
    assert direct_va(0) == PAGE_OFFSET
