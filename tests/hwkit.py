"""A test kit for ``lab.hw``: a small machine set up the way an OS would set it up.

``Rig`` builds a :class:`lab.hw.Machine` with

* 4-level page tables (a :class:`lab.hw.pagetable.PageTables`) holding a direct map of all RAM
  at ``DIRECT_MAP`` (2 MiB pages) and kernel text at ``TEXT_VA`` (4 KiB global pages); entries
  are written with A and D already set, as Linux writes them, unless ``accessed=False``;
* text frames tagged ``ContentTag("text", TEXT_SEED, pfn)``, so placed code stays valid while
  nobody overwrites them;
* an IDT of real 16-byte interrupt gates (``gate()``) for NMI, #UD, #DF, #GP, #PF, #MC and the
  fixed vector ``IRQ_VECTOR``, with handlers in text (``Rig.handlers``);
* a 16 KiB kernel stack and a 4 KiB IST stack per CPU (the #DF gate uses IST1 by default);
* a data area (``Rig.data_va`` / ``Rig.data_pa``) for monitored lines and scratch qwords.

What the handlers do, so tests can read it back from registers:

* NMI, #MC and the fixed interrupt return with ``iretq`` after adding ``NMI_MARK``, ``MCE_MARK``
  or ``IRQ_MARK`` to r8;
* the faults (#UD, #DF, #GP, #PF) put their vector number in r9 and halt for good (IF stays 0).

Physical layout (default 64 MiB of RAM)::

    0x0000_0000 .. 0x0010_0000   free, for real-mode code started by SIPI (vector * 4096)
    0x0020_0000 ..               page-table frames (bump allocator)
    0x0080_0000                  IDT (one frame), IDT_VA = DIRECT_MAP + 0x80_0000
    0x00a0_0000 + cpu * 0x4000   kernel stacks (16 KiB each)
    0x00c0_0000 + cpu * 0x1000   IST1 stacks
    0x00e0_0000 ..               data area (DATA_PAGES frames)
    0x0100_0000 ..               kernel text (TEXT_PAGES frames), mapped at TEXT_VA

Example::

    rig = Rig(nr_cpus=2)
    prog = rig.code("idle", [I("hlt"), I("mov", "rbx", 1), I("hlt")])
    rig.start(0, prog.base)
    rig.run()                     # CPU 0 halts
    rig.machine.apic.send(0, "nmi")
    rig.run()                     # NMI handler, iretq, then ``mov rbx, 1``
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from lab.hw import VECTORS, ContentTag, Event, I, Instr, Machine, Placed, Program, walk
from lab.hw.cpu import DEFAULT_CSTATES, CState
from lab.hw.machine import Timing
from lab.hw.pagetable import PageTables

DIRECT_MAP = 0xFFFF_8800_0000_0000
TEXT_VA = 0xFFFF_FFFF_8000_0000

TABLES_PA = 0x0020_0000
IDT_PA = 0x0080_0000
STACK_PA = 0x00A0_0000
STACK_SIZE = 0x4000
IST_PA = 0x00C0_0000
IST_SIZE = 0x1000
DATA_PA = 0x00E0_0000
DATA_PAGES = 16
TEXT_PA = 0x0100_0000
TEXT_PAGES = 64
TEXT_SEED = 7

IDT_VA = DIRECT_MAP + IDT_PA
IRQ_VECTOR = 0x40
NMI_MARK, MCE_MARK, IRQ_MARK = 1, 1 << 16, 1 << 32

#: vectors whose handler halts after recording the vector in r9
FAULT_VECTORS = ("#UD", "#DF", "#GP", "#PF")


def gate(handler: int, ist: int = 0, present: bool = True, gate_type: int = 0xE,
         selector: int = 0x10) -> tuple[int, int]:
    """A 64-bit IDT gate (SDM vol. 3A 6.14.1, figure 6-8) as its two qwords (low, high)."""
    if not 0 <= ist <= 7:
        raise ValueError(f"IST index must be 0..7, got {ist}")
    lo = ((handler & 0xFFFF)
          | (selector & 0xFFFF) << 16
          | (ist & 7) << 32
          | (gate_type & 0xF) << 40
          | int(present) << 47
          | ((handler >> 16) & 0xFFFF) << 48)
    hi = (handler >> 32) & 0xFFFF_FFFF
    return lo, hi


class BumpAllocator:
    """Hands out frame numbers upwards from ``start_pfn`` (page-table frames)."""

    def __init__(self, start_pfn: int, limit_pfn: int) -> None:
        self.next = start_pfn
        self.limit = limit_pfn

    def __call__(self) -> int:
        if self.next >= self.limit:
            raise RuntimeError("out of page-table frames")
        pfn = self.next
        self.next += 1
        return pfn


class Rig:
    """A machine with a direct map, text, IDT and stacks; see the module docstring."""

    def __init__(self, nr_cpus: int = 2, ram: int = 64 << 20, seed: int = 0, *,
                 clflush_triggers: bool = True, cstates: tuple[CState, ...] = DEFAULT_CSTATES,
                 timing: Timing = Timing(), jitter: float = 0.0, df_ist: int = 1,
                 direct_map_sizes: tuple[int, ...] = (1 << 21, 1 << 12),
                 accessed: bool = True) -> None:
        if ram < TEXT_PA + TEXT_PAGES * 4096:
            raise ValueError(f"the rig needs at least {TEXT_PA + TEXT_PAGES * 4096:#x} bytes of RAM")
        self.machine = Machine(nr_cpus, ram, np.random.default_rng(seed),
                               clflush_triggers=clflush_triggers, cstates=cstates,
                               timing=timing, jitter=jitter)
        self.memory = self.machine.memory
        self.alloc = BumpAllocator(TABLES_PA >> 12, IDT_PA >> 12)
        self.pt = PageTables(self.memory, self.alloc, agent="boot", accessed=accessed)
        self.pt.map_range(DIRECT_MAP, 0, ram, sizes=direct_map_sizes, g=True, nx=True)
        for i in range(TEXT_PAGES):
            pfn = (TEXT_PA >> 12) + i
            self.memory.write_page(pfn, ContentTag("text", TEXT_SEED, pfn), "boot")
            self.pt.map(TEXT_VA + i * 4096, TEXT_PA + i * 4096, g=True, rw=False)
        self._text_next = TEXT_VA
        self.df_ist = df_ist
        self.handlers = self._place_handlers()
        self.idt = (IDT_VA, 256 * 16 - 1)
        for name, label in (("NMI", "nmi"), ("#MC", "mce"), ("#UD", "ud"), ("#GP", "gp"),
                            ("#PF", "pf")):
            self.set_gate(VECTORS[name], self.handlers.labels[label])
        self.set_gate(VECTORS["#DF"], self.handlers.labels["df"], ist=df_ist)
        self.set_gate(IRQ_VECTOR, self.handlers.labels["irq"])

    # -- addresses ---------------------------------------------------------------------------
    def phys(self, va: int) -> int:
        """Translate through the rig's tables without touching A/D bits or any TLB."""
        w = walk(self.memory, self.pt.root, va, set_accessed=False)
        if w.fault is not None:
            raise ValueError(f"{va:#x} does not translate: {w.fault.describe()}")
        return w.paddr  # type: ignore[return-value]

    @staticmethod
    def dm(pa: int) -> int:
        """The direct-map address of physical ``pa``."""
        return DIRECT_MAP + pa

    def data_pa(self, offset: int = 0) -> int:
        if not 0 <= offset < DATA_PAGES * 4096:
            raise ValueError(f"data offset {offset:#x} outside the data area")
        return DATA_PA + offset

    def data_va(self, offset: int = 0) -> int:
        return self.dm(self.data_pa(offset))

    @staticmethod
    def stack_top(cpu: int) -> int:
        return DIRECT_MAP + STACK_PA + (cpu + 1) * STACK_SIZE

    @staticmethod
    def ist_top(cpu: int) -> int:
        return DIRECT_MAP + IST_PA + (cpu + 1) * IST_SIZE

    @property
    def unmapped_va(self) -> int:
        """A canonical kernel address with no mapping (just past the direct map)."""
        return DIRECT_MAP + self.memory.size + (1 << 30)

    def read_va(self, va: int) -> int:
        return self.memory.read_u64(self.phys(va))

    def write_va(self, va: int, value: int, agent: str = "boot") -> None:
        self.memory.write_u64(self.phys(va), value, agent)

    # -- IDT ---------------------------------------------------------------------------------
    def set_gate(self, vector: int, handler: int, ist: int = 0, present: bool = True,
                 base: int | None = None) -> None:
        """Write a 16-byte gate at ``base`` (default: the rig's IDT) + vector * 16."""
        lo, hi = gate(handler, ist, present)
        at = (IDT_VA if base is None else base) + vector * 16
        self.write_va(at, lo)
        self.write_va(at + 8, hi)

    # -- code --------------------------------------------------------------------------------
    def _place_handlers(self) -> Placed:
        items: list[Instr | str] = [
            "nmi:", I("add", "r8", NMI_MARK), I("iretq"),
            "mce:", I("add", "r8", MCE_MARK), I("iretq"),
            "irq:", I("add", "r8", IRQ_MARK), I("iretq"),
        ]
        for name in FAULT_VECTORS:
            label = name[1:].lower()
            items += [f"{label}:", I("mov", "r9", VECTORS[name]), f"{label}_halt:", I("hlt"),
                      I("jmp", f"{label}_halt")]
        return self.code("handlers", items)

    def code(self, name: str, items: list[Instr | str], source: str = "") -> Placed:
        """Place a program in text, starting on a fresh page; returns the placed listing."""
        base = self._text_next
        placed = Program(name, items, source).place(base)
        pages = -(-placed.size // 4096) or 1
        if base + pages * 4096 > TEXT_VA + TEXT_PAGES * 4096:
            raise RuntimeError("the rig's text is full")
        self.machine.place_code(placed, self.phys)
        self._text_next = base + pages * 4096
        return placed

    def code_at_phys(self, name: str, items: list[Instr | str], paddr: int,
                     seed: int = TEXT_SEED) -> Placed:
        """Place a program at physical ``paddr`` for a CPU running with paging off (after a
        SIPI); its frame is first tagged as text."""
        self.memory.write_page(paddr >> 12, ContentTag("text", seed, paddr >> 12), "boot")
        placed = Program(name, items).place(paddr)
        self.machine.place_code(placed, lambda va: va)
        return placed

    def text_pfn(self, placed: Placed) -> int:
        """The frame holding the first instruction of ``placed``."""
        return self.phys(placed.base) >> 12

    # -- running -----------------------------------------------------------------------------
    def start(self, cpu: int, rip: int, *, if_flag: bool = False, rsp: int | None = None,
              at: int | None = None, **regs: int) -> None:
        """Start ``cpu`` at ``rip`` with paging on (the rig's CR3), the rig's IDT, its stack
        and IST1; extra keyword arguments set registers."""
        c = self.machine.cpus[cpu]
        c.cr3 = self.pt.root
        c.idtr = self.idt
        c.regs["rsp"] = self.stack_top(cpu) if rsp is None else rsp
        c.ist = (0, self.ist_top(cpu)) + (0,) * 6
        c.if_flag = if_flag
        c.rip = rip
        for reg, value in regs.items():
            c.regs[reg] = value
        self.machine.start(cpu, at)

    def run(self, max_steps: int = 10_000, until: Callable[[Event], bool] | None = None) -> list[Event]:
        """Step until nothing is scheduled, the machine shut down, ``until`` matched an event
        or ``max_steps`` ran out (then RuntimeError).  Returns the events produced."""
        first = len(self.machine.events)
        for _ in range(max_steps):
            if self.machine.shutdown is not None or self.machine.idle():
                return self.machine.events[first:]
            new = self.machine.step()
            if until is not None and any(until(ev) for ev in new):
                return self.machine.events[first:]
        raise RuntimeError(f"still running after {max_steps} steps")

    def events(self, kind: str | None = None, cpu: int | None = None,
               since: int = 0) -> list[Event]:
        """The machine's events from index ``since``, filtered by kind and CPU."""
        return [ev for ev in self.machine.events[since:]
                if (kind is None or ev.kind == kind) and (cpu is None or ev.cpu == cpu)]


def executed(events: Iterable[Event], cpu: int | None = None) -> list[int]:
    """RIPs of the instructions executed, in order."""
    return [ev.data["rip"] for ev in events if ev.kind == "exec" and (cpu is None or ev.cpu == cpu)]


def stores_by(rig: Rig, agent: str) -> list[tuple[int, int, str]]:
    """Install a memory observer recording (paddr, nbytes, kind) of ``agent``'s stores and
    snoops from now on; returns the list it fills."""
    seen: list[tuple[int, int, str]] = []

    def obs(paddr: int, nbytes: int, who: str, kind: str) -> None:
        if who == agent:
            seen.append((paddr, nbytes, kind))

    rig.memory.observers.append(obs)
    return seen


def mwait_program(rig: Rig, line_va: int, *, hint: int = 0x20, ecx: int = 0,
                  before_mwait: list[Instr | str] | None = None, name: str = "mwait") -> Placed:
    """``monitor [line]; <before_mwait>; mwait(hint, ecx); mov rbx, 1; hlt`` -- the shape of
    an idle loop body.  rbx = 1 shows the CPU got past MWAIT."""
    return rig.code(name, [
        I("mov", "rax", line_va), I("monitor"),
        *(before_mwait or []),
        I("mov", "rax", hint), I("mov", "rcx", ecx),
        "mwait:", I("mwait"),
        "after:", I("mov", "rbx", 1),
        I("hlt"),
    ])
