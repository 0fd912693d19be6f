"""The kernel's page tables: the direct map built at boot and the static text mapping.

Sources: arch/x86/mm/init.c (init_mem_mapping: the ISA range, then RAM ranges only) and
arch/x86/mm/init_64.c (kernel_physical_mapping_init, phys_pud_init / phys_pmd_init: 1 GiB
pages with gbpages, 2 MiB where aligned, 4 KiB at unaligned edges; table frames from the
early allocator), arch/x86/kernel/head_64.S (init_level4_pgt, level3_kernel_pgt and
level2_kernel_pgt: static tables in .data mapping the first 512 MiB at __START_KERNEL_map).
"""
from __future__ import annotations

from typing import Callable

from ..hw.memory import PhysicalMemory
from ..hw.pagetable import PageTables
from ..hw.paging import make_entry
from .layout import PAGE_SIZE, PMD_PAGES, Layout, Memblock, direct_va

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
                                 agent: str, gbpages: bool = False, debug_pagealloc: bool = False) -> dict[int, int]:
    """init_mem_mapping() (arch/x86/mm/init.c, v4.0-v4.7): map the ISA range, then RAM
    top-down (memory_map_top_down): first the highest free 2 MiB-aligned 2 MiB block, then
    steps below it, each starting at round_down(last_start - 1, step_size); step_size grows
    by get_new_step_size() (x256) once as much RAM is mapped as one step; the tail above the
    first block last.  Tables come from the brk pgt_buf
    while it lasts (alloc_low_pages), then from memblock, top-down inside what is mapped
    already.  Only e820 RAM is mapped.  Returns pages used per page size."""
    brk = list(layout.image.brk_pgt_buf)
    brk_top = layout.image.brk_pgt_buf.stop * PAGE_SIZE
    mapped_top = [0]
    can_use_brk = [True]

    def alloc() -> int:
        if brk and can_use_brk[0]:
            pfn = brk.pop(0)
        else:
            pfn = memblock.alloc(1, below=mapped_top[0] or None)
        layout.table_frames.append(pfn)
        return pfn

    pt = PageTables(memory, alloc, agent, root=layout.image.init_level4_pgt * PAGE_SIZE)
    # debug_pagealloc: 4 KiB pages only (init_mem_mapping leaves page_size_mask empty)
    sizes = (1 << 12,) if debug_pagealloc else tuple(sorted({(1 << 30) if gbpages else (1 << 21), 1 << 21, 1 << 12}))
    used: dict[int, int] = {}
    ram = [(e.start, e.end) for e in layout.e820 if e.usable]

    def map_ram(start: int, end: int) -> int:
        """init_range_memory_mapping(): the RAM parts of [start, end); brk page tables only
        for a range that does not overlap the brk buffer (can_use_brk_pgt)."""
        brk_end = (brk[0] if brk else layout.image.brk_pgt_buf.stop) * PAGE_SIZE
        can_use_brk[0] = max(start, brk_end) >= min(end, brk_top)
        size = 0
        for rs, re_ in ram:
            a, b = max(start, rs, 0x100000 if start >= 0x100000 else 0), min(end, re_)
            if a < b:
                for k, v in pt.map_range(direct_va(a), a, b - a, sizes=sizes, g=True, nx=True).items():
                    used[k] = used.get(k, 0) + v
                mapped_top[0] = max(mapped_top[0], b)
                size += b - a
        return size

    for k, v in pt.map_range(direct_va(0), 0, 0x100000, sizes=sizes, g=True, nx=True).items():
        used[k] = used.get(k, 0) + v  # init_memory_mapping(0, ISA_END_ADDRESS)
    top = max(e for _, e in ram)
    real_end = _top_free_2m(layout, memblock, top)
    step = 1 << 21
    last = real_end
    mapped = 0
    while last > 0x100000:  # memory_map_top_down(ISA_END_ADDRESS, end)
        start = max(0x100000, _round_down(last - 1, step)) if last > step else 0x100000
        mapped += map_ram(start, last)
        last = start
        if mapped >= step:  # get_new_step_size(): step << (PMD_SHIFT - PAGE_SHIFT - 1)
            step <<= 21 - 12 - 1
    map_ram(real_end, top)
    names = {0: "PDPT", 1: "PD", 2: "PT"}
    levels = _table_levels(memory, layout)
    for pfn in layout.table_frames:
        level = levels.get(pfn, -1)
        where = " in brk" if pfn in layout.image.brk_pgt_buf else ""
        layout.roles[pfn] = f"direct-map {names.get(level, 'table')}{where}"
    return used


