"""Where one kernel instance keeps things: the e820 map, the memblock-style boot allocator and
the placement of the kernel image, direct-map tables, idle stacks, per-CPU areas and the
real-mode trampoline.

Sources: arch/x86/include/asm/page_64_types.h (__PAGE_OFFSET 0xffff880000000000 and
__START_KERNEL_map 0xffffffff80000000 before memory KASLR, v4.7; THREAD_SIZE 16 KiB),
arch/x86/include/asm/thread_info.h (thread_info at the base of the stack), mm/memblock.c
(top-down allocation), arch/x86/realmode/init.c (trampoline below 1 MiB).
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np

PAGE_SIZE = 4096
PAGE_OFFSET = 0xFFFF880000000000  # direct map base
START_KERNEL_MAP = 0xFFFFFFFF80000000  # kernel text mapping base
THREAD_SIZE = 16 * 1024
THREAD_PAGES = THREAD_SIZE // PAGE_SIZE
PERCPU_PAGES = 8  # per-CPU area: 3 IST stacks (#DF, NMI, #MC) of 2 pages + 2 of data
IST_DF, IST_NMI, IST_MC = 1, 2, 3
LOW_MEM_LIMIT = 1 << 20
FOUR_GIB = 1 << 32


def direct_va(pa: int) -> int:
    """The direct-map address of a physical address (arch/x86/include/asm/page.h)."""
    return PAGE_OFFSET + pa


@dataclass(frozen=True)
class E820Entry:
    start: int
    end: int  # exclusive
    usable: bool

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start or self.start % PAGE_SIZE or self.end % PAGE_SIZE:
            raise ValueError(f"e820 entry [{self.start:#x}, {self.end:#x}) must be page aligned and non-empty")


def e820_for(ram_bytes: int, hole: tuple[int, int] | None = None) -> tuple[E820Entry, ...]:
    """A PC memory map: the first 640 KiB, then RAM from 1 MiB, with an optional reserved hole
    (e.g. the PCI window below 4 GiB) whose RAM is not usable."""
    entries = [E820Entry(0x1000, 0x9F000, True), E820Entry(0x9F000, 0x100000, False)]
    if hole is None:
        entries.append(E820Entry(0x100000, ram_bytes, True))
    else:
        lo, hi = hole
        if not 0x100000 < lo < hi <= ram_bytes:
            raise ValueError(f"memory hole [{lo:#x}, {hi:#x}) must lie inside RAM above 1 MiB")
        entries += [E820Entry(0x100000, lo, True), E820Entry(lo, hi, False)]
        if hi < ram_bytes:
            entries.append(E820Entry(hi, ram_bytes, True))
    return tuple(entries)


def punch_holes(e820: tuple[E820Entry, ...], holes: tuple[tuple[int, int], ...]) -> tuple[E820Entry, ...]:
    """Mark ``holes`` (page-aligned [start, end)) reserved, splitting usable entries."""
    out = list(e820)
    for lo, hi in holes:
        if lo % PAGE_SIZE or hi % PAGE_SIZE or hi <= lo:
            raise ValueError(f"hole [{lo:#x}, {hi:#x}) must be page aligned and non-empty")
        nxt = []
        for e in out:
            if not e.usable or e.end <= lo or e.start >= hi:
                nxt.append(e)
                continue
            if e.start < lo:
                nxt.append(E820Entry(e.start, lo, True))
            nxt.append(E820Entry(max(lo, e.start), min(hi, e.end), False))
            if hi < e.end:
                nxt.append(E820Entry(hi, e.end, True))
        out = nxt
    return tuple(out)


class Memblock:
    """Top-down boot allocator over the usable e820 ranges (mm/memblock.c,
    memblock_find_in_range_node with bottom_up false).  ``reserved`` holds what is in use as
    sorted, merged [start, end) frame intervals."""

    def __init__(self, e820: tuple[E820Entry, ...], limit: int) -> None:
        self.e820 = e820
        self.limit = limit
        self._starts: list[int] = []
        self._ends: list[int] = []

    def usable_pfns(self) -> list[tuple[int, int]]:
        return [(e.start // PAGE_SIZE, e.end // PAGE_SIZE) for e in self.e820 if e.usable]

    def is_reserved(self, pfn: int) -> bool:
        i = bisect_right(self._starts, pfn) - 1
        return i >= 0 and pfn < self._ends[i]

    def free_run(self, start: int, end: int) -> tuple[int, int]:
        """The first run of free frames in [start, end), as (first, stop); empty if none."""
        while start < end:
            i = bisect_right(self._starts, start) - 1
            if i >= 0 and start < self._ends[i]:
                start = self._ends[i]
                continue
            break
        if start >= end:
            return start, start
        j = bisect_right(self._starts, start)
        return start, min(end, self._starts[j]) if j < len(self._starts) else end

    def free(self, start: int, count: int) -> None:
        """memblock_free / free_init_pages: [start, start + count) is free again."""
        end = start + count
        out_s: list[int] = []
        out_e: list[int] = []
        for s, e in zip(self._starts, self._ends):
            if e <= start or s >= end:
                out_s.append(s)
                out_e.append(e)
                continue
            if s < start:
                out_s.append(s)
                out_e.append(start)
            if e > end:
                out_s.append(end)
                out_e.append(e)
        self._starts, self._ends = out_s, out_e

    def reserve(self, start: int, count: int) -> None:
        end = start + count
        i = bisect_right(self._starts, start) - 1
        if i >= 0 and self._ends[i] >= start:
            start = self._starts[i]
            end = max(end, self._ends[i])
            del self._starts[i], self._ends[i]
        j = bisect_right(self._starts, start)
        while j < len(self._starts) and self._starts[j] <= end:
            end = max(end, self._ends[j])
            del self._starts[j], self._ends[j]
        self._starts.insert(j, start)
        self._ends.insert(j, end)

    def alloc(self, count: int = 1, align: int = 1, below: int | None = None) -> int:
        """``count`` contiguous free frames, the highest that fit under ``below`` (a physical
        address, default the allocator's limit); returns the first frame."""
        top = (self.limit if below is None else below) // PAGE_SIZE
        for lo, hi in sorted(self.usable_pfns(), reverse=True):
            hi = min(hi, top)
            cand = (hi - count) // align * align
            while cand >= lo:
                i = bisect_right(self._starts, cand + count - 1) - 1
                if i >= 0 and self._ends[i] > cand:  # collides with the interval i
                    cand = (self._starts[i] - count) // align * align
                    continue
                self.reserve(cand, count)
                return cand
        raise ValueError(f"out of memory: no {count} free frame(s) under {top * PAGE_SIZE:#x}")

    def intervals(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends))

    def reserved_count(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends))


