"""CPU hotplug: taking a CPU down into its play_dead loop and bringing one up with INIT, SIPI,
SIPI.

Sources: kernel/cpu.c (_cpu_down, cpu_up), arch/x86/kernel/smpboot.c (native_play_dead,
native_cpu_die waiting for the CPU to report dead, do_boot_cpu and
wakeup_secondary_cpu_via_init: INIT, a short wait, then two STARTUP IPIs whose vector is the
trampoline's frame), arch/x86/realmode/rm/trampoline_64.S.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..hw.cpu import Cpu, RunState

if TYPE_CHECKING:  # pragma: no cover
    from .restore import Runtime


@dataclass(frozen=True)
class HotplugTiming:
    """Nanoseconds the kernel waits (udelay and polling in the functions named)."""

    cpu_down_ns: int = 200_000  # _cpu_down up to play_dead (stop_machine, migration)
    poll_ns: int = 10_000  # cpu_wait_death / do_boot_cpu polling step
    init_to_sipi_ns: int = 10_000  # wakeup_secondary_cpu_via_init: INIT, udelay(init_udelay)
    sipi_to_sipi_ns: int = 200_000  # udelay(200) between the STARTUP IPIs
    online_timeout_ns: int = 10_000_000  # do_boot_cpu gives up after 10 s; scaled down


def park_idle(rt: "Runtime", cpu: Cpu) -> None:
    """An online, idle non-boot CPU: the idle loop of start_secondary, in HLT with IF=1."""
    k = rt.kernel
    k.enter(cpu, "start_secondary")
    idle = k.placed["start_secondary"].labels["idle"]
    cpu.rip = idle + 8  # after "sti; hlt": halted in default_idle()
    cpu.if_flag = True
    cpu.state = RunState.HLT
    rt.machine.emit("state", cpu.id, state=str(cpu.state), where="idle loop")


def cpu_down_step(rt: "Runtime", cpu0: Cpu, at: int) -> int:
    """One step of taking the non-boot CPUs down: start the next one in the fix's play_dead
    (through the fix's ``park``), then wait until it has parked (reported dead)."""
    up = rt.smt_bringup
    if up is not None and (up.queue or up.current is not None):
        # cpuhp_smt_enable() first (ec527c318036): CPUs that were offline come online, so that
        # they too are taken down below, into this fix's play_dead
        ns = cpu_up_step(rt, cpu0, at, up)
        cpu0.rip = at
        return ns
    st = rt.bringdown
    m = rt.machine
    if st.current is not None:
        c = m.cpus[st.current]
        if c.state == RunState.RUNNING and m.sched.now - st.since < rt.hotplug.online_timeout_ns:
            cpu0.rip = at
            return rt.hotplug.poll_ns
        m.emit("cpu_dead", c.id, state=str(c.state), cstate=c.cstate.name if c.cstate else None)
        rt.kernel.online.discard(c.id)
        st.current = None
    if st.queue:
        nxt = st.queue.pop(0)
        st.current = nxt
        st.since = m.sched.now
        rt.fix.park(rt, m.cpus[nxt])
        cpu0.rip = at
        return rt.hotplug.cpu_down_ns
    return m.timing.instr_ns


Stage = Callable[["Runtime", Cpu, int], int]  # (runtime, boot CPU, target CPU) -> ns to wait


def init_sipi_stages(rt: "Runtime") -> list[Stage]:
    """wakeup_secondary_cpu_via_init(): INIT, udelay, STARTUP, udelay(200), STARTUP; or, on a
    platform with mailbox wakeup (ACPI MADT multiprocessor wakeup), one mailbox command."""
    t, m = rt.hotplug, rt.machine
    vector = rt.kernel.layout.trampoline
    if m.wakeup == "mailbox":
        return [lambda rt, c0, cpu: (m.apic.send(cpu, "mailbox", vector, src=c0.agent), t.poll_ns)[1]]
    return [lambda rt, c0, cpu: (m.apic.send(cpu, "init", src=c0.agent), t.init_to_sipi_ns)[1],
            lambda rt, c0, cpu: (m.apic.send(cpu, "sipi", vector, src=c0.agent), t.sipi_to_sipi_ns)[1],
            lambda rt, c0, cpu: (m.apic.send(cpu, "sipi", vector, src=c0.agent), t.poll_ns)[1]]


def cpu_up_step(rt: "Runtime", cpu0: Cpu, at: int, st: "Progress | None" = None,
                stages: Callable[[int], "list[Stage] | None"] | None = None) -> int:
    """One step of bringing CPUs up (``st``, default: every non-boot CPU after the resume):
    the wake-up stages ``stages(cpu)`` gives (None: INIT, SIPI, SIPI), then poll until online."""
    st = rt.bringup if st is None else st
    m = rt.machine
    t = rt.hotplug
    if st.current is None:
        if not st.queue:
            return m.timing.instr_ns
        st.current = st.queue.pop(0)
        st.stage = 0
        st.since = m.sched.now
    cpu = st.current
    cpu0.rip = at
    todo = (stages(cpu) if stages is not None else None) or init_sipi_stages(rt)
    if isinstance(st.stage, int) and st.stage < len(todo):
        st.stage += 1
        return todo[st.stage - 1](rt, cpu0, cpu)
    if cpu in rt.kernel.online:
        st.current = None
        return t.poll_ns
    if m.sched.now - st.since > t.online_timeout_ns:
        m.emit("cpu_up_failed", cpu, text=f"smpboot: CPU{cpu} failed to come online (do_boot_cpu)")
        st.failed.append(cpu)
        st.current = None
    return t.poll_ns


@dataclass
class Progress:
    queue: list[int]
    current: int | None = None
    stage: int | str = 0
    since: int = 0
    failed: list[int] | None = None

    def __post_init__(self) -> None:
        if self.failed is None:
            self.failed = []
