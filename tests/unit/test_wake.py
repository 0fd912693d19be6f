"""MONITOR, MWAIT, CLFLUSH and HLT on a running machine (FACTS 4; SDM vol. 2B MONITOR, MWAIT,
CLFLUSH, HLT; vol. 3A 8.10.4): what puts a CPU to sleep, what wakes it and where it goes next."""
from __future__ import annotations

import pytest

from hwkit import IRQ_MARK, IRQ_VECTOR, MCE_MARK, NMI_MARK, Rig, executed, mwait_program
from lab.hw import I, RunState, mem
from lab.hw.cpu import CState
from lab.hw.memory import ContentTag
from lab.hw.paging import A, D, walk

LINE = 0x100  # offset of the monitored line in the rig's data area


def park_in_mwait(rig: Rig, cpu: int = 1, *, hint: int = 0x20, ecx: int = 0,
                  if_flag: bool = False):
    prog = mwait_program(rig, rig.data_va(LINE), hint=hint, ecx=ecx, name=f"park{cpu}")
    rig.start(cpu, prog.base, if_flag=if_flag)
    rig.run()
    c = rig.machine.cpus[cpu]
    assert c.state == RunState.MWAIT and c.regs["rbx"] == 0
    return prog, c


def run_store_on_cpu0(rig: Rig, va: int, value: int) -> None:
    prog = rig.code("storer", [I("mov", "rax", va), I("store", mem("rax"), value), I("hlt")])
    rig.start(0, prog.base)
    rig.run()


# -- MWAIT and the monitor -----------------------------------------------------------------
def test_same_value_store_by_another_cpu_wakes_mwait(rig):
    prog, c = park_in_mwait(rig)
    line_pa = rig.data_pa(LINE)
    assert rig.memory.read_u64(line_pa + 0x38) == 0
    run_store_on_cpu0(rig, rig.data_va(LINE + 0x38), 0)  # stores the value already there
    assert rig.memory.read_u64(line_pa + 0x38) == 0
    wake = rig.events("wake", 1)
    assert len(wake) == 1 and "store to monitored line" in wake[0].data["reason"]
    assert "cpu0" in wake[0].data["reason"] and wake[0].data["was"] == "mwait"
    assert c.regs["rbx"] == 1  # it ran past MWAIT
    assert prog.labels["after"] in executed(rig.events(cpu=1))


def test_store_by_a_non_cpu_agent_wakes_mwait(rig):
    _, c = park_in_mwait(rig)
    rig.memory.write_u64(rig.data_pa(LINE), 0, "loader")
    assert c.state == RunState.RUNNING
    assert "by loader" in rig.events("wake", 1)[0].data["reason"]


def test_store_to_the_next_line_does_not_wake(rig):
    _, c = park_in_mwait(rig)
    rig.memory.write_u64(rig.data_pa(LINE + 64), 5, "cpu0")
    rig.memory.write_u64(rig.data_pa(LINE - 8), 5, "cpu0")
    assert c.state == RunState.MWAIT and rig.events("wake", 1) == []


def test_mwait_without_an_armed_monitor_does_not_sleep(rig):
    prog = rig.code("bare", [I("mov", "rax", 0x20), I("mov", "rcx", 0), I("mwait"),
                             I("mov", "rbx", 1), I("hlt")])
    rig.start(1, prog.base)
    rig.run()
    c = rig.machine.cpus[1]
    fall = rig.events("mwait_fallthrough", 1)
    assert [e.data["reason"] for e in fall] == ["monitor not armed"]
    assert not [e for e in rig.events("state", 1) if e.data["state"] == "mwait"]
    assert c.regs["rbx"] == 1 and c.state == RunState.HLT


def test_own_store_does_not_wake_but_makes_the_next_mwait_fall_through(rig):
    prog = mwait_program(rig, rig.data_va(LINE), before_mwait=[I("store", mem("rax"), 7)])
    rig.start(1, prog.base)
    rig.run()
    c = rig.machine.cpus[1]
    assert rig.machine.monitor.armed[1].by == "store by cpu1"
    assert rig.events("monitor_trigger", 1) == [] and rig.events("wake", 1) == []
    assert [e.data["reason"] for e in rig.events("mwait_fallthrough", 1)] == ["monitor already triggered"]
    assert c.regs["rbx"] == 1


