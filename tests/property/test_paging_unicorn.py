"""Differential test: ``lab.hw.paging.walk`` against Unicorn's x86-64 MMU (QEMU's
``handle_mmu_fault``) on random 4-level page tables.

Each case builds one random translation path (PML4E, PDPTE, PDE, PTE with random P, R/W, U/S,
PS, XD, A, D, ignored and reserved bits; 4 KiB, 2 MiB and 1 GiB leaves), picks a random access
(read, write or instruction fetch; CPL 0 or 3) and random control bits (IA32_EFER.NXE, CR0.WP),
and compares what both report: the physical address or the #PF, its error code, and the
paging-structure entries afterwards (the A and D flags the walk set).

How Unicorn is driven (its Python binding has no call for this, the C API has):

* ``uc_vmem_translate`` (unicorn.h, Unicorn >= 2.1) translates one address for one access
  type through the MMU exactly as an instruction would (``tlb_fill`` in probe mode: QEMU's
  x86 ``handle_mmu_fault`` with the current CPL, CR0, CR4, EFER), setting A/D flags and, on a
  fault, CR2 and the #PF error code in the CPU state.  It is called through ctypes.
* The error code is not a register Unicorn exposes.  It is read from the CPU state that
  ``UcContext`` (``uc_context_save``) copies out, at the offset found by calibration: faults
  whose error code is known from the access alone (a not-present PML4E, SDM 4.7) must all
  show their code at one offset, or the module is skipped as unusable.
* CPL 3 is reached once per engine with one SYSRETQ executed before paging is enabled (no GDT
  needed); then CR4.PAE, EFER.LME/NXE, CR3 and CR0.PG/WP are written as registers.  Every case
  writes CR3, which flushes Unicorn's TLB.

Unicorn's MAXPHYADDR is 40 (QEMU's TCG_PHYS_ADDR_BITS), so the model's memory uses 40 too.

Deviations of Unicorn from the SDM, kept as cases and excused narrowly (see ``excused``):

* SDM 4.8 with table 4-15: a PDPTE that maps a 1 GiB page is the leaf; its A flag says the
  page was accessed, so an access that faults (a reserved bit in 29:13, or a protection
  violation) leaves it clear in the model.  QEMU sets the PDPTE's A flag before it knows the
  entry is a leaf, so Unicorn sets it on those faulting accesses too.  Nothing else differs.
"""
from __future__ import annotations

import ctypes
import random
import struct
from dataclasses import dataclass

import numpy as np
import pytest

from lab.hw.memory import PhysicalMemory
from lab.hw.paging import (ADDR_MASK, NX, PF_P, PF_RSVD, PF_WR, PS, A, D, P, RW, US, split,
                           walk)

unicorn = pytest.importorskip("unicorn", minversion="2.1.4",
                              reason="the differential test needs Unicorn (pip install -e '.[test]')")
from unicorn import unicorn_py3  # noqa: E402
from unicorn import x86_const as X  # noqa: E402

SEED = 20160716  # the month of the report
CASES = 10_000
PHYS_BITS = 40
RAM = 16 << 20
CR3 = 0x10_000  # PML4 frame; the other three tables follow it
TABLES = (CR3, CR3 + 0x1000, CR3 + 0x2000, CR3 + 0x3000)
SYSRET_AT = 0x8000
MSR_EFER, MSR_STAR = 0xC000_0080, 0xC000_0081
EFER_SCE, EFER_NXE = 1, 1 << 11
CR0_PE, CR0_WP, CR0_PG, CR4_PAE = 1, 1 << 16, 1 << 31, 1 << 5
PROT = {"read": unicorn.UC_PROT_READ, "write": unicorn.UC_PROT_WRITE, "fetch": unicorn.UC_PROT_EXEC}

_lib = unicorn_py3.unicorn.uclib
_lib.uc_vmem_translate.restype = ctypes.c_int
_lib.uc_vmem_translate.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                                   ctypes.POINTER(ctypes.c_uint64)]


