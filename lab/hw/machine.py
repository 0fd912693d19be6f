"""The machine: memory, monitor unit, CPUs, APIC and the event-driven clock, wired together.

It knows nothing of Linux: the layer above places code and data in memory, registers model
routines (the ``model`` escape) and decides what the events mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .apic import Apic
from .cpu import DEFAULT_CSTATES, CodePage, Cpu, CState, RunState
from .isa import Placed
from .memory import PhysicalMemory
from .monitor import MonitorUnit
from .sched import Event, Jitter, Scheduler

MAX_CPUS = 512
WAKEUPS = ("init-sipi", "mailbox")  # INIT/SIPI (SDM 8.4.4), ACPI MADT multiprocessor wakeup
SHUTDOWN_CAUSES = ("triple fault", "machine check")
TIMER_BASE = 1 << 20  # scheduler ids from here on are platform events, not CPUs


@dataclass(frozen=True)
class Timing:
    """Nanoseconds each thing takes (defaults from the design: an instruction ~1 ns, leaving a
    deep C-state tens to a hundred microseconds, see CState)."""

    instr_ns: int = 1
    clflush_ns: int = 40
    wbinvd_ns: int = 2_000
    hlt_exit_ns: int = 1_000
    smi_ns: int = 50_000

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"timing {name} must be a whole number of ns >= 0, got {value!r}")


Routine = Callable[[Cpu, int], int]


class FrameSet(set):
    """A set of frames that counts its changes (``version``), so a reader can cache what it
    derived from it."""

    def __init__(self, *a) -> None:  # noqa: ANN002
        super().__init__(*a)
        self.version = 0

    def _bump(name):  # noqa: N805 - builds the mutating methods below
        def method(self, *a):  # noqa: ANN001, ANN002, ANN202
            self.version += 1
            return getattr(set, name)(self, *a)
        method.__name__ = name
        return method

    for _n in ("add", "discard", "remove", "pop", "clear", "update", "difference_update",
               "intersection_update", "symmetric_difference_update", "__ior__", "__iand__", "__isub__",
               "__ixor__"):
        locals()[_n] = _bump(_n)
    del _n, _bump

    def replace(self, frames) -> None:  # noqa: ANN001
        set.clear(self)
        set.update(self, frames)
        self.version += 1


class Machine:
    def __init__(self, nr_cpus: int, ram_bytes: int, rng: np.random.Generator, *,
                 phys_bits: int = 46, line_size: int = 64, clflush_triggers: bool = True,
                 cstates: tuple[CState, ...] = DEFAULT_CSTATES, timing: Timing = Timing(),
                 jitter: float = 0.1, wakeup: str = "init-sipi", chooser: Any = None) -> None:
        if not isinstance(nr_cpus, int) or not 1 <= nr_cpus <= MAX_CPUS:
            raise ValueError(f"number of CPUs must be 1 to {MAX_CPUS}, got {nr_cpus!r}")
        if not isinstance(rng, np.random.Generator):
            raise ValueError("rng must be a numpy.random.Generator (one seeded generator per run)")
        if wakeup not in WAKEUPS:
            raise ValueError(f"unknown wakeup method {wakeup!r}; allowed: {', '.join(WAKEUPS)}")
        self.wakeup = wakeup  # how APs are started: INIT/SIPI, or an ACPI wakeup mailbox
        self.memory = PhysicalMemory(ram_bytes, phys_bits)
        self.monitor = MonitorUnit(line_size, clflush_triggers)
        self.memory.observers.append(self.monitor.observe)
        self.monitor.on_trigger = self._monitor_triggered
        self.sched = Scheduler()
        from ..choices import ChoiceJitter, SeededChooser  # lab.choices: every choice by name
        self.choices = chooser if chooser is not None else SeededChooser()
        self.jitter: Jitter = ChoiceJitter(rng, jitter, self.choices)
        self.rng = rng
        self.timing = timing
        self.cpus = [Cpu(i, self, cstates) for i in range(nr_cpus)]
        self.apic = Apic(self)
        self.code: dict[int, CodePage] = {}
        self.routines: dict[str, Routine] = {}
        self.cr2: dict[int, int] = {}
        self.events: list[Event] = []
        self.observers: list[Callable[[Event], None]] = []
        self.shutdown: str | None = None  # why the machine went down (a processor shut down)
        self.shutdown_cause: str | None = None  # SHUTDOWN_CAUSES: "triple fault" or "machine check"
        self._watched = FrameSet()  # frames an observer wants each store to be its own step
        self._timers: dict[int, Callable[[], None]] = {}  # platform events (fault injection)
        self._timers_made = 0  # ids are never reused, also after earlier timers fired

    @property
    def watched_frames(self) -> "FrameSet":
        """Frames whose stores an observer wants to see one at a time, at their exact time."""
        return self._watched

    @watched_frames.setter
    def watched_frames(self, frames) -> None:  # noqa: ANN001
        self._watched.replace(frames)

    # -- events ------------------------------------------------------------------------------
    def emit(self, kind: str, cpu: int | None, /, **data: Any) -> Event:
        ev = Event(self.sched.now, kind, cpu, data)
        self.events.append(ev)
        for obs in self.observers:
            obs(ev)
        return ev

    def _monitor_triggered(self, cpu: int, agent: str, kind: str, line: int) -> None:
        c = self.cpus[cpu]
        self.emit("monitor_trigger", cpu, agent=agent, access=kind, line=line, asleep=c.state == RunState.MWAIT)
        if c.state == RunState.MWAIT:
            c.wake(f"{kind} to monitored line {line:#x} by {agent}")

    # -- code --------------------------------------------------------------------------------
    def place_code(self, placed: Placed, to_phys: Callable[[int], int]) -> None:
        """Record the instructions of ``placed`` at the physical addresses ``to_phys`` gives;
        each frame's code is valid while the frame keeps the content it has now."""
        for ln in placed.lines:
            pa = to_phys(ln.va)
            pfn = pa >> 12
            page = self.code.get(pfn)
            if page is None or not page.valid(self.memory, pfn):
                page = self.code[pfn] = CodePage(self.memory.content(pfn))
            page.instrs[pa & 0xFFF] = ln.instr

    def run_routine(self, name: str, cpu: Cpu, at: int) -> int:
        fn = self.routines.get(name)
        if fn is None:
            raise ValueError(f"no model routine {name!r}; registered: {', '.join(sorted(self.routines))}")
        return fn(cpu, at)

    # -- running -----------------------------------------------------------------------------
    def start(self, cpu: int, at: int | None = None) -> None:
        c = self.cpus[cpu]
        if c.state != RunState.RUNNING:
            c.state = RunState.RUNNING
            self.emit("state", cpu, state=str(c.state))
        self.sched.schedule(cpu, self.sched.now if at is None else at)

    def at(self, when: int, action: Callable[[], None]) -> None:
        """Run ``action`` (e.g. an injected NMI) when the clock reaches ``when`` ns."""
        actor = TIMER_BASE + self._timers_made
        self._timers_made += 1
        self._timers[actor] = action
        self.sched.schedule(actor, max(when, self.sched.now))

    def step(self) -> list[Event]:
        """Run the next scheduled CPU for one instruction (or a due platform event); returns
        the events it produced."""
        first = len(self.events)
        if self.shutdown is not None:
            return []
        nxt = self.sched.pop()
        if nxt is None:
            return []
        _, cid = nxt
        if cid >= TIMER_BASE:
            self._timers.pop(cid)()
            return self.events[first:]
        cpu = self.cpus[cid]
        if cpu.state != RunState.RUNNING:
            return self.events[first:]
        ns = cpu.step()
        if cpu.state == RunState.RUNNING and self.shutdown is None:
            self.sched.schedule(cid, self.sched.now + ns)
        return self.events[first:]

    def idle(self) -> bool:
        """Nothing scheduled: every CPU sleeps, waits or is off, and no platform event is due."""
        return self.sched.next_time() is None

    def triple_fault(self, cpu: int, why: str) -> None:
        """A fault while delivering #DF (SDM vol. 3A 6.15, interrupt 8): shutdown."""
        self.shutdown_processor(cpu, "triple fault", why)

    def shutdown_processor(self, cpu: int, cause: str, why: str) -> None:
        """Processor ``cpu`` enters the shutdown state (SDM vol. 3A 6.15: a triple fault; vol.
        3B 15.10.1: a machine check with CR4.MCE=0 or MCG_STATUS.MCIP=1).  The chipset answers
        the shutdown cycle by resetting the machine (PC platform behaviour): every CPU off.
        Emits ``shutdown`` (cause, why) and, for a triple fault, ``triple_fault``."""
        if cause not in SHUTDOWN_CAUSES:
            raise ValueError(f"unknown shutdown cause {cause!r}; allowed: {', '.join(SHUTDOWN_CAUSES)}")
        self.shutdown = f"{cause} on CPU {cpu}: {why}"
        self.shutdown_cause = cause
        if cause == "triple fault":
            self.emit("triple_fault", cpu, why=why)
        self.emit("shutdown", cpu, cause=cause, why=why)
        for c in self.cpus:
            if c.state != RunState.OFF:
                c.state = RunState.OFF
                self.emit("state", c.id, state=str(c.state), why="machine reset")
            self.sched.cancel(c.id)
