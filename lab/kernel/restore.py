"""The restore kernel's last steps and the image kernel's first ones, as model routines that
the CPUs run when their code reaches a ``model`` instruction.

Sources: kernel/power/hibernate.c (resume_target_kernel, hibernate_resume_nonboot_cpu_disable),
arch/x86/power/hibernate_64.c (swsusp_arch_resume, set_up_temporary_mappings,
relocate_restore_code), arch/x86/power/hibernate_asm_64.S (core_restore_code,
restore_registers), kernel/cpu.c (enable_nonboot_cpus), arch/x86/mm/fault.c (no_context),
arch/x86/kernel/traps.c, kernel/panic.c (panic stops the other CPUs).
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..hw.cpu import MSR_IA32_MCG_STATUS, Cpu, RunState
from ..hw.isa import Placed, Program
from ..hw.machine import Machine
from ..hw.memory import ContentTag
from ..hw.pagetable import PageTables
from .hibernate import Image, Loaded
from .hotplug import HotplugTiming, Progress, cpu_down_step
from .instance import Kernel, make_gate
from .layout import PAGE_OFFSET, PAGE_SIZE, START_KERNEL_MAP, direct_va

if TYPE_CHECKING:  # pragma: no cover
    from ..fixes import Fix


SAFE_CODE_INDEX = 1 << 40  # content index of code copied into safe pages
TRAMPOLINE_STACK_VA = 0xFFFFC90000000000  # where the trampoline's own tables map its IST stack
TRAMPOLINE_DATA_VA = 0xFFFFC90000100000  # and its data pages (one monitored line per CPU)


@dataclass(frozen=True)
class Trampoline:
    """Where trampoline fixes park CPUs: page tables, code, data (one line per CPU) and
    optionally an IDT and IST stack, all in safe pages."""

    cr3: int
    placed: dict[str, Placed]
    data_va: int  # where the trampoline's own tables map the data pages
    data_pages: tuple[int, ...]
    line_size: int
    idt: tuple[int, int] | None = None
    stack_top: int | None = None

    def line_va(self, cpu: int) -> int:
        """This CPU's line, as the parked CPU addresses it (the trampoline's tables)."""
        return self.data_va + cpu * self.line_size

    def line_direct_va(self, cpu: int) -> int:
        """The same line through a kernel's direct map (how the image kernel writes it)."""
        off = cpu * self.line_size
        return direct_va(self.data_pages[off // PAGE_SIZE] * PAGE_SIZE + off % PAGE_SIZE)


@dataclass(frozen=True)
class RestoreTiming:
    page_copy_ns: int = 1_000  # rep movsq of 4 KiB


@dataclass
class Runtime:
    """Everything the routines need: the machine, both kernels, the loaded image, the fix."""

    machine: Machine
    restore: Kernel
    image_kernel: Kernel
    image: Image
    loaded: Loaded
    fix: "Fix"
    hotplug: HotplugTiming = field(default_factory=HotplugTiming)
    timing: RestoreTiming = field(default_factory=RestoreTiming)
    phase: str = "boot"
    done: bool = False
    copied: int = 0
    temp_tables: list[int] = field(default_factory=list)
    trampoline: "Trampoline | None" = None  # the parking place in safe pages, once built
    sharing_cpus: int = 0  # CPUs that monitor a line another parked CPU monitors too
    strays: tuple[str, ...] = ()  # Config.stray: kinds sent at random times during the copy
    line_users: dict[int, set[int]] = field(default_factory=dict)  # monitored line -> parked CPUs
    kick_state: dict | None = None  # the fix's kick in progress
    in_trampoline: set[int] = field(default_factory=set)  # CPUs parked in a safe-page trampoline
    own_writes: set[int] = field(default_factory=set)  # frames the image kernel wrote after taking over
    _watched_pos: tuple[int, np.ndarray] | None = None
    _armed_pos: tuple[tuple[int, ...], list[int]] | None = None
    _copy_end: np.ndarray | None = None  # cumulative page-copy times, drawn when the copy starts

    def __post_init__(self) -> None:
        self.kernel = self.restore  # the kernel whose code runs now
        n = len(self.machine.cpus)
        offline = [c for c in range(1, n) if c not in self.restore.online]
        wake_offline = self.fix.online_offline_cpus and bool(offline)
        self.smt_bringup = Progress(offline) if wake_offline else None
        self.bringdown = Progress([c for c in range(1, n) if wake_offline or c in self.restore.online])
        self.bringup = Progress(list(range(1, n)))
        routines: dict[str, Callable[[Cpu, int], int]] = {
            "hibernate_resume_nonboot_cpu_disable": lambda c, at: self._phase_then(
                "disable-nonboot", cpu_down_step, c, at),
            "swsusp_arch_resume": self.swsusp_arch_resume,
            "copy_pbe": self.copy_pbe,
            "restore_registers": self.restore_registers,
            "enable_nonboot_cpus": lambda c, at: self._phase_then("online", self.fix.bring_up, c, at),
            "kick_parked_cpus": self.kick_parked_cpus,
            "trampoline_return": self.trampoline_return,
            "resume_done": self.resume_done,
            "trampoline_to_long_mode": self.trampoline_to_long_mode,
            "cpu_online": self.cpu_online,
            "do_page_fault": self.do_page_fault,
            "do_double_fault": self.do_double_fault,
            "do_general_protection": lambda c, at: self._die(c, "general protection",
                                                             "general protection fault: 0000 [#1] SMP", None, 0),
            "do_invalid_op": lambda c, at: self._die(c, "invalid opcode", "invalid opcode: 0000 [#1] SMP", None, 0),
            "do_nmi": self.do_nmi,
            "do_machine_check": self.do_machine_check,
        }
        self.machine.routines.update(routines)

    # -- phases ------------------------------------------------------------------------------
    def set_phase(self, name: str) -> None:
        if name != self.phase:
            self.phase = name
            self.machine.emit("phase", None, phase=name)

    def _phase_then(self, phase: str, fn: Callable[["Runtime", Cpu, int], int], cpu: Cpu, at: int) -> int:
        self.set_phase(phase)
        return fn(self, cpu, at)

    # -- safe pages ---------------------------------------------------------------------------
    def _safe_page(self, role: str) -> int:
        pfn = self.loaded.safe.get()
        self.restore.layout.memblock.reserve(pfn, 1)
        self.restore.layout.roles[pfn] = role
        return pfn

    def build_trampoline(self, programs: list[Program], gates: dict[int, str] | None = None) -> "Trampoline":
        """Programs in a safe code page with a data page beside it, all reachable through their
        own page tables in safe pages: nothing the copy writes.  With ``gates`` (vector ->
        program name), also an IDT page whose gates lead to those programs on an IST stack
        in a safe page (trampoline-idt)."""
        m, agent = self.machine, self.machine.cpus[0].agent
        name = programs[0].name
        code = self._safe_page(f"{name} code (safe page)")
        # one monitored line per CPU: as many data pages as that takes, mapped one after the
        # other at a private address (the image kernel reaches each through its direct map)
        size = m.monitor.line_size
        data = [self._safe_page(f"{name} data (safe page)") for _ in range(-(-len(m.cpus) * size // PAGE_SIZE))]
        m.memory.write_page(code, ContentTag("text", self.restore.params.build_id, SAFE_CODE_INDEX + code), agent)
        tables = PageTables(m.memory, lambda: self._safe_page(f"{name} page table (safe page)"), agent)
        for k, pfn in enumerate(data):
            tables.map(TRAMPOLINE_DATA_VA + k * PAGE_SIZE, pfn * PAGE_SIZE)
        pages = [code]
        va = direct_va(code * PAGE_SIZE)
        placed: dict[str, Placed] = {}
        for prog in programs:
            placed[prog.name] = prog.place(va)
            m.place_code(placed[prog.name], lambda v: v - PAGE_OFFSET)
            self.restore.placed[prog.name] = placed[prog.name]
            va += (placed[prog.name].size + 0xF) & ~0xF
        idt = stack_top = None
        if gates:
            idt_pfn = self._safe_page(f"{name} IDT (safe page)")
            arr = np.zeros(512, dtype=np.uint64)
            for vector, target in gates.items():
                lo, hi = make_gate(placed[target].base, 1)
                arr[vector * 2], arr[vector * 2 + 1] = lo, hi
            m.memory.write_page(idt_pfn, arr, agent)
            pages.append(idt_pfn)
            idt = (direct_va(idt_pfn * PAGE_SIZE), 0xFFF)
            # an IST stack of 256 bytes per CPU, its safe pages mapped one after the other
            n = -(-len(m.cpus) * 256 // PAGE_SIZE)
            for k in range(n):
                tables.map(TRAMPOLINE_STACK_VA + k * PAGE_SIZE, self._safe_page(f"{name} IST stack (safe page)") * PAGE_SIZE)
            stack_top = TRAMPOLINE_STACK_VA + n * PAGE_SIZE
        for pfn in pages:
            tables.map(direct_va(pfn * PAGE_SIZE), pfn * PAGE_SIZE)
        return Trampoline(tables.root, placed, TRAMPOLINE_DATA_VA, tuple(data), size, idt, stack_top)

    # -- restore kernel ----------------------------------------------------------------------
    def swsusp_arch_resume(self, cpu: Cpu, at: int) -> int:
        """Temporary page tables in safe pages (a direct map of all RAM, plus the kernel text
        entry of the restore kernel's PML4), core_restore_code copied to a safe page, the boot
        CPU switched to them; the fix's last word before the copy."""
        m, k = self.machine, self.restore

        def alloc() -> int:
            pfn = self._safe_page("temporary page table (safe page)")
            self.temp_tables.append(pfn)
            return pfn

        temp = PageTables(m.memory, alloc, cpu.agent)
        temp.map_range(PAGE_OFFSET, 0, m.memory.size, sizes=(1 << 21, 1 << 12))
        text_entry = m.memory.read_u64(k.cr3 + 511 * 8)
        m.memory.write_u64(temp.root + 511 * 8, text_entry, cpu.agent)
        placed_here = k.placed["core_restore_code"]
        text_pfn = (placed_here.base - START_KERNEL_MAP) // PAGE_SIZE
        code_page = self._safe_page("relocated core_restore_code (safe page)")
        m.memory.write_page(code_page, m.memory.content(text_pfn), cpu.agent)
        offset = placed_here.base & 0xFFF
        relocated = placed_here.program.place(direct_va(code_page * PAGE_SIZE + offset))
        m.place_code(relocated, lambda va: va - PAGE_OFFSET)
        k.placed["core_restore_code (relocated)"] = relocated
        self.fix.before_copy(self, cpu)
        self._schedule_strays(cpu)
        cpu.cr3 = temp.root
        cpu.tlb.flush_all()
        cpu.regs["rsi"] = 1 if self.loaded.pblist else 0
        cpu.regs["r8"] = self.image_kernel.symbols["restore_registers"]
        cpu.rip = relocated.base
        self.set_phase("copy")
        m.emit("cr3", cpu.id, cr3=cpu.cr3, tables="temporary")
        return m.timing.instr_ns

    def _copy_times(self) -> np.ndarray:
        """Cumulative page-copy times (rep movsq and the loop's jne of each page), drawn for the
        whole list once, so batching cannot change them."""
        if self._copy_end is None:
            m = self.machine
            durations = m.jitter.scale_many(self.timing.page_copy_ns, len(self.loaded.pblist)) + m.timing.instr_ns
            self._copy_end = np.cumsum(durations)
        return self._copy_end

    def _schedule_strays(self, cpu0: Cpu) -> None:
        """Config.stray: an NMI, SMI or machine check that arrives at a random time during the
        copy (drawn from the run's generator), at a random parked CPU; a machine check is
        broadcast to every CPU, as on the report's machines."""
        m = self.machine
        window = int(self._copy_times()[-1]) if len(self.loaded.pblist) else 1
        for kind in self.strays:
            at = m.sched.now + m.choices.choose("stray.time", int(m.rng.integers(0, max(window, 1))), 0, max(window, 1) - 1)
            targets = list(range(len(m.cpus))) if kind == "mce" else [
                m.choices.choose("stray.cpu", int(m.rng.integers(1, len(m.cpus))), 1, len(m.cpus) - 1)]
            m.at(at, lambda kind=kind, targets=targets: self._stray(kind, targets))

    def _stray(self, kind: str, targets: list[int]) -> None:
        for t in targets:
            self.machine.emit("inject", t, ipi=kind, stray=True)
            self.machine.apic.send(t, kind, src="platform")

    def kick_parked_cpus(self, cpu: Cpu, at: int) -> int:
        """The fix's kick of the parked CPUs before the copy (smp_kick_mwait_play_dead for
        dedicated-line); repeats while the fix is waiting for an acknowledgement."""
        ns = self.fix.kick(self, cpu, at)
        if ns is None:
            return self.machine.timing.instr_ns
        cpu.rip = at
        return ns

    def trampoline_return(self, cpu: Cpu, at: int) -> int:
        """The trampoline's way back: the released CPU loads the image kernel's CR3, IDT and
        stack and goes to start_secondary (as the real-mode trampoline would)."""
        self.kernel.enter(cpu, "start_secondary")
        cpu.tlb.flush_all()
        return self.machine.timing.instr_ns

    def copy_pbe(self, cpu: Cpu, at: int) -> int:
        """core_restore_code's loop body: copy pbe->address to pbe->orig_address (rep movsq),
        rdx = pbe->next, test.  Each page takes its own (jittered) time, drawn for the whole
        list when the copy starts, so batching cannot change a run.  One step copies, in bulk,
        the pages up to the next moment anything else can look: another actor's next event
        (a CPU's instruction, a timer), or a page someone watches (a monitored line, a frame on
        ``machine.watched_frames``), which is then copied in a step of its own."""
        m = self.machine
        pbl = self.loaded.pblist
        n = len(pbl)
        i = cpu.regs["rdx"] - 1
        ends = self._copy_times()  # [k]: end of page k (and its jne), from the copy's start
        before = int(ends[i - 1]) if i else 0  # page i starts now; page i + c at now + ends[i+c-1] - before
        stop = self._next_watched(i, n)
        count = 1
        if stop > i:
            count = stop - i
            nxt = m.sched.next_time()
            if nxt is not None:
                j = int(np.searchsorted(ends, nxt - m.sched.now + before, side="right"))
                count = max(1, min(count, j - i + 1))
        src, dst = pbl.safe[i:i + count], pbl.orig[i:i + count]
        m.memory.copy_frames(src, dst, cpu.agent)
        self.copied += count
        if count == 1:
            pfn = int(dst[0])
            m.emit("page_copied", cpu.id, pfn=pfn, src=int(src[0]), index=i,
                   role=self.restore.layout.roles.get(pfn, "other"))
        else:
            m.emit("pages_copied", cpu.id, first=i, count=count, pfn_high=int(dst[0]), pfn_low=int(dst[-1]))
        done = i + count
        cpu.regs["rdx"] = done + 1 if done < n else 0
        cpu.zf = cpu.regs["rdx"] == 0  # testq %rdx, %rdx
        return int(ends[done - 1]) - before - m.timing.instr_ns  # the last jne runs as itself

    def _next_watched(self, i: int, n: int) -> int:
        """The first pblist position >= i whose frame someone watches (n: none): a monitored
        line's frame, or one of ``machine.watched_frames`` (their positions cached per set of
        armed frames and per version of the watched set)."""
        m = self.machine
        pbl = self.loaded.pblist
        armed = tuple(sorted(m.monitor.pages()))
        if self._armed_pos is None or self._armed_pos[0] != armed:
            self._armed_pos = (armed, sorted(pbl.positions(armed)))
        cached_armed = self._armed_pos[1]
        k = bisect_left(cached_armed, i)
        pos = [cached_armed[k]] if k < len(cached_armed) else []
        watched = m.watched_frames
        if watched:
            if self._watched_pos is None or self._watched_pos[0] != watched.version:
                arr = np.fromiter(watched, dtype=np.int64, count=len(watched))
                self._watched_pos = (watched.version, np.sort(pbl.positions_array(arr)))
            cached = self._watched_pos[1]
            k = int(np.searchsorted(cached, i))
            if k < len(cached):
                pos.append(int(cached[k]))
        return min(pos, default=n)

    # -- image kernel ------------------------------------------------------------------------
    def restore_registers(self, cpu: Cpu, at: int) -> int:
        """Back in the image kernel: its CR3 (with the TLB flushed, globals too), IDT, stack."""
        k = self.kernel = self.image_kernel
        if self._note_own_write not in self.machine.memory.observers:  # from now on, not during the copy
            self.machine.memory.observers.append(self._note_own_write)
        cpu.cr3 = self.image.restore_cr3
        cpu.tlb.flush_all()
        cpu.idtr = k.idtr
        cpu.ist = k.ist(cpu.id)
        cpu.regs["rsp"] = k.layout.stack_top(cpu.id)
        self.set_phase("image-kernel")
        self.machine.emit("cr3", cpu.id, cr3=cpu.cr3, tables="image kernel")
        return self.machine.timing.instr_ns

    def _note_own_write(self, paddr: int, nbytes: int, agent: str, kind: str) -> None:
        """A store by a CPU running the image kernel after it took over (CPU 0 from
        restore_registers on, an AP once the image kernel brought it online) is that kernel's
        normal work (e.g. an NMI frame pushed on its idle stack), not a restore gone wrong: the
        verdict leaves such frames out of its comparison with the image.  Stores by CPUs the
        image kernel has not brought up yet (still in the restore kernel's code) still count."""
        if kind == "store" and agent.startswith("cpu") and int(agent[3:]) in self.image_kernel.online:
            self.own_writes.update(range(paddr >> 12, ((paddr + nbytes - 1) >> 12) + 1))

    def resume_done(self, cpu: Cpu, at: int) -> int:
        self.done = True
        self.set_phase("resumed")
        return self.machine.timing.instr_ns

    def trampoline_to_long_mode(self, cpu: Cpu, at: int) -> int:
        """The real-mode trampoline takes the AP to long mode on the running kernel's tables
        and jumps to start_secondary (one step in the model)."""
        self.kernel.enter(cpu, "start_secondary")
        return self.machine.timing.instr_ns

    def cpu_online(self, cpu: Cpu, at: int) -> int:
        self.kernel.online.add(cpu.id)
        self.machine.emit("cpu_online", cpu.id, kernel=self.kernel.name)
        return self.machine.timing.instr_ns

    # -- traps -------------------------------------------------------------------------------
    def do_page_fault(self, cpu: Cpu, at: int) -> int:
        cr2 = self.machine.cr2.get(cpu.id, 0)
        ec = cpu.last_fault.error_code if cpu.last_fault else 0
        return self._die(cpu, "paging request", f"BUG: unable to handle kernel paging request at {cr2:016x}", cr2, ec)

    def do_double_fault(self, cpu: Cpu, at: int) -> int:
        return self._die(cpu, "double fault", "double fault: 0000 [#1] SMP", self.machine.cr2.get(cpu.id), 0)

    def do_nmi(self, cpu: Cpu, at: int) -> int:
        self.machine.emit("nmi_handled", cpu.id, text="Uhhuh. NMI received for unknown reason on CPU")
        return 100

    def do_machine_check(self, cpu: Cpu, at: int) -> int:
        self.machine.emit("mce_logged", cpu.id, text="Machine check events logged")
        cpu.wrmsr(MSR_IA32_MCG_STATUS, 0)  # mce_wrmsrl(MSR_IA32_MCG_STATUS, 0): clears MCIP
        return 100

    def _die(self, cpu: Cpu, kind: str, headline: str, address: int | None, error_code: int) -> int:
        """Oops, then panic(): the other CPUs are stopped (smp_send_stop -> stop_this_cpu:
        interrupts off, HLT forever)."""
        m = self.machine
        oops = self.kernel.oops(cpu, kind, headline, address, error_code)
        self.kernel.panicked = oops.text.splitlines()[-1]
        m.emit("oops", cpu.id, kind=kind, text=oops.text, address=address)
        for c in m.cpus:
            if c.state != RunState.OFF:
                if c.state != RunState.HLT:
                    m.emit("state", c.id, state=str(RunState.HLT), why="stopped by panic")
                c.state = RunState.HLT
                c.if_flag = False
                m.sched.cancel(c.id)
        m.emit("panic", cpu.id, text=self.kernel.panicked)
        return m.timing.instr_ns
