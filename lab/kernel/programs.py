"""The code the CPUs run, as listings in the model's instruction set.

Each listing names its source.  Symbols are placed in the kernel's text at fixed offsets (one
build, one layout), so the restore kernel and the image kernel have the same code at the same
addresses, as two boots of one binary do.
"""
from __future__ import annotations

from ..hw.isa import I, Program, mem
from .layout import THREAD_SIZE


def _monitor_mwait(hint: int, flush: bool = True) -> list:
    """What every MWAIT parking does once: (clflush,) monitor the line at rbx, mwait."""
    return [
        *([I("clflush", mem("rbx"), comment="erratum AAI65 workaround")] if flush else []),
        I("mov", "rax", "rbx"),
        I("mov", "rcx", 0),
        I("mov", "rdx", 0),
        I("monitor", comment="__monitor(mwait_ptr, 0, 0)"),
        I("mov", "rax", hint, comment="deepest C-state hint"),
        I("mwait", comment="__mwait(eax, 0)"),
    ]


def _thread_info_flags(ti_flags: int) -> list:
    """rbx = &current_thread_info()->flags: the base of the 16 KiB idle stack, plus the offset."""
    return [
        I("mov", "rbx", "rsp", comment="current_thread_info():"),
        I("and", "rbx", ~(THREAD_SIZE - 1) & ((1 << 64) - 1), comment="  base of the idle stack"),
        I("add", "rbx", ti_flags, comment="mwait_ptr = &thread_info->flags"),
    ]


def _monitor_mwait_loop(hint: int, flush: bool = True) -> list:
    """The loop the MWAIT parkings share: (clflush,) monitor, mwait, again."""
    return ["loop:", *_monitor_mwait(hint, flush), I("jmp", "loop")]


def mwait_play_dead(hint: int, ti_flags: int) -> Program:
    """arch/x86/kernel/smpboot.c, mwait_play_dead() (v4.0-v4.7): monitor &thread_info->flags
    (``ti_flags``: its offset in this build) and MWAIT in the deepest C-state, in a loop (a
    wake-up just goes round again)."""
    return Program("mwait_play_dead", [
        *_thread_info_flags(ti_flags),
        I("wbinvd"),
        *_monitor_mwait_loop(hint),
    ], source="arch/x86/kernel/smpboot.c: mwait_play_dead()")


def mwait_play_dead_then_hlt(hint: int, ti_flags: int) -> Program:
    """The alternative the 2016 thread rejected ("modify mwait_play_dead"): after any wake-up
    leave the monitor loop for HLT.  The woken CPU still fetches its next instruction, so it
    depends on the text mapping, which is not safe across hibernation since ab76f7b4ab23."""
    return Program("mwait_play_dead_then_hlt", [
        *_thread_info_flags(ti_flags),
        I("wbinvd"),
        *_monitor_mwait(hint),  # any wake-up falls through
        "halt:",
        I("hlt", comment="then stay in HLT"),
        I("jmp", "halt"),
    ], source="2016 thread: the rejected 'modify mwait_play_dead' alternative")


def mwait_play_dead_zero_page(hint: int, zero_page_va: int) -> Program:
    """The first proposal of the 2016 thread: monitor a line of the zero page ("nobody writes
    the zero page"), one 64-byte line per CPU so CPUs do not share a line."""
    return Program("mwait_play_dead_zero_page", [
        I("mov", "rbx", zero_page_va, comment="empty_zero_page"),
        I("add", "rbx", "r9", comment="+ cpu * L1_CACHE_BYTES"),
        I("wbinvd"),
        *_monitor_mwait_loop(hint),
    ], source="2016 thread, proposal 1: monitor the zero page")


def hlt_play_dead() -> Program:
    """arch/x86/kernel/smpboot.c, hlt_play_dead(): WBINVD, then HLT in a loop (used for
    resume since 406f992e4a37 through resume_play_dead)."""
    return Program("hlt_play_dead", [
        I("wbinvd"),
        "loop:",
        I("hlt", comment="native_halt()"),
        I("jmp", "loop"),
    ], source="arch/x86/kernel/smpboot.c: hlt_play_dead()")


RELEASE = 8  # offset of the release word in a CPU's trampoline line


