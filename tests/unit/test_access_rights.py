"""Access rights in lab/hw/paging.py and the CPU's control state, one test per SDM rule
(vol. 3A 4.5-4.8, 4.10): U/S by CPL, R/W with CR0.WP, XD with IA32_EFER.NXE, bit 63 reserved
without NXE, the I/D flag, A/D flags around faults, rights cached in the TLB and the
paging-structure caches, and the invalidation a page fault does."""
from __future__ import annotations

import pytest

from hwkit import BumpAllocator, Rig
from lab.hw import I
from lab.hw.cpu import Cpu, CpuFault
from lab.hw.memory import PhysicalMemory
from lab.hw.pagetable import PageTables
from lab.hw.paging import (ACCESS_CODES, NX, PF_ID, PF_P, PF_RSVD, PF_US, PF_WR, R_D, R_U, R_W, R_X,
                           RIGHTS_NEEDED, RW, TLB,
                           US, A, D, Fault, access_error_code, access_index, needed_rights, walk)

VA = 0x0000_7F12_3456_7000
PA = 0x0050_0000


def space(**flags: bool) -> tuple[PhysicalMemory, PageTables]:
    """One 4 KiB page at VA with ``flags`` on the leaf; tables written with A and D clear."""
    mem = PhysicalMemory(64 << 20)
    pt = PageTables(mem, BumpAllocator(0x100, mem.nr_frames), accessed=False)
    pt.map(VA, PA, **flags)
    return mem, pt


def entry_addr(mem: PhysicalMemory, cr3: int, level: int) -> int:
    step = walk(mem, cr3, VA, set_accessed=False).steps[level]
    return step.table + step.index * 8


def change(mem: PhysicalMemory, cr3: int, level: int, clear: int = 0, add: int = 0) -> int:
    ea = entry_addr(mem, cr3, level)
    mem.write_u64(ea, (mem.read_u64(ea) & ~clear) | add, "test")
    return ea


# -- U/S (SDM 4.6.1) -------------------------------------------------------------------------
@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_user_access_needs_us_at_every_level(level):
    """SDM 4.6.1: a user-mode access (CPL 3) to a supervisor-mode address (U/S=0 in any
    paging-structure entry of the translation) is a protection #PF with U/S set."""
    mem, pt = space(us=True)
    assert walk(mem, pt.root, VA, user=True).fault is None
    change(mem, pt.root, level, clear=US)
    assert walk(mem, pt.root, VA, user=True).fault == Fault("#PF", VA, PF_P | PF_US)


@pytest.mark.parametrize("write, fetch", [(False, False), (True, False), (False, True)])
def test_supervisor_may_read_write_and_fetch_user_pages_smap_and_smep_off(write, fetch):
    """SDM 4.6.1: with CR4.SMAP=0 supervisor data accesses to user pages are allowed, with
    CR4.SMEP=0 so are supervisor instruction fetches (the model has neither feature)."""
    mem, pt = space(us=True)
    assert walk(mem, pt.root, VA, write=write, fetch=fetch).paddr == PA


# -- R/W and CR0.WP (SDM 4.6.1) --------------------------------------------------------------
@pytest.mark.parametrize("wp, fault", [(True, Fault("#PF", VA, PF_P | PF_WR)), (False, None)])
def test_supervisor_write_to_read_only_page_depends_on_cr0_wp(wp, fault):
    """SDM 4.6.1: supervisor writes to read-only pages fault with CR0.WP=1 and are allowed
    with CR0.WP=0 (and then set D, SDM 4.8)."""
    mem, pt = space(rw=False)
    w = walk(mem, pt.root, VA, write=True, wp=wp)
    assert w.fault == fault
    assert bool(mem.read_u64(entry_addr(mem, pt.root, 3)) & D) is (fault is None)


@pytest.mark.parametrize("wp", [True, False])
def test_user_write_to_read_only_page_faults_whatever_cr0_wp(wp):
    """SDM 4.6.1: CR0.WP affects supervisor writes only."""
    mem, pt = space(us=True)
    change(mem, pt.root, 1, clear=RW)  # read-only in the PDPTE: the whole translation is
    assert walk(mem, pt.root, VA, write=True, user=True, wp=wp).fault == Fault("#PF", VA, PF_P | PF_WR | PF_US)


# -- XD and IA32_EFER.NXE (SDM 4.5, 4.6.1, 4.7) ----------------------------------------------
@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_fetch_from_xd_at_any_level_faults_with_i_d_when_nxe_is_set(level):
    """SDM 4.6.1: with IA32_EFER.NXE=1, instruction fetches are not allowed from a page whose
    translation has XD=1 at any level; the #PF has P=1 and I/D=1 (SDM 4.7).  Data reads are
    allowed."""
    mem, pt = space()
    change(mem, pt.root, level, add=NX)
    assert walk(mem, pt.root, VA, fetch=True).fault == Fault("#PF", VA, PF_P | PF_ID)
    assert walk(mem, pt.root, VA).paddr == PA