# -- Unicorn side ---------------------------------------------------------------------------
class UnicornMmu:
    """One Unicorn x86-64 engine at a fixed CPL with paging on, tables in its RAM."""

    def __init__(self, cpl: int) -> None:
        uc = self.uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        uc.mem_map(0, RAM, unicorn.UC_PROT_ALL)
        self.efer = uc.msr_read(MSR_EFER) | EFER_SCE
        uc.msr_write(MSR_EFER, self.efer)
        if cpl == 3:  # SYSRETQ: CS = STAR[63:48] + 16 | 3, SS = + 8 | 3, from fixed descriptors
            uc.msr_write(MSR_STAR, 0x10 << 48)
            uc.mem_write(SYSRET_AT, b"\x48\x0f\x07")
            uc.reg_write(X.UC_X86_REG_RCX, SYSRET_AT + 0x100)
            uc.reg_write(X.UC_X86_REG_R11, 0x202)
            uc.emu_start(SYSRET_AT, SYSRET_AT + 0x100, count=1)
        if uc.reg_read(X.UC_X86_REG_CS) & 3 != cpl:
            raise RuntimeError(f"could not bring Unicorn to CPL {cpl}")
        uc.reg_write(X.UC_X86_REG_CR4, uc.reg_read(X.UC_X86_REG_CR4) | CR4_PAE)
        uc.reg_write(X.UC_X86_REG_CR3, CR3)
        self.cr0 = uc.reg_read(X.UC_X86_REG_CR0) | CR0_PE | CR0_PG
        uc.reg_write(X.UC_X86_REG_CR0, self.cr0)
        self.error_code_at: int | None = None

    def write_u64(self, paddr: int, value: int) -> None:
        self.uc.mem_write(paddr, struct.pack("<Q", value))

    def read_u64(self, paddr: int) -> int:
        return struct.unpack("<Q", self.uc.mem_read(paddr, 8))[0]

    def translate(self, va: int, access: str, *, nxe: bool, wp: bool) -> tuple[int | None, int | None]:
        """(physical address, None) or (None, #PF error code) for one access."""
        uc = self.uc
        uc.msr_write(MSR_EFER, (self.efer | EFER_NXE) if nxe else (self.efer & ~EFER_NXE))
        uc.reg_write(X.UC_X86_REG_CR0, (self.cr0 | CR0_WP) if wp else (self.cr0 & ~CR0_WP))
        uc.reg_write(X.UC_X86_REG_CR3, CR3)  # flushes Unicorn's TLB
        pa = ctypes.c_uint64()
        err = _lib.uc_vmem_translate(uc._uch, va, PROT[access], ctypes.byref(pa))  # noqa: SLF001
        if err == unicorn.UC_ERR_OK:
            return pa.value, None
        if uc.reg_read(X.UC_X86_REG_CR2) != va:
            raise AssertionError(f"Unicorn failed {va:#x} without a #PF (error {err})")
        return None, self.saved_error_code()

    def cpu_state_words(self) -> np.ndarray:
        return np.frombuffer(bytes(self.uc.context_save()), dtype=np.int32)

    def saved_error_code(self) -> int:
        return int(self.cpu_state_words()[self.error_code_at])  # type: ignore[index]

    def calibrate(self) -> None:
        """Find where the CPU state holds the #PF error code: not-present faults whose code
        follows from the access alone (SDM 4.7: P=0, W/R, U/S, I/D with NXE=1)."""
        for table in TABLES:
            self.write_u64(table, 0)
        user = PF_US_BIT if self.uc.reg_read(X.UC_X86_REG_CS) & 3 == 3 else 0
        states, codes = [], []
        for access, code in (("read", 0), ("write", PF_WR), ("fetch", PF_ID_BIT)):
            for va in (0x1000, 0x7F12_3456_7000):
                pa, _ = self._raw_translate(va, access)
                assert pa is None
                states.append(self.cpu_state_words())
                codes.append(code | user)
        found = [i for i in range(len(states[0])) if all(s[i] == c for s, c in zip(states, codes))]
        if len(found) != 1:
            pytest.skip(f"cannot locate the #PF error code in Unicorn's CPU state (candidates {found})")
        self.error_code_at = found[0]

    def _raw_translate(self, va: int, access: str) -> tuple[int | None, int]:
        self.uc.msr_write(MSR_EFER, self.efer | EFER_NXE)
        self.uc.reg_write(X.UC_X86_REG_CR3, CR3)
        pa = ctypes.c_uint64()
        err = _lib.uc_vmem_translate(self.uc._uch, va, PROT[access], ctypes.byref(pa))  # noqa: SLF001
        return (pa.value if err == unicorn.UC_ERR_OK else None), err


