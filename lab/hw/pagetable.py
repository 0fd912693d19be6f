"""Building 4-level page tables in physical memory (what an OS does; the hardware only walks).

Source: SDM vol. 3A 4.5 for the formats.  Used by the kernel model's
``kernel_physical_mapping_init`` and by lessons that build a small setup by hand.
"""
from __future__ import annotations

from typing import Callable

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
        eaddr = table + ((va >> SHIFTS[leaf_level]) & 511) * 8
        self.memory.write_u64(eaddr, make_entry(pa, rw=rw, us=us, g=g, nx=nx, ps=leaf_level < 3,
                                                   a=self.accessed, d=self.accessed), self.agent)

    def map_range(self, va: int, pa: int, length: int, *, sizes: tuple[int, ...] = (1 << 21, 1 << 12),
                  **flags: bool) -> dict[int, int]:
        """Map ``length`` bytes using the largest of ``sizes`` that alignment allows at each
        point (as ``kernel_physical_mapping_init`` does).  Returns pages used per size."""
        used: dict[int, int] = {}
        end = va + length
        while va < end:
            for size in sorted(sizes, reverse=True):
                if va % size == 0 and pa % size == 0 and va + size <= end:
                    break
            else:
                raise ValueError(f"cannot map {va:#x}: not 4 KiB aligned")
            self.map(va, pa, size, **flags)
            used[size] = used.get(size, 0) + 1
            va += size
            pa += size
        return used
