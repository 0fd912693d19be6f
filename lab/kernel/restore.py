"""The restore kernel's last steps and the image kernel's first ones, as model routines that
the CPUs run when their code reaches a ``model`` instruction.

Sources: kernel/power/hibernate.c (resume_target_kernel, hibernate_resume_nonboot_cpu_disable),
arch/x86/power/hibernate_64.c (swsusp_arch_resume, set_up_temporary_mappings,
relocate_restore_code), arch/x86/power/hibernate_asm_64.S (core_restore_code,
restore_registers), kernel/cpu.c (enable_nonboot_cpus), arch/x86/mm/fault.c (no_context),
arch/x86/kernel/traps.c, kernel/panic.c (panic stops the other CPUs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..hw.cpu import MSR_IA32_MCG_STATUS, Cpu, RunState
from ..hw.isa import Placed, Program
from ..hw.machine import Machine
from ..hw.memory import ContentTag
from ..hw.pagetable import PageTables
from .hibernate import Image, Loaded
from .hotplug import HotplugTiming, Progress, cpu_down_step, cpu_up_step
from .instance import Kernel
from .layout import PAGE_OFFSET, PAGE_SIZE, START_KERNEL_MAP, direct_va

if TYPE_CHECKING:  # pragma: no cover
    from ..fixes import Fix


SAFE_CODE_INDEX = 1 << 40  # content index of code copied into safe pages


@dataclass(frozen=True)
class RestoreTiming:
    page_copy_ns: int = 1_000  # rep movsq of 4 KiB
    copy_batch: int = 64  # pages streamed in one step at most (keeps one step short)


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
    trampoline: tuple[int, Placed, int] | None = None  # (cr3, code, data address) in safe pages

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
            "enable_nonboot_cpus": lambda c, at: self._phase_then("online", cpu_up_step, c, at),
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

    def place_in_safe_page(self, program: Program) -> tuple[int, Placed, int]:
        """A program in a safe page with a data page beside it, both reachable through their
        own page tables in safe pages: nothing the copy writes.  Returns (cr3, the placed
        program, the data page's address)."""
        m, agent = self.machine, self.machine.cpus[0].agent
        code = self._safe_page(f"{program.name} code (safe page)")
        data = self._safe_page(f"{program.name} data (safe page)")
        m.memory.write_page(code, ContentTag("text", self.restore.params.build_id, SAFE_CODE_INDEX + code), agent)
        tables = PageTables(m.memory, lambda: self._safe_page(f"{program.name} page table (safe page)"), agent)
        for pfn in (code, data):
            tables.map(direct_va(pfn * PAGE_SIZE), pfn * PAGE_SIZE)
        placed = program.place(direct_va(code * PAGE_SIZE))
        m.place_code(placed, lambda va: va - PAGE_OFFSET)
        self.restore.placed[program.name] = placed
        return tables.root, placed, direct_va(data * PAGE_SIZE)

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
        cpu.cr3 = temp.root
        cpu.tlb.flush_all()
        cpu.regs["rsi"] = 1 if self.loaded.pblist else 0
        cpu.regs["r8"] = self.image_kernel.symbols["restore_registers"]
        cpu.rip = relocated.base
        self.set_phase("copy")
        m.emit("cr3", cpu.id, cr3=cpu.cr3, tables="temporary")
        return m.timing.instr_ns

    def copy_pbe(self, cpu: Cpu, at: int) -> int:
        """core_restore_code's loop body: copy pbe->address to pbe->orig_address (rep movsq),
        rdx = pbe->next, test.  Consecutive pbes are streamed in one step (at most
        ``copy_batch``) while no other CPU has anything due before the copy finishes, so the
        interleaving is the same as page by page; each page still has its own timed event."""
        m = self.machine
        pblist = self.loaded.pblist
        roles = self.restore.layout.roles
        ns = 0
        for k in range(self.timing.copy_batch):
            if k:
                nxt = m.sched.next_time()
                if nxt is not None and m.sched.now + ns > nxt:
                    break
                m.sched.advance(m.sched.now + ns)
            i = cpu.regs["rdx"] - 1
            pbe = pblist[i]
            m.memory.copy_page(pbe.address, pbe.orig_address, cpu.agent)
            self.copied += 1
            m.emit("page_copied", cpu.id, pfn=pbe.orig_address, src=pbe.address, index=i,
                   role=roles.get(pbe.orig_address, "other"))
            cpu.regs["rdx"] = i + 2 if i + 1 < len(pblist) else 0
            ns = m.jitter.scale(self.timing.page_copy_ns)
            if cpu.regs["rdx"] == 0:
                break
        cpu.zf = cpu.regs["rdx"] == 0  # testq %rdx, %rdx
        return ns

    # -- image kernel ------------------------------------------------------------------------
    def restore_registers(self, cpu: Cpu, at: int) -> int:
        """Back in the image kernel: its CR3 (with the TLB flushed, globals too), IDT, stack."""
        k = self.kernel = self.image_kernel
        cpu.cr3 = self.image.restore_cr3
        cpu.tlb.flush_all()
        cpu.idtr = k.idtr
        cpu.ist = k.ist(cpu.id)
        cpu.regs["rsp"] = k.layout.stack_top(cpu.id)
        self.set_phase("image-kernel")
        self.machine.emit("cr3", cpu.id, cr3=cpu.cr3, tables="image kernel")
        return self.machine.timing.instr_ns

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
