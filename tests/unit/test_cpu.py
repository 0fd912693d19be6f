"""The CPU (lab/hw/cpu.py, machine.py): instruction execution, exception delivery through a
real IDT (SDM vol. 3A 6.12-6.15: 16-byte gates, IST, the pushed frame, #DF, triple fault),
code validity, TLB maintenance instructions, and the machine's own checks."""
from __future__ import annotations

import numpy as np
import pytest

from hwkit import IDT_PA, TEXT_SEED, Rig, stores_by
from lab.hw import VECTORS, I, Instr, Machine, RunState, mem
from lab.hw.cpu import CState, Cpu
from lab.hw.machine import MAX_CPUS, Timing
from lab.hw.memory import ContentTag
from lab.hw.paging import A, PF_ID, PF_WR, walk

SPARE_VA = 0xFFFF_C900_0000_0000  # a region the rig leaves unmapped, for extra mappings


def run_on(rig: Rig, items, cpu: int = 0, **start) -> tuple:
    prog = rig.code(f"t{len(rig.machine.events)}", items)
    rig.start(cpu, prog.base, **start)
    rig.run()
    return prog, rig.machine.cpus[cpu]


def frame_at(rig: Rig, rsp: int, with_error_code: bool) -> dict[str, int]:
    """Read an exception frame (SDM figure 6-9) at ``rsp``."""
    names = (["error_code"] if with_error_code else []) + ["rip", "cs", "rflags", "rsp", "ss"]
    return {n: rig.read_va(rsp + 8 * i) for i, n in enumerate(names)}


# -- instructions --------------------------------------------------------------------------
def test_register_and_memory_instructions(rig):
    data = rig.data_va(0x200)
    prog, c = run_on(rig, [
        I("mov", "rax", 5), I("add", "rax", 0xFFFF_FFFF_FFFF_FFFF),   # wraps to 4
        I("mov", "rdi", data), I("store", mem("rdi", 8), "rax"),
        I("load", "rbx", mem("rdi", 8)),
        I("push", "rbx"), I("pop", "rcx"),
        I("and", "rcx", 6),
        I("cmp", "rcx", 4), I("jne", "bad"), I("je", "good"),
        "bad:", I("mov", "rdx", 0xBAD), I("hlt"),
        "good:", I("mov", "rdx", 0x600D), I("nop"), I("hlt"),
    ])
    assert c.regs["rax"] == 4 and c.regs["rbx"] == 4 and c.regs["rcx"] == 4
    assert c.regs["rdx"] == 0x600D
    assert rig.memory.read_u64(rig.data_pa(0x208)) == 4
    assert c.regs["rsp"] == rig.stack_top(0)
    assert rig.read_va(rig.stack_top(0) - 8) == 4  # what push wrote


def test_jmp_reg_and_jmp(rig):
    target = rig.code("target", [I("mov", "rbx", 7), I("hlt")])
    _, c = run_on(rig, [I("mov", "rax", target.base), I("jmp_reg", "rax"), I("mov", "rbx", 1)])
    assert c.regs["rbx"] == 7 and c.rip == target.base + 8


def test_cli_sti_and_lidt(rig):
    _, c = run_on(rig, [I("sti"), I("mov", "rbx", 1), I("cli"), I("lidt", 0x1000, 0xFFF), I("hlt")])
    assert not c.if_flag and c.idtr == (0x1000, 0xFFF)


def test_instruction_timing(rig):
    prog, c = run_on(rig, [I("nop"), I("wbinvd"), I("mov", "rax", rig.data_va()),
                           I("clflush", mem("rax")), I("nop"), I("hlt")])
    t = {e.data["rip"] - prog.base: e.t for e in rig.events("exec", 0)}
    tm = rig.machine.timing
    assert t[4] - t[0] == tm.instr_ns
    assert t[8] - t[4] == tm.wbinvd_ns
    assert t[16] - t[12] == tm.clflush_ns


def test_model_routine_runs_and_sets_the_time_used(rig):
    calls = []

    def routine(cpu: Cpu, at: int) -> int:
        calls.append((cpu.id, at))
        cpu.regs["rbx"] = 99
        return 5_000

    rig.machine.routines["bulk"] = routine
    prog, c = run_on(rig, [I("model", "bulk"), I("hlt")])
    assert calls == [(0, prog.base)] and c.regs["rbx"] == 99
    execs = rig.events("exec", 0)
    assert execs[1].t - execs[0].t == 5_000


def test_unknown_model_routine(rig):
    rig.machine.routines["a"] = lambda cpu, at: 1
    prog = rig.code("m", [I("model", "nope")])
    rig.start(0, prog.base)
    with pytest.raises(ValueError, match="no model routine 'nope'; registered: a"):
        rig.run()