@pytest.mark.parametrize("fetch", [False, True])
def test_bit_63_is_reserved_when_nxe_is_clear(fetch):
    """SDM 4.5 (tables 4-14..4-20): with IA32_EFER.NXE=0 bit 63 is reserved: any access
    through it is a #PF with P=1, RSVD=1, and I/D stays 0 (SDM 4.7: I/D needs NXE=1)."""
    mem, pt = space(nx=True)
    assert walk(mem, pt.root, VA, fetch=fetch, nxe=False).fault == Fault("#PF", VA, PF_P | PF_RSVD)


@pytest.mark.parametrize("nxe, code", [(True, PF_ID), (False, 0)])
def test_i_d_flag_only_with_nxe(nxe, code):
    """SDM 4.7: I/D is 1 for an instruction fetch only if NXE=1 (CR4.PAE=1 with 4-level
    paging; SMEP, the other condition, is off): a not-present fetch shows it or not."""
    mem, pt = space()
    change(mem, pt.root, 3, clear=(1 << 64) - 1)
    assert walk(mem, pt.root, VA, fetch=True, nxe=nxe).fault == Fault("#PF", VA, code)
    assert access_error_code(write=False, user=False, fetch=True, nxe=nxe) == code


def test_needed_rights_table():
    """SDM 4.6.1 as a table: what each access needs of the translation."""
    assert needed_rights(write=False, fetch=False, user=False, wp=True, nxe=True) == 0
    assert needed_rights(write=True, fetch=False, user=False, wp=True, nxe=True) == R_W | R_D
    assert needed_rights(write=True, fetch=False, user=False, wp=False, nxe=True) == R_D
    assert needed_rights(write=True, fetch=False, user=True, wp=False, nxe=True) == R_W | R_U | R_D
    assert needed_rights(write=False, fetch=True, user=False, wp=True, nxe=True) == R_X
    assert needed_rights(write=False, fetch=True, user=False, wp=True, nxe=False) == 0


# -- A and D flags (SDM 4.8, 4.10.3.1) -------------------------------------------------------
def test_upper_accessed_flags_are_set_even_when_a_lower_level_is_not_present():
    """SDM 4.8 and 4.10.3.1: each entry used is marked accessed; a present, well-formed
    PML4E/PDPTE can be cached (and is marked) even if the walk faults below it."""
    mem, pt = space()
    pde = change(mem, pt.root, 2, clear=(1 << 64) - 1)
    assert walk(mem, pt.root, VA).fault == Fault("#PF", VA, 0)
    assert all(mem.read_u64(entry_addr(mem, pt.root, lvl)) & A for lvl in (0, 1))
    assert mem.read_u64(pde) == 0


@pytest.mark.parametrize("how", ["protection", "reserved"])
def test_a_faulting_access_sets_neither_a_nor_d_in_the_leaf(how):
    """SDM 4.8: A and D of the leaf record accesses to the page; an access that faults (a
    protection violation, or a reserved bit: the entry is not used) does not set them.  Unicorn
    agrees (tests/property/test_paging_unicorn.py)."""
    mem, pt = space(rw=False)
    if how == "reserved":
        change(mem, pt.root, 3, add=1 << 50)
    leaf = entry_addr(mem, pt.root, 3)
    assert walk(mem, pt.root, VA, write=True).fault is not None
    assert mem.read_u64(leaf) & (A | D) == 0
    assert mem.read_u64(entry_addr(mem, pt.root, 2)) & A  # the PDE above was used


# -- TLB and paging-structure caches (SDM 4.10) ----------------------------------------------
@pytest.mark.parametrize("access, code", [
    (dict(user=True), PF_P | PF_US),
    (dict(fetch=True), PF_P | PF_ID),
    (dict(write=True), PF_P | PF_WR),
])
def test_tlb_hit_enforces_the_cached_rights(access, code):
    """SDM 4.10.2.2: a TLB entry holds the AND of R/W and U/S and the OR of XD; an access
    they deny faults from the entry without reading memory, even if memory now allows it."""
    mem, pt = space(rw=False, nx=True)
    tlb = TLB()
    walk(mem, pt.root, VA, tlb=tlb)
    change(mem, pt.root, 3, clear=NX, add=RW | US)  # memory allows everything now
    w = walk(mem, pt.root, VA, tlb=tlb, **access)
    assert w.fault == Fault("#PF", VA, code) and w.steps == () and w.tlb_hit


