"""NMI, SMI and machine check as the SDM has them (lab/hw/cpu.py, apic.py, machine.py), one
test per rule: NMI blocking until IRET with one NMI pending (vol. 3A 6.7.1), SMIs latched in
SMM (vol. 3C 34.8), #MC with MCG_STATUS.MCIP and CR4.MCE (vol. 3B 15.10.1, vol. 3A 6.15), the
processor shutdown and why the machine went down."""
from __future__ import annotations

import pytest

from hwkit import MCE_MARK, NMI_MARK, Rig, executed
from lab.hw import VECTORS, I, RunState
from lab.hw.cpu import MSR_IA32_EFER, MSR_IA32_MCG_STATUS, MCG_STATUS_MCIP

WRMSR_MCG_STATUS_0 = [I("mov", "rcx", MSR_IA32_MCG_STATUS), I("mov", "rax", 0), I("mov", "rdx", 0),
                      I("wrmsr")]


def halted(rig: Rig, cpu: int = 0):
    prog = rig.code(f"halt{cpu}", [I("hlt"), "after:", I("mov", "rbx", 0x42), I("hlt")])
    rig.start(cpu, prog.base)
    rig.run()
    return prog, rig.machine.cpus[cpu]


def handler_entries(rig: Rig, cpu: int, vector: str) -> int:
    return sum(1 for e in rig.events("exception", cpu) if e.data["vector"] == vector)


def run_until_handler(rig: Rig, cpu: int, vector: str) -> None:
    rig.run(until=lambda e: e.kind == "exception" and e.cpu == cpu and e.data["vector"] == vector)


# -- NMI (SDM vol. 3A 6.7.1) -----------------------------------------------------------------
def test_an_nmi_during_the_nmi_handler_waits_for_iret_then_runs():
    """SDM 6.7.1: while an NMI handler executes, further NMIs are blocked until the next IRET;
    the blocked NMI is held pending and delivered right after the IRET."""
    rig = Rig()
    prog, c = halted(rig)
    rig.machine.apic.send(0, "nmi")
    run_until_handler(rig, 0, "NMI")
    assert c.nmi_blocked
    assert rig.machine.apic.send(0, "nmi") == "pending: NMIs are blocked until the handler's IRET"
    rig.machine.step()  # add r8 (the handler), not a nested NMI
    assert handler_entries(rig, 0, "NMI") == 1
    rig.run()
    h = rig.handlers.labels["nmi"]
    rips = executed(rig.events(cpu=0))
    assert rips.count(h) == 2 and handler_entries(rig, 0, "NMI") == 2
    # the second entry comes after the first handler's IRETQ, on the same (unclobbered) stack
    assert rips[rips.index(h):rips.index(h) + 3] == [h, h + 4, h]
    assert c.regs["r8"] == 2 * NMI_MARK and c.regs["rbx"] == 0x42 and not c.nmi_blocked
    assert c.regs["rsp"] == rig.stack_top(0)


def test_only_one_nmi_is_held_pending_a_third_is_lost():
    """SDM 6.7.1 (and 34.8): one NMI can be pending; an NMI arriving while one is pending is
    lost, so three NMIs during a handler give two handler entries in all."""
    rig = Rig()
    _, c = halted(rig)
    rig.machine.apic.send(0, "nmi")
    run_until_handler(rig, 0, "NMI")
    rig.machine.apic.send(0, "nmi")
    assert rig.machine.apic.send(0, "nmi") == "lost: an NMI is already pending"
    rig.run()
    assert handler_entries(rig, 0, "NMI") == 2 and c.regs["r8"] == 2 * NMI_MARK


def test_iret_unblocks_nmis_even_when_it_faults():
    """SDM 6.7.1: an execution of IRET unblocks NMIs even if the instruction faults."""
    rig = Rig()
    bad = rig.code("bad_iret", [I("mov", "rsp", rig.unmapped_va), I("iretq")])
    rig.start(0, bad.base)
    c = rig.machine.cpus[0]
    c.nmi_blocked = True
    rig.run()
    assert c.last_fault is not None and c.last_fault.vector == "#PF" and not c.nmi_blocked