@pytest.mark.parametrize("clflush_triggers", [True, False])
def test_remote_clflush_wakes_the_monitor_only_with_the_option(clflush_triggers):
    rig = Rig(clflush_triggers=clflush_triggers)
    _, c = park_in_mwait(rig)
    prog = rig.code("flusher", [I("mov", "rax", rig.data_va(LINE + 8)), I("clflush", mem("rax")),
                                I("hlt")])
    rig.start(0, prog.base)
    rig.run()
    assert rig.events("exec", 0)[1].data["op"] == "clflush"
    if clflush_triggers:
        assert "clflush to monitored line" in rig.events("wake", 1)[0].data["reason"]
        assert c.regs["rbx"] == 1
    else:
        assert c.state == RunState.MWAIT and rig.events("wake", 1) == []


def test_monitor_faults_like_a_load(rig):
    bad = rig.unmapped_va
    prog = rig.code("m", [I("mov", "rax", bad), I("monitor"), I("hlt")])
    rig.start(0, prog.base)
    rig.run()
    c = rig.machine.cpus[0]
    exc = rig.events("exception", 0)
    assert [e.data["vector"] for e in exc] == ["#PF"]
    assert exc[0].data["error_code"] == 0  # a read: W/R clear, not present
    assert rig.machine.cr2[0] == bad and c.regs["r9"] == 14
    assert 0 not in rig.machine.monitor.armed


def test_clflush_faults_like_a_load(rig):
    bad = rig.unmapped_va + 0x40
    prog = rig.code("f", [I("mov", "rax", bad), I("clflush", mem("rax")), I("hlt")])
    rig.start(0, prog.base)
    rig.run()
    exc = rig.events("exception", 0)
    assert exc[0].data["vector"] == "#PF" and exc[0].data["error_code"] == 0
    assert rig.machine.cr2[0] == bad


def test_monitor_sets_the_accessed_flag_but_not_dirty():
    rig = Rig(accessed=False)
    va = rig.data_va(LINE)
    w = walk(rig.memory, rig.pt.root, va, set_accessed=False)
    leaf = w.steps[-1]
    leaf_pa = leaf.table + leaf.index * 8
    assert not rig.memory.read_u64(leaf_pa) & A
    park_in_mwait(rig)
    assert rig.memory.read_u64(leaf_pa) & (A | D) == A


# -- C-states ------------------------------------------------------------------------------
@pytest.mark.parametrize("hint, name, flushes", [(0x00, "C1", False), (0x10, "C3", False),
                                                 (0x20, "C6", True), (0x50, "C1", False)])
def test_mwait_hint_selects_the_c_state_and_deep_ones_lose_the_tlb(rig, hint, name, flushes):
    _, c = park_in_mwait(rig, hint=hint)
    st = [e for e in rig.events("state", 1) if e.data["state"] == "mwait"][-1]
    assert st.data["cstate"] == name and st.data["tlb_lost"] is flushes
    assert (len(c.tlb) == 0 and not c.tlb.psc) is flushes


@pytest.mark.parametrize("hint, latency", [(0x00, 2_000), (0x20, 100_000)])
def test_leaving_mwait_takes_the_c_state_exit_latency(rig, hint, latency):
    prog, c = park_in_mwait(rig, hint=hint)
    rig.memory.write_u64(rig.data_pa(LINE), 0, "loader")
    wake = rig.events("wake", 1)[0]
    assert wake.data["resumes_at"] == wake.t + latency
    rig.run()
    first = [e for e in rig.events("exec", 1) if e.t > wake.t][0]
    assert first.t == wake.t + latency and first.data["rip"] == prog.labels["after"]


def test_a_deep_c_state_makes_the_woken_cpu_walk_again_and_a_shallow_one_does_not():
    walks_after = {}
    for hint in (0x00, 0x20):
        rig = Rig()
        prog, c = park_in_mwait(rig, hint=hint)
        n = len(rig.machine.events)
        rig.memory.write_u64(rig.data_pa(LINE), 0, "loader")
        rig.run()
        walks_after[hint] = [e.data["why"] for e in rig.events("walk", 1, since=n)]
    assert walks_after[0x00] == []            # TLB kept: the next fetch hits
    assert walks_after[0x20][0] == "fetch"    # TLB lost: the first fetch walks


def test_cstate_named_and_deepest(rig):
    c = rig.machine.cpus[0]
    assert c.cstate_named("C3").hint == 0x10
    assert c.deepest.name == "C6"
    with pytest.raises(ValueError) as exc:
        c.cstate_named("C7")
    assert str(exc.value) == "unknown C-state 'C7'; allowed: C1, C3, C6"


