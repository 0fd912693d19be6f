"""IPIs (lab/hw/apic.py): INIT and wait-for-SIPI, SIPI, and the checks on what may be sent
(FACTS 4; SDM vol. 3A 8.4 multiple-processor initialization, 10.6 issuing IPIs)."""
from __future__ import annotations

import pytest

from hwkit import IRQ_VECTOR, Rig, executed, mwait_program, stores_by
from lab.hw import IPI_KINDS, I, RunState

LINE = 0x100


def spin(rig: Rig, cpu: int):
    prog = rig.code(f"spin{cpu}", ["top:", I("add", "rbx", 1), I("jmp", "top")])
    rig.start(cpu, prog.base)
    for _ in range(20):
        rig.machine.step()
    return prog, rig.machine.cpus[cpu]


def test_init_puts_a_running_cpu_into_wait_for_sipi_and_loses_its_tlb_and_monitor(rig):
    _, c = spin(rig, 1)
    rig.machine.monitor.arm(1, rig.data_pa(LINE))
    c.if_flag = True
    assert len(c.tlb) > 0
    assert rig.machine.apic.send(1, "init") == "reset to wait-for-SIPI"
    assert c.state == RunState.WAIT_FOR_SIPI
    assert len(c.tlb) == 0 and not c.tlb.psc
    assert 1 not in rig.machine.monitor.armed
    assert c.cr3 is None and not c.if_flag and c.regs["rbx"] == 0
    assert not rig.machine.sched.is_scheduled(1)
    assert rig.events("state", 1)[-1].data["state"] == "wait-for-SIPI"


def test_a_cpu_in_wait_for_sipi_executes_nothing_and_touches_no_memory(rig):
    _, c = spin(rig, 1)
    rig.machine.apic.send(1, "init")
    seen = stores_by(rig, "cpu1")
    n = len(rig.machine.events)
    rig.memory.write_u64(rig.data_pa(LINE), 1, "cpu0")
    spin(rig, 0)
    for _ in range(200):
        rig.machine.step()
    assert seen == []
    assert [e for e in rig.events(cpu=1, since=n) if e.kind in ("exec", "walk", "fault", "exception")] == []


@pytest.mark.parametrize("kind, vector", [("nmi", None), ("smi", None), ("fixed", IRQ_VECTOR)])
def test_wait_for_sipi_ignores_nmi_smi_and_interrupts(rig, kind, vector):
    spin(rig, 1)
    rig.machine.apic.send(1, "init")
    effect = rig.machine.apic.send(1, kind, vector)
    assert effect == f"ignored: {kind.upper()} does not leave wait-for-SIPI"
    rig.run()
    c = rig.machine.cpus[1]
    assert c.state == RunState.WAIT_FOR_SIPI and c.pending_exc == [] and c.pending_irqs == []
    assert rig.events("exec", 1)[-1].data["op"] in ("add", "jmp")  # nothing after the INIT


def test_sipi_starts_at_vector_times_4096_in_real_mode(rig):
    spin(rig, 1)
    rig.machine.apic.send(1, "init")
    placed = rig.code_at_phys("trampoline", [I("mov", "rbx", 0x5150), I("hlt")], 0x9A000)
    effect = rig.machine.apic.send(1, "sipi", 0x9A)
    assert effect == "started in real mode at 0x9a000"
    c = rig.machine.cpus[1]
    assert c.state == RunState.RUNNING and c.rip == 0x9A000 and c.cr3 is None
    n = len(rig.machine.events)
    rig.run()
    assert executed(rig.events(cpu=1, since=n)) == [placed.base, placed.base + 4]
    assert rig.events("walk", 1, since=n) == []  # paging is off: no walks
    assert c.regs["rbx"] == 0x5150


def test_init_sipi_sipi_the_second_sipi_is_ignored(rig):
    spin(rig, 1)
    rig.code_at_phys("trampoline", [I("mov", "rbx", 1), I("hlt")], 0x9A000)
    apic = rig.machine.apic
    apic.send(1, "init")
    assert apic.send(1, "sipi", 0x9A).startswith("started")
    assert apic.send(1, "sipi", 0x9A) == "ignored: SIPI only starts a CPU in wait-for-SIPI"
    rig.run()
    assert rig.machine.cpus[1].regs["rbx"] == 1