def test_cpu_stores_are_by_its_own_agent(rig):
    seen = stores_by(rig, "cpu1")
    run_on(rig, [I("mov", "rax", rig.data_va(0x300)), I("store", mem("rax"), 1), I("hlt")], cpu=1)
    assert (rig.data_pa(0x300), 8, "store") in seen


# -- page faults seen by the CPU -----------------------------------------------------------
@pytest.mark.parametrize("kind, code", [("load", 0), ("store", PF_WR), ("fetch", PF_ID)])
def test_page_fault_sets_cr2_and_error_code_and_runs_the_handler(rig, kind, code):
    bad = rig.unmapped_va + 0x10
    items = {"load": [I("mov", "rax", bad), I("load", "rbx", mem("rax"))],
             "store": [I("mov", "rax", bad), I("store", mem("rax"), 1)],
             "fetch": [I("mov", "rax", bad), I("jmp_reg", "rax")]}[kind]
    prog, c = run_on(rig, items)
    exc = rig.events("exception", 0)
    assert [e.data["vector"] for e in exc] == ["#PF"]
    assert exc[0].data["error_code"] == code and exc[0].data["cr2"] == bad
    assert rig.machine.cr2[0] == bad and c.last_fault.vector == "#PF"
    assert c.regs["r9"] == 14  # the #PF handler ran
    frame = frame_at(rig, c.regs["rsp"], with_error_code=True)
    faulting_rip = bad if kind == "fetch" else prog.base + 4
    assert frame == {"error_code": code, "rip": faulting_rip, "cs": 0x10, "rflags": 0x2,
                     "rsp": rig.stack_top(0), "ss": 0x18}


def test_non_canonical_address_gives_gp_with_error_code_zero(rig):
    _, c = run_on(rig, [I("mov", "rax", 0x0000_8000_0000_0000), I("load", "rbx", mem("rax"))])
    exc = rig.events("exception", 0)
    assert [e.data["vector"] for e in exc] == ["#GP"] and exc[0].data["error_code"] == 0
    assert c.regs["r9"] == 13 and 0 not in rig.machine.cr2


def test_interrupt_frame_records_if_and_iretq_restores_it(rig):
    prog = rig.code("idle", [I("sti"), I("hlt"), I("hlt")])
    rig.start(0, prog.base)
    rig.run()
    c = rig.machine.cpus[0]
    rig.machine.apic.send(0, "nmi")
    rig.run(until=lambda e: e.kind == "exception")
    assert not c.if_flag  # interrupt gate clears IF
    assert frame_at(rig, c.regs["rsp"], False)["rflags"] == 0x202
    rig.run()
    assert c.if_flag and c.rip == prog.base + 12


# -- #DF and triple fault ------------------------------------------------------------------
def test_page_fault_whose_idt_gate_does_not_translate_becomes_double_fault(rig):
    """An IDT straddling a page boundary: vectors 0..8 on a mapped page, 9.. on an unmapped
    one.  #PF's gate cannot be read, so the CPU delivers #DF, whose gate can."""
    rig.pt.map(SPARE_VA, IDT_PA)
    base = SPARE_VA + 4096 - 9 * 16
    rig.set_gate(VECTORS["#DF"], rig.handlers.labels["df"], ist=1, base=base)
    prog = rig.code("pf", [I("mov", "rax", rig.unmapped_va), I("load", "rbx", mem("rax"))])
    rig.start(0, prog.base)
    c = rig.machine.cpus[0]
    c.idtr = (base, 4095)
    rig.run()
    faults = rig.events("fault", 0)
    assert [(f.data["vector"], f.data.get("during")) for f in faults] == [("#PF", None), ("#PF", "#PF")]
    assert faults[1].data["address"] == base + 14 * 16  # the #PF gate
    assert [e.data["vector"] for e in rig.events("exception", 0)] == ["#DF"]
    assert c.regs["r9"] == 8 and rig.machine.shutdown is None
    assert frame_at(rig, c.regs["rsp"], True)["error_code"] == 0


def test_not_present_gate_becomes_double_fault(rig):
    rig.set_gate(VECTORS["#PF"], rig.handlers.labels["pf"], present=False)
    _, c = run_on(rig, [I("mov", "rax", rig.unmapped_va), I("load", "rbx", mem("rax"))])
    assert [f.data["vector"] for f in rig.events("fault", 0)] == ["#PF", "#GP"]
    assert c.regs["r9"] == 8