def _top_free_2m(layout: Layout, memblock: Memblock, top: int) -> int:
    """memblock_find_in_range(ISA_END, end, PMD_SIZE, PMD_SIZE) + PMD_SIZE: the end of the
    highest free, 2 MiB-aligned 2 MiB block of RAM."""
    for rs, re_ in sorted(((e.start, e.end) for e in layout.e820 if e.usable), reverse=True):
        end = re_ & ~((1 << 21) - 1)
        while end - (1 << 21) >= max(rs, 0x100000):
            s = (end - (1 << 21)) // PAGE_SIZE
            if not any(memblock.is_reserved(p) for p in range(s, s + 512)):
                return end
            end -= 1 << 21
    raise ValueError("no free 2 MiB block of RAM to start the direct map")


def _table_levels(memory: PhysicalMemory, layout: Layout) -> dict[int, int]:
    """Frame -> 0 for a PDPT hung off the PML4's direct-map slot, 1 for a PD, 2 for a PT (by
    who points at it), in one walk over the direct map's tables."""
    levels: dict[int, int] = {}
    tables = set(layout.table_frames)
    frontier = [(layout.image.init_level4_pgt, -1)]
    while frontier:
        table, lvl = frontier.pop()
        arr = memory.read_page(table)
        present = arr[272:273] if lvl < 0 else arr
        for e in present.tolist():
            if not e & 1 or (e & 0x80 and lvl >= 0):
                continue
            nxt = (e & 0x000FFFFFFFFFF000) >> 12
            if nxt in tables and nxt not in levels:
                levels[nxt] = lvl + 1
                if lvl + 1 < 2:
                    frontier.append((nxt, lvl + 1))
    return levels


def _round_down(x: int, align: int) -> int:
    return x & ~(align - 1)


def mark_rodata_ro(memory: PhysicalMemory, layout: Layout, alloc_page: Callable[[], int], agent: str) -> int | None:
    """arch/x86/mm/init_64.c mark_rodata_ro() after ab76f7b4ab23 ("x86/mm: Set NX on gap
    between __ex_table and rodata", v4.6): set_memory_ro(_text .. rodata end), then
    set_memory_nx(text_end, all_end) with text_end = PFN_ALIGN(__stop___ex_table) and all_end
    the 2 MiB-rounded end of the image.  The 2 MiB text page holding text_end cannot be both
    executable and NX: cpa splits it (split_large_page) into a 4 KiB table allocated at run time
    by the page allocator, so its frame differs from boot to boot.  Returns that frame (None
    when text_end is 2 MiB aligned and nothing is split)."""
    img = layout.image
    l2 = img.level2_kernel_pgt * PAGE_SIZE
    text_end = img.text.stop
    all_end = -(-img.bss.stop // PMD_PAGES) * PMD_PAGES
    split = None
    for big in range(img.phys_base // PMD_PAGES, all_end // PMD_PAGES):
        first = big * PMD_PAGES
        ro = first < img.rodata.stop
        if first < text_end < first + PMD_PAGES:  # the page around the gap: split it
            split = alloc_page()
            table = split * PAGE_SIZE
            for i in range(512):
                pfn = first + i
                memory.write_u64(table + i * 8, make_entry(pfn * PAGE_SIZE, rw=False, g=True, a=True,
                                                           nx=pfn >= text_end), agent)
            memory.write_u64(l2 + big * 8, make_entry(table, rw=True, a=True), agent)
            layout.table_frames_text.append(split)
            layout.roles[split] = "text-mapping PT (mark_rodata_ro split)"
            continue
        memory.write_u64(l2 + big * 8, make_entry(first * PAGE_SIZE, rw=not ro, ps=True, g=True, a=True, d=True,
                                                  nx=first >= text_end), agent)
    return split
