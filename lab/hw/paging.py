"""x86-64 4-level paging: entry encoding, walks with 4 KiB, 2 MiB and 1 GiB pages, access
rights, #PF error codes, A/D updates, and the per-CPU TLB with paging-structure caches.

Source: Intel SDM vol. 3A, ch. 4 "Paging": 4.5 (4-level paging, tables 4-14..4-20 for the
entry formats; bit 63 is XD with IA32_EFER.NXE=1 and reserved without), 4.6 (access rights:
U/S by CPL, R/W with CR0.WP, XD for instruction fetches; SMEP, SMAP and protection keys are
off), 4.7 (page-fault exceptions and the error code), 4.8 (A and D flags), 4.10 (TLBs and
paging-structure caches, invalidation by MOV to CR3, INVLPG and page faults).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .memory import PhysicalMemory

# entry bits (SDM tables 4-14 to 4-20)
P, RW, US, PWT, PCD, A, D, PS, G = (1 << i for i in range(9))
NX = 1 << 63
ADDR_MASK = ((1 << 52) - 1) & ~0xFFF  # bits 51:12

LEVELS = ("PML4", "PDPT", "PD", "PT")
#: bit position of each level's 9-bit index in the linear address
SHIFTS = (39, 30, 21, 12)
PAGE_SIZES = {"1G": 1 << 30, "2M": 1 << 21, "4K": 1 << 12}

# #PF error code bits (SDM 4.7)
PF_P, PF_WR, PF_US, PF_RSVD, PF_ID = 1, 2, 4, 8, 16

# Access rights of a translation (SDM 4.6, 4.10.2.2), as cached with it: R/W of every level
# (logical AND), U/S of every level (AND), no XD at any level (NOT of the OR), and the leaf's
# dirty flag.  R_W and R_U are the entry bits R/W and U/S shifted down by one.
R_W, R_U, R_X, R_D = 1, 2, 4, 8


def needed_rights(*, write: bool, fetch: bool, user: bool, wp: bool, nxe: bool) -> int:
    """The rights an access needs (SDM 4.6.1): user-mode accesses (CPL 3) need U/S=1 at every
    level; a write needs R/W=1 at every level unless it is a supervisor write with CR0.WP=0;
    an instruction fetch needs XD=0 at every level when IA32_EFER.NXE=1 (SMEP off, so a
    supervisor fetch from a user page is allowed; SMAP off, so is a supervisor data access).
    A write also needs the leaf's D flag set, or the walk must set it (SDM 4.8): R_D."""
    need = R_U if user else 0
    if write:
        need |= R_D | (R_W if user or wp else 0)
    if fetch and nxe:
        need |= R_X
    return need


def access_error_code(*, write: bool, user: bool, fetch: bool, nxe: bool) -> int:
    """The #PF error code bits that describe the access (SDM 4.7): W/R for a write, U/S for a
    user-mode access (CPL 3), I/D for an instruction fetch when IA32_EFER.NXE=1 (with 4-level
    paging CR4.PAE=1; SMEP is off, so without NXE the flag stays 0)."""
    return (PF_WR if write else 0) | (PF_US if user else 0) | (PF_ID if fetch and nxe else 0)


_FLAG_NAMES = (("P", P), ("RW", RW), ("US", US), ("PWT", PWT), ("PCD", PCD), ("A", A),
               ("D", D), ("PS", PS), ("G", G), ("NX", NX))


def make_entry(addr: int, *, p: bool = True, rw: bool = True, us: bool = False, pwt: bool = False,
               pcd: bool = False, a: bool = False, d: bool = False, ps: bool = False,
               g: bool = False, nx: bool = False, phys_bits: int = 52) -> int:
    """Encode a paging-structure entry pointing at physical ``addr`` (SDM tables 4-14..4-20)."""
    if addr < 0:
        raise ValueError(f"entry address must be >= 0, got {addr:#x}")
    if addr & 0xFFF:
        raise ValueError(f"entry address {addr:#x} is not 4 KiB aligned")
    if addr >> phys_bits:
        raise ValueError(f"entry address {addr:#x} is beyond the {phys_bits}-bit physical address width")
    e = addr
    for flag, bit in ((p, P), (rw, RW), (us, US), (pwt, PWT), (pcd, PCD), (a, A), (d, D),
                      (ps, PS), (g, G), (nx, NX)):
        if flag:
            e |= bit
    return e


def access_index(*, write: bool, fetch: bool, user: bool, wp: bool, nxe: bool) -> int:
    """Index of an access kind and control state into RIGHTS_NEEDED and ACCESS_CODES (the hot
    paths look the answers up instead of computing them; they inline this formula)."""
    return int(write) | int(fetch) << 1 | int(user) << 2 | int(wp) << 3 | int(nxe) << 4


