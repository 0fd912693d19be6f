"""The remedies of the 2016 thread and its sequels, each a strategy for how the non-boot CPUs
are parked for the restore and kicked afterwards.  Nothing else in the model knows which fix
runs: outcomes follow from the code the CPUs execute and the memory it touches.

A strategy has four hooks, each with a default: ``park`` (what a CPU taken down runs),
``kick`` (acting on parked CPUs before the copy, possibly waiting for them), ``before_copy``
(a last instant action) and ``bring_up`` (how the image kernel gets them back), plus
``unavailable`` (a platform on which the remedy cannot exist at all).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from .hw.cpu import Cpu
from .hw.memory import PAGE_SIZE
from .kernel.hotplug import cpu_up_step
from .kernel.layout import direct_va
from .kernel.programs import (CPUDEAD_MWAIT_KEXEC_HLT, CPUDEAD_MWAIT_WAIT, MD_CONTROL, MD_STATUS,
                              MWAIT_CPU_DEAD, RELEASE, safe_page_iret, safe_page_spin)

if TYPE_CHECKING:  # pragma: no cover
    from .kernel.restore import Runtime


class Fix:
    """Base strategy: park each CPU taken down in ``play_dead`` of the restore kernel; the
    image kernel brings it back with INIT, SIPI, SIPI (or the platform's mailbox)."""

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

    def kick(self, rt: "Runtime", cpu0: Cpu, at: int) -> int | None:
        """Before the copy: act on the parked CPUs.  Return ns to wait before being called
        again, or None when done."""
        return None

    def before_copy(self, rt: "Runtime", cpu0: Cpu) -> None:
        """Last chance to act on the parked CPUs before core_restore_code runs."""

    def bring_up(self, rt: "Runtime", cpu0: Cpu, at: int) -> int:
        """One step of enable_nonboot_cpus() in the image kernel."""
        return cpu_up_step(rt, cpu0, at)

    def unavailable(self, config: Any) -> str | None:
        """Why this remedy cannot exist on ``config``'s platform (None: it can)."""
        return None

    def __repr__(self) -> str:
        return f"<fix {self.name}: {self.title}>"


class Mwait(Fix):
    name = "mwait"
    title = "2016 baseline: mwait_play_dead monitoring thread_info->flags"
    source = "arch/x86/kernel/smpboot.c mwait_play_dead() (v4.0-v4.7)"
    play_dead = "mwait_play_dead"


class ZeroPage(Fix):
    name = "zero-page"
    title = "proposal 1: monitor a per-CPU line of the zero page (rejected)"
    source = "2016 thread: 'nobody writes the zero page'; one line per CPU caps it at 64 CPUs"
    play_dead = "mwait_play_dead_zero_page"

    def line_of(self, cpu: int, lines: int) -> int:
        """Past PAGE_SIZE / L1_CACHE_BYTES CPUs a kernel has to wrap: cpu % lines."""
        return cpu % lines

    def park(self, rt: "Runtime", cpu: Cpu) -> None:
        super().park(rt, cpu)
        size = rt.machine.monitor.line_size
        lines = PAGE_SIZE // size
        line = self.line_of(cpu.id, lines)
        cpu.regs["r9"] = line * size
        users = rt.line_users.setdefault(line, set())
        users.add(cpu.id)
        rt.sharing_cpus = sum(len(u) for u in rt.line_users.values() if len(u) > 1)


class ZeroPageShared(ZeroPage):
    name = "zero-page-shared"
    title = "the thread's first try: every parked CPU monitors the same zero-page line"
    source = "2016 thread: 'CPU2 clflush zero page, wake CPU1 up ... the nonboot CPUs never sleep for long'"

    def line_of(self, cpu: int, lines: int) -> int:
        return 0


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
    source = "2016 thread (reviewer); 45e34c8af58f (v6.5) does it on kexec; wakeup_secondary_cpu_via_init()"
    play_dead = "hlt_play_dead"

    def before_copy(self, rt: "Runtime", cpu0: Cpu) -> None:
        """Right before core_restore_code: INIT every parked CPU; in wait-for-SIPI a CPU
        executes nothing and touches no memory, and NMI and SMI do not wake it."""
        for cpu in rt.machine.cpus[1:]:
            rt.machine.apic.send(cpu.id, "init", src=cpu0.agent)

    def unavailable(self, config: Any) -> str | None:
        if getattr(config, "wakeup", "init-sipi") == "mailbox":
            return ("INIT parking needs INIT/SIPI, and this platform starts CPUs through a wakeup mailbox "
                    "(45e34c8af58f: 'unless the system has installed special wakeup mechanisms which are "
                    "not using INIT')")
        return None


class Trampoline(Fix):
    name = "trampoline"
    title = "reviewer: park CPUs in a safe-page trampoline, release them back to the image kernel"
    source = "2016 thread (reviewer): a safe page, every CPU jumps there and spins; then kick them back to real code"
    play_dead = "trampoline_spin"
    gates: ClassVar[dict[int, str] | None] = None

    def trampoline(self, rt: "Runtime"):  # noqa: ANN201
        if rt.trampoline is None:
            hint = rt.restore.params.mwait_hint
            progs = [safe_page_spin(hint)] + [safe_page_iret(n) for n in sorted(set((self.gates or {}).values()))]
            rt.trampoline = rt.build_trampoline(progs, self.gates)
        return rt.trampoline

    def park(self, rt: "Runtime", cpu: Cpu) -> None:
        """Jump to a loop in a safe page, on page tables in safe pages, monitoring this CPU's
        line of a safe data page: nothing there is written by the copy."""
        tr = self.trampoline(rt)
        cpu.cr3 = tr.cr3
        cpu.tlb.flush_non_global()
        cpu.rip = tr.placed[self.play_dead].base
        cpu.regs["rbx"] = tr.line_va(cpu.id)
        rt.in_trampoline.add(cpu.id)
        cpu.if_flag = False
        if tr.idt is not None:
            cpu.idtr = tr.idt
            cpu.ist = (0, tr.stack_top - cpu.id * IST_BYTES, 0, 0, 0, 0, 0, 0)
        rt.machine.emit("play_dead", cpu.id, program=self.play_dead)
        rt.machine.start(cpu.id, rt.machine.sched.now + rt.machine.timing.instr_ns)

    def bring_up(self, rt: "Runtime", cpu0: Cpu, at: int) -> int:
        """The way back: the image kernel writes the release word of each CPU parked in the
        trampoline (its monitored line, in a safe page it maps through its direct map) instead
        of INIT/SIPI; a CPU that never reached the trampoline (offline before, e.g. nosmt) gets
        the usual INIT/SIPI."""
        def release(rt: "Runtime", c0: Cpu, cpu: int) -> int:
            c0.store(rt.trampoline.line_direct_va(cpu) + RELEASE, 1, why="release from the trampoline")
            return rt.hotplug.poll_ns

        return cpu_up_step(rt, cpu0, at, stages=lambda cpu: [release] if cpu in rt.in_trampoline else None)


IST_BYTES = 256  # each CPU's share of the trampoline's IST stack


class TrampolineIdt(Trampoline):
    name = "trampoline-idt"
    title = "trampoline hardened: an IDT, NMI and #MC handlers and an IST stack in safe pages"
    source = "2016 thread (reviewer's trampoline) plus the obvious hardening against stray NMIs"
    gates = {2: "trampoline_nmi", 18: "trampoline_mc"}


class DedicatedLine(Fix):
    name = "dedicated-line"
    title = "2023: a dedicated per-CPU mwait_cpu_dead line, kicked to HLT before the copy"
    source = ("d7893093a741 'x86/smp: Cure kexec() vs. mwait_play_dead() breakage' (v6.5): "
              "arch/x86/kernel/smpboot.c mwait_play_dead(), smp_kick_mwait_play_dead()")
    play_dead = "mwait_play_dead_dedicated"
    tries = 1000  # smp_kick_mwait_play_dead: up to 1000 x udelay(5)
    delay_ns = 5_000

    def kick(self, rt: "Runtime", cpu0: Cpu, at: int) -> int | None:
        """smp_kick_mwait_play_dead(): for each parked CPU whose status says
        CPUDEAD_MWAIT_WAIT, write CPUDEAD_MWAIT_KEXEC_HLT to its control word and wait (5 us
        at a time, 1000 times at most) for the acknowledgement in its status word."""
        st = rt.kick_state
        if st is None:
            st = rt.kick_state = {"queue": [c.id for c in rt.machine.cpus[1:]], "cpu": None, "tries": 0}
        while True:
            if st["cpu"] is None:
                if not st["queue"]:
                    return None
                st["cpu"], st["tries"] = st["queue"].pop(0), 0
            va = direct_va(rt.restore.layout.percpu[st["cpu"]] * PAGE_SIZE + MWAIT_CPU_DEAD)
            status = cpu0.load(va + MD_STATUS, why="md->status")
            if st["tries"] == 0 and status != CPUDEAD_MWAIT_WAIT:
                st["cpu"] = None  # not sitting in mwait_play_dead()
                continue
            if status == CPUDEAD_MWAIT_KEXEC_HLT:
                st["cpu"] = None
                continue
            if st["tries"] >= self.tries:
                rt.machine.emit("kick_failed", st["cpu"], text=f"CPU{st['cpu']} is stuck in mwait_play_dead()")
                st["cpu"] = None
                continue
            cpu0.store(va + MD_CONTROL, CPUDEAD_MWAIT_KEXEC_HLT, why="md->control")
            st["tries"] += 1
            return self.delay_ns


FIXES: dict[str, Fix] = {f.name: f for f in (
    Mwait(), ZeroPageShared(), ZeroPage(), Hlt(), HltSmt(), Init(), Trampoline(), TrampolineIdt(), MwaitHlt(),
    DedicatedLine())}


def get_fix(name: str) -> Fix:
    try:
        return FIXES[name]
    except KeyError:
        raise ValueError(f"unknown fix {name!r}; allowed: {', '.join(FIXES)}") from None