PMD_PAGES = 512  # frames in a 2 MiB page


@dataclass
class KernelImage:
    """The kernel binary's sections at their physical frames (same binary -> same frames).

    arch/x86/kernel/vmlinux.lds.S (x86-64): .text (ending with __ex_table), then .rodata from
    the next 2 MiB boundary (X86_ALIGN_RODATA_BEGIN), then .data and .bss (ending with the brk
    area).  The gap between __stop___ex_table and __start_rodata is freed by mark_rodata_ro()."""

    phys_base: int  # first frame
    text_pages: int
    data_pages: int
    bss_pages: int
    rodata_pages: int = 64

    @property
    def text(self) -> range:
        return range(self.phys_base, self.phys_base + self.text_pages)

    @property
    def gap(self) -> range:
        """PFN_ALIGN(__stop___ex_table) up to __start_rodata (2 MiB aligned)."""
        return range(self.text.stop, -(-self.text.stop // PMD_PAGES) * PMD_PAGES)

    @property
    def rodata(self) -> range:
        return range(self.gap.stop, self.gap.stop + self.rodata_pages)

    @property
    def data(self) -> range:
        return range(self.rodata.stop, self.rodata.stop + self.data_pages)

    @property
    def bss(self) -> range:
        return range(self.data.stop, self.data.stop + self.bss_pages)

    @property
    def frames(self) -> range:
        return range(self.phys_base, self.bss.stop)

    # fixed places in .data and .bss (like symbols of one build)
    @property
    def init_level4_pgt(self) -> int:
        return self.data.start

    @property
    def level3_kernel_pgt(self) -> int:
        return self.data.start + 1

    @property
    def level2_kernel_pgt(self) -> int:
        return self.data.start + 2

    @property
    def idt_table(self) -> int:
        return self.data.start + 3

    @property
    def empty_zero_page(self) -> int:
        return self.bss.start

    @property
    def brk_pgt_buf(self) -> range:
        """INIT_PGT_BUF_SIZE: the first 6 page-table pages come from the brk area at the end of
        .bss (arch/x86/mm/init.c early_alloc_pgt_buf)."""
        return range(self.bss.stop - 6, self.bss.stop)

    def text_va(self, pfn: int) -> int:
        return START_KERNEL_MAP + pfn * PAGE_SIZE


@dataclass
class Layout:
    """Everything one boot placed, by frame.  ``roles`` names each special frame."""

    name: str
    e820: tuple[E820Entry, ...]
    image: KernelImage
    memblock: Memblock
    trampoline: int  # frame of the real-mode trampoline (SIPI vector)
    table_frames: list[int] = field(default_factory=list)  # direct-map PDPT/PD/PT frames
    table_frames_text: list[int] = field(default_factory=list)  # text-mapping PTs made at run time
    idle_stacks: dict[int, int] = field(default_factory=dict)  # cpu -> first frame
    percpu: dict[int, int] = field(default_factory=dict)  # cpu -> first frame
    roles: dict[int, str] = field(default_factory=dict)
    ti_flags: int = 0x08  # offsetof(struct thread_info, flags) in this build (lab.kernel.version)

    def mwait_ptr(self, cpu: int) -> int:
        """&current_thread_info()->flags of CPU ``cpu``'s idle task, a direct-map address."""
        return direct_va(self.idle_stacks[cpu] * PAGE_SIZE + self.ti_flags)

    def stack_top(self, cpu: int) -> int:
        return direct_va((self.idle_stacks[cpu] + THREAD_PAGES) * PAGE_SIZE) - 64

    def ist_top(self, cpu: int, ist: int) -> int:
        base = self.percpu[cpu] * PAGE_SIZE
        return direct_va(base + ist * 2 * PAGE_SIZE)


def boot_noise(rng: np.random.Generator, mean_pages: int) -> int:
    """Pages of early allocations that differ from boot to boot (initrd size, command line,
    ACPI tables copied): the reason two boots put their tables in different frames."""
    if mean_pages <= 0:
        return 0
    return int(rng.integers(mean_pages // 2, mean_pages * 3 // 2 + 1))