def _access_of(index: int) -> dict[str, bool]:
    return {name: bool(index >> bit & 1) for bit, name in enumerate(("write", "fetch", "user", "wp", "nxe"))}


#: needed_rights and access_error_code of every access, indexed by access_index()
RIGHTS_NEEDED = tuple(needed_rights(**_access_of(i)) for i in range(32))
ACCESS_CODES = tuple(access_error_code(**{k: v for k, v in _access_of(i).items() if k != "wp"})
                     for i in range(32))


def reserved_mask(level: int, entry: int, phys_bits: int, nxe: bool = True) -> int:
    """Bits that must be zero in a present entry at ``level`` (0=PML4 .. 3=PT) (SDM 4.5,
    tables 4-14..4-20): bits 51:MAXPHYADDR, PS in a PML4E, the low address bits of a large
    page, and bit 63 (XD) when IA32_EFER.NXE=0.  Bits 62:52 are ignored, not reserved."""
    mask = ((1 << 52) - 1) & ~((1 << phys_bits) - 1)  # bits 51:MAXPHYADDR
    if not nxe:
        mask |= NX
    if level == 0:
        mask |= PS  # PS is reserved in a PML4E
    elif entry & PS and level == 1:
        mask |= ((1 << 30) - 1) & ~((1 << 13) - 1)  # 1 GiB page: bits 29:13
    elif entry & PS and level == 2:
        mask |= ((1 << 21) - 1) & ~((1 << 13) - 1)  # 2 MiB page: bits 20:13
    return mask


@dataclass(frozen=True)
class Entry:
    """A decoded entry, for display."""

    raw: int
    level: int
    flags: tuple[str, ...]
    addr: int
    reserved: int  # reserved bits found set (0 when the entry is well formed)

    @property
    def present(self) -> bool:
        return bool(self.raw & P)

    def __str__(self) -> str:
        if not self.present:
            return f"{self.raw:#018x} (not present)"
        flags = "|".join(self.flags)
        rsvd = f" RESERVED {self.reserved:#x}" if self.reserved else ""
        return f"{self.raw:#018x} -> {self.addr:#x} [{flags}]{rsvd}"


def decode(entry: int, level: int = 3, phys_bits: int = 52, nxe: bool = True) -> Entry:
    """Decode ``entry`` as found at ``level`` (0=PML4, 1=PDPT, 2=PD, 3=PT)."""
    if not 0 <= entry < 1 << 64:
        raise ValueError(f"an entry is a 64-bit value, got {entry:#x}")
    if level not in range(4):
        raise ValueError(f"level must be 0 (PML4) to 3 (PT), got {level}")
    flags = tuple(name for name, bit in _FLAG_NAMES if entry & bit)
    if level == 3 or not entry & PS:
        addr = entry & ADDR_MASK & ((1 << phys_bits) - 1)
    else:
        addr = entry & ADDR_MASK & ~((1 << SHIFTS[level]) - 1) & ((1 << phys_bits) - 1)
    return Entry(entry, level, flags, addr,
                 entry & reserved_mask(level, entry, phys_bits, nxe) if entry & P else 0)


def is_canonical(va: int) -> bool:
    """Bits 63:47 all equal (48-bit linear addresses, SDM 3.3.7.1)."""
    top = va >> 47
    return top == 0 or top == (1 << 17) - 1


def split(va: int) -> tuple[int, int, int, int, int]:
    """(PML4, PDPT, PD, PT index, offset) of a linear address."""
    return ((va >> 39) & 511, (va >> 30) & 511, (va >> 21) & 511, (va >> 12) & 511, va & 0xFFF)


class WalkStep(NamedTuple):
    """One level of a walk: the table frame read, the index used, the entry found."""

    level: int  # 0=PML4 .. 3=PT
    table: int  # physical address of the table
    index: int
    entry: int

    @property
    def name(self) -> str:
        return LEVELS[self.level]


class Fault(NamedTuple):
    """An exception raised by an access: vector "#PF" or "#GP" and, for #PF, CR2 and the
    error code."""

    vector: str
    address: int
    error_code: int

    def describe(self) -> str:
        if self.vector != "#PF":
            return f"{self.vector} at {self.address:#x}"
        bits = [name for name, b in (("P", PF_P), ("W", PF_WR), ("U", PF_US), ("RSVD", PF_RSVD),
                                     ("I/D", PF_ID)) if self.error_code & b]
        cause = "protection violation" if self.error_code & PF_P else "not present"
        return f"#PF at {self.address:#x}, error code {self.error_code:#x} ({cause}; {' '.join(bits) or '-'})"