def safe_page_spin(hint: int) -> Program:
    """The reviewer's hibernation trampoline: a loop in a safe page, reached through page
    tables in safe pages, monitoring this CPU's line of a safe data page (rbx); nothing it
    touches is overwritten by the copy.  "Then kick the other CPUs awake and have them jump
    back to real code": when the image kernel has written the release word of the line, the
    CPU goes back into the image kernel (a model routine: its CR3, IDT and stack, then
    start_secondary)."""
    return Program("trampoline_spin", [
        "loop:",
        I("mov", "rax", "rbx"),
        I("mov", "rcx", 0),
        I("mov", "rdx", 0),
        I("monitor", comment="this CPU's line of the safe data page"),
        I("mov", "rax", hint),
        I("mwait"),
        I("load", "rax", mem("rbx", RELEASE), comment="released by the image kernel?"),
        I("cmp", "rax", 0),
        I("je", "loop"),
        I("model", "trampoline_return", comment="jump back to real code: the image kernel"),
    ], source="2016 thread (reviewer): hibernation trampoline in a safe page, and the way back")


def safe_page_iret(name: str) -> Program:
    """A handler in the trampoline's safe code page (trampoline-idt): nothing to do but IRET,
    on an IST stack in a safe page, through the trampoline's own IDT."""
    return Program(name, [I("iretq", comment="an NMI/#MC while parked: back to the loop")],
                   source="trampoline-idt: an IDT and handlers in safe pages")


MWAIT_CPU_DEAD = 0x80  # per-CPU struct mwait_cpu_dead, cache-line aligned, in the per-CPU area
CPUDEAD_MWAIT_WAIT, CPUDEAD_MWAIT_KEXEC_HLT = 0xDEADBEEF, 0x4A17DEAD
MD_CONTROL, MD_STATUS = 0, 8  # u32 fields in Linux; one qword each here


def mwait_play_dead_dedicated(hint: int) -> Program:
    """arch/x86/kernel/smpboot.c mwait_play_dead() after d7893093a741 ("x86/smp: Cure kexec()
    vs. mwait_play_dead() breakage", 2023): monitor this CPU's own cache line
    ``mwait_cpu_dead`` {control, status}; after a wake-up, if control says
    CPUDEAD_MWAIT_KEXEC_HLT, acknowledge in status and stay in HLT.  Its comment: this does
    NOT protect against a stray MCE, NMI or SMI."""
    return Program("mwait_play_dead_dedicated", [
        I("mov", "rbx", "gs_base", comment="md = this_cpu_ptr(&mwait_cpu_dead)"),
        I("add", "rbx", MWAIT_CPU_DEAD),
        I("mov", "rax", CPUDEAD_MWAIT_WAIT),
        I("store", mem("rbx", MD_STATUS), "rax", comment="md->status = CPUDEAD_MWAIT_WAIT"),
        I("wbinvd"),
        "loop:",
        *_monitor_mwait(hint),  # on md's line
        I("load", "rax", mem("rbx", MD_CONTROL), comment="READ_ONCE(md->control)"),
        I("cmp", "rax", CPUDEAD_MWAIT_KEXEC_HLT),
        I("jne", "loop"),
        I("store", mem("rbx", MD_STATUS), "rax", comment="WRITE_ONCE(md->status, CPUDEAD_MWAIT_KEXEC_HLT)"),
        "halt:",
        I("hlt", comment="while (1) native_halt();"),
        I("jmp", "halt"),
    ], source="arch/x86/kernel/smpboot.c: mwait_play_dead() (d7893093a741, v6.5)")


NMI_STATE = 0x40  # this CPU's nmi_state in its per-CPU area (arch/x86/kernel/nmi.c DEFINE_PER_CPU)


def nmi_entry(nmi_desc_va: int) -> Program:
    """arch/x86/entry/entry_64.S ``nmi`` and arch/x86/kernel/nmi.c do_nmi() (v4.x), the
    memory they touch: registers saved on the NMI IST stack, this CPU's ``nmi_state`` read and
    written through GS, the handler list ``nmi_desc`` in kernel data read; then the handlers
    (a model routine) and IRET.  An NMI in the restore kernel during the copy therefore walks
    the same tables a woken CPU would."""
    return Program("nmi", [
        I("push", "rax", comment="entry_64.S: save registers on the IST stack"),
        I("load", "rax", mem("gs_base", NMI_STATE), comment="this_cpu_read(nmi_state)"),
        I("store", mem("gs_base", NMI_STATE), "rax", comment="this_cpu_write(nmi_state, NMI_EXECUTING)"),
        I("load", "rax", mem(None, nmi_desc_va), comment="nmi_desc[NMI_LOCAL].head (kernel data)"),
        I("model", "do_nmi", comment="nmi_handle(): no handler claims it: unknown NMI"),
        I("pop", "rax"),
        I("iretq"),
    ], source="arch/x86/entry/entry_64.S nmi; arch/x86/kernel/nmi.c do_nmi()")