def test_two_nmis_to_a_parked_cpu_enter_the_handler_at_most_twice():
    """The workshop symptom (issue 7): two NMIs to one CPU in MWAIT never loop the handler."""
    from hwkit import mwait_program
    rig = Rig()
    prog = mwait_program(rig, rig.data_va(0x100), hint=0x20)
    rig.start(1, prog.base)
    rig.run()
    rig.machine.apic.send(1, "nmi")
    rig.machine.apic.send(1, "nmi")
    rig.run()
    assert handler_entries(rig, 1, "NMI") == 1  # the second arrived while the first was pending
    rig.machine.apic.send(1, "nmi")
    run_until_handler(rig, 1, "NMI")
    rig.machine.apic.send(1, "nmi")
    rig.run()
    assert handler_entries(rig, 1, "NMI") == 3


# -- SMI (SDM vol. 3C 34.8) ------------------------------------------------------------------
def test_an_smi_in_smm_is_latched_and_serviced_after_rsm_a_third_is_lost():
    """SDM vol. 3C 34.8 (SMI handling while in SMM): SMIs arriving in SMM are latched, one,
    and serviced when RSM leaves SMM; the CPU spends another smi_ns in SMM."""
    rig = Rig()
    prog = rig.code("spin", ["top:", I("add", "rbx", 1), I("jmp", "top")])
    rig.start(0, prog.base)
    rig.machine.step()
    t0 = rig.machine.sched.now
    smi_ns = rig.machine.timing.smi_ns
    apic = rig.machine.apic
    assert apic.send(0, "smi") == "SMM handler runs; execution continues after it"
    assert apic.send(0, "smi") == "latched: serviced when the CPU leaves SMM"
    assert apic.send(0, "smi") == "lost: one SMI is already latched in SMM"
    for _ in range(6):
        rig.machine.step()
    resumed = [e for e in rig.events("exec", 0) if e.t > t0]
    assert resumed and resumed[0].t >= t0 + 2 * smi_ns
    assert len(rig.events("smm", 0)) == 1


def test_an_smi_to_a_halted_cpu_latches_a_second_one():
    """SDM 34.8 for a CPU woken from HLT by an SMI: the second SMI is serviced after RSM
    too, before the instruction after HLT runs."""
    rig = Rig()
    prog, c = halted(rig)
    t0 = rig.machine.sched.now
    rig.machine.apic.send(0, "smi")
    assert rig.machine.apic.send(0, "smi") == "latched: serviced when the CPU leaves SMM"
    rig.run()
    after = [e for e in rig.events("exec", 0) if e.data["rip"] == prog.labels["after"]][0]
    assert after.t >= t0 + 2 * rig.machine.timing.smi_ns and c.regs["rbx"] == 0x42


def test_an_nmi_arriving_in_smm_is_delivered_after_rsm():
    """SDM vol. 3C 34.8: NMIs are blocked in SMM and one is latched, handled after RSM."""
    rig = Rig()
    prog = rig.code("spin", ["top:", I("add", "rbx", 1), I("jmp", "top")])
    rig.start(0, prog.base)
    rig.machine.step()
    t0 = rig.machine.sched.now
    rig.machine.apic.send(0, "smi")
    rig.machine.apic.send(0, "nmi")
    run_until_handler(rig, 0, "NMI")
    entry = rig.events("exception", 0)[0]
    assert entry.t >= t0 + rig.machine.timing.smi_ns
    assert [e for e in rig.events("exec", 0) if t0 < e.t < entry.t] == []


# -- machine check (SDM vol. 3B 15.10.1, vol. 3A 6.15) ---------------------------------------
def test_machine_check_sets_mcip_and_runs_the_handler():
    """SDM 15.3.1.2: MCG_STATUS.MCIP is set when the #MC is generated."""
    rig = Rig()
    _, c = halted(rig)
    rig.machine.apic.send(0, "mce")
    rig.run()
    assert c.mcg_status_mcip and c.regs["r8"] == MCE_MARK and rig.machine.shutdown is None


def test_machine_check_while_mcip_is_set_shuts_the_processor_down():
    """SDM 15.10.1 (and 15.3.1.2): a machine check while MCIP=1 (the handler did not clear
    it) puts the processor into shutdown: the machine goes down, cause "machine check"."""
    rig = Rig()
    _, c = halted(rig)
    rig.machine.apic.send(0, "mce")
    rig.run()
    rig.machine.apic.send(0, "mce")
    rig.run()
    m = rig.machine
    assert m.shutdown == "machine check on CPU 0: machine check while MCG_STATUS.MCIP=1"
    assert m.shutdown_cause == "machine check" and c.state == RunState.OFF
    assert [(e.cpu, e.data["cause"]) for e in rig.events("shutdown")] == [(0, "machine check")]
    assert rig.events("triple_fault") == []