def test_vector_beyond_the_idt_limit_becomes_double_fault(rig):
    prog = rig.code("pf", [I("mov", "rax", rig.unmapped_va), I("load", "rbx", mem("rax"))])
    rig.start(0, prog.base)
    c = rig.machine.cpus[0]
    c.idtr = (rig.idt[0], 10 * 16 - 1)  # gates 0..9 only
    rig.run()
    assert [e.data["vector"] for e in rig.events("exception", 0)] == ["#DF"]
    assert c.regs["r9"] == 8


def test_fault_while_delivering_double_fault_is_a_triple_fault(rig):
    spin = rig.code("spin", ["top:", I("add", "rbx", 1), I("jmp", "top")])
    rig.start(1, spin.base)
    prog = rig.code("pf", [I("mov", "rax", rig.unmapped_va), I("load", "rbx", mem("rax"))])
    rig.start(0, prog.base)
    rig.machine.cpus[0].idtr = (rig.unmapped_va, 4095)  # the IDT does not translate
    rig.run()
    m = rig.machine
    assert m.shutdown is not None and m.shutdown.startswith("triple fault on CPU 0: fault while delivering #DF")
    assert [c.state for c in m.cpus] == [RunState.OFF, RunState.OFF]
    assert [e.cpu for e in rig.events("triple_fault")] == [0]
    assert m.step() == [] and m.idle()
    assert rig.events("exception") == []


def test_page_fault_whose_stack_push_faults_is_delivered_as_double_fault_on_the_ist(rig):
    bad_stack = rig.unmapped_va + 0x100
    prog = rig.code("pf", [I("mov", "rax", rig.unmapped_va + 0x800), "load:", I("load", "rbx", mem("rax"))])
    rig.start(0, prog.base, rsp=bad_stack)
    rig.run()
    c = rig.machine.cpus[0]
    faults = rig.events("fault", 0)
    assert [(f.data["vector"], f.data.get("during")) for f in faults] == [("#PF", None), ("#PF", "#PF")]
    assert faults[1].data["address"] == bad_stack - 8  # the first push of the #PF frame
    assert [e.data["vector"] for e in rig.events("exception", 0)] == ["#DF"]
    assert c.regs["r9"] == 8 and rig.machine.shutdown is None  # the #DF handler ran
    assert c.regs["rsp"] == rig.ist_top(0) - 6 * 8
    assert frame_at(rig, c.regs["rsp"], True) == {
        "error_code": 0, "rip": prog.labels["load"], "cs": 0x10, "rflags": 0x2,
        "rsp": bad_stack, "ss": 0x18}


def test_double_fault_without_an_ist_on_a_bad_stack_is_a_triple_fault():
    rig = Rig(df_ist=0)
    prog = rig.code("pf", [I("mov", "rax", rig.unmapped_va), I("load", "rbx", mem("rax"))])
    rig.start(0, prog.base, rsp=rig.unmapped_va + 0x100)
    rig.run()
    assert rig.machine.shutdown is not None
    assert rig.machine.cpus[0].state == RunState.OFF


def test_a_faulting_push_leaves_rsp_unchanged(rig):
    """Faults are restartable (SDM vol. 3A 6.5): a PUSH whose store faults has not moved RSP,
    so the exception frame records the RSP from before the PUSH."""
    bad_stack = rig.unmapped_va + 0x100
    _, c = run_on(rig, [I("push", "rbx")], rsp=bad_stack)
    assert [e.data["vector"] for e in rig.events("exception", 0)] == ["#DF"]
    assert frame_at(rig, c.regs["rsp"], True)["rsp"] == bad_stack


def test_push_rsp_pushes_the_value_before_the_decrement(rig):
    _, c = run_on(rig, [I("push", "rsp"), I("pop", "rbx"), I("hlt")])
    assert c.regs["rbx"] == rig.stack_top(0)


def test_fault_in_the_double_fault_handler_itself_is_not_a_triple_fault(rig):
    """Shutdown comes from a fault *while delivering* #DF; once the #DF handler runs, a fault
    in it is an ordinary exception (here a #PF delivered on the IST stack it runs on)."""
    handler = rig.code("df2", [I("mov", "rax", rig.unmapped_va), I("load", "rbx", mem("rax"))])
    rig.set_gate(VECTORS["#DF"], handler.base, ist=1)
    _, c = run_on(rig, [I("mov", "rax", rig.unmapped_va), I("load", "rbx", mem("rax"))],
                  rsp=rig.unmapped_va + 0x100)
    assert [e.data["vector"] for e in rig.events("exception", 0)] == ["#DF", "#PF"]
    assert rig.machine.shutdown is None and c.regs["r9"] == 14


