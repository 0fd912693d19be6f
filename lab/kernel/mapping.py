"""The kernel's page tables: the direct map built at boot and the static text mapping.

Sources: arch/x86/mm/init.c (init_mem_mapping: the ISA range, then RAM ranges only) and
arch/x86/mm/init_64.c (kernel_physical_mapping_init, phys_pud_init / phys_pmd_init: 1 GiB
pages with gbpages, 2 MiB where aligned, 4 KiB at unaligned edges; table frames from the
early allocator), arch/x86/kernel/head_64.S (init_level4_pgt, level3_kernel_pgt and
level2_kernel_pgt: static tables in .data mapping the first 512 MiB at __START_KERNEL_map).
"""
from __future__ import annotations

from ..hw.memory import PhysicalMemory
from ..hw.pagetable import PageTables
from ..hw.paging import make_entry
from .layout import PAGE_OFFSET, PAGE_SIZE, Layout, Memblock, direct_va

KERNEL_IMAGE_SIZE = 512 << 20


def text_mapping(memory: PhysicalMemory, layout: Layout, agent: str) -> None:
    """head_64.S: PML4[511] -> level3_kernel_pgt[510] -> level2_kernel_pgt, 2 MiB global pages
    over physical 0..512 MiB.  Static: the same bytes in every boot of one build."""
    img = layout.image
    pml4 = img.init_level4_pgt * PAGE_SIZE
    l3 = img.level3_kernel_pgt * PAGE_SIZE
    l2 = img.level2_kernel_pgt * PAGE_SIZE
    memory.write_u64(pml4 + 511 * 8, make_entry(l3, a=True), agent)
    memory.write_u64(l3 + 510 * 8, make_entry(l2, a=True), agent)
    for i in range(KERNEL_IMAGE_SIZE >> 21):
        if (i << 21) >= memory.size:
            break
        memory.write_u64(l2 + i * 8, make_entry(i << 21, ps=True, g=True, a=True, d=True), agent)


def kernel_physical_mapping_init(memory: PhysicalMemory, layout: Layout, memblock: Memblock,
                                 agent: str, gbpages: bool = False) -> dict[int, int]:
    """Map every RAM range of the e820 map at PAGE_OFFSET (init_mem_mapping): the ISA range
    first, then each usable range; new PDPT/PD/PT frames come from ``memblock``, top-down.
    Returns pages used per page size."""
    def alloc() -> int:
        pfn = memblock.alloc(1)
        layout.table_frames.append(pfn)
        return pfn

    pt = PageTables(memory, alloc, agent, root=layout.image.init_level4_pgt * PAGE_SIZE)
    sizes = ((1 << 30) if gbpages else (1 << 21), 1 << 21, 1 << 12)
    used: dict[int, int] = {}
    ranges = [(0, 0x100000)] + [(e.start, e.end) for e in layout.e820 if e.usable and e.start >= 0x100000]
    # memory_map_top_down: the highest ranges are mapped first (their tables come first)
    for start, end in [ranges[0]] + sorted(ranges[1:], reverse=True):
        got = pt.map_range(direct_va(start), start, end - start, sizes=tuple(sorted(set(sizes))), g=True, nx=True)
        for k, v in got.items():
            used[k] = used.get(k, 0) + v
    for pfn in layout.table_frames:
        layout.roles[pfn] = "direct-map table"
    return used


def direct_map_va(pa: int) -> int:
    return PAGE_OFFSET + pa