def test_a_handler_that_clears_mcip_survives_a_second_machine_check():
    """Linux's do_machine_check ends with mce_wrmsrl(MSR_IA32_MCG_STATUS, 0): WRMSR clears
    MCIP (SDM vol. 2B WRMSR, 15.3.1.2), so the next #MC is handled normally."""
    rig = Rig()
    mc = rig.code("mc_clear", [*WRMSR_MCG_STATUS_0, I("add", "r8", MCE_MARK), I("iretq")])
    rig.set_gate(VECTORS["#MC"], mc.base)
    _, c = halted(rig)
    for _ in range(2):
        rig.machine.apic.send(0, "mce")
        rig.run()
    assert rig.machine.shutdown is None and c.regs["r8"] == 2 * MCE_MARK and not c.mcg_status_mcip


def test_machine_check_with_cr4_mce_clear_shuts_down():
    """SDM 6.15 (interrupt 18): with CR4.MCE=0 a machine check shuts the processor down."""
    rig = Rig()
    _, c = halted(rig)
    c.cr4_mce = False
    rig.machine.apic.send(0, "mce")
    rig.run()
    assert rig.machine.shutdown_cause == "machine check" and "CR4.MCE=0" in rig.machine.shutdown
    assert handler_entries(rig, 0, "#MC") == 0


def test_machine_check_in_wait_for_sipi_shuts_down():
    """FACTS 7 (45e34c8af58f, SDM 9.1.1 and 6.15): after INIT CR4 is 0, so a machine check to
    a CPU in wait-for-SIPI shuts it down at once, and with it the machine."""
    rig = Rig()
    halted(rig, 1)
    rig.machine.apic.send(1, "init")
    effect = rig.machine.apic.send(1, "mce")
    assert effect == "processor shutdown: machine check with CR4.MCE=0 (after INIT)"
    assert rig.machine.shutdown == "machine check on CPU 1: machine check with CR4.MCE=0"
    assert all(c.state == RunState.OFF for c in rig.machine.cpus)


def test_triple_fault_reports_its_cause():
    """SDM 6.15 (interrupt 8): a fault while delivering #DF is a shutdown, cause "triple
    fault"; both the triple_fault and the shutdown events are emitted."""
    rig = Rig(df_ist=0)
    prog = rig.code("bad", [I("mov", "rsp", rig.unmapped_va), I("push", "rax")])
    rig.start(0, prog.base)
    rig.run()
    assert rig.machine.shutdown_cause == "triple fault"
    assert rig.machine.shutdown.startswith("triple fault on CPU 0: ")
    assert [e.data["cause"] for e in rig.events("shutdown")] == ["triple fault"]
    assert len(rig.events("triple_fault")) == 1


def test_shutdown_rejects_an_unknown_cause():
    rig = Rig()
    with pytest.raises(ValueError, match="unknown shutdown cause 'reset'; allowed: triple fault, machine check"):
        rig.machine.shutdown_processor(0, "reset", "why")


# -- WRMSR (SDM vol. 2B) ---------------------------------------------------------------------
def test_wrmsr_sets_efer_nxe_and_mcg_status():
    """SDM vol. 2B WRMSR with IA32_EFER (NXE, bit 11) and IA32_MCG_STATUS (MCIP, bit 2)."""
    rig = Rig()
    c = rig.machine.cpus[0]
    c.wrmsr(MSR_IA32_EFER, 0)
    c.wrmsr(MSR_IA32_MCG_STATUS, MCG_STATUS_MCIP)
    assert not c.efer_nxe and c.mcg_status_mcip
    c.wrmsr(MSR_IA32_EFER, 1 << 11)
    assert c.efer_nxe


def test_wrmsr_to_an_unimplemented_msr_is_a_general_protection_fault():
    """SDM vol. 2B WRMSR: #GP(0) for an MSR address that is reserved or unimplemented (here:
    any MSR the model does not implement)."""
    rig = Rig()
    prog = rig.code("wrmsr", [I("mov", "rcx", 0x10), I("wrmsr"), I("mov", "rbx", 1)])
    rig.start(0, prog.base)
    rig.run()
    c = rig.machine.cpus[0]
    assert c.last_fault is not None and c.last_fault.vector == "#GP" and c.regs["r9"] == 13
    assert c.regs["rbx"] == 0
