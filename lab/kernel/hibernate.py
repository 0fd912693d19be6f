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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..hw.memory import ZERO, ContentTag, PhysicalMemory, TaggedRange, stride_runs
from .intervals import Intervals, normalize, subtract
from .layout import Layout
from .pagealloc import allocation_order


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
                    image.pieces.append(r.part(a, b))
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


PBES_PER_LINKED_PAGE = (4096 - 8) // 24  # LINKED_PAGE_DATA_SIZE / sizeof(struct pbe) = 170


class Pblist(Sequence):
    """restore_pblist, head first (descending original frame), as two arrays: ``safe[k]`` is
    the safe page holding the image page of ``orig[k]``.  Indexing gives :class:`Pbe`."""

    def __init__(self, safe: np.ndarray, orig: np.ndarray) -> None:
        self.safe = safe
        self.orig = orig
        self._asc = orig[::-1]  # ascending, for index_of

    def __len__(self) -> int:
        return len(self.orig)

    def __getitem__(self, k):  # noqa: ANN001, ANN204
        if isinstance(k, slice):
            return [Pbe(int(a), int(o)) for a, o in zip(self.safe[k], self.orig[k])]
        return Pbe(int(self.safe[k]), int(self.orig[k]))

    def index_of(self, pfn: int) -> int | None:
        """Position of the pbe whose original frame is ``pfn`` (None: not on the list)."""
        i = int(np.searchsorted(self._asc, pfn))
        if i < len(self._asc) and int(self._asc[i]) == pfn:
            return len(self.orig) - 1 - i
        return None

    def positions_array(self, pfns: np.ndarray) -> np.ndarray:
        """Positions of those of ``pfns`` that are on the list (vectorized index_of)."""
        i = np.searchsorted(self._asc, pfns)
        ok = (i < len(self._asc)) & (self._asc[np.minimum(i, len(self._asc) - 1)] == pfns)
        return len(self.orig) - 1 - i[ok]

    def positions(self, pfns: Iterable[int]) -> list[int]:
        return self.positions_array(np.fromiter(pfns, dtype=np.int64)).tolist()


class SafePages:
    """get_safe_page() after the load: the allocator's next frames that are neither in use nor
    image frames (get_image_page(PG_SAFE) frees, i.e. keeps aside, the unsafe ones)."""

    def __init__(self, order: Iterator[np.ndarray], unsafe: np.ndarray, taken: np.ndarray) -> None:
        self._order = order
        self._unsafe = unsafe  # bitmap: image frames
        self._buf: list[int] = []
        self.taken = Taken(taken)  # every safe page handed out, the pbe ones first

    def get(self) -> int:
        while not self._buf:
            block = next(self._order, None)
            if block is None:
                raise ValueError("out of safe pages: RAM too small for the restore kernel plus the image")
            self._buf = block[~self._unsafe[block]].tolist()[::-1]
        pfn = self._buf.pop()
        self.taken.append(pfn)
        return pfn


class Taken(Sequence):
    """The safe pages handed out, in order: the load's (one array, never turned into a list of
    hundreds of thousands of ints) and then each ``get()``'s."""

    def __init__(self, first: np.ndarray) -> None:
        self._first = first
        self._more: list[int] = []

    def append(self, pfn: int) -> None:
        self._more.append(pfn)

    def __len__(self) -> int:
        return len(self._first) + len(self._more)

    def __getitem__(self, k):  # noqa: ANN001, ANN204
        if isinstance(k, slice):
            return np.asarray(self)[k].tolist()
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError("safe page index out of range")
        return int(self._first[k]) if k < len(self._first) else self._more[k - len(self._first)]

    def __iter__(self):  # noqa: ANN204
        yield from self._first.tolist()
        yield from self._more

    def __array__(self, dtype=None, copy=None):  # noqa: ANN001, ANN204
        arr = np.concatenate([np.asarray(self._first, dtype=np.int64), np.asarray(self._more, dtype=np.int64)])
        return arr if dtype is None else arr.astype(dtype)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (Sequence, np.ndarray)) and len(other) == len(self) and list(self) == list(other)


@dataclass
class Loaded:
    pblist: Pblist  # restore_pblist, head first (descending original frame)
    direct_pages: int
    safe: SafePages
    chain_pages: list[int] = field(default_factory=list)  # the linked pages holding the pbes
    unsafe_allocated: int = 0  # allocated_unsafe_pages

    def counts(self) -> dict[str, int]:
        """What the run summary reports about the load."""
        return {"direct": self.direct_pages, "via_pbe": len(self.pblist),
                "safe_pages": len(self.pblist) + len(self.chain_pages), "pbe_pages": len(self.chain_pages),
                "allocated_unsafe": self.unsafe_allocated}


def _sorted_member(sorted_arr: np.ndarray, values: np.ndarray) -> np.ndarray:
    i = np.searchsorted(sorted_arr, values)
    return (i < len(sorted_arr)) & (sorted_arr[np.minimum(i, len(sorted_arr) - 1)] == values)