PF_US_BIT, PF_ID_BIT = 4, 16


# -- random cases ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    va: int
    entries: tuple[int, ...]  # PML4E, PDPTE, PDE, PTE (the path; unused levels are 0)
    access: str  # read | write | fetch
    cpl: int
    nxe: bool
    wp: bool

    def describe(self) -> str:
        ents = " ".join(f"{e:#018x}" for e in self.entries)
        return (f"va={self.va:#x} {self.access} cpl={self.cpl} nxe={int(self.nxe)} wp={int(self.wp)} "
                f"entries={ents}")


def random_va(rng: random.Random) -> int:
    """A canonical 48-bit linear address (no #GP: that is not a paging question)."""
    va = rng.getrandbits(47) & ~0x7
    return va | (0xFFFF_8000_0000_0000 if rng.random() < 0.5 else 0)


def random_flags(rng: random.Random, level: int) -> int:
    """P mostly set; R/W, U/S, XD, A, D, PWT/PCD, G and ignored bits 62:52 random; PS as a
    leaf in a PDPTE or PDE now and then (in a PML4E rarely: reserved there)."""
    e = P if rng.random() < 0.93 else 0
    for bit, prob in ((RW, 0.75), (US, 0.75), (A, 0.5), (D, 0.5), (1 << 3, 0.2), (1 << 4, 0.2),
                      (1 << 8, 0.3), (NX, 0.25)):
        if rng.random() < prob:
            e |= bit
    if rng.random() < 0.2:
        e |= rng.getrandbits(11) << 52  # ignored bits
    if level in (1, 2) and rng.random() < 0.35 or level == 0 and rng.random() < 0.03:
        e |= PS
    return e


def random_reserved(rng: random.Random, level: int, entry: int) -> int:
    """Sometimes a reserved bit: 51:MAXPHYADDR anywhere, 29:13 / 20:13 in a large leaf."""
    if rng.random() > 0.12:
        return 0
    large = entry & PS and level in (1, 2)
    if large and rng.random() < 0.6:
        return 1 << rng.randrange(13, 30 if level == 1 else 21)
    return 1 << rng.randrange(PHYS_BITS, 52)


def random_case(rng: random.Random) -> Case:
    va = random_va(rng)
    entries = []
    for level in range(4):
        e = random_flags(rng, level)
        leaf = level == 3 or (level in (1, 2) and e & PS)
        if leaf:
            size_bits = (30, 21, 12)[level - 1]
            frame = rng.getrandbits(PHYS_BITS - size_bits) << size_bits
            e |= frame
        else:
            e |= TABLES[level + 1] if level < 3 else 0
        e |= random_reserved(rng, level, e)
        entries.append(e)
        if leaf:
            break
    entries += [0] * (4 - len(entries))
    return Case(va, tuple(entries), rng.choice(("read", "write", "fetch")), rng.choice((0, 3)),
                rng.random() < 0.8, rng.random() < 0.7)


def entry_addresses(va: int) -> tuple[int, ...]:
    return tuple(t + i * 8 for t, i in zip(TABLES, split(va)[:4]))


# -- running a case on both -----------------------------------------------------------------
@dataclass
class Outcome:
    paddr: int | None
    error_code: int | None
    entries: tuple[int, ...]


def run_model(mem: PhysicalMemory, case: Case) -> Outcome:
    addrs = entry_addresses(case.va)
    for a, e in zip(addrs, case.entries):
        mem.write_u64(a, e, "test")
    w = walk(mem, CR3, case.va, write=case.access == "write", fetch=case.access == "fetch",
             user=case.cpl == 3, wp=case.wp, nxe=case.nxe)
    after = tuple(mem.read_u64(a) for a in addrs)
    for a in addrs:
        mem.write_u64(a, 0, "test")
    if w.fault is not None:
        assert w.fault.vector == "#PF" and w.fault.address == case.va
    return Outcome(w.paddr, None if w.fault is None else w.fault.error_code, after)


def run_unicorn(mmu: UnicornMmu, case: Case) -> Outcome:
    addrs = entry_addresses(case.va)
    for a, e in zip(addrs, case.entries):
        mmu.write_u64(a, e)
    paddr, code = mmu.translate(case.va, case.access, nxe=case.nxe, wp=case.wp)
    after = tuple(mmu.read_u64(a) for a in addrs)
    for a in addrs:
        mmu.write_u64(a, 0)
    return Outcome(paddr, code, after)


