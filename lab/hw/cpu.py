"""A CPU: the registers that matter, run states, instruction execution and exception delivery.

Sources: SDM vol. 2 (MONITOR, MWAIT, CLFLUSH, HLT, WBINVD, INVLPG, IRETQ, WRMSR), vol. 3A
6.12-6.15 (exception delivery in 64-bit mode: IDT gates of 16 bytes, IST, the pushed frame, #DF
and the shutdown that a fault during #DF delivery causes), 6.7.1 (NMIs blocked until the next
IRET, one held pending), 8.4 and 9.1.1 (INIT and wait-for-SIPI), 4.6 and 4.10.4 (the control
bits of paging: CPL, CR0.WP, IA32_EFER.NXE; MOV to CR3 flushes non-global TLB entries),
vol. 3B 15.3.1.2 and 6.15 (#MC: MCG_STATUS.MCIP, shutdown with MCIP=1 or CR4.MCE=0),
vol. 3C 34.8 (SMM: further SMIs latched, one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from .isa import REGISTERS, Instr, Mem
from .memory import ContentTag, PhysicalMemory
from .paging import RIGHTS_NEEDED, TLB, Fault, Walk, walk

if TYPE_CHECKING:  # pragma: no cover
    from .machine import Machine

VECTORS = {"#DE": 0, "NMI": 2, "#UD": 6, "#DF": 8, "#GP": 13, "#PF": 14, "#MC": 18}
VECTOR_NAMES = {v: k for k, v in VECTORS.items()}

#: MSRs the model implements for WRMSR (SDM vol. 4, table 2-2)
MSR_IA32_MCG_STATUS = 0x17A
MSR_IA32_EFER = 0xC000_0080
MCG_STATUS_MCIP = 1 << 2  # machine check in progress (SDM vol. 3B 15.3.1.2)
EFER_NXE = 1 << 11


class RunState(str, Enum):
    RUNNING = "running"
    MWAIT = "mwait"
    HLT = "hlt"
    WAIT_FOR_SIPI = "wait-for-SIPI"
    OFF = "off"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class CState:
    """An MWAIT target state: its EAX hint, how long leaving it takes and whether entering it
    loses the TLB and paging-structure caches (implementation specific, SDM 4.10.2.2 allows
    dropping cached translations at any time; deep package C-states power the core off)."""

    name: str
    hint: int
    exit_latency_ns: int
    flushes_tlb: bool

    def __post_init__(self) -> None:
        if not 0 <= self.hint <= 0xFF:
            raise ValueError(f"C-state {self.name}: MWAIT hint must be 0..0xff, got {self.hint:#x}")
        if self.exit_latency_ns < 0:
            raise ValueError(f"C-state {self.name}: exit latency must be >= 0 ns")


DEFAULT_CSTATES = (
    CState("C1", 0x00, 2_000, False),
    CState("C3", 0x10, 60_000, False),
    CState("C6", 0x20, 100_000, True),
)


class CpuFault(Exception):
    """Raised inside an instruction when an access faults; turned into exception delivery."""

    def __init__(self, fault: Fault, walk: Walk | None = None) -> None:
        super().__init__(fault.describe())
        self.fault = fault
        self.walk = walk


@dataclass
class CodePage:
    """Instructions placed in one physical frame, valid while the frame holds the bytes it
    held when they were placed: ``tag`` is that content, a ContentTag or (for a frame that
    was materialized) a copy of its qwords."""

    tag: Any
    instrs: dict[int, Instr] = field(default_factory=dict)

    def valid(self, memory: PhysicalMemory, pfn: int) -> bool:
        """Does frame ``pfn`` still hold the bytes this code was placed on?  Equal tags are
        equal bytes (fast path); otherwise the bytes are compared, so a load that
        materializes the frame keeps the code and a store that changes it does not."""
        cur = memory.tag(pfn)
        if cur is not None and isinstance(self.tag, ContentTag):
            return cur == self.tag
        if not memory.same_content(pfn, self.tag):
            return False
        self.tag = memory.content(pfn)  # same bytes, in the form that is cheap to compare next
        return True


@dataclass
class Cpu:
    """One logical CPU.  ``cr3`` None means paging is off (real mode after SIPI)."""

    id: int
    machine: "Machine"
    cstates: tuple[CState, ...] = DEFAULT_CSTATES
    state: RunState = RunState.OFF
    rip: int = 0
    cr3: int | None = None
    idtr: tuple[int, int] = (0, 0)
    ist: tuple[int, ...] = (0,) * 8  # IST1..7 from the TSS (index 0 unused)
    if_flag: bool = False
    zf: bool = False
    regs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REGISTERS, 0))
    tlb: TLB = field(default_factory=TLB)
    cstate: CState | None = None
    mwait_irq_break: bool = False
    wakeups: int = 0
    pending_irqs: list[int] = field(default_factory=list)
    pending_exc: list[int] = field(default_factory=list)  # NMI, #MC: delivered whatever IF
    last_fault: Fault | None = None
    fault_rip: int = 0  # RIP of the instruction that faulted last
    last_walk: Walk | None = None
    delivering: int | None = None  # vector being delivered (to detect #DF and shutdown)
    # control state (Linux's values once the kernel runs: SDM 4.6, 2.5, vol. 3B 15.5)
    cpl: int = 0  # current privilege level: 3 is user mode, 0..2 supervisor
    cr0_wp: bool = True  # CR0.WP: supervisor writes honour R/W
    efer_nxe: bool = True  # IA32_EFER.NXE: bit 63 of entries is XD (else reserved)
    cr4_mce: bool = True  # CR4.MCE: machine-check exceptions enabled
    mcg_status_mcip: bool = False  # IA32_MCG_STATUS.MCIP: a machine check is being handled
    # NMI and SMI state (SDM vol. 3A 6.7.1, vol. 3C 34.8)
    nmi_blocked: bool = False  # an NMI handler runs: further NMIs wait for IRET
    nmi_pending: bool = False  # one NMI held pending (a further one is lost)
    smm_until: int | None = None  # in SMM until this time (ns)
    smi_latched: bool = False  # one SMI latched while in SMM

    def __post_init__(self) -> None:
        if self.id < 0:
            raise ValueError(f"CPU id must be >= 0, got {self.id}")
        if self.cpl not in range(4):
            raise ValueError(f"CPL must be 0..3, got {self.cpl!r}")
        hints = [c.hint for c in self.cstates]
        if not self.cstates or len(set(hints)) != len(hints):
            raise ValueError("a CPU needs at least one C-state and distinct MWAIT hints")
        self.agent = f"cpu{self.id}"
        self._by_hint = {c.hint: c for c in self.cstates}

    # -- C-states ----------------------------------------------------------------------------
    def cstate_for(self, hint: int) -> CState:
        """The state an MWAIT hint selects; an unsupported hint enters C1 (the shallowest)."""
        return self._by_hint.get(hint & 0xFF, self.cstates[0])

    def cstate_named(self, name: str) -> CState:
        for c in self.cstates:
            if c.name == name:
                return c
        raise ValueError(f"unknown C-state {name!r}; allowed: {', '.join(c.name for c in self.cstates)}")

    @property
    def deepest(self) -> CState:
        return max(self.cstates, key=lambda c: c.hint)

    # -- translation and memory --------------------------------------------------------------
    def translate(self, va: int, *, write: bool = False, fetch: bool = False, why: str = "") -> int:
        """Linear -> physical through this CPU's TLB and tables; raises CpuFault."""
        if self.cr3 is None:
            return va
        user = self.cpl == 3
        hit = self.tlb.lookup(va)  # a hit that allows the access needs no walk, emits nothing
        if hit is not None and not RIGHTS_NEEDED[write | fetch << 1 | user << 2 | self.cr0_wp << 3
                                                 | self.efer_nxe << 4] & ~hit[2]:
            return hit[0] + (va & (hit[1] - 1))
        m = self.machine
        w = walk(m.memory, self.cr3, va, write=write, fetch=fetch, user=user, tlb=self.tlb, agent=self.agent,
                 wp=self.cr0_wp, nxe=self.efer_nxe)
        if not w.tlb_hit:
            self.last_walk = w
            m.emit("walk", self.id, va=va, why=why, steps=[(s.level, s.table, s.index, s.entry) for s in w.steps],
                   started_at=w.started_at, paddr=w.paddr,
                   fault=None if w.fault is None else w.fault.vector)
        if w.fault is not None:
            raise CpuFault(w.fault, w)
        return w.paddr  # type: ignore[return-value]

    def load(self, va: int, why: str = "load") -> int:
        return self.machine.memory.read_u64(self.translate(va, why=why))

    def store(self, va: int, value: int, why: str = "store") -> None:
        self.machine.memory.write_u64(self.translate(va, write=True, why=why), value & ((1 << 64) - 1), self.agent)

    def _ea(self, m: Mem) -> int:
        return ((self.regs[m.base] if m.base else 0) + m.disp) & ((1 << 64) - 1)

    def _val(self, a: Any) -> int:
        return self.regs[a] if isinstance(a, str) else a

    # -- execution ---------------------------------------------------------------------------
    def fetch(self) -> Instr:
        pa = self.translate(self.rip, fetch=True, why="fetch")
        page = self.machine.code.get(pa >> 12)
        if page is None or not page.valid(self.machine.memory, pa >> 12):
            raise CpuFault(Fault("#UD", self.rip, 0))  # the bytes there are not our code
        ins = page.instrs.get(pa & 0xFFF)
        if ins is None:
            raise CpuFault(Fault("#UD", self.rip, 0))
        return ins

    def step(self) -> int:
        """Execute one instruction (or deliver a pending interrupt); returns nanoseconds used."""
        m = self.machine
        if self.smm_until is not None:
            ns = self._smm_step()
            if ns:
                return ns
        if self.pending_exc:
            self.pending_exc.pop(0)
            self._machine_check()
            return m.timing.instr_ns
        if self.nmi_pending and not self.nmi_blocked:
            self.nmi_pending = False
            self.nmi_blocked = True  # until the next IRET (SDM vol. 3A 6.7.1)
            self.deliver(VECTORS["NMI"], None)
            return m.timing.instr_ns
        if self.pending_irqs and self.if_flag:
            vec = self.pending_irqs.pop(0)
            self.deliver(vec, None)
            return m.timing.instr_ns
        start = self.rip
        try:
            ins = self.fetch()
            self.rip = start + ins.size
            m.emit("exec", self.id, rip=start, op=ins.op)
            return self.execute(ins, start)
        except CpuFault as exc:
            self.rip = start
            self.last_fault = exc.fault
            self.fault_rip = start
            m.emit("fault", self.id, vector=exc.fault.vector, address=exc.fault.address,
                   error_code=exc.fault.error_code, rip=start)
            self.deliver(VECTORS[exc.fault.vector], exc.fault.error_code if exc.fault.vector in ("#PF", "#GP") else None,
                         cr2=exc.fault.address if exc.fault.vector == "#PF" else None)
            return m.timing.instr_ns

    def execute(self, ins: Instr, at: int) -> int:
        m = self.machine
        op, a = ins.op, ins.args
        ns = m.timing.instr_ns
        r = self.regs
        if op == "mov":
            r[a[0]] = self._val(a[1])
        elif op == "load":
            r[a[0]] = self.load(self._ea(a[1]))
        elif op == "store":
            self.store(self._ea(a[0]), self._val(a[1]))
        elif op == "add":
            r[a[0]] = (r[a[0]] + self._val(a[1])) & ((1 << 64) - 1)
        elif op == "and":
            r[a[0]] = r[a[0]] & self._val(a[1]) & ((1 << 64) - 1)
        elif op == "cmp":
            self.zf = r[a[0]] == self._val(a[1])
        elif op == "je":
            if self.zf:
                self.rip = a[0]
        elif op == "jne":
            if not self.zf:
                self.rip = a[0]
        elif op == "jmp":
            self.rip = a[0]
        elif op == "jmp_reg":
            self.rip = r[a[0]]
        elif op == "push":
            rsp = (r["rsp"] - 8) & ((1 << 64) - 1)
            self.store(rsp, self._val(a[0]), why="push")  # a fault leaves RSP as it was
            r["rsp"] = rsp
        elif op == "pop":
            r[a[0]] = self.load(r["rsp"], why="pop")
            r["rsp"] += 8
        elif op == "clflush":
            pa = self.translate(self._ea(a[0]), why="clflush")
            m.memory.clflush(pa, self.agent)
            ns = m.timing.clflush_ns
        elif op == "monitor":
            pa = self.translate(r["rax"], why="monitor")
            line = m.monitor.arm(self.id, pa)
            m.emit("monitor", self.id, va=r["rax"], line=line)
        elif op == "mwait":
            self._mwait(r["rax"], r["rcx"])
        elif op == "hlt":
            self.state = RunState.HLT
            m.emit("state", self.id, state=str(self.state))
        elif op == "cli":
            self.if_flag = False
        elif op == "sti":
            self.if_flag = True
        elif op == "wbinvd":
            ns = m.timing.wbinvd_ns
        elif op == "mov_cr3":
            self.cr3 = r[a[0]]
            self.tlb.flush_non_global()
            m.emit("cr3", self.id, cr3=self.cr3)
        elif op == "invlpg":
            self.tlb.invlpg(self._ea(a[0]))
        elif op == "lidt":
            self.idtr = (self._val(a[0]), self._val(a[1]))
        elif op == "iretq":
            self.nmi_blocked = False  # even if the IRET faults (SDM vol. 3A 6.7.1)
            rsp = r["rsp"]
            self.rip = self.load(rsp, why="iretq")
            new_rsp = self.load(rsp + 24, why="iretq")
            self.if_flag = bool(self.load(rsp + 16, why="iretq") & 0x200)
            r["rsp"] = new_rsp
        elif op == "wrmsr":
            self.wrmsr(r["rcx"], (r["rdx"] & 0xFFFF_FFFF) << 32 | (r["rax"] & 0xFFFF_FFFF))
        elif op == "nop":
            pass
        elif op == "model":
            ns = m.run_routine(a[0], self, at)
        return ns

    def _mwait(self, eax: int, ecx: int) -> None:
        """MWAIT: sleep only if the monitor is armed and has not triggered (SDM vol. 2B)."""
        m = self.machine
        if not m.monitor.is_armed_and_quiet(self.id):
            m.emit("mwait_fallthrough", self.id,
                   reason="monitor not armed" if self.id not in m.monitor.armed else "monitor already triggered")
            return
        self.cstate = self.cstate_for(eax)
        self.mwait_irq_break = bool(ecx & 1)
        self.state = RunState.MWAIT
        if self.cstate.flushes_tlb:
            self.tlb.flush_all()
        m.emit("state", self.id, state=str(self.state), cstate=self.cstate.name,
               tlb_lost=self.cstate.flushes_tlb)

    def wrmsr(self, msr: int, value: int) -> None:
        """WRMSR (SDM vol. 2B): IA32_MCG_STATUS (MCIP, vol. 3B 15.3.1.2) and IA32_EFER (NXE);
        any other MSR is unimplemented in the model and raises #GP(0), as WRMSR does for an
        unimplemented MSR."""
        if msr == MSR_IA32_MCG_STATUS:
            self.mcg_status_mcip = bool(value & MCG_STATUS_MCIP)
        elif msr == MSR_IA32_EFER:
            self.efer_nxe = bool(value & EFER_NXE)
        else:
            raise CpuFault(Fault("#GP", self.rip, 0))

    def enter_kernel_mode(self) -> None:
        """The control state a 64-bit kernel such as Linux runs with (CPL 0, CR0.WP=1,
        IA32_EFER.NXE=1, CR4.MCE=1): what its startup code writes before running C code."""
        self.cpl, self.cr0_wp, self.efer_nxe, self.cr4_mce = 0, True, True, True

    # -- NMI, SMI, machine check --------------------------------------------------------------
    def receive_nmi(self) -> str:
        """An NMI arrives (SDM vol. 3A 6.7.1): held pending (one; a further one while one is
        pending is lost) and delivered at an instruction boundary unless an NMI handler is
        running (blocked until its IRET).  Wakes HLT or MWAIT unless blocked."""
        st = self.state
        if self.nmi_pending:
            return "lost: an NMI is already pending"
        self.nmi_pending = True
        if self.nmi_blocked:
            return "pending: NMIs are blocked until the handler's IRET"
        if st in (RunState.MWAIT, RunState.HLT):
            self.wake("NMI")
            return f"woken from {st}; runs the NMI handler, then the instruction after"
        return "NMI handler runs next"

    def receive_smi(self) -> str:
        """An SMI arrives (SDM vol. 3C 34.8): the CPU spends ``smi_ns`` in SMM (nothing of it
        is visible: no handler in the IDT, no memory of ours touched); an SMI arriving while in
        SMM is latched (one) and serviced right after RSM, a further one is lost.  A CPU in HLT
        or MWAIT continues after that instruction when SMM ends."""
        m, st = self.machine, self.state
        if self.smm_until is not None:
            if self.smi_latched:
                return "lost: one SMI is already latched in SMM"
            self.smi_latched = True
            return "latched: serviced when the CPU leaves SMM"
        self.smm_until = m.sched.now + m.timing.smi_ns
        if st in (RunState.MWAIT, RunState.HLT):
            self.wake("SMI", at=self.smm_until)
            return f"woken from {st}; SMM handler, then the instruction after {st}"
        return "SMM handler runs; execution continues after it"

    def _smm_step(self) -> int:
        """At the CPU's turn while SMM was entered: the time left in SMM, or RSM; a latched
        SMI enters SMM again at once (SDM vol. 3C 34.8).  0 when the CPU runs normally again."""
        m = self.machine
        now = m.sched.now
        if now < self.smm_until:  # type: ignore[operator]
            return self.smm_until - now  # type: ignore[operator]
        self.smm_until = None
        if not self.smi_latched:
            return 0
        self.smi_latched = False
        self.smm_until = now + m.timing.smi_ns
        m.emit("smm", self.id, why="latched SMI serviced after RSM")
        return m.timing.smi_ns

    def receive_machine_check(self) -> str:
        """A machine-check event for this CPU: delivered through vector 18 at the next
        instruction boundary (see ``_machine_check`` for the shutdown cases).  A CPU in
        wait-for-SIPI has CR4=0 after INIT, so it shuts down at once (SDM vol. 3A 6.15)."""
        st = self.state
        if st == RunState.WAIT_FOR_SIPI:
            self._machine_check()
            return "processor shutdown: machine check with CR4.MCE=0 (after INIT)"
        self.pending_exc.append(VECTORS["#MC"])
        if st in (RunState.MWAIT, RunState.HLT):
            self.wake("MCE")
            return f"woken from {st}; runs the MCE handler, then the instruction after"
        return "MCE handler runs next"

    def _machine_check(self) -> None:
        """Deliver #MC (SDM vol. 3B 15.10.1 and vol. 3A 6.15 interrupt 18): with CR4.MCE=0,
        or with IA32_MCG_STATUS.MCIP already set (a machine check while one is being handled),
        the processor enters shutdown; otherwise MCIP is set and vector 18 is delivered."""
        if not self.cr4_mce:
            self.machine.shutdown_processor(self.id, "machine check", "machine check with CR4.MCE=0")
            return
        if self.mcg_status_mcip:
            self.machine.shutdown_processor(self.id, "machine check", "machine check while MCG_STATUS.MCIP=1")
            return
        self.mcg_status_mcip = True
        self.deliver(VECTORS["#MC"], None)

    # -- leaving sleep -----------------------------------------------------------------------
    def wake(self, reason: str, at: int | None = None) -> None:
        """Leave MWAIT or HLT and run again after the C-state's exit latency."""
        m = self.machine
        latency = self.cstate.exit_latency_ns if self.state == RunState.MWAIT and self.cstate else m.timing.hlt_exit_ns
        was = self.state
        self.state = RunState.RUNNING
        self.cstate = None
        self.wakeups += 1
        when = (m.sched.now if at is None else at) + m.jitter.scale(latency)
        m.emit("wake", self.id, reason=reason, was=str(was), resumes_at=when)
        m.sched.schedule(self.id, when)

    # -- exceptions --------------------------------------------------------------------------
    def deliver(self, vector: int, error_code: int | None, cr2: int | None = None) -> None:
        """Deliver an exception or interrupt through the IDT (SDM vol. 3A 6.14): read the
        16-byte gate, pick the stack (IST or current), push SS, RSP, RFLAGS, CS, RIP and the
        error code through this CPU's own translations.  A fault on the way is a #DF; a fault
        while delivering #DF shuts the machine down (triple fault)."""
        m = self.machine
        name = VECTOR_NAMES.get(vector, f"vector {vector}")
        if cr2 is not None:
            m.cr2[self.id] = cr2
        prev = self.delivering
        self.delivering = vector
        try:
            base, limit = self.idtr
            if vector * 16 + 15 > limit:
                raise CpuFault(Fault("#GP", vector * 8 + 2, vector * 8 + 2))
            lo = self.load(base + vector * 16, why=f"IDT[{name}]")
            hi = self.load(base + vector * 16 + 8, why=f"IDT[{name}]")
            if not lo >> 47 & 1:
                raise CpuFault(Fault("#GP", vector * 8 + 2, vector * 8 + 2))
            handler = (lo & 0xFFFF) | ((lo >> 48) & 0xFFFF) << 16 | (hi & 0xFFFFFFFF) << 32
            ist = (lo >> 32) & 7
            old_rsp = self.regs["rsp"]
            rsp = (self.ist[ist] if ist else old_rsp) & ~0xF
            rflags = 0x2 | (0x200 if self.if_flag else 0)
            frame = [0x18, old_rsp, rflags, 0x10, self.rip] + ([error_code] if error_code is not None else [])
            for value in frame:
                rsp -= 8
                self.store(rsp, value, why=f"{name} frame")
        except CpuFault as exc:
            self.delivering = prev
            m.emit("fault", self.id, vector=exc.fault.vector, address=exc.fault.address,
                   error_code=exc.fault.error_code, rip=self.rip, during=name)
            if vector == VECTORS["#DF"]:
                m.shutdown_processor(self.id, "triple fault", f"fault while delivering #DF: {exc.fault.describe()}")
                return
            self.deliver(VECTORS["#DF"], 0)
            return
        self.delivering = prev
        self.regs["rsp"] = rsp
        self.rip = handler
        self.if_flag = False  # interrupt gate
        m.emit("exception", self.id, vector=name, handler=handler, error_code=error_code, cr2=cr2)
        if self.state != RunState.RUNNING:
            self.state = RunState.RUNNING
            m.emit("state", self.id, state=str(self.state))
        if not m.sched.is_scheduled(self.id):
            m.sched.schedule(self.id, m.sched.now + m.timing.instr_ns)

    def reset_to_wait_for_sipi(self) -> None:
        """INIT (SDM vol. 3A 8.4, 9.1.1, table 9-1): registers to their INIT values (CR0 with
        WP=0 and paging off, CR4=0 so CR4.MCE=0, EFER=0 so NXE=0, CPL 0), caches of
        translations and the monitor gone, pending NMI and interrupts dropped, then
        wait-for-SIPI.  MSRs such as MCG_STATUS keep their values."""
        self.state = RunState.WAIT_FOR_SIPI
        self.cpl, self.cr0_wp, self.efer_nxe, self.cr4_mce = 0, False, False, False
        self.nmi_pending = self.nmi_blocked = self.smi_latched = False
        self.smm_until = None  # INIT while in SMM (held until RSM on hardware) is not modelled
        self.rip = 0xFFF0
        self.cr3 = None
        self.idtr = (0, 0xFFFF)
        self.if_flag = False
        self.regs = dict.fromkeys(REGISTERS, 0)
        self.tlb.flush_all()
        self.cstate = None
        self.pending_irqs.clear()
        self.pending_exc.clear()
        self.machine.monitor.disarm(self.id)
        self.machine.sched.cancel(self.id)
