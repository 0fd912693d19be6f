"""A small x86-flavoured instruction set and programs as readable listings.

Instructions are data (``Instr``); a ``Program`` is a list of instructions and labels that is
placed at a linear address, giving every instruction an address so a listing can mark RIP.
Operands: register names ("rax", "rsp", ...), integers (immediates) and memory operands made
with :func:`mem` (``[base + disp]``).  ``("model", name)`` is the one escape: it runs a
routine of the layer above (the kernel) for bulk work such as copying a page.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

#: general registers, plus the GS base the kernel addresses its per-CPU data through (MSR
#: IA32_GS_BASE, SDM vol. 3A 3.4.4; written by the kernel, used as a base register here)
REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "gs_base")

#: op -> operand count, and what it means (for listings and validation)
OPS: dict[str, tuple[int, str]] = {
    "mov": (2, "dst <- src (register or immediate)"),
    "load": (2, "dst <- qword [mem] (translated, may #PF)"),
    "store": (2, "qword [mem] <- src (translated, may #PF)"),
    "add": (2, "dst <- dst + src"),
    "and": (2, "dst <- dst & src"),
    "cmp": (2, "set ZF from a - b"),
    "je": (1, "jump if ZF"),
    "jne": (1, "jump if not ZF"),
    "jmp": (1, "jump to label"),
    "jmp_reg": (1, "jump to the address in a register"),
    "push": (1, "rsp -= 8; [rsp] <- src"),
    "pop": (1, "dst <- [rsp]; rsp += 8"),
    "clflush": (1, "flush the line of [mem] from every cache (faults like a load)"),
    "monitor": (0, "arm the monitor on the line at rax (faults like a load)"),
    "mwait": (0, "sleep in C-state eax until the monitor triggers (ecx[0]: interrupts wake)"),
    "hlt": (0, "halt until NMI, SMI, INIT, MCE or (IF=1) an interrupt"),
    "cli": (0, "IF <- 0"),
    "sti": (0, "IF <- 1"),
    "wbinvd": (0, "write back and invalidate caches"),
    "mov_cr3": (1, "CR3 <- reg: switch page tables, flush non-global TLB entries"),
    "invlpg": (1, "drop the TLB entry of [mem]"),
    "lidt": (2, "IDTR <- base, limit"),
    "iretq": (0, "pop RIP, CS, RFLAGS, RSP, SS: return from an exception"),
    "wrmsr": (0, "MSR[rcx] <- rdx:rax (IA32_MCG_STATUS, IA32_EFER; others #GP)"),
    "nop": (0, "nothing"),
    "model": (1, "run a model routine (bulk work the model does not spell out)"),
}


class Mem(NamedTuple):
    base: str | None
    disp: int

    def __str__(self) -> str:
        if self.base is None:
            return f"[{self.disp:#x}]"
        if self.disp == 0:
            return f"[{self.base}]"
        sign = "+" if self.disp >= 0 else "-"
        return f"[{self.base} {sign} {abs(self.disp):#x}]"


def mem(base: str | None = None, disp: int = 0) -> Mem:
    if base is not None and base not in REGISTERS:
        raise ValueError(f"unknown register {base!r}; allowed: {', '.join(REGISTERS)}")
    return Mem(base, disp)


@dataclass(frozen=True, slots=True)
class Instr:
    op: str
    args: tuple[Any, ...] = ()
    comment: str = ""
    size: int = 4

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown instruction {self.op!r}; allowed: {', '.join(OPS)}")
        if len(self.args) != OPS[self.op][0]:
            raise ValueError(f"{self.op} takes {OPS[self.op][0]} operand(s), got {len(self.args)}")

    def text(self) -> str:
        def fmt(a: Any) -> str:
            return f"{a:#x}" if isinstance(a, int) else str(a)
        ops = ", ".join(fmt(a) for a in self.args)
        return f"{self.op:<8}{ops}"


def I(op: str, *args: Any, comment: str = "") -> Instr:  # noqa: E743 - reads like assembly
    return Instr(op, tuple(args), comment)


class Line(NamedTuple):
    va: int
    label: str | None
    instr: Instr


class Program:
    """A named listing: instructions and ``"label:"`` strings.  Jump operands name labels (or
    other programs' symbols passed to :meth:`place`)."""

    def __init__(self, name: str, items: list[Instr | str], source: str = "") -> None:
        self.name = name
        self.items = items
        self.source = source

    def place(self, base: int, symbols: dict[str, int] | None = None) -> "Placed":
        labels: dict[str, int] = {}
        va = base
        for it in self.items:
            if isinstance(it, str):
                labels[it.rstrip(":")] = va
            else:
                va += it.size
        known = {**(symbols or {}), **labels}
        lines: list[Line] = []
        va = base
        pending: str | None = None
        for it in self.items:
            if isinstance(it, str):
                pending = it.rstrip(":")
                continue
            if it.op in ("je", "jne", "jmp") and isinstance(it.args[0], str):
                target = it.args[0]
                if target not in known:
                    raise ValueError(f"{self.name}: jump to unknown label {target!r}")
                it = Instr(it.op, (known[target],), it.comment or target, it.size)
            lines.append(Line(va, pending, it))
            pending = None
            va += it.size
        return Placed(self, base, va - base, labels, lines, [])


def _listing_rows(program: Program, lines: list[Line]) -> tuple[tuple[int | None, str], ...]:
    """The listing's rows: (VA, the text after the mark), or (None, a whole row: the title, a
    label)."""
    rows: list[tuple[int | None, str]] = [(None, f"{program.name}:" + (f"    ; {program.source}" if program.source else ""))]
    for ln in lines:
        if ln.label:
            rows.append((None, f"  {ln.label}:"))
        comment = f"  ; {ln.instr.comment}" if ln.instr.comment else ""
        rows.append((ln.va, f" {ln.va:#018x}  {ln.instr.text()}{comment}"))
    return tuple(rows)


class Placed(NamedTuple):
    program: Program
    base: int
    size: int
    labels: dict[str, int]
    lines: list[Line]
    rows: list[tuple[int | None, str]]  # _listing_rows, filled by the first listing() (runs never ask)

    def listing(self, rip: int | None = None) -> str:
        """The listing with ``=>`` at RIP, as a learner reads it (formatted once: a view asks for
        it on every step)."""
        if not self.rows:
            self.rows.extend(_listing_rows(self.program, self.lines))
        return "\n".join(text if va is None else ("=>" if va == rip else "  ") + text for va, text in self.rows)

    def line_of(self, rip: int) -> int | None:
        for i, ln in enumerate(self.lines):
            if ln.va == rip:
                return i
        return None
