"""Hibernation: the snapshot the image kernel wrote, and the restore kernel's way back to it.

Sources: kernel/power/snapshot.c (saveable pages; the loader's get_buffer(): a page whose
original frame is free goes straight into it, otherwise into a safe page recorded in a pbe
pushed at the head of restore_pblist; get_safe_page()), kernel/power/hibernate.c
(resume_target_kernel), arch/x86/power/hibernate_64.c (swsusp_arch_resume,
set_up_temporary_mappings, relocate_restore_code), arch/x86/power/hibernate_asm_64.S
(core_restore_code, restore_registers).
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
import numpy as np

from ..hw.memory import ZERO, ContentTag, PhysicalMemory, TaggedRange
from .intervals import Intervals, count, intersect, normalize, subtract
from .layout import Layout


@dataclass
class Image:
    """The saved pages: runs of frames whose content a tagged range describes, and frames saved
    one by one (tables, stacks, anything written with 8-byte stores)."""

    pieces: list[TaggedRange] = field(default_factory=list)
    pages: dict[int, ContentTag | np.ndarray] = field(default_factory=dict)
    restore_cr3: int = 0  # the image kernel's page-table root, from the image header
    _starts: list[int] = field(default_factory=list, repr=False)  # pieces' first frames, for lookups

    @property
    def nr_pages(self) -> int:
        return sum(p.count for p in self.pieces) + len(self.pages)

    def intervals(self) -> Intervals:
        return normalize([(p.start_pfn, p.start_pfn + p.count) for p in self.pieces]
                         + [(pfn, pfn + 1) for pfn in self.pages])

    def content(self, pfn: int) -> ContentTag | np.ndarray | None:
        if pfn in self.pages:
            return self.pages[pfn]
        if len(self._starts) != len(self.pieces):
            self._starts = [p.start_pfn for p in self.pieces]
        i = bisect_right(self._starts, pfn) - 1
        if i >= 0 and pfn < self.pieces[i].start_pfn + self.pieces[i].count:
            return self.pieces[i].tag_of(pfn)
        return None


def snapshot(memory: PhysicalMemory, used: Intervals) -> Image:
    """swsusp_save(): copy every saveable (in-use) frame.  Free frames are not saved."""
    image = Image()
    overrides = sorted(memory.overridden())
    ranges = list(memory.ranges())
    range_starts = [r.start_pfn for r in ranges]
    for s, e in used:
        lo = bisect_right(overrides, s - 1)
        hi = bisect_right(overrides, e - 1)
        own = overrides[lo:hi]
        for pfn in own:
            image.pages[pfn] = memory.content(pfn)
        # the rest: pieces of tagged ranges between the overridden frames, zero elsewhere
        gaps = subtract([(s, e)], [(p, p + 1) for p in own])
        for gs, ge in gaps:
            covered: Intervals = []
            i = max(0, bisect_right(range_starts, gs) - 1)
            while i < len(ranges) and ranges[i].start_pfn < ge:
                r = ranges[i]
                a, b = max(gs, r.start_pfn), min(ge, r.start_pfn + r.count)
                if a < b:
                    image.pieces.append(TaggedRange(a, b - a, r.kind, r.seed, r.first_index + a - r.start_pfn))
                    covered.append((a, b))
                i += 1
            for zs, ze in subtract([(gs, ge)], covered):
                for pfn in range(zs, ze):
                    image.pages[pfn] = ZERO
    image.pieces.sort(key=lambda p: p.start_pfn)
    return image


@dataclass(frozen=True)
class Pbe:
    """struct pbe: where the page waits (a safe page) and where it belongs."""

    address: int  # frame of the safe page
    orig_address: int  # original frame


class SafePages:
    """get_safe_page(): frames free in the restore kernel that no image page needs, handed out
    from the top of memory."""

    def __init__(self, usable: Intervals, used: Intervals, image: Intervals) -> None:
        self._free = subtract(subtract(normalize(usable), used), image)
        self.taken: list[int] = []

    def available(self) -> int:
        return count(self._free) - len(self.taken)

    def get(self) -> int:
        while self._free:
            s, e = self._free[-1]
            if e > s:
                self._free[-1] = (s, e - 1)
                self.taken.append(e - 1)
                return e - 1
            self._free.pop()
        raise ValueError("out of safe pages: RAM too small for the restore kernel plus the image")


@dataclass
class Loaded:
    pblist: list[Pbe]  # restore_pblist, head first (descending original frame)
    direct_pages: int
    safe: SafePages


def load_image(memory: PhysicalMemory, image: Image, restore: Layout) -> Loaded:
    """snapshot_write_next() / get_buffer(): read the image in ascending frame order; a page
    whose frame the restore kernel does not use goes into place, any other into a safe page
    with a pbe pushed at the head of restore_pblist."""
    used = restore.memblock.intervals()
    usable = restore.memblock.usable_pfns()
    safe = SafePages(usable, used, image.intervals())
    pblist: list[Pbe] = []
    direct = 0

    def to_safe(pfn: int, content: ContentTag | np.ndarray) -> None:
        page = safe.get()
        memory.write_page(page, content, "loader")
        pblist.append(Pbe(page, pfn))

    items: list[tuple[int, TaggedRange | None]] = [(p.start_pfn, p) for p in image.pieces]
    items += [(pfn, None) for pfn in image.pages]
    items.sort(key=lambda t: t[0])
    for start, piece in items:
        if piece is None:
            content = image.pages[start]
            if restore.memblock.is_reserved(start):
                to_safe(start, content)
            else:
                memory.write_page(start, content, "loader")
                direct += 1
            continue
        span = [(piece.start_pfn, piece.start_pfn + piece.count)]
        for s, e in sorted(subtract(span, used) + [(a, b) for a, b in intersect(span, used)]):
            if restore.memblock.is_reserved(s):
                for pfn in range(s, e):
                    to_safe(pfn, piece.tag_of(pfn))
            else:
                memory.fill_range(s, e - s, piece.kind, piece.seed, piece.first_index + s - piece.start_pfn,
                                  agent="loader")
                direct += e - s
    pblist.reverse()
    for s, e in normalize([(page, page + 1) for page in safe.taken]):
        restore.memblock.reserve(s, e - s)
    return Loaded(pblist, direct, safe)


def verify(memory: PhysicalMemory, image: Image) -> list[int]:
    """Frames whose content differs from the image (empty: the restore is exact).  Whole runs
    that memory still describes with the image's own tagged range are compared by description;
    frames written one by one are compared one by one."""
    bad: list[int] = []
    overridden = memory.overridden()
    mem_ranges = list(memory.ranges())
    starts = [r.start_pfn for r in mem_ranges]
    for piece in image.pieces:
        pfn, end = piece.start_pfn, piece.start_pfn + piece.count
        while pfn < end:
            i = bisect_right(starts, pfn) - 1
            r = mem_ranges[i] if i >= 0 else None
            if r is not None and pfn < r.start_pfn + r.count and r.kind == piece.kind and r.seed == piece.seed \
                    and r.first_index - r.start_pfn == piece.first_index - piece.start_pfn:
                stop = min(end, r.start_pfn + r.count)
                for q in range(pfn, stop):
                    if q in overridden and not memory.same_content(q, piece.tag_of(q)):
                        bad.append(q)
                pfn = stop
            else:
                if not memory.same_content(pfn, piece.tag_of(pfn)):
                    bad.append(pfn)
                pfn += 1
    for pfn, content in image.pages.items():
        if not memory.same_content(pfn, content):
            bad.append(pfn)
    return sorted(bad)