# -- code validity -------------------------------------------------------------------------
def test_fetch_from_an_overwritten_text_frame_is_an_invalid_opcode(rig):
    prog = rig.code("victim", [I("mov", "rbx", 1), I("hlt")])
    rig.memory.write_page(rig.text_pfn(prog), ContentTag("data", 3, 3), "loader")
    rig.start(0, prog.base)
    rig.run()
    c = rig.machine.cpus[0]
    exc = rig.events("exception", 0)
    assert [e.data["vector"] for e in exc] == ["#UD"] and exc[0].data["error_code"] is None
    assert c.regs["r9"] == 6 and c.regs["rbx"] == 0
    assert frame_at(rig, c.regs["rsp"], False)["rip"] == prog.base


def test_same_content_overwrite_keeps_the_code_valid(rig):
    prog = rig.code("victim", [I("mov", "rbx", 1), I("hlt")])
    pfn = rig.text_pfn(prog)
    rig.memory.write_page(pfn, ContentTag("text", TEXT_SEED, pfn), "loader")
    rig.start(0, prog.base)
    rig.run()
    assert rig.machine.cpus[0].regs["rbx"] == 1 and rig.events("exception") == []


def test_fetch_between_placed_instructions_is_an_invalid_opcode(rig):
    prog = rig.code("p", [I("hlt")])
    rig.start(0, prog.base + 0x802)
    rig.run()
    assert [e.data["vector"] for e in rig.events("exception", 0)] == ["#UD"]


def test_reading_a_text_frame_does_not_invalidate_its_code(rig):
    """A load materializes the frame but does not change its bytes."""
    prog = rig.code("p", [I("mov", "rbx", 1), I("hlt")])
    rig.memory.read_u64(rig.text_pfn(prog) << 12)
    assert rig.memory.is_materialized(rig.text_pfn(prog))
    rig.start(0, prog.base)
    rig.run()
    assert rig.machine.cpus[0].regs["rbx"] == 1 and rig.events("exception") == []


def test_store_into_a_materialized_code_frame_invalidates_its_code(rig):
    pfn = rig.phys(rig._text_next) >> 12
    rig.memory.materialize(pfn)                      # materialized before the code is placed
    prog = rig.code("p", [I("mov", "rbx", 1), I("hlt")])
    assert rig.text_pfn(prog) == pfn
    rig.memory.write_u64((pfn << 12) + 0x800, 0x90909090, "loader")
    rig.start(0, prog.base)
    rig.run()
    assert [e.data["vector"] for e in rig.events("exception", 0)] == ["#UD"]


def test_same_bytes_written_as_an_array_keep_the_code_valid(rig):
    pfn = rig.phys(rig._text_next) >> 12
    prog = rig.code("p", [I("mov", "rbx", 1), I("hlt")])
    rig.memory.write_page(pfn, ContentTag("text", TEXT_SEED, pfn).materialize(), "loader")
    rig.start(0, prog.base)
    rig.run()
    assert rig.machine.cpus[0].regs["rbx"] == 1 and rig.events("exception") == []


def test_real_mode_fetch_uses_physical_addresses(rig):
    placed = rig.code_at_phys("rm", [I("mov", "rbx", 3), I("hlt")], 0x9A000)
    c = rig.machine.cpus[1]
    c.rip = placed.base
    rig.machine.start(1)
    rig.run()
    assert c.regs["rbx"] == 3 and rig.events("walk", 1) == []


# -- TLB maintenance by instructions -------------------------------------------------------
def test_mov_cr3_keeps_global_translations_and_drops_the_rest(rig):
    rig.pt.map(SPARE_VA, rig.data_pa(0), g=False)
    prog, c = run_on(rig, [
        I("mov", "rax", SPARE_VA), I("load", "rbx", mem("rax")),
        I("mov", "rax", rig.pt.root), I("mov_cr3", "rax"), I("hlt"),
    ])
    assert c.tlb.lookup(SPARE_VA) is None
    assert c.tlb.lookup(prog.base) is not None                   # text is global
    assert not c.tlb.psc
    assert rig.events("cr3", 0)[0].data["cr3"] == rig.pt.root


def test_invlpg_instruction_drops_one_translation(rig):
    rig.pt.map(SPARE_VA, rig.data_pa(0))
    rig.pt.map(SPARE_VA + 0x1000, rig.data_pa(0x1000))
    _, c = run_on(rig, [
        I("mov", "rax", SPARE_VA), I("load", "rbx", mem("rax")), I("load", "rbx", mem("rax", 0x1000)),
        I("invlpg", mem("rax")), I("hlt"),
    ])
    assert c.tlb.lookup(SPARE_VA) is None and c.tlb.lookup(SPARE_VA + 0x1000) is not None


