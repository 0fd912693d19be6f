"""Property tests for paging (lab/hw/paging.py, pagetable.py): entries round-trip, walks agree
with a plain dict of the mapping, and a TLB-backed walk agrees with an uncached one."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwkit import BumpAllocator
from lab.hw.memory import PhysicalMemory
from lab.hw.pagetable import PageTables
from lab.hw.paging import (NX, PF_P, PF_WR, PS, RW, TLB, US, D, decode, is_canonical, make_entry, walk)

KiB4, MiB2, GiB1 = 1 << 12, 1 << 21, 1 << 30
FLAG_NAMES = ("p", "rw", "us", "pwt", "pcd", "a", "d", "g", "nx")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- entry encoding ------------------------------------------------------------------------
@st.composite
def entries(draw):
    phys_bits = draw(st.integers(36, 52))
    level = draw(st.integers(0, 3))
    ps = draw(st.booleans()) if level in (1, 2) else False
    align = {1: GiB1, 2: MiB2}[level] if ps else KiB4
    addr = draw(st.integers(0, (1 << phys_bits) // align - 1)) * align
    flags = {name: draw(st.booleans()) for name in FLAG_NAMES}
    return phys_bits, level, ps, addr, flags


@SETTINGS
@given(entries())
def test_make_entry_then_decode_gives_the_same_address_and_flags(case):
    phys_bits, level, ps, addr, flags = case
    e = make_entry(addr, ps=ps, phys_bits=phys_bits, **flags)
    d = decode(e, level, phys_bits)
    assert d.raw == e and d.level == level
    assert d.addr == addr
    expected = {n.upper() for n, on in flags.items() if on} | ({"PS"} if ps else set())
    assert set(d.flags) == expected
    assert d.present is flags["p"]
    assert d.reserved == 0


@SETTINGS
@given(st.integers(0, (1 << 34) - 1), st.booleans())
def test_ps_in_a_pml4_entry_is_always_reserved(pfn, present):
    e = make_entry(pfn << 12, p=present, ps=True, phys_bits=46)
    assert decode(e, 0, 46).reserved == (PS if present else 0)


# -- random mappings -----------------------------------------------------------------------
PML4_SLOTS = (0, 1, 255, 256, 272, 511)
SMALL = (0, 1, 2, 511)  # indices below the PML4: neighbours share tables, 511 is the edge


def canonical(va: int) -> int:
    return va | (0xFFFF << 48) if va >> 47 & 1 else va


@st.composite
def mappings(draw):
    """{va base: (size, pa, rw, g, nx)} with 4K, 2M and 1G pages nested in a few 1 GiB slots,
    so that tables are shared and every level can be missing."""
    pages: dict[int, tuple[int, int, bool, bool, bool]] = {}

    def page(size: int) -> tuple[int, int, bool, bool, bool]:
        pa = draw(st.integers(0, (1 << 40) // size - 1)) * size
        return size, pa, draw(st.booleans()), draw(st.booleans()), draw(st.booleans())

    slots = draw(st.sets(st.tuples(st.sampled_from(PML4_SLOTS), st.sampled_from(SMALL)),
                         min_size=1, max_size=4))
    for p4, p3 in sorted(slots):
        va1 = canonical(p4 << 39 | p3 << 30)
        if draw(st.integers(0, 3)) == 0:
            pages[va1] = page(GiB1)
            continue
        for p2 in sorted(draw(st.sets(st.sampled_from(SMALL), min_size=1, max_size=3))):
            va2 = va1 | p2 << 21
            if draw(st.booleans()):
                pages[va2] = page(MiB2)
                continue
            for p1 in sorted(draw(st.sets(st.sampled_from(SMALL), min_size=1, max_size=3))):
                pages[va2 | p1 << 12] = page(KiB4)
    return pages


def build(pages, accessed: bool) -> tuple[PhysicalMemory, PageTables]:
    mem = PhysicalMemory(64 << 20)
    pt = PageTables(mem, BumpAllocator(0x10, mem.nr_frames), accessed=accessed)
    for va, (size, pa, rw, g, nx) in pages.items():
        pt.map(va, pa, size, rw=rw, g=g, nx=nx)
    return mem, pt


def queries(draw_fn, pages, n: int) -> list[int]:
    """Addresses inside mapped pages, near them (same 1 GiB slot, maybe unmapped) and anywhere."""
    bases = sorted(pages)
    out = []
    for _ in range(n):
        kind = draw_fn(st.integers(0, 3))
        if kind <= 1:
            base = draw_fn(st.sampled_from(bases))
            out.append(base + draw_fn(st.integers(0, pages[base][0] - 1)) // 8 * 8)
        elif kind == 2:
            base = draw_fn(st.sampled_from(bases)) & ~(GiB1 - 1)
            out.append(base | draw_fn(st.integers(0, GiB1 - 1)) // 8 * 8)
        else:
            out.append(draw_fn(st.integers(0, (1 << 64) - 1)) // 8 * 8)
    return out


def reference(pages, va: int, write: bool):
    """(paddr, fault vector, error code, page size) from the plain dict."""
    if not is_canonical(va):
        return None, "#GP", 0, 0
    for size in (KiB4, MiB2, GiB1):
        hit = pages.get(va & ~(size - 1))
        if hit is not None and hit[0] == size:
            _, pa, rw, _, _ = hit
            if write and not rw:
                return None, "#PF", PF_P | PF_WR, 0
            return pa + (va & (size - 1)), None, None, size
    return None, "#PF", PF_WR if write else 0, 0


def observed(w):
    return (w.paddr, None if w.fault is None else w.fault.vector,
            None if w.fault is None else w.fault.error_code, w.page_size)


@SETTINGS
@given(mappings(), st.booleans(), st.data())
def test_walk_agrees_with_a_dict_of_the_mapping(pages, accessed, data):
    mem, pt = build(pages, accessed)
    for va in queries(data.draw, pages, 12):
        write = data.draw(st.booleans())
        w = walk(mem, pt.root, va, write=write)
        assert observed(w) == reference(pages, va, write), hex(va)
        if w.fault is not None and w.fault.vector == "#PF":
            assert w.fault.address == va


@SETTINGS
@given(mappings(), st.data())
def test_tlb_backed_walk_agrees_with_an_uncached_walk(pages, data):
    mem, pt = build(pages, accessed=False)
    # some upper-level entries read-only, so cached R/W must be combined correctly
    upper = sorted({s.table + s.index * 8 for va in pages
                    for s in walk(mem, pt.root, va, set_accessed=False).steps[:-1]})
    read_only = data.draw(st.lists(st.booleans(), min_size=len(upper), max_size=len(upper)))
    for ea, ro in zip(upper, read_only):
        if ro:
            mem.write_u64(ea, mem.read_u64(ea) & ~RW, "test")
    tlb = TLB()
    for va in queries(data.draw, pages, 25):
        op = data.draw(st.integers(0, 9))
        if op == 0:
            tlb.invlpg(va)
            continue
        if op == 1:
            tlb.flush_non_global()
            continue
        write = data.draw(st.booleans())
        cached = walk(mem, pt.root, va, write=write, tlb=tlb)
        if write and cached.fault is None:  # SDM 4.8: a write leaves D set in the leaf
            leaf = walk(mem, pt.root, va, set_accessed=False).steps[-1]
            assert leaf.entry & D
        plain = walk(mem, pt.root, va, write=write)
        assert observed(cached) == observed(plain), hex(va)


@SETTINGS
@given(mappings(), st.data())
def test_tlb_enforces_the_same_rights_as_a_walk(pages, data):
    """SDM 4.10.2.2 and 4.10.3.1: the TLB and the paging-structure caches hold the combined
    R/W, U/S and XD of a translation; with tables unchanged, a TLB-backed access gets the same
    answer (translation or #PF error code) as a walk from memory, for any access and any
    CPL and CR0.WP.  EFER.NXE is fixed per run: entries cached while it was 1 are not
    re-checked for the reserved bit 63 if it is cleared (no TLB invalidation on WRMSR)."""
    mem, pt = build(pages, accessed=False)
    upper = sorted({s.table + s.index * 8 for va in pages
                    for s in walk(mem, pt.root, va, set_accessed=False).steps})
    for ea in upper:  # random rights at every level
        clear = data.draw(st.sampled_from((0, RW, US, RW | US)))
        nx = data.draw(st.booleans())
        mem.write_u64(ea, (mem.read_u64(ea) & ~clear) | (NX if nx else 0), "test")
    tlb = TLB()
    nxe = data.draw(st.booleans())
    for va in queries(data.draw, pages, 25):
        access = {name: data.draw(st.booleans()) for name in ("user", "wp")}
        access["nxe"] = nxe
        kind = data.draw(st.sampled_from(("read", "write", "fetch")))
        access.update(write=kind == "write", fetch=kind == "fetch")
        cached = walk(mem, pt.root, va, tlb=tlb, **access)
        plain = walk(mem, pt.root, va, **access)
        assert observed(cached) == observed(plain), (hex(va), access)
