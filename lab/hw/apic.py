"""Inter-processor interrupts and their effect on each run state.

Sources: SDM vol. 3A 10.6 (issuing IPIs: fixed, NMI, SMI, INIT, start-up), 8.4.4 (INIT then
SIPI), vol. 2B MWAIT (break events: store to the monitored range, NMI, SMI, INIT, #MC, debug,
an external interrupt if IF=1 or ECX[0]=1), HLT (resumes on NMI, SMI, INIT, #MC and, with
IF=1, an interrupt; after an NMI or SMI handler it continues after the HLT), 8.4.1 (an AP in
wait-for-SIPI ignores NMI and SMI and starts in real mode at vector * 4096 on SIPI; a machine
check there shuts it down, CR4.MCE being 0 after INIT, 6.15).  What NMI, SMI and #MC do to a
CPU that can take them is the CPU's business (6.7.1, vol. 3C 34.8, vol. 3B 15.10.1).
Delivery takes no time in the model; the sender's routine accounts for the waits Linux does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .cpu import RunState

if TYPE_CHECKING:  # pragma: no cover
    from .machine import Machine

IPI_KINDS = ("fixed", "nmi", "smi", "init", "sipi", "mce", "mailbox")


class Apic:
    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        self.sent = 0

    def send(self, dst: int, kind: str, vector: int | None = None, src: str = "cpu0") -> str:
        """Deliver an IPI to CPU ``dst``; returns what it did to the target, in words."""
        m = self.machine
        if kind not in IPI_KINDS:
            raise ValueError(f"unknown IPI kind {kind!r}; allowed: {', '.join(IPI_KINDS)}")
        if not 0 <= dst < len(m.cpus):
            raise ValueError(f"no CPU {dst}; allowed: 0 to {len(m.cpus) - 1}")
        if kind in ("fixed", "sipi", "mailbox") and (vector is None or not 0 <= vector <= 0xFF):
            raise ValueError(f"a {kind} IPI needs a vector 0..0xff, got {vector!r}")
        if kind == "fixed" and vector is not None and vector < 32:
            raise ValueError(f"fixed IPI vectors must be 32..255 (0..31 are exceptions), got {vector}")
        cpu = m.cpus[dst]
        self.sent += 1
        effect = self._effect(cpu, kind, vector)
        m.emit("ipi", dst, ipi=kind, vector=vector, src=src, effect=effect)
        return effect

    def _effect(self, cpu, kind: str, vector: int | None) -> str:  # noqa: ANN001
        st = cpu.state
        if st == RunState.OFF:
            return "ignored: CPU is off"
        if self.machine.wakeup == "mailbox" and kind in ("init", "sipi"):
            return f"ignored: this platform wakes CPUs through a mailbox, it has no {kind.upper()}"
        if kind == "mailbox":
            # ACPI MADT multiprocessor wakeup: the firmware starts the AP at the vector (the
            # firmware's own wait loop is not modelled: the AP is taken from wherever it is)
            if self.machine.wakeup != "mailbox":
                return "ignored: this platform has no wakeup mailbox"
            cpu.reset_to_wait_for_sipi()
            kind = "sipi"
            st = cpu.state
        if kind == "init":
            cpu.reset_to_wait_for_sipi()
            self.machine.emit("state", cpu.id, state=str(cpu.state))
            return "reset to wait-for-SIPI"
        if kind == "mce":  # also in wait-for-SIPI: CR4.MCE=0 there, so a shutdown
            return cpu.receive_machine_check()
        if st == RunState.WAIT_FOR_SIPI:
            if kind == "sipi":
                cpu.rip = vector * 4096  # type: ignore[operator]
                cpu.cr3 = None
                cpu.state = RunState.RUNNING
                cpu.wakeups += 1
                self.machine.emit("state", cpu.id, state=str(cpu.state), rip=cpu.rip)
                self.machine.sched.schedule(cpu.id, self.machine.sched.now + self.machine.timing.instr_ns)
                return f"started in real mode at {cpu.rip:#x}"
            return f"ignored: {kind.upper()} does not leave wait-for-SIPI"
        if kind == "sipi":
            return "ignored: SIPI only starts a CPU in wait-for-SIPI"
        if kind == "nmi":
            return cpu.receive_nmi()
        if kind == "smi":
            return cpu.receive_smi()
        sleeping = st in (RunState.MWAIT, RunState.HLT)
        # fixed interrupt
        cpu.pending_irqs.append(vector)  # type: ignore[arg-type]
        if sleeping and (cpu.if_flag or (st == RunState.MWAIT and cpu.mwait_irq_break)):
            cpu.wake(f"interrupt {vector:#x}")
            return f"woken from {st} by interrupt {vector:#x}"
        if sleeping:
            return f"pending: IF=0, stays in {st}"
        return "pending until IF=1" if not cpu.if_flag else "delivered next"