def test_stale_tlb_entry_is_used_until_invalidated(rig):
    """The TLB is not coherent with memory: remapping a page is seen only after INVLPG."""
    rig.pt.map(SPARE_VA, rig.data_pa(0))
    rig.memory.write_u64(rig.data_pa(0), 111, "boot")
    rig.memory.write_u64(rig.data_pa(0x1000), 222, "boot")
    step = walk(rig.memory, rig.pt.root, SPARE_VA, set_accessed=False).steps[-1]
    prog = rig.code("p", [
        I("mov", "rax", SPARE_VA), I("load", "rbx", mem("rax")),
        I("model", "remap"),
        I("load", "rcx", mem("rax")), I("invlpg", mem("rax")), I("load", "rdx", mem("rax")), I("hlt"),
    ])

    def remap(cpu, at):
        e = rig.memory.read_u64(step.table + step.index * 8)
        rig.memory.write_u64(step.table + step.index * 8, e + 0x1000, "cpu0")
        return 1

    rig.machine.routines["remap"] = remap
    rig.start(0, prog.base)
    rig.run()
    c = rig.machine.cpus[0]
    assert (c.regs["rbx"], c.regs["rcx"], c.regs["rdx"]) == (111, 111, 222)


def test_accessed_flag_update_by_a_walk_can_wake_a_monitor():
    """A/D updates are ordinary stores: they trigger a monitor armed on the table's line."""
    rig = Rig(accessed=False)
    rig.pt.map(SPARE_VA, rig.data_pa(0))
    step = walk(rig.memory, rig.pt.root, SPARE_VA, set_accessed=False).steps[-1]
    pte_pa = step.table + step.index * 8
    assert not rig.memory.read_u64(pte_pa) & A
    park = rig.code("park", [I("mov", "rax", rig.dm(pte_pa)), I("monitor"), I("mov", "rax", 0),
                             I("mov", "rcx", 0), I("mwait"), I("mov", "rbx", 1), I("hlt")])
    rig.start(1, park.base)
    rig.run()
    assert rig.machine.cpus[1].state == RunState.MWAIT
    run_on(rig, [I("mov", "rax", SPARE_VA), I("load", "rbx", mem("rax")), I("hlt")], cpu=0)
    assert rig.memory.read_u64(pte_pa) & A
    assert "by cpu0" in rig.events("wake", 1)[0].data["reason"]
    assert rig.machine.cpus[1].regs["rbx"] == 1


# -- validation ----------------------------------------------------------------------------
def test_cpu_and_cstate_validation(rig):
    with pytest.raises(ValueError, match="MWAIT hint must be 0..0xff, got 0x100"):
        CState("X", 0x100, 0, False)
    with pytest.raises(ValueError, match="exit latency must be >= 0 ns"):
        CState("X", 0, -1, False)
    with pytest.raises(ValueError, match="CPU id must be >= 0, got -1"):
        Cpu(-1, rig.machine)
    with pytest.raises(ValueError, match="at least one C-state and distinct MWAIT hints"):
        Cpu(0, rig.machine, (CState("A", 0, 1, False), CState("B", 0, 2, False)))
    with pytest.raises(ValueError, match="at least one C-state"):
        Cpu(0, rig.machine, ())


@pytest.mark.parametrize("nr", [0, MAX_CPUS + 1, 2.0])
def test_machine_cpu_count(nr):
    with pytest.raises(ValueError, match=f"number of CPUs must be 1 to {MAX_CPUS}, got {nr!r}"):
        Machine(nr, 1 << 20, np.random.default_rng(0))


def test_machine_needs_a_generator():
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator"):
        Machine(1, 1 << 20, 42)  # type: ignore[arg-type]


def test_timing_validation():
    with pytest.raises(ValueError, match="timing clflush_ns must be a whole number of ns >= 0, got -1"):
        Timing(clflush_ns=-1)
    with pytest.raises(ValueError, match="timing instr_ns must be a whole number"):
        Timing(instr_ns=1.5)  # type: ignore[arg-type]


def test_instr_validation():
    with pytest.raises(ValueError) as exc:
        Instr("movq", ("rax", 1))
    assert "unknown instruction 'movq'; allowed: mov, load, store" in str(exc.value)
    with pytest.raises(ValueError, match="hlt takes 0 operand"):
        Instr("hlt", (1,))
    with pytest.raises(ValueError, match="unknown register 'eax'; allowed: rax, rbx"):
        mem("eax")
