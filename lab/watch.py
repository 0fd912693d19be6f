"""Watching the page tables under the sleeping CPUs.

For every non-boot CPU that sleeps (MWAIT, HLT) or is still leaving its C-state after a wake,
the physical frames its next page walks read are *watched*: the walks of its RIP (the next
fetch), of its stack pointer (the next push, e.g. an exception frame) and of the line it
monitors (``clflush``/``monitor`` on ``mwait_ptr`` when it goes round its loop again).  Those
walks are done the way a debugger does them (``lab.hw.paging.walk`` with
``set_accessed=False`` and no TLB): they read memory and change nothing.

When another agent stores into a watched frame (the boot CPU's ``rep movsq`` of a page in
``core_restore_code``, a store of 8 bytes) the entry that walk uses is compared before and
after, and an event ``table_overwritten`` is emitted at the exact time of the store: the
moment the 2016 bug needs, a table overwritten on a sleeping CPU's path before it wakes
(Linux thread "x86/power/64: Fix crash whan the hibernation code passes control to the image
kernel", 2016; ``arch/x86/power/hibernate_asm_64.S`` ``core_restore_code``).

The union of watched frames is kept in ``machine.watched_frames``: the copy routine ends its
streamed runs before such a frame, so each watched page is copied at its own time.

The watch also keeps what the views ask for instead of snapshotting themselves: the content of
every frame as it was when the copy began (``before_copy``) and the history of stores to
watched frames (``content_at``).  Cost: a set lookup per store, a few walks per CPU state
change, one copy of the materialized frames when the copy begins.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .hw.cpu import RunState
from .hw.memory import PAGE_SHIFT, ContentTag, PhysicalMemory
from .hw.paging import A, D, walk

if TYPE_CHECKING:  # pragma: no cover
    from .hw.machine import Machine
    from .hw.sched import Event

#: run states in which a CPU executes nothing until something wakes it
SLEEPING = (RunState.MWAIT, RunState.HLT)
#: events after which a CPU's next walks may be different
RECOMPUTE_KINDS = frozenset({"state", "cr3", "wake", "monitor", "play_dead"})
_AD = A | D


@dataclass(frozen=True)
class Use:
    """One entry a sleeping CPU's next walk reads: CPU ``cpu`` walking ``va`` (for ``why``:
    rip, stack or monitored line) reads entry ``index`` of the table in frame ``pfn`` at
    paging level ``level`` (0 = PML4 .. 3 = PT); ``entry`` is its value now."""

    cpu: int
    why: str
    va: int
    level: int
    pfn: int
    index: int
    entry: int


def entry_of(memory: PhysicalMemory, pfn: int, index: int) -> int:
    """Entry ``index`` of frame ``pfn`` without materializing the frame."""
    arr = memory._frames.get(pfn)  # noqa: SLF001 - the model's own hot path, read only
    if arr is not None:
        return arr.item(index)
    if not 0 <= pfn < memory.nr_frames:
        return (1 << 64) - 1
    return int(memory.tag(pfn).materialize()[index])  # type: ignore[union-attr]


def frozen_copy(memory: PhysicalMemory) -> PhysicalMemory:
    """A copy of ``memory`` that later stores do not change (materialized frames are copied,
    tags and ranges shared: both are immutable).  Costs a copy of the materialized frames."""
    snap = copy.copy(memory)
    snap._frames = {pfn: arr.copy() for pfn, arr in memory._frames.items()}  # noqa: SLF001
    snap._tags = dict(memory._tags)  # noqa: SLF001
    snap._own = list(memory._own)  # noqa: SLF001 - the sorted frames of those two
    snap._range_starts = list(memory._range_starts)  # noqa: SLF001
    snap._ranges = list(memory._ranges)  # noqa: SLF001
    snap.observers = []
    return snap


def _as_array(content: ContentTag | np.ndarray) -> np.ndarray:
    return content.materialize() if isinstance(content, ContentTag) else np.array(content, copy=True)


class Watch:
    """Watches the tables under the sleeping non-boot CPUs of ``machine`` (see the module).

    ``uses[pfn]``: the entries of frame ``pfn`` the sleeping CPUs' next walks read;
    ``history[pfn]``: ``(t, content)`` of a watched frame from when it was first watched and
    after every store to it; ``overwrites``: the ``table_overwritten`` events."""

    def __init__(self, machine: "Machine", boot_cpu: int = 0) -> None:
        if not 0 <= boot_cpu < len(machine.cpus):
            raise ValueError(f"no boot CPU {boot_cpu}; allowed: 0 to {len(machine.cpus) - 1}")
        self.machine = machine
        self.boot_cpu = boot_cpu
        self.uses: dict[int, list[Use]] = {}
        self.history: dict[int, list[tuple[int, ContentTag | np.ndarray]]] = {}
        self.overwrites: list["Event"] = []
        self.copy_started: int | None = None
        self._before_copy: PhysicalMemory | None = None
        self._monitored: dict[int, int] = {}  # cpu -> virtual address it last armed MONITOR on
        self._waking: dict[int, int] = {}  # cpu -> when it runs again after a wake
        self._by_cpu: dict[int, list[Use]] = {}
        if not hasattr(machine, "watched_frames"):  # main's Machine has it (a FrameSet)
            machine.watched_frames = set()  # type: ignore[attr-defined]
        # mutated in place (add/discard): a FrameSet counts those changes for the copy routine
        self.watched: set[int] = machine.watched_frames  # type: ignore[attr-defined]
        machine.memory.observers.append(self._on_store)
        machine.observers.append(self._on_event)
        for c in machine.cpus:
            self.recompute(c.id)

    # -- which frames ------------------------------------------------------------------------
    def is_watched_cpu(self, cpu: int) -> bool:
        """A non-boot CPU that sleeps, or was woken and has not run again yet."""
        if cpu == self.boot_cpu:
            return False
        c = self.machine.cpus[cpu]
        if c.cr3 is None or c.state == RunState.OFF:
            return False
        return c.state in SLEEPING or cpu in self._waking

    def targets(self, cpu: int) -> list[tuple[str, int]]:
        """(why, virtual address) of the walks ``cpu`` does next."""
        c = self.machine.cpus[cpu]
        out = [("rip", c.rip), ("stack", (c.regs.get("rsp", 0) - 8) & ((1 << 64) - 1))]
        if cpu in self._monitored:
            out.append(("monitored line", self._monitored[cpu]))
        return out

    def recompute(self, cpu: int) -> None:
        """Walk ``cpu``'s next addresses again and update the watched frames."""
        for u in self._by_cpu.pop(cpu, ()):
            lst = self.uses.get(u.pfn)
            if lst is not None:
                lst[:] = [x for x in lst if x.cpu != cpu]
                if not lst:
                    del self.uses[u.pfn]
                    self.watched.discard(u.pfn)
        if not self.is_watched_cpu(cpu):
            return
        c = self.machine.cpus[cpu]
        mem = self.machine.memory
        mine: list[Use] = []
        for why, va in self.targets(cpu):
            w = walk(mem, c.cr3, va, set_accessed=False)  # type: ignore[arg-type]
            for s in w.steps:
                pfn = s.table >> PAGE_SHIFT
                u = Use(cpu, why, va, s.level, pfn, s.index, s.entry)
                mine.append(u)
                if pfn not in self.uses:
                    self.uses[pfn] = []
                    self.watched.add(pfn)
                    self.history.setdefault(pfn, []).append((self.machine.sched.now, mem.content(pfn)))
                self.uses[pfn].append(u)
        self._by_cpu[cpu] = mine

    # -- observers ---------------------------------------------------------------------------
    def _on_event(self, e: "Event") -> None:
        kind = e.kind
        if kind not in RECOMPUTE_KINDS and not self._waking and kind != "phase":
            return  # the hot path: an instruction executed, a page copied
        cpu = e.cpu
        if cpu is None:
            if e.kind == "phase" and e.data.get("phase") == "copy" and self.copy_started is None:
                self.copy_started = e.t
                self._before_copy = frozen_copy(self.machine.memory)
            return
        if cpu in self._waking and e.t >= self._waking[cpu]:
            del self._waking[cpu]
            self.recompute(cpu)
        if kind not in RECOMPUTE_KINDS:
            return
        if kind == "monitor":
            self._monitored[cpu] = e.data["va"]
        elif kind == "wake":
            self._waking[cpu] = int(e.data.get("resumes_at", e.t))
        self.recompute(cpu)

    def _on_store(self, paddr: int, nbytes: int, agent: str, kind: str) -> None:
        if kind != "store" or not self.uses:
            return
        lo = paddr >> PAGE_SHIFT
        hi = (paddr + nbytes - 1) >> PAGE_SHIFT
        if lo == hi:
            if lo not in self.uses:
                return
            hit = [lo]
        else:
            hit = sorted(p for p in self.uses if lo <= p <= hi)
        for pfn in hit:
            self._overwritten(pfn, agent, whole=nbytes >= (1 << PAGE_SHIFT))

    def _overwritten(self, pfn: int, agent: str, whole: bool) -> None:
        m = self.machine
        mem = m.memory
        self.history.setdefault(pfn, []).append((m.sched.now, mem.content(pfn)))
        again = set()
        for u in list(self.uses.get(pfn, ())):
            if agent == m.cpus[u.cpu].agent:
                continue
            new = entry_of(mem, pfn, u.index)
            if not whole and not (new ^ u.entry) & ~_AD:
                continue  # an accessed/dirty bit set by another CPU's walk
            ev = m.emit("table_overwritten", u.cpu, pfn=pfn, level=u.level, va=u.va, why=u.why, index=u.index,
                        old=u.entry, new=new, by=agent)
            self.overwrites.append(ev)
            again.add(u.cpu)
        for cpu in sorted(again):
            self.recompute(cpu)

    # -- what the views ask ------------------------------------------------------------------
    def before_copy(self, pfn: int) -> np.ndarray | None:
        """Frame ``pfn``'s 512 entries as they were when the copy began (None before that,
        or when the watch started after the copy had begun)."""
        if self._before_copy is None:
            return None
        return self._before_copy.read_page(pfn)

    def content_at(self, pfn: int, t: int) -> np.ndarray | None:
        """Frame ``pfn`` at time ``t`` (ns) from what was recorded: the stores to it while it was
        watched, else its content when the copy began if ``t`` is after that and before any
        recorded store.  None when nothing recorded covers ``t``."""
        best: Any = None
        if self.copy_started is not None and t >= self.copy_started and self._before_copy is not None:
            best = (self.copy_started, self._before_copy.content(pfn))
        for when, content in self.history.get(pfn, ()):
            if when <= t and (best is None or when >= best[0]):
                best = (when, content)
        return None if best is None else _as_array(best[1])

    def waking(self, cpu: int) -> int | None:
        """When ``cpu``, woken and leaving its C-state, runs again (ns); None if it is not."""
        return self._waking.get(cpu)

    def uses_of(self, cpu: int) -> list[Use]:
        return list(self._by_cpu.get(cpu, ()))