def _take(order: Iterator[np.ndarray], count: int, image: np.ndarray, safe_only: bool,  # image: a bitmap
          leftover: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``count`` allocations in allocator order: (image frames hit, safe frames got).  With
    ``safe_only`` image frames do not count (get_image_page(PG_SAFE) skips them)."""
    hits: list[np.ndarray] = []
    safes: list[np.ndarray] = []
    need = count
    while need > 0:
        block = leftover.pop() if leftover else next(order, None)
        if block is None:
            raise ValueError("out of memory while preallocating the image (prepare_image: -ENOMEM); "
                             "use a larger ram or a smaller image")
        unsafe = image[block]
        if safe_only:
            cum = np.cumsum(~unsafe)
            cut = int(np.searchsorted(cum, need)) + 1 if cum[-1] >= need else len(block)
        else:
            cut = min(need, len(block))
        part, unsafe = block[:cut], unsafe[:cut]
        if cut < len(block):
            leftover.append(block[cut:])
        hits.append(part[unsafe])
        safes.append(part[~unsafe])
        need -= len(safes[-1]) if safe_only else cut
    cat = lambda xs: np.concatenate(xs) if xs else np.empty(0, np.int64)  # noqa: E731
    return cat(hits), cat(safes)


def load_image(memory: PhysicalMemory, image: Image, restore: Layout) -> Loaded:
    """snapshot_write_next() with prepare_image() and get_buffer() (kernel/power/snapshot.c,
    v4.0 to v4.7 alike):

    * prepare_image(): reserve DIV_ROUND_UP(n, PBES_PER_LINKED_PAGE) safe pages for the pbe
      chain (get_image_page(PG_SAFE): image frames it meets are kept as allocated_unsafe_pages),
      then preallocate n - allocated_unsafe_pages pages with get_zeroed_page(): a page that is
      an image frame is marked forbidden+free, any other goes on safe_pages_list (pushed at the
      head); then the reserved pages are freed for chain_alloc();
    * get_buffer(), image pages in ascending frame order: straight into the original frame if
      the preallocation took it (forbidden and free), otherwise into the head of
      safe_pages_list with a pbe pushed at the head of restore_pblist.

    The allocator's order is :mod:`.pagealloc`'s.  pbe structs are not written into their
    chain pages (docs/fidelity.md)."""
    used = restore.memblock.intervals()
    free = subtract(normalize(restore.memblock.usable_pfns()), used)
    image_iv = image.intervals()
    image_pfns = np.concatenate([np.arange(s, e, dtype=np.int64) for s, e in image_iv]) if image_iv \
        else np.empty(0, np.int64)
    n = len(image_pfns)
    is_image = np.zeros(memory.nr_frames, dtype=bool)  # the "unsafe" bitmap (mark_unsafe_pages)
    is_image[image_pfns] = True
    order = allocation_order(free)
    leftover: list[np.ndarray] = []
    n_chain = -(-n // PBES_PER_LINKED_PAGE)
    unsafe_hit, chain = _take(order, n_chain, is_image, True, leftover)
    direct_hit, safe_list = _take(order, n - len(unsafe_hit), is_image, False, leftover)
    is_direct = np.zeros(memory.nr_frames, dtype=bool)  # each frame is allocated once: a bitmap sorts them
    is_direct[unsafe_hit] = True
    is_direct[direct_hit] = True
    direct = np.flatnonzero(is_direct).astype(np.int64, copy=False)
    pbe_orig_asc = image_pfns[~is_direct[image_pfns]]
    del is_direct
    k = len(pbe_orig_asc)
    if len(safe_list) < k:  # cannot happen: every allocation is one or the other
        raise AssertionError("preallocation gave fewer safe pages than pbes")
    # safe_pages_list is LIFO: the last safe page allocated serves the first (lowest) image page
    safe_for_asc = safe_list[::-1][:k]
    _fill_direct(memory, image, direct)
    _fill_safe(memory, image, pbe_orig_asc, safe_for_asc)
    pblist = Pblist(safe_for_asc[::-1].copy(), pbe_orig_asc[::-1].copy())
    is_taken = np.zeros(memory.nr_frames, dtype=bool)
    is_taken[safe_list] = True
    is_taken[chain] = True
    for s, e in _runs(np.flatnonzero(is_taken).astype(np.int64, copy=False)):
        restore.memblock.reserve(s, e - s)
    del is_taken
    for pfn in chain.tolist():
        restore.roles[pfn] = "pbe chain page (safe page)"
    # the allocator hands each frame out once, so what is left of its order holds none of the
    # frames taken so far: only image frames are unsafe there
    safe = SafePages(_chain(leftover, order), is_image, safe_list)
    return Loaded(pblist, len(direct), safe, chain.tolist(), len(unsafe_hit))


def _chain(leftover: list[np.ndarray], order: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    while leftover:
        yield leftover.pop()
    yield from order


def _runs(sorted_pfns: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of consecutive frames in a sorted array."""
    if len(sorted_pfns) == 0:
        return []
    cut = np.flatnonzero(np.diff(sorted_pfns) != 1) + 1
    starts = np.r_[sorted_pfns[:1], sorted_pfns[cut]]
    stops = np.r_[sorted_pfns[cut - 1] + 1, sorted_pfns[-1:] + 1]
    return list(zip(starts.tolist(), stops.tolist()))


def _fill_direct(memory: PhysicalMemory, image: Image, direct: np.ndarray) -> None:
    """Image pages loaded straight into their original frames."""
    runs = _runs(direct)
    starts = [p.start_pfn for p in image.pieces]
    for s, e in runs:  # each run against the pieces it overlaps
        k = max(0, bisect_right(starts, s) - 1)
        while k < len(image.pieces) and image.pieces[k].start_pfn < e:
            piece = image.pieces[k]
            a, b = max(s, piece.start_pfn), min(e, piece.start_pfn + piece.count)
            if a < b:
                memory.put_range(piece.part(a, b), "loader")
            k += 1
    for pfn, content in image.pages.items():
        i = int(np.searchsorted(direct, pfn))
        if i < len(direct) and direct[i] == pfn:
            memory.write_page(pfn, content, "loader")


def _fill_safe(memory: PhysicalMemory, image: Image, orig_asc: np.ndarray, safe: np.ndarray) -> None:
    """Image pages loaded into safe pages: runs of consecutive image frames that landed in
    consecutive safe pages become one range each (all stored at once: ``put_ranges``)."""
    n = len(orig_asc)
    if n == 0:
        return
    # the piece each frame falls in (the last piece starting at or before it): orig_asc is
    # sorted, so count the piece starts at or before each frame
    starts = np.array([p.start_pfn for p in image.pieces], dtype=np.int64)
    first = np.bincount(np.searchsorted(orig_asc, starts, side="left"), minlength=n + 1)[:n]
    piece_of = np.cumsum(first) - 1
    single = np.zeros(n, dtype=bool)  # frames the image holds one by one (few)
    if image.pages:
        keys = np.array(sorted(image.pages), dtype=np.int64)
        at = np.searchsorted(orig_asc, keys)
        hit = at < n
        hit[hit] = orig_asc[at[hit]] == keys[hit]
        single[at[hit]] = True
    cut = np.flatnonzero((piece_of[1:] != piece_of[:-1]) | single[1:] | single[:-1]) + 1
    edges = sorted(set(stride_runs(orig_asc, safe)) | set(cut.tolist()))
    stores: list = []
    pieces = image.pieces
    ea = np.array(edges[:-1], dtype=np.int64)
    eb = np.array(edges[1:], dtype=np.int64)
    rows = zip(ea.tolist(), eb.tolist(), single[ea].tolist(), piece_of[ea].tolist(), safe[ea].tolist(),
               safe[eb - 1].tolist(), orig_asc[ea].tolist(), orig_asc[eb - 1].tolist())
    for a, b, one_by_one, k, safe_a, safe_last, orig_a, orig_last in rows:
        if one_by_one:
            stores += [(s, image.pages[o]) for o, s in zip(orig_asc[a:b].tolist(), safe[a:b].tolist())]
            continue
        piece = pieces[k]
        if b - a == 1 or safe_a > safe_last:  # descending safe pages: the usual case
            stores.append(TaggedRange(safe_last, b - a, piece.kind, piece.seed, piece.index_of(orig_last), -piece.step))
        else:
            stores.append(TaggedRange(safe_a, b - a, piece.kind, piece.seed, piece.index_of(orig_a), piece.step))
    memory.put_ranges(stores, "loader")


def verify(memory: PhysicalMemory, image: Image) -> list[int]:
    """Frames whose content differs from the image (empty: the restore is exact).  Whole runs
    that memory still describes with the image's own tagged range are compared by description;
    frames written one by one are compared one by one."""
    bad: list[int] = []
    overridden = memory.overridden_sorted()
    mem_ranges = list(memory.ranges())
    starts = [r.start_pfn for r in mem_ranges]
    for piece in image.pieces:
        pfn, end = piece.start_pfn, piece.start_pfn + piece.count
        while pfn < end:
            i = bisect_right(starts, pfn) - 1
            r = mem_ranges[i] if i >= 0 else None
            if r is not None and pfn < r.start_pfn + r.count and r.same_content(piece.part(pfn, end)):
                stop = min(end, r.start_pfn + r.count)
                k = bisect_right(overridden, pfn - 1)
                while k < len(overridden) and overridden[k] < stop:  # frames with bytes of their own
                    q = overridden[k]
                    if not memory.same_content(q, piece.tag_of(q)):
                        bad.append(q)
                    k += 1
                pfn = stop
            else:
                if not memory.same_content(pfn, piece.tag_of(pfn)):
                    bad.append(pfn)
                pfn += 1
    for pfn, content in image.pages.items():
        if not memory.same_content(pfn, content):
            bad.append(pfn)
    return sorted(bad)