def test_init_takes_a_cpu_out_of_mwait_and_hlt(rig):
    prog = mwait_program(rig, rig.data_va(LINE))
    rig.start(1, prog.base)
    rig.run()
    rig.machine.apic.send(1, "init")
    assert rig.machine.cpus[1].state == RunState.WAIT_FOR_SIPI
    rig.memory.write_u64(rig.data_pa(LINE), 1, "cpu0")  # the old monitor is gone
    assert rig.machine.cpus[1].state == RunState.WAIT_FOR_SIPI and rig.events("wake", 1) == []


def test_ipis_to_a_cpu_that_is_off_are_ignored(rig):
    c = rig.machine.cpus[1]
    assert c.state == RunState.OFF
    for kind, vec in (("init", None), ("sipi", 1), ("nmi", None)):
        assert rig.machine.apic.send(1, kind, vec) == "ignored: CPU is off"
    assert c.state == RunState.OFF


def test_sipi_to_a_running_cpu_is_ignored(rig):
    _, c = spin(rig, 1)
    assert rig.machine.apic.send(1, "sipi", 0x10) == "ignored: SIPI only starts a CPU in wait-for-SIPI"
    assert c.state == RunState.RUNNING


def test_nmi_and_interrupts_to_a_running_cpu(rig):
    _, c = spin(rig, 1)
    assert rig.machine.apic.send(1, "nmi") == "NMI handler runs next"
    assert rig.machine.apic.send(1, "fixed", IRQ_VECTOR) == "pending until IF=1"
    c.if_flag = True
    assert rig.machine.apic.send(1, "fixed", IRQ_VECTOR + 1) == "delivered next"


def test_ipi_is_recorded_as_an_event_and_counted(rig):
    spin(rig, 1)
    rig.machine.apic.send(1, "nmi", src="cpu0")
    ev = rig.events("ipi")[-1]
    assert ev.cpu == 1 and ev.data["ipi"] == "nmi" and ev.data["src"] == "cpu0"
    assert ev.data["effect"] == "NMI handler runs next"
    assert rig.machine.apic.sent == 1


def test_ipi_kinds():
    assert IPI_KINDS == ("fixed", "nmi", "smi", "init", "sipi", "mce", "mailbox")


def test_mailbox_platform_has_no_init_and_starts_cpus_through_the_mailbox():
    """ACPI MADT multiprocessor wakeup: no INIT/SIPI to send; the mailbox starts the AP at the
    vector, in real mode."""
    import numpy as np
    from lab.hw.cpu import RunState
    from lab.hw.machine import Machine
    m = Machine(2, 64 << 20, np.random.default_rng(0), wakeup="mailbox")
    m.cpus[1].state = RunState.HLT
    assert m.apic.send(1, "init").startswith("ignored: this platform wakes CPUs through a mailbox")
    assert m.cpus[1].state == RunState.HLT
    assert m.apic.send(1, "mailbox", 0x9A).startswith("started in real mode at 0x9a000")
    assert m.cpus[1].state == RunState.RUNNING and m.cpus[1].cr3 is None
    plain = Machine(2, 64 << 20, np.random.default_rng(0))
    plain.cpus[1].state = RunState.HLT
    assert plain.apic.send(1, "mailbox", 0x9A) == "ignored: this platform has no wakeup mailbox"


@pytest.mark.parametrize("dst, kind, vector, words", [
    (0, "nmi2", None, "unknown IPI kind 'nmi2'; allowed: fixed, nmi, smi, init, sipi, mce, mailbox"),
    (2, "nmi", None, "no CPU 2; allowed: 0 to 1"),
    (-1, "nmi", None, "no CPU -1; allowed: 0 to 1"),
    (0, "fixed", None, "a fixed IPI needs a vector 0..0xff, got None"),
    (0, "sipi", 0x100, "a sipi IPI needs a vector 0..0xff, got 256"),
    (0, "fixed", 14, "fixed IPI vectors must be 32..255 (0..31 are exceptions), got 14"),
])
def test_bad_ipis_are_refused_with_the_reason(rig, dst, kind, vector, words):
    with pytest.raises(ValueError) as exc:
        rig.machine.apic.send(dst, kind, vector)
    assert str(exc.value) == words
    assert rig.machine.apic.sent == 0