def handlers(nmi_desc_va: int) -> list[Program]:
    """Exception entry points (arch/x86/entry/entry_64.S idtentry) reduced to the call of the
    C handler, which is a model routine; the NMI entry touches what the real one touches."""
    return [
        Program("page_fault", [I("model", "do_page_fault"), I("iretq")],
                source="arch/x86/mm/fault.c: do_page_fault() -> no_context() -> oops"),
        Program("double_fault", [I("model", "do_double_fault"), I("iretq")],
                source="arch/x86/kernel/traps.c: do_double_fault()"),
        Program("general_protection", [I("model", "do_general_protection"), I("iretq")],
                source="arch/x86/kernel/traps.c: do_general_protection()"),
        Program("invalid_op", [I("model", "do_invalid_op"), I("iretq")],
                source="arch/x86/kernel/traps.c: do_invalid_op()"),
        nmi_entry(nmi_desc_va),
        Program("machine_check", [I("model", "do_machine_check"), I("iretq")],
                source="arch/x86/kernel/cpu/mcheck/mce.c: do_machine_check() (corrected: logged)"),
    ]


def core_restore_code() -> Program:
    """arch/x86/power/hibernate_asm_64.S, core_restore_code: walk restore_pblist copying each
    page to its original frame (rep movsq), then jump to restore_registers."""
    return Program("core_restore_code", [
        I("mov", "rdx", "rsi", comment="rdx = restore_pblist"),
        I("cmp", "rdx", 0),
        I("je", "done"),
        "loop:",
        I("model", "copy_pbe", comment="rep movsq pbe->address -> pbe->orig_address; rdx = pbe->next; test"),
        I("jne", "loop"),
        "done:",
        I("jmp_reg", "r8", comment="restore_registers (image kernel)"),
    ], source="arch/x86/power/hibernate_asm_64.S: core_restore_code")


def restore_registers() -> Program:
    """hibernate_asm_64.S restore_registers: load the image kernel's CR3 (flushing the TLB,
    globals too), its IDT and stack; then the image kernel resumes and onlines its CPUs."""
    return Program("restore_registers", [
        I("model", "restore_registers", comment="cr3 <- restore_cr3; lidt; rsp; flush TLB"),
        I("model", "enable_nonboot_cpus", comment="INIT, SIPI, SIPI each non-boot CPU"),
        I("model", "resume_done"),
        "idle:",
        I("sti"),
        I("hlt"),
        I("jmp", "idle"),
    ], source="arch/x86/power/hibernate_asm_64.S: restore_registers; kernel/cpu.c: enable_nonboot_cpus()")


def trampoline_64() -> Program:
    """arch/x86/realmode/rm/trampoline_64.S: real mode -> long mode on the kernel's
    trampoline page tables, then start_secondary."""
    return Program("trampoline_64", [
        I("model", "trampoline_to_long_mode", comment="lgdt, CR4.PAE, EFER.LME, CR3, CR0.PG; rsp; lidt"),
        I("jmp_reg", "r8", comment="start_secondary"),
    ], source="arch/x86/realmode/rm/trampoline_64.S")


def start_secondary() -> Program:
    """arch/x86/kernel/smpboot.c start_secondary(): mark the CPU online, then the idle loop."""
    return Program("start_secondary", [
        I("model", "cpu_online", comment="set_cpu_online(smp_processor_id(), true)"),
        "idle:",
        I("sti"),
        I("hlt", comment="default_idle()"),
        I("jmp", "idle"),
    ], source="arch/x86/kernel/smpboot.c: start_secondary() -> cpu_startup_entry()")


def resume_target_kernel() -> Program:
    """kernel/power/hibernate.c resume_target_kernel(): take the non-boot CPUs down
    (hibernate_resume_nonboot_cpu_disable), then swsusp_arch_resume(), which does not return."""
    return Program("resume_target_kernel", [
        I("cli", comment="local_irq_disable()"),
        I("model", "hibernate_resume_nonboot_cpu_disable", comment="each non-boot CPU -> play_dead"),
        I("model", "kick_parked_cpus", comment="the fix's kick of parked CPUs, if it has one"),
        I("model", "swsusp_arch_resume", comment="temporary tables, relocate code, jump"),
    ], source="kernel/power/hibernate.c: resume_target_kernel()")