def excused(case: Case, model: Outcome, uc: Outcome) -> bool:
    """The one known deviation (module docstring): a faulting access through a 1 GiB leaf
    (a PDPTE with PS=1 and no reserved bit in 51:MAXPHYADDR) leaves A clear in the model (SDM
    4.8, table 4-15) while QEMU has already set it.  Everything else must be equal."""
    pdpte = case.entries[1]
    one_gib_leaf = case.entries[0] & P and pdpte & P and pdpte & PS
    if not (one_gib_leaf and model.error_code is not None and model.error_code & PF_P):
        return False
    if model.paddr != uc.paddr or model.error_code != uc.error_code:
        return False
    expected = list(model.entries)
    expected[1] |= A
    return tuple(expected) == uc.entries and not model.entries[1] & A


@pytest.fixture(scope="module")
def engines() -> dict[int, UnicornMmu]:
    mmus = {cpl: UnicornMmu(cpl) for cpl in (0, 3)}
    for mmu in mmus.values():
        mmu.calibrate()
    return mmus


def kind_of(case: Case, out: Outcome) -> str:
    if out.error_code is None:
        return {0: "ok-4K", 1: "ok-1G", 2: "ok-2M"}[next((i for i in (1, 2) if case.entries[i] & PS
                                                          and all(case.entries[j] & P for j in range(i + 1))), 0)]
    if out.error_code & PF_RSVD:
        return "pf-rsvd"
    return "pf-protection" if out.error_code & PF_P else "pf-not-present"


def test_walk_agrees_with_unicorn_on_random_tables(engines):
    rng = random.Random(SEED)
    mem = PhysicalMemory(RAM, PHYS_BITS)
    mismatches, excuses = [], 0
    kinds: dict[str, int] = {}
    for _ in range(CASES):
        case = random_case(rng)
        model = run_model(mem, case)
        uc = run_unicorn(engines[case.cpl], case)
        kinds[kind_of(case, model)] = kinds.get(kind_of(case, model), 0) + 1
        if model == uc:
            continue
        if excused(case, model, uc):
            excuses += 1
            continue
        mismatches.append(f"{case.describe()}\n    model   {model}\n    unicorn {uc}")
    assert not mismatches, f"{len(mismatches)} of {CASES} cases differ:\n" + "\n".join(mismatches[:8])
    # the generator must exercise every outcome, or equality proves little
    for kind in ("ok-4K", "ok-2M", "ok-1G", "pf-not-present", "pf-protection", "pf-rsvd"):
        assert kinds.get(kind, 0) >= 20, (kind, kinds)
    assert excuses < CASES // 10


@pytest.mark.parametrize("access, cpl, nxe, wp, code", [
    ("write", 0, True, True, PF_P | PF_WR),       # SDM 4.6: supervisor write, R/W=0, WP=1
    ("write", 0, True, False, None),              # SDM 4.6: WP=0 lets the supervisor write
    ("write", 3, True, False, PF_P | PF_WR | PF_US_BIT),  # WP does not matter for user mode
    ("fetch", 0, True, True, PF_P | PF_ID_BIT),   # SDM 4.6: XD with NXE=1
    ("fetch", 0, False, True, PF_P | PF_RSVD),    # SDM 4.5: bit 63 reserved with NXE=0, no I/D
    ("read", 3, True, True, None),                # user page: user read allowed
])
def test_named_rules_agree_with_unicorn(engines, access, cpl, nxe, wp, code):
    """Hand-picked cases for the rules the random test is about, on both sides."""
    mem = PhysicalMemory(RAM, PHYS_BITS)
    leaf = 0x0012_3456_7000 | P | US | NX
    case = Case(0x7F00_1234_5000, (TABLES[1] | P | RW | US, TABLES[2] | P | RW | US,
                                   TABLES[3] | P | RW | US, leaf), access, cpl, nxe, wp)
    model = run_model(mem, case)
    assert model == run_unicorn(engines[cpl], case)
    assert model.error_code == code
    if code is None:
        assert model.paddr == leaf & ADDR_MASK & ~NX and model.entries[3] & A
        assert bool(model.entries[3] & D) == (access == "write")
