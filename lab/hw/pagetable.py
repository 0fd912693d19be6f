"""Building 4-level page tables in physical memory (what an OS does; the hardware only walks).

Source: SDM vol. 3A 4.5 for the formats.  Used by the kernel model's
``kernel_physical_mapping_init`` and by lessons that build a small setup by hand.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .memory import PAGE_SHIFT, PhysicalMemory
from .paging import ADDR_MASK, PS, P, SHIFTS, make_entry

SIZE_LEVEL = {1 << 30: 1, 1 << 21: 2, 1 << 12: 3}


class PageTables:
    """One address space.  ``alloc()`` returns a free frame number for a new table; tables
    are zeroed when allocated.  Entries are written with 8-byte stores by ``agent``."""

    def __init__(self, memory: PhysicalMemory, alloc: Callable[[], int], agent: str = "boot",
                 root: int | None = None, accessed: bool = True) -> None:
        self.memory = memory
        self.alloc = alloc
        self.agent = agent
        self.accessed = accessed  # write A and D set, as Linux's _KERNPG_TABLE and __PAGE_KERNEL do
        self.tables: list[int] = []  # frames of every table, root first
        self.root = self._new_table() if root is None else root

    def _new_table(self) -> int:
        pfn = self.alloc()
        from .memory import ZERO  # local: keeps the import list short for readers
        self.memory.write_page(pfn, ZERO, self.agent)
        self.tables.append(pfn)
        return pfn << PAGE_SHIFT

    def map(self, va: int, pa: int, size: int = 1 << 12, *, rw: bool = True, us: bool = False,
            g: bool = False, nx: bool = False) -> None:
        """Map one page of ``size`` (4 KiB, 2 MiB or 1 GiB) at ``va`` to ``pa``."""
        if size not in SIZE_LEVEL:
            raise ValueError(f"page size must be 4 KiB, 2 MiB or 1 GiB, got {size:#x}")
        if va % size or pa % size:
            raise ValueError(f"va {va:#x} and pa {pa:#x} must both be aligned to the page size {size:#x}")
        leaf_level = SIZE_LEVEL[size]
        table = self._leaf_table(va, leaf_level, us)
        eaddr = table + ((va >> SHIFTS[leaf_level]) & 511) * 8
        self.memory.write_u64(eaddr, make_entry(pa, rw=rw, us=us, g=g, nx=nx, ps=leaf_level < 3,
                                                   a=self.accessed, d=self.accessed), self.agent)

    def _leaf_table(self, va: int, leaf_level: int, us: bool) -> int:
        """The table at ``leaf_level`` for ``va``, creating the tables above it as needed."""
        table = self.root
        for level in range(leaf_level):
            eaddr = table + ((va >> SHIFTS[level]) & 511) * 8
            e = self.memory.read_u64(eaddr)
            if not e & P:
                nxt = self._new_table()
                self.memory.write_u64(eaddr, make_entry(nxt, rw=True, us=us, a=self.accessed, d=self.accessed), self.agent)
                table = nxt
            elif e & PS:
                raise ValueError(f"va {va:#x}: a larger page already maps this range")
            else:
                table = e & ADDR_MASK
        return table

    def _map_run(self, va: int, pa: int, size: int, n: int, *, rw: bool = True, us: bool = False,
                 g: bool = False, nx: bool = False) -> None:
        """``n`` consecutive pages of ``size`` in one table: the same entries as ``n`` calls of
        :meth:`map`, written as one store of the table."""
        if n == 1:
            self.map(va, pa, size, rw=rw, us=us, g=g, nx=nx)
            return
        leaf_level = SIZE_LEVEL[size]
        table = self._leaf_table(va, leaf_level, us)
        first = (va >> SHIFTS[leaf_level]) & 511
        flags = make_entry(0, rw=rw, us=us, g=g, nx=nx, ps=leaf_level < 3, a=self.accessed, d=self.accessed)
        arr = self.memory.read_page(table >> PAGE_SHIFT)
        arr[first:first + n] = np.arange(n, dtype=np.uint64) * np.uint64(size) + np.uint64(pa) + np.uint64(flags)
        self.memory.write_page(table >> PAGE_SHIFT, arr, self.agent)

    def _fill_table(self, va: int, pa: int, *, rw: bool = True, us: bool = False, g: bool = False,
                    nx: bool = False) -> bool:
        """Map a whole 2 MiB-aligned run with 4 KiB pages by writing its new PT in one store of
        512 entries (same bytes as 512 single maps).  False if the PT exists already."""
        table = self.root
        for level in range(2):
            eaddr = table + ((va >> SHIFTS[level]) & 511) * 8
            e = self.memory.read_u64(eaddr)
            if not e & P:
                nxt = self._new_table()
                self.memory.write_u64(eaddr, make_entry(nxt, rw=True, us=us, a=self.accessed, d=self.accessed),
                                      self.agent)
                table = nxt
            elif e & PS:
                return False
            else:
                table = e & ADDR_MASK
        eaddr = table + ((va >> SHIFTS[2]) & 511) * 8
        if self.memory.read_u64(eaddr) & P:
            return False
        pt = self._new_table()
        flags = make_entry(0, rw=rw, us=us, g=g, nx=nx, a=self.accessed, d=self.accessed)
        entries = np.arange(512, dtype=np.uint64) * np.uint64(1 << 12) + np.uint64(pa) + np.uint64(flags)
        self.memory.write_page(pt >> 12, entries, self.agent)
        self.memory.write_u64(eaddr, make_entry(pt, rw=True, us=us, a=self.accessed, d=self.accessed), self.agent)
        return True

    def map_range(self, va: int, pa: int, length: int, *, sizes: tuple[int, ...] = (1 << 21, 1 << 12),
                  **flags: bool) -> dict[int, int]:
        """Map ``length`` bytes using the largest of ``sizes`` that alignment allows at each
        point (as ``kernel_physical_mapping_init`` does).  Returns pages used per size."""
        used: dict[int, int] = {}
        end = va + length
        while va < end:
            if (1 << 21) not in sizes and 1 << 12 in sizes and va % (1 << 21) == 0 and pa % (1 << 21) == 0 \
                    and va + (1 << 21) <= end and self._fill_table(va, pa, **flags):
                used[1 << 12] = used.get(1 << 12, 0) + 512
                va += 1 << 21
                pa += 1 << 21
                continue
            ordered = sorted(sizes, reverse=True)
            for k, size in enumerate(ordered):
                if va % size == 0 and pa % size == 0 and va + size <= end:
                    break
            else:
                raise ValueError(f"cannot map {va:#x}: not 4 KiB aligned")
            # as many pages of this size as fit before the end, the end of their table, or the
            # next boundary where a larger page could start: written in one store
            limit = min(end, (va | (size * 512 - 1)) + 1)
            if k:
                bigger = ordered[k - 1]
                limit = min(limit, (va | (bigger - 1)) + 1)
            n = max(1, (limit - va) // size)
            self._map_run(va, pa, size, n, **flags)
            used[size] = used.get(size, 0) + n
            va += size * n
            pa += size * n
        return used