class Walk(NamedTuple):
    """The result of translating a linear address."""

    va: int
    steps: tuple[WalkStep, ...]  # levels read from memory (empty on a TLB hit)
    paddr: int | None
    fault: Fault | None
    page_size: int
    tlb_hit: bool
    started_at: int  # level the walk started at (0, or deeper on a paging-structure-cache hit)


@dataclass
class TLB:
    """Translations and paging-structure caches of one CPU (SDM 4.10).

    ``entries`` maps a page-aligned linear address to (physical base, page size, rights,
    global), where rights are the R_W, R_U, R_X bits of the whole translation plus R_D when
    the leaf's dirty flag was set (SDM 4.10.2.2: a TLB entry holds the AND of R/W and U/S,
    the OR of XD and the dirty flag); ``psc`` maps (level, linear prefix) to the physical
    address of the next table and the rights of the levels it skips (SDM 4.10.3.1: the AND
    of the entries, for R/W and U/S, and the OR of their XD bits), so a walk can start below
    the PML4.  Sizes are unbounded in the model."""

    entries: dict[int, tuple[int, int, int, bool]] = field(default_factory=dict)
    psc: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # key: level << 48 | va >> SHIFTS[level]

    def lookup(self, va: int) -> tuple[int, int, int, bool] | None:
        get = self.entries.get
        hit = get(va & ~0xFFF)
        if hit is not None and hit[1] == 1 << 12:
            return hit
        hit = get(va & ~0x1F_FFFF)
        if hit is not None and hit[1] == 1 << 21:
            return hit
        hit = get(va & ~0x3FFF_FFFF)
        if hit is not None and hit[1] == 1 << 30:
            return hit
        return None

    def flush_non_global(self) -> None:
        """MOV to CR3 (PCIDs off): non-global translations and all paging-structure caches."""
        self.entries = {k: v for k, v in self.entries.items() if v[3]}
        self.psc.clear()

    def flush_all(self) -> None:
        """Everything, global entries included (e.g. a C-state that loses the TLB, INIT)."""
        self.entries.clear()
        self.psc.clear()

    def _drop_translations(self, va: int) -> None:
        for size in (1 << 12, 1 << 21, 1 << 30):
            self.entries.pop(va & ~(size - 1), None)

    def invlpg(self, va: int) -> None:
        """INVLPG: the page's translations (any size) and all paging-structure caches."""
        self._drop_translations(va)
        self.psc.clear()

    def drop_address(self, va: int) -> None:
        """What a page fault invalidates (SDM 4.10.4.1): the TLB entries and the
        paging-structure-cache entries that would be used to translate ``va``."""
        self._drop_translations(va)
        for level in (0, 1, 2):
            self.psc.pop(level << 48 | va >> SHIFTS[level], None)

    def __len__(self) -> int:
        return len(self.entries)


_tuple_new = tuple.__new__  # builds the NamedTuples below without their slower __new__
_MASKS: dict[int, tuple[int, ...]] = {}


def _masks(phys_bits: int, nxe: bool) -> tuple[int, ...]:
    """Per MAXPHYADDR and IA32_EFER.NXE: reserved_mask() of a non-leaf entry at levels 0..3,
    of a leaf entry at levels 0..3, then the mask of an entry's address bits."""
    key = phys_bits << 1 | nxe
    m = _MASKS.get(key)
    if m is None:
        hi = ((1 << 52) - 1) & ~((1 << phys_bits) - 1) | (0 if nxe else NX)
        large = (0, ((1 << 30) - 1) & ~((1 << 13) - 1), ((1 << 21) - 1) & ~((1 << 13) - 1), 0)
        m = _MASKS[key] = (hi | PS, hi, hi, hi, hi | PS, hi | large[1], hi | large[2], hi,
                           ADDR_MASK & ((1 << phys_bits) - 1))
    return m


def _page_fault(va: int, steps: list, code: int, start: int, tlb: TLB | None) -> Walk:
    """A #PF result (``start`` 4: raised from a TLB entry, no walk); the fault invalidates
    what the TLB held for ``va`` (SDM 4.10.4.1)."""
    if tlb is not None:
        tlb.drop_address(va)
    return _tuple_new(Walk, (va, tuple(steps), None, Fault("#PF", va, code), 0, start == 4, start))