def test_custom_c_states():
    rig = Rig(cstates=(CState("C1", 0, 1_000, False), CState("C10", 0x60, 500_000, True)))
    assert rig.machine.cpus[0].deepest.name == "C10"
    assert rig.machine.cpus[0].cstate_for(0x20).name == "C1"


# -- what wakes MWAIT ----------------------------------------------------------------------
def test_nmi_wakes_mwait_runs_the_handler_then_continues_after_mwait(rig):
    prog, c = park_in_mwait(rig)
    effect = rig.machine.apic.send(1, "nmi")
    assert effect.startswith("woken from mwait")
    rig.run()
    assert c.regs["r8"] == NMI_MARK and c.regs["rbx"] == 1
    rips = executed(rig.events(cpu=1))
    h = rig.handlers.labels["nmi"]
    assert rips[rips.index(h):rips.index(h) + 3] == [h, h + 4, prog.labels["after"]]


def test_smi_wakes_mwait_after_the_smm_time_and_runs_no_handler(rig):
    _, c = park_in_mwait(rig)
    t0 = rig.machine.sched.now
    rig.machine.apic.send(1, "smi")
    wake = rig.events("wake", 1)[0]
    assert wake.data["resumes_at"] == t0 + rig.machine.timing.smi_ns + 100_000
    rig.run()
    assert c.regs["rbx"] == 1 and c.regs["r8"] == 0


def test_machine_check_wakes_mwait(rig):
    _, c = park_in_mwait(rig)
    rig.machine.apic.send(1, "mce")
    rig.run()
    assert c.regs["r8"] == MCE_MARK and c.regs["rbx"] == 1


def test_init_ends_mwait_in_wait_for_sipi(rig):
    _, c = park_in_mwait(rig)
    rig.machine.apic.send(1, "init")
    rig.run()
    assert c.state == RunState.WAIT_FOR_SIPI and c.regs["rbx"] == 0


def test_interrupt_wakes_mwait_when_if_is_set(rig):
    _, c = park_in_mwait(rig, if_flag=True)
    rig.machine.apic.send(1, "fixed", IRQ_VECTOR)
    rig.run()
    assert c.regs["r8"] == IRQ_MARK and c.regs["rbx"] == 1


def test_interrupt_does_not_wake_mwait_with_if_clear_and_ecx0_clear(rig):
    _, c = park_in_mwait(rig, ecx=0)
    effect = rig.machine.apic.send(1, "fixed", IRQ_VECTOR)
    assert effect == "pending: IF=0, stays in mwait"
    rig.run()
    assert c.state == RunState.MWAIT and c.pending_irqs == [IRQ_VECTOR]


def test_interrupt_wakes_mwait_with_if_clear_when_ecx0_is_set_but_is_not_delivered(rig):
    _, c = park_in_mwait(rig, ecx=1)
    rig.machine.apic.send(1, "fixed", IRQ_VECTOR)
    rig.run()
    assert c.regs["rbx"] == 1  # continued after MWAIT
    assert c.regs["r8"] == 0 and c.pending_irqs == [IRQ_VECTOR]  # IF=0: still pending
    assert rig.events("exception", 1) == []


# -- HLT -----------------------------------------------------------------------------------
def halted(rig: Rig, cpu: int = 0, *, if_flag: bool = False):
    prog = rig.code(f"halt{cpu}", [I("hlt"), "after:", I("mov", "rbx", 0x42), I("hlt")])
    rig.start(cpu, prog.base, if_flag=if_flag)
    rig.run()
    c = rig.machine.cpus[cpu]
    assert c.state == RunState.HLT and c.rip == prog.labels["after"]
    return prog, c


def test_nmi_wakes_hlt_and_the_cpu_executes_the_instruction_after_hlt(rig):
    prog, c = halted(rig)
    rig.machine.apic.send(0, "nmi")
    assert c.state == RunState.RUNNING
    rig.run()
    h = rig.handlers.labels["nmi"]
    # the handler ran (add r8; iretq) and then the instruction after HLT
    assert executed(rig.events(cpu=0))[1:] == [h, h + 4, prog.labels["after"], prog.labels["after"] + 4]
    assert c.regs["r8"] == NMI_MARK and c.regs["rbx"] == 0x42
    assert c.regs["rsp"] == rig.stack_top(0)  # iretq popped the whole frame
    assert c.state == RunState.HLT


