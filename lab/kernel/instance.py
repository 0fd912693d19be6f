"""One booted kernel: its image in memory, its boot allocations and page tables, its code and
IDT, and the C handlers that the model runs as routines (oops, panic, CPU online).

Boot order follows arch/x86/kernel/setup.c setup_arch() and start_kernel() closely enough for
where things land: the real-mode trampoline below 1 MiB (reserve_real_mode), boot-to-boot
varying early reservations (initrd, ACPI tables: ``boot_noise``), the direct map
(init_mem_mapping), the per-CPU areas (setup_per_cpu_areas), mem_map (sparse_init), the idle
tasks of the APs (fork_idle, 16 KiB stacks) and the memory the running system uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..hw.isa import Placed, Program
from ..hw.machine import Machine
from ..hw.memory import ZERO, ContentTag, PhysicalMemory
from ..hw.paging import walk as page_walk
from . import programs
from .layout import (IST_DF, IST_MC, IST_NMI, LOW_MEM_LIMIT, PAGE_SIZE, PERCPU_PAGES,
                     START_KERNEL_MAP, THREAD_PAGES, E820Entry, KernelImage, Layout, Memblock,
                     boot_noise, direct_va)
from .intervals import normalize, subtract
from .mapping import kernel_physical_mapping_init, mark_rodata_ro, text_mapping
from .pagealloc import first_frames
from .version import get_version

GATES = {"NMI": (2, "nmi", IST_NMI), "#UD": (6, "invalid_op", 0), "#DF": (8, "double_fault", IST_DF),
         "#GP": (13, "general_protection", 0), "#PF": (14, "page_fault", 0),
         "#MC": (18, "machine_check", IST_MC)}
TRAMPOLINE_INDEX = 1 << 20  # content index of the real-mode blob within the build's text


@dataclass(frozen=True)
class BootParams:
    """What one boot of one build depends on."""

    build_id: int = 1  # same number: the same kernel binary
    nr_cpus: int = 4
    phys_base_pfn: int = 0x1000  # CONFIG_PHYSICAL_START 16 MiB
    text_pages: int = 2048
    data_pages: int = 512
    bss_pages: int = 512
    rodata_pages: int = 64
    gbpages: bool = False
    debug_pagealloc: bool = False
    early_noise_pages: int = 256  # mean of boot-to-boot varying early reservations
    early_noise_exact: int | None = None  # this boot's early reservations, if known
    late_noise_pages: int = 64
    late_noise_exact: int | None = None
    mem_map: bool = True  # struct page array, 64 bytes per 4 KiB frame, at the top of RAM
    total_in_use_pages: int = 0  # frames in use in all, boot allocations included (workload fills up)
    extra_in_use_pages: int = 0  # or: this many frames in use beyond the boot allocations
    extent_pages: int = 512  # mean length of the extents that memory comes in
    mwait_hint: int = 0x20
    version: str = "4.7"  # lab.kernel.version: layout facts that differ between versions
    play_dead_at_text_end: bool = False  # the play_dead routines in the last text page (calibration)
    initcall_pages: int = 64  # mean of page-allocator allocations before mark_rodata_ro()
    initcall_exact: int | None = None  # this boot's, if known


def make_gate(handler: int, ist: int) -> tuple[int, int]:
    """A 64-bit interrupt gate (SDM vol. 3A 6.14.1, figure 6-8): selector 0x10, type 0xE, P."""
    lo = (handler & 0xFFFF) | 0x10 << 16 | ist << 32 | 0xE << 40 | 1 << 47 | ((handler >> 16) & 0xFFFF) << 48
    return lo, handler >> 32


@dataclass
class Oops:
    cpu: int
    kind: str  # "paging request", "double fault", ...
    text: str
    address: int | None
    rip: int
    walk: list[tuple[int, int, int, int]] = field(default_factory=list)


class Kernel:
    """A kernel instance placed on ``memory`` (and, for the live one, on ``machine``)."""

    def __init__(self, name: str, memory: PhysicalMemory, e820: tuple[E820Entry, ...],
                 params: BootParams, rng: np.random.Generator) -> None:
        self.name = name
        self.memory = memory
        self.params = params
        self.agent = f"{name}-boot"
        self.boot_seed = int(rng.integers(1, 1 << 31))
        image = KernelImage(params.phys_base_pfn, params.text_pages, params.data_pages, params.bss_pages,
                            params.rodata_pages)
        memblock = Memblock(e820, limit=min(memory.size, 1 << 32))
        memblock.reserve(image.phys_base, image.frames.stop - image.phys_base)
        trampoline = memblock.alloc(1, below=LOW_MEM_LIMIT)
        self.version = get_version(params.version)
        self.layout = Layout(name, e820, image, memblock, trampoline, ti_flags=self.version.ti_flags)
        self.symbols: dict[str, int] = {}
        self.placed: dict[str, Placed] = {}
        self.oopses: list[Oops] = []
        self.online: set[int] = {0}
        self.panicked: str | None = None
        self._boot(rng)

    # -- boot --------------------------------------------------------------------------------
    def _boot(self, rng: np.random.Generator) -> None:
        p, lay, mem, mb = self.params, self.layout, self.memory, self.layout.memblock
        img = lay.image
        mem.fill_range(img.text.start, img.text_pages, "text", p.build_id, first_index=0, agent=self.agent)
        mem.fill_range(img.rodata.start, img.rodata_pages, "data", p.build_id, first_index=1 << 30,
                       agent=self.agent)  # .rodata: the same bytes in every boot of one build
        mem.fill_range(img.data.start, img.data_pages, "data", self.boot_seed, agent=self.agent)
        mem.fill_range(img.bss.start, img.bss_pages, "sparse", self.boot_seed, agent=self.agent)
        for pfn in (img.init_level4_pgt, img.level3_kernel_pgt, img.level2_kernel_pgt, img.idt_table,
                    img.empty_zero_page):
            mem.write_page(pfn, ZERO, self.agent)
        for pfn in img.text:
            lay.roles[pfn] = "kernel text"
        for pfn in img.gap:
            lay.roles[pfn] = "kernel text (gap after __ex_table)"
        for pfn in img.rodata:
            lay.roles[pfn] = "kernel rodata"
        for pfn in img.data:
            lay.roles[pfn] = "kernel data"
        for pfn in img.bss:
            lay.roles[pfn] = "kernel bss"
        lay.roles.update({img.init_level4_pgt: "init_level4_pgt (PML4)",
                          img.level3_kernel_pgt: "level3_kernel_pgt", img.level2_kernel_pgt: "level2_kernel_pgt",
                          img.idt_table: "idt_table", img.empty_zero_page: "empty_zero_page",
                          lay.trampoline: "real-mode trampoline"})
        mem.write_page(lay.trampoline, ContentTag("text", p.build_id, TRAMPOLINE_INDEX), self.agent)

        early = p.early_noise_exact if p.early_noise_exact is not None else boot_noise(rng, p.early_noise_pages)
        self._reserve(early, "early reservation (initrd, ACPI)", below=mem.size)
        text_mapping(mem, lay, self.agent)
        self.direct_map_pages = kernel_physical_mapping_init(mem, lay, mb, self.agent, p.gbpages,
                                                             p.debug_pagealloc)
        late = p.late_noise_exact if p.late_noise_exact is not None else boot_noise(rng, p.late_noise_pages)
        self._reserve(late, "boot allocation")
        first = mb.alloc(PERCPU_PAGES * p.nr_cpus, below=mem.size)  # pcpu_embed_first_chunk
        for cpu in range(p.nr_cpus):
            lay.percpu[cpu] = first + cpu * PERCPU_PAGES
            mem.fill_range(lay.percpu[cpu], PERCPU_PAGES, "sparse", self.boot_seed ^ 0x5EC, agent=self.agent)
            for i in range(PERCPU_PAGES):
                lay.roles[lay.percpu[cpu] + i] = f"per-CPU area cpu{cpu}"
        if p.mem_map:
            pages = max(1, mem.nr_frames * 64 // PAGE_SIZE)
            start = mb.alloc(pages, below=mem.size)
            mem.fill_range(start, pages, "sparse", self.boot_seed ^ 0x3E3, agent=self.agent)
            self.mem_map = range(start, start + pages)
        for cpu in range(p.nr_cpus):  # fork_idle: order-2 pages; cpu0's is init_task's in .data
            base = img.data.start + 8 if cpu == 0 else mb.alloc(THREAD_PAGES, align=THREAD_PAGES)
            lay.idle_stacks[cpu] = base
            for i in range(THREAD_PAGES):
                mem.write_page(base + i, ContentTag("stack", self.boot_seed, base + i), self.agent)
                lay.roles[base + i] = f"idle stack cpu{cpu}" + (" (thread_info)" if i == 0 else "")
        self._place_programs()
        # initcalls allocate from the page allocator before mark_rodata_ro(): how much varies
        # from boot to boot (initramfs unpacking, driver probing), so the split page lands apart
        initcalls = p.initcall_exact if p.initcall_exact is not None else boot_noise(rng, p.initcall_pages)
        for _ in range(initcalls):
            lay.roles[self._alloc_page()] = "boot-time allocation (initcalls)"
        self.text_split = mark_rodata_ro(mem, lay, self._alloc_page, self.agent) if self.version.nx_gap else None
        if self.version.nx_gap and len(img.gap):  # free_init_pages("unused kernel", text_end, rodata_start)
            mb.free(img.gap.start, len(img.gap))
            for pfn in img.gap:
                lay.roles.pop(pfn, None)
        self._fill_in_use(rng)

    def _alloc_page(self) -> int:
        """alloc_pages(GFP_KERNEL, 0) once the page allocator runs (lab.kernel.pagealloc)."""
        mb = self.layout.memblock
        free = subtract(normalize(mb.usable_pfns()), mb.intervals())
        pfn = int(first_frames(free[-64:], 1)[0])  # the top intervals hold the first block
        mb.reserve(pfn, 1)
        self.memory.fill_range(pfn, 1, "sparse", self.boot_seed ^ (pfn << 2), agent=self.agent)
        return pfn

    def _reserve(self, n: int, role: str, below: int | None = None) -> None:
        if n:
            start = self.layout.memblock.alloc(n, below=below)
            self.memory.fill_range(start, n, "sparse", self.boot_seed ^ start, agent=self.agent)
            for pfn in range(start, start + n):
                self.layout.roles.setdefault(pfn, role)

    def _fill_in_use(self, rng: np.random.Generator) -> None:
        """The running system's memory (page cache, anonymous, slab): extents of free frames
        chosen by the seeded generator until ``in_use_pages`` are used."""
        mb, mem = self.layout.memblock, self.memory
        want = max(self.params.total_in_use_pages - mb.reserved_count(), self.params.extra_in_use_pages)
        wanted = want
        usable = [(lo, hi) for lo, hi in mb.usable_pfns() if hi - lo > 16]
        total = sum(hi - lo for lo, hi in usable)
        tries = 0
        while want > 0 and tries < 100_000:
            tries += 1
            length = int(min(want, max(1, rng.geometric(1 / self.params.extent_pages))))
            pick = int(rng.integers(0, total))
            for lo, hi in usable:
                if pick < hi - lo:
                    start = lo + pick
                    break
                pick -= hi - lo
            start, stop = mb.free_run(start, min(start + length, hi))
            if stop <= start:
                continue
            mb.reserve(start, stop - start)
            kind = "data" if rng.integers(0, 4) == 0 else "sparse"
            mem.fill_range(start, stop - start, kind, self.boot_seed ^ (start << 1), agent=self.agent)
            want -= stop - start
        if want > 0:
            raise ValueError(f"{self.name} kernel: RAM too small for the memory in use "
                             f"({wanted} more pages wanted)")

    def _place_programs(self) -> None:
        img = self.layout.image
        hint = self.params.mwait_hint
        dead: list[Program] = [
            programs.mwait_play_dead(hint, self.version.ti_flags),
            programs.mwait_play_dead_zero_page(hint, img.text_va(img.empty_zero_page)),
            programs.mwait_play_dead_then_hlt(hint, self.version.ti_flags),
            programs.mwait_play_dead_dedicated(hint),
            programs.hlt_play_dead(),
        ]
        progs: list[Program] = [
            *([] if self.params.play_dead_at_text_end else dead),
            programs.restore_registers(),
            programs.start_secondary(),
            programs.core_restore_code(),
            programs.resume_target_kernel(),
            *programs.handlers(img.text_va(img.data.start + 4)),
        ]
        self._place_at(img.text_va(img.text.start) + 0x1000, progs)
        if self.params.play_dead_at_text_end:  # calibration: in the last text page (docs/fidelity.md)
            self._place_at(img.text_va(img.text.stop - 1), dead)
        self.placed["trampoline_64"] = programs.trampoline_64().place(self.layout.trampoline * PAGE_SIZE)
        self.symbols["trampoline_64"] = self.layout.trampoline * PAGE_SIZE
        arr = self.memory.materialize(img.idt_table)
        # idt_table: the gates of arch/x86/kernel/traps.c trap_init, now that handlers are placed
        for vector, symbol, ist in GATES.values():
            lo, hi = make_gate(self.symbols[symbol], ist)
            arr[vector * 2] = lo
            arr[vector * 2 + 1] = hi
        self.memory.write_page(img.idt_table, arr, self.agent)

    def _place_at(self, va: int, progs: list[Program]) -> None:
        for prog in progs:
            placed = prog.place(va)
            self.placed[prog.name] = placed
            self.symbols[prog.name] = va
            va += (placed.size + 0xFF) & ~0xFF

    def register_code(self, machine: Machine) -> None:
        """Tell the machine which instructions sit in this kernel's text frames."""
        for name, placed in self.placed.items():
            if name == "trampoline_64":
                machine.place_code(placed, lambda va: va)
            else:
                machine.place_code(placed, lambda va: va - START_KERNEL_MAP)

    # -- what a CPU needs to run in this kernel ----------------------------------------------
    @property
    def cr3(self) -> int:
        return self.layout.image.init_level4_pgt * PAGE_SIZE

    @property
    def idtr(self) -> tuple[int, int]:
        return (self.layout.image.text_va(self.layout.image.idt_table), 0xFFF)

    def ist(self, cpu: int) -> tuple[int, ...]:
        lay = self.layout
        return (0, lay.ist_top(cpu, 1), lay.ist_top(cpu, 2), lay.ist_top(cpu, 3), 0, 0, 0, 0)

    def enter(self, cpu, symbol: str) -> None:  # noqa: ANN001 - a hw Cpu
        """Put ``cpu`` into this kernel at ``symbol`` on its idle stack (what the hotplug and
        idle paths leave it with)."""
        cpu.enter_kernel_mode()  # CPL 0, CR0.WP, EFER.NXE, CR4.MCE: trampoline_64.S, mcheck_cpu_init()
        cpu.cr3 = self.cr3
        cpu.idtr = self.idtr
        cpu.ist = self.ist(cpu.id)
        cpu.regs["rsp"] = self.layout.stack_top(cpu.id)
        cpu.regs["r9"] = cpu.id * 64
        cpu.regs["gs_base"] = direct_va(self.layout.percpu[cpu.id] * PAGE_SIZE)  # wrmsr(MSR_GS_BASE)
        cpu.rip = self.symbols[symbol]
        cpu.if_flag = False

    # -- symbolization and oops text ---------------------------------------------------------
    def symbolize(self, rip: int) -> str:
        best = None
        for name, placed in self.placed.items():
            if placed.base <= rip < placed.base + placed.size:
                best = f"{name}+{rip - placed.base:#x}/{placed.size:#x}"
        return best or "??"

    def oops(self, cpu, kind: str, headline: str, address: int | None, error_code: int) -> Oops:  # noqa: ANN001
        """Format an oops as arch/x86/mm/fault.c no_context() and arch/x86/kernel/dumpstack.c
        __die() print it, then panic (the idle task cannot be killed)."""
        rip = cpu.fault_rip
        # dump_pagetable(address): the walk of the faulting address, read now, from CR3's root
        walk = page_walk(self.memory, cpu.cr3, address, set_accessed=False) \
            if address is not None and cpu.cr3 is not None else None
        steps = [] if walk is None else [(s.level, s.table, s.index, s.entry) for s in walk.steps]
        n = len(self.oopses) + 1
        lines = [headline]
        if kind == "paging request":
            lines.append(f"IP: [<{rip:016x}>] {self.symbolize(rip)}")
            if steps:
                names = ("PGD", "PUD", "PMD", "PTE")
                lines.append(" ".join(f"{names[lvl]} {entry:x}" for lvl, _, _, entry in steps))
            lines.append(f"Oops: {error_code:04x} [#{n}] SMP")
        lines += [
                  f"CPU: {cpu.id} PID: 0 Comm: swapper/{cpu.id} Not tainted {self.version.uname} #1",
                  f"RIP: 0010:[<{rip:016x}>]  [<{rip:016x}>] {self.symbolize(rip)}",
                  f"RSP: 0018:{cpu.regs['rsp']:016x}  CR2: {cpu.machine.cr2.get(cpu.id, 0):016x}  CR3: {cpu.cr3 or 0:016x}",
                  "Kernel panic - not syncing: Attempted to kill the idle task!"]
        o = Oops(cpu.id, kind, "\n".join(lines), address, rip, steps)
        self.oopses.append(o)
        return o