def walk(mem: PhysicalMemory, cr3: int, va: int, *, write: bool = False, user: bool = False,
         fetch: bool = False, tlb: TLB | None = None, agent: str = "cpu?",
         set_accessed: bool = True, wp: bool = True, nxe: bool = True) -> Walk:
    """Translate ``va`` for one access as the hardware does (SDM 4.5-4.8, 4.10).

    The access is a data read, a ``write`` or an instruction ``fetch``, in user mode
    (``user``: CPL 3) or supervisor mode; ``wp`` is CR0.WP and ``nxe`` IA32_EFER.NXE.  The
    TLB is consulted first (its cached rights are enforced: a denied access faults from the
    TLB entry, SDM 4.10.2.2), then the deepest paging-structure-cache hit, then memory.

    A and D flags (SDM 4.8): A is set, when clear, in each non-leaf entry the walk uses
    (present, no reserved bit: the entry could be cached, SDM 4.10.3.1), even if a lower level
    then faults (implementation specific; Unicorn/QEMU do so); the leaf's A, and D for a
    write, are set only when the access is allowed.
    The updates are stores by ``agent``.  A #PF invalidates the TLB's entries for ``va``
    (SDM 4.10.4.1)."""
    top = va >> 47
    if top and top != 0x1FFFF:  # not canonical (is_canonical, inlined: this is the hot path)
        return _tuple_new(Walk, (va, (), None, Fault("#GP", va, 0), 0, False, 0))
    access = write | fetch << 1 | user << 2 | wp << 3 | nxe << 4
    need = RIGHTS_NEEDED[access]
    if tlb is not None:
        entries = tlb.entries
        if entries:  # a TLB just flushed (a CR3 load, C6) needs no lookup
            hit = tlb.lookup(va)
            if hit is not None:
                missing = need & ~hit[2]
                if not missing:
                    base, size, _, _ = hit
                    return _tuple_new(Walk, (va, (), base + (va & (size - 1)), None, size, True, 4))
                if missing != R_D:  # the cached rights deny the access
                    return _page_fault(va, [], ACCESS_CODES[access] | PF_P, 4, tlb)
                # allowed but D clear: walk again to set it (SDM 4.8)
    masks = _MASKS.get(mem.phys_bits << 1 | nxe) or _masks(mem.phys_bits, nxe)
    addr_mask = masks[8]
    table = cr3 & ADDR_MASK
    start = 0
    # the rights so far (SDM 4.6): ``acc`` is the AND of the entries (R/W and U/S matter),
    # ``xd`` the OR of their XD bits (bit 63)
    acc, xd = RW | US, 0
    psc = None
    if tlb is not None:
        psc = tlb.psc
        if psc:
            for level in (2, 1, 0):
                cached = psc.get(level << 48 | va >> SHIFTS[level])
                if cached is not None:
                    # the entry carries the combined rights of the levels it skips (SDM 4.10.3.1)
                    table, start, acc, xd = cached[0], level + 1, cached[1], cached[2]
                    break
    # table frames are nearly always materialized: read those directly, anything else (a
    # tagged or never-written frame, an address beyond RAM) through read_u64
    frame_of = mem._frames.get  # noqa: SLF001 - the walk is the machine's own hot path
    steps = []
    for level in range(start, 4):
        shift = SHIFTS[level]
        index = (va >> shift) & 511
        arr = frame_of(table >> 12)
        e = arr.item(index) if arr is not None else mem.read_u64(table + index * 8)
        steps.append(_tuple_new(WalkStep, (level, table, index, e)))
        if not e & P:
            return _page_fault(va, steps, ACCESS_CODES[access], start, tlb)
        leaf = level == 3 or (level and e & PS)
        if e & masks[level + 4 if leaf else level]:  # reserved bits set
            return _page_fault(va, steps, ACCESS_CODES[access] | PF_P | PF_RSVD, start, tlb)
        acc &= e
        xd |= e >> 63
        if not leaf:
            if set_accessed and not e & A:
                mem.write_u64(table + index * 8, e | A, agent)
            table = e & addr_mask
            if psc is not None:
                psc[level << 48 | va >> shift] = (table, acc, xd)
            continue
        # access rights are those of the whole translation (SDM 4.6): checked at the leaf, so a
        # not-present or reserved entry below a restrictive one still reports P=0 or RSVD (4.7)
        rights = ((acc >> 1) & 3) | (0 if xd else R_X)  # R_W, R_U: entry bits 1, 2 shifted down
        if need & ~rights & 7:  # R_D missing is no fault: the walk sets D
            return _page_fault(va, steps, ACCESS_CODES[access] | PF_P, start, tlb)
        if set_accessed:
            want = (A | D) if write else A
            if e & want != want:
                e |= want
                mem.write_u64(table + index * 8, e, agent)
        size = 1 << shift
        base = e & addr_mask & ~(size - 1)
        if tlb is not None:
            # a translation cached while D=0 cannot serve a write: the first write walks
            # again and sets D (SDM 4.8)
            tlb.entries[va & ~(size - 1)] = (base, size, rights | ((e >> 3) & R_D), e & G != 0)  # D: bit 6
        return _tuple_new(Walk, (va, tuple(steps), base + (va & (size - 1)), None, size, False, start))
    raise AssertionError("unreachable")  # pragma: no cover
