"""The remedies of the 2016 thread, each a strategy for how the non-boot CPUs are parked for
the restore and kicked afterwards.  Nothing else in the model knows which fix runs: outcomes
follow from the code the CPUs execute and the memory it touches.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from .hw.cpu import Cpu
from .kernel.programs import safe_page_spin

if TYPE_CHECKING:  # pragma: no cover
    from .kernel.restore import Runtime


class Fix:
    """Base strategy: park each CPU taken down in ``play_dead`` of the restore kernel."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    source: ClassVar[str] = ""
    play_dead: ClassVar[str] = "mwait_play_dead"
    online_offline_cpus: ClassVar[bool] = False  # bring already-offline CPUs up first, then down

    def park(self, rt: "Runtime", cpu: Cpu) -> None:
        """hibernate_resume_nonboot_cpu_disable -> _cpu_down -> play_dead on ``cpu``."""
        rt.kernel.enter(cpu, self.play_dead)
        rt.machine.emit("play_dead", cpu.id, program=self.play_dead)
        rt.machine.start(cpu.id, rt.machine.sched.now + rt.machine.timing.instr_ns)

    def before_copy(self, rt: "Runtime", cpu0: Cpu) -> None:
        """Last chance to act on the parked CPUs before core_restore_code runs."""

    def __repr__(self) -> str:
        return f"<fix {self.name}: {self.title}>"


class Mwait(Fix):
    name = "mwait"
    title = "2016 baseline: mwait_play_dead monitoring thread_info->flags"
    source = "arch/x86/kernel/smpboot.c mwait_play_dead() (v4.7)"
    play_dead = "mwait_play_dead"


class ZeroPage(Fix):
    name = "zero-page"
    title = "proposal 1: monitor a per-CPU line of the zero page (rejected)"
    source = "2016 thread: 'nobody writes the zero page'; one line per CPU caps it at 64 CPUs"
    play_dead = "mwait_play_dead_zero_page"


class MwaitHlt(Fix):
    name = "mwait-hlt"
    title = "rejected alternative: modify mwait_play_dead to fall into hlt after any wake-up"
    source = "2016 thread: not done because the woken CPU still runs text whose mapping is not safe (ab76f7b4ab23)"
    play_dead = "mwait_play_dead_then_hlt"


class Hlt(Fix):
    name = "hlt"
    title = "merged: hlt_play_dead while resuming (406f992e4a37, v4.8)"
    source = "arch/x86/power/cpu.c hibernate_resume_nonboot_cpu_disable(), resume_play_dead()"
    play_dead = "hlt_play_dead"


class HltSmt(Hlt):
    name = "hlt-smt"
    title = "hlt, and CPUs already offline (nosmt siblings) onlined first (ec527c318036, v5.2)"
    source = "arch/x86/power/cpu.c hibernate_resume_nonboot_cpu_disable(): cpuhp_smt_enable()"
    online_offline_cpus = True


class Init(Fix):
    name = "init"
    title = "reviewer: kick parked CPUs to INIT (wait-for-SIPI) before the copy"
    source = "2016 thread (reviewer); wakeup_secondary_cpu_via_init() sends the INIT"
    play_dead = "hlt_play_dead"

    def before_copy(self, rt: "Runtime", cpu0: Cpu) -> None:
        """Right before core_restore_code: INIT every parked CPU; in wait-for-SIPI a CPU
        executes nothing and touches no memory, and NMI and SMI do not wake it."""
        for cpu in rt.machine.cpus[1:]:
            rt.machine.apic.send(cpu.id, "init", src=cpu0.agent)


class Trampoline(Fix):
    name = "trampoline"
    title = "reviewer: park CPUs in a safe-page trampoline (mwait on a safe line)"
    source = "2016 thread (reviewer): a safe page, every CPU jumps there and spins"
    play_dead = "trampoline_spin"

    def park(self, rt: "Runtime", cpu: Cpu) -> None:
        """Jump to a loop in a safe page, on page tables in safe pages, monitoring this CPU's
        line of a safe data page: nothing there is written by the copy."""
        if rt.trampoline is None:
            rt.trampoline = rt.place_in_safe_page(safe_page_spin(rt.restore.params.mwait_hint))
        cr3, placed, data_va = rt.trampoline
        cpu.cr3 = cr3
        cpu.tlb.flush_non_global()
        cpu.rip = placed.base
        cpu.regs["rbx"] = data_va + cpu.id * 64
        cpu.if_flag = False
        rt.machine.emit("play_dead", cpu.id, program=self.play_dead)
        rt.machine.start(cpu.id, rt.machine.sched.now + rt.machine.timing.instr_ns)


FIXES: dict[str, Fix] = {f.name: f for f in (Mwait(), Hlt(), HltSmt(), ZeroPage(), Init(), Trampoline(),
                                              MwaitHlt())}


def get_fix(name: str) -> Fix:
    try:
        return FIXES[name]
    except KeyError:
        raise ValueError(f"unknown fix {name!r}; allowed: {', '.join(FIXES)}") from None