def test_hlt_with_if_clear_ignores_a_fixed_interrupt(rig):
    _, c = halted(rig, if_flag=False)
    assert rig.machine.apic.send(0, "fixed", IRQ_VECTOR) == "pending: IF=0, stays in hlt"
    rig.run()
    assert c.state == RunState.HLT and c.regs["rbx"] == 0 and c.pending_irqs == [IRQ_VECTOR]


def test_hlt_with_if_set_wakes_on_a_fixed_interrupt(rig):
    _, c = halted(rig, if_flag=True)
    assert rig.machine.apic.send(0, "fixed", IRQ_VECTOR).startswith("woken from hlt")
    rig.run()
    assert c.regs["r8"] == IRQ_MARK and c.regs["rbx"] == 0x42 and c.pending_irqs == []
    assert c.if_flag  # iretq restored RFLAGS.IF


def test_smi_wakes_hlt_and_continues_after_it(rig):
    _, c = halted(rig)
    rig.machine.apic.send(0, "smi")
    rig.run()
    assert c.regs["rbx"] == 0x42 and rig.events("exception", 0) == []
    first = [e for e in rig.events("exec", 0) if e.data["rip"] != rig.events("exec", 0)[0].data["rip"]][0]
    assert first.t >= rig.machine.timing.smi_ns


def test_smi_on_a_running_cpu_pauses_it_for_the_smm_time_and_changes_nothing_else(rig):
    """SDM vol. 3C 34.8 (and ch. 32): the SMI handler runs in SMM, invisible to the OS; the
    interrupted code continues after RSM, smi_ns later in the model."""
    prog = rig.code("spin", ["top:", I("add", "rbx", 1), I("jmp", "top")])
    rig.start(0, prog.base)
    for _ in range(10):
        rig.machine.step()
    t0 = rig.machine.sched.now
    assert rig.machine.apic.send(0, "smi") == "SMM handler runs; execution continues after it"
    c = rig.machine.cpus[0]
    before = c.regs["rbx"]
    for _ in range(5):
        rig.machine.step()
    assert c.regs["rbx"] == before + 2 and rig.events("exception", 0) == []
    first_after = [e for e in rig.events("exec", 0) if e.t > t0][0]
    assert first_after.t >= t0 + rig.machine.timing.smi_ns


def test_machine_check_wakes_hlt(rig):
    _, c = halted(rig)
    rig.machine.apic.send(0, "mce")
    rig.run()
    assert c.regs["r8"] == MCE_MARK and c.regs["rbx"] == 0x42


def test_nmi_after_hlt_needs_idt_text_and_stack_to_translate(rig):
    """FACTS 4: after an NMI the halted CPU runs code again.  Once its page tables are
    overwritten and its TLB is cold, delivering the NMI cannot even read the IDT."""
    _, c = halted(rig)
    for pfn in rig.pt.tables:
        rig.memory.write_page(pfn, ContentTag("data", 5, pfn), "loader")
    c.tlb.flush_all()
    rig.machine.apic.send(0, "nmi")
    rig.run()
    assert rig.machine.shutdown is not None and "#DF" in rig.machine.shutdown
    assert c.state == RunState.OFF


def test_nmi_after_hlt_with_a_warm_tlb_survives_overwritten_tables(rig):
    _, c = halted(rig)
    rig.machine.apic.send(0, "nmi")   # first NMI warms every translation the handler needs
    rig.run()
    c.rip -= 4  # the NMI will return onto the final HLT (already in the TLB), not past it
    for pfn in rig.pt.tables:
        rig.memory.write_page(pfn, ContentTag("data", 5, pfn), "loader")
    rig.machine.apic.send(0, "nmi")
    rig.run()
    assert rig.machine.shutdown is None and c.regs["r8"] == 2 * NMI_MARK


def test_monitor_stays_armed_after_a_wake_that_was_not_a_store(rig):
    """Modelling choice (docs/fidelity.md): after an NMI wake the range is still armed and
    quiet, so a second MWAIT without MONITOR sleeps again."""
    prog = rig.code("twice", [I("mov", "rax", rig.data_va(LINE)), I("monitor"),
                              I("mov", "rax", 0), I("mov", "rcx", 0), I("mwait"),
                              I("mwait"), I("mov", "rbx", 1), I("hlt")])
    rig.start(1, prog.base)
    rig.run()
    rig.machine.apic.send(1, "nmi")
    rig.run()
    c = rig.machine.cpus[1]
    assert c.state == RunState.MWAIT and c.regs["r8"] == NMI_MARK and c.regs["rbx"] == 0
