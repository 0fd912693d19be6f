"""The page allocator of a freshly booted kernel: in which order ``get_zeroed_page()`` and
``alloc_pages()`` hand out free frames.

Source: mm/page_alloc.c (v4.x).  memblock hands free RAM to the buddy allocator in ascending
order (free_all_bootmem -> __free_pages_memory, MAX_ORDER-1 blocks of 4 MiB), and
__free_one_page() puts each block at the head of its free list, so the highest block is handed
out first (__rmqueue_smallest takes the list head); expand() splits it and returns its lowest
page, keeping the upper halves, so order-0 allocations climb through a block before moving to
the next lower one.  The highest zone (Normal, above 4 GiB) comes before DMA32, which that
order gives already.  Simplified (docs/fidelity.md): per-CPU page lists, migrate types and the
boot-time allocations made after memblock are not modelled.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .intervals import Intervals

MAX_ORDER_PAGES = 1 << 10  # MAX_ORDER 11: the largest buddy block, 4 MiB


def allocation_order(free: Intervals) -> Iterator[np.ndarray]:
    """The free frames (``free``: sorted, disjoint [start, stop) intervals) in the order the
    allocator hands them out, as one array per 4 MiB block: blocks from the top of memory
    down, ascending inside a block."""
    for s, e in reversed(free):
        hi = e
        while hi > s:
            lo = max(s, (hi - 1) & ~(MAX_ORDER_PAGES - 1))
            yield np.arange(lo, hi, dtype=np.int64)
            hi = lo


def first_frames(free: Intervals, count: int) -> np.ndarray:
    """The first ``count`` frames ``allocation_order`` gives (fewer if memory runs out)."""
    out: list[np.ndarray] = []
    have = 0
    # blocks that straddle two intervals are cut in two by the loop above; merge per block
    pending: list[np.ndarray] = []
    block = None
    for arr in allocation_order(free):
        b = int(arr[0]) >> 10
        if block is not None and b != block:
            merged = np.concatenate(pending[::-1])
            out.append(merged)
            have += len(merged)
            pending = []
            if have >= count:
                break
        block = b
        pending.append(arr)
    if pending and have < count:
        out.append(np.concatenate(pending[::-1]))
    if not out:
        return np.empty(0, dtype=np.int64)
    return np.concatenate(out)[:count]