def test_paging_structure_cache_keeps_the_rights_of_the_levels_it_skips():
    """SDM 4.10.3.1: a PDE-cache entry holds the AND of U/S of the PML4E, PDPTE and PDE; a
    walk that starts below them uses those rights, not the entries in memory."""
    mem, pt = space(us=True)
    pt.map(VA + 0x1000, PA + 0x1000, us=True)
    pdpte = change(mem, pt.root, 1, clear=US)
    tlb = TLB()
    assert walk(mem, pt.root, VA, tlb=tlb).fault is None  # caches PML4E, PDPTE, PDE
    mem.write_u64(pdpte, mem.read_u64(pdpte) | US, "test")
    w = walk(mem, pt.root, VA + 0x1000, user=True, tlb=tlb)
    assert w.started_at == 3 and w.fault == Fault("#PF", VA + 0x1000, PF_P | PF_US)


def test_a_page_fault_drops_the_cached_entries_so_a_spurious_fault_happens_once():
    """SDM 4.10.4.1 and 4.10.4.3: a #PF invalidates the TLB and paging-structure-cache entries
    for its address; after R/W changed 0 -> 1 without INVLPG, one write faults, the next one
    walks and succeeds."""
    mem, pt = space(rw=False)
    tlb = TLB()
    walk(mem, pt.root, VA, tlb=tlb)
    change(mem, pt.root, 3, add=RW)
    assert walk(mem, pt.root, VA, write=True, tlb=tlb).fault == Fault("#PF", VA, PF_P | PF_WR)
    assert tlb.lookup(VA) is None and not tlb.psc
    again = walk(mem, pt.root, VA, write=True, tlb=tlb)
    assert again.fault is None and again.started_at == 0


# -- the CPU's control state -----------------------------------------------------------------
def test_cpu_defaults_are_those_linux_runs_with(rig):
    """CPL 0, CR0.WP=1, IA32_EFER.NXE=1, CR4.MCE=1 (what the kernel sets up before C code)."""
    c = rig.machine.cpus[0]
    assert (c.cpl, c.cr0_wp, c.efer_nxe, c.cr4_mce) == (0, True, True, True)


def test_init_clears_wp_nxe_and_mce(rig):
    """SDM vol. 3A 9.1.1, table 9-1: after INIT, CR0=60000010H (WP=0), CR4=0, EFER=0."""
    rig.start(1, rig.code("idle", [I("hlt")]).base)
    rig.run()
    rig.machine.apic.send(1, "init")
    c = rig.machine.cpus[1]
    assert (c.cpl, c.cr0_wp, c.efer_nxe, c.cr4_mce) == (0, False, False, False)
    c.enter_kernel_mode()
    assert (c.cr0_wp, c.efer_nxe, c.cr4_mce) == (True, True, True)


def test_cpu_fetch_from_an_xd_page_is_a_page_fault_with_i_d(rig):
    """SDM 4.6.1: the rig's direct map is XD (as Linux's); jumping to the direct-map alias of
    the text faults on the fetch with P=1 and I/D=1, delivered to the #PF handler."""
    target = rig.code("target", [I("mov", "rbx", 7), I("hlt")])
    alias = rig.dm(rig.phys(target.base))
    prog = rig.code("jump", [I("mov", "rax", alias), I("jmp_reg", "rax")])
    rig.start(0, prog.base)
    rig.run()
    c = rig.machine.cpus[0]
    assert c.last_fault == Fault("#PF", alias, PF_P | PF_ID) and c.regs["r9"] == 14
    assert c.regs["rbx"] == 0


def test_cpu_in_user_mode_cannot_touch_supervisor_data(rig):
    """SDM 4.6.1: the CPU passes CPL 3 to the walk: a load from the (supervisor) direct map
    faults with P=1 and U/S=1."""
    c = rig.machine.cpus[0]
    c.cr3 = rig.pt.root
    assert c.load(rig.data_va(0)) == 0  # CPL 0: fine
    c.cpl = 3
    with pytest.raises(CpuFault) as exc:
        c.load(rig.data_va(8))
    assert exc.value.fault == Fault("#PF", rig.data_va(8), PF_P | PF_US)


def test_cpu_rejects_a_bad_cpl():
    rig = Rig(nr_cpus=1)
    with pytest.raises(ValueError, match="CPL must be 0..3, got 4"):
        Cpu(5, rig.machine, cpl=4)


def test_lookup_tables_match_the_rules_for_every_access():
    """The walk's precomputed tables are the functions above, for all 32 access kinds."""
    for write in (False, True):
        for fetch in (False, True):
            for user in (False, True):
                for wp in (False, True):
                    for nxe in (False, True):
                        i = access_index(write=write, fetch=fetch, user=user, wp=wp, nxe=nxe)
                        assert RIGHTS_NEEDED[i] == needed_rights(write=write, fetch=fetch, user=user, wp=wp, nxe=nxe)
                        assert ACCESS_CODES[i] == access_error_code(write=write, fetch=fetch, user=user, nxe=nxe)
