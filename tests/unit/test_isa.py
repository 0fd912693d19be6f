"""Instructions and program listings (lab/hw/isa.py)."""
from __future__ import annotations

import pytest

from lab.hw import OPS, I, Instr, Program, mem
from lab.hw.isa import Mem


def test_place_gives_every_instruction_an_address_and_resolves_labels():
    prog = Program("loop", ["top:", I("nop"), I("add", "rax", 1), "again:", I("jmp", "top")])
    placed = prog.place(0xFFFF_FFFF_8100_0000)
    assert placed.labels == {"top": 0xFFFF_FFFF_8100_0000, "again": 0xFFFF_FFFF_8100_0008}
    assert [ln.va for ln in placed.lines] == [0xFFFF_FFFF_8100_0000 + 4 * i for i in range(3)]
    jmp = placed.lines[2].instr
    assert jmp.args == (0xFFFF_FFFF_8100_0000,) and jmp.comment == "top"
    assert placed.size == 12 and placed.line_of(0xFFFF_FFFF_8100_0004) == 1
    assert placed.line_of(0xFFFF_FFFF_8100_0002) is None


def test_jumps_may_name_other_programs_symbols():
    placed = Program("p", [I("jmp", "elsewhere")]).place(0x1000, {"elsewhere": 0x9000})
    assert placed.lines[0].instr.args == (0x9000,)


def test_unknown_label_is_refused():
    with pytest.raises(ValueError, match="p: jump to unknown label 'nowhere'"):
        Program("p", [I("je", "nowhere")]).place(0)


def test_listing_marks_rip():
    placed = Program("idle", ["top:", I("hlt", comment="sleep"), I("jmp", "top")],
                     source="arch/x86/kernel/smpboot.c").place(0x1000)
    text = placed.listing(rip=0x1004)
    assert text.splitlines() == [
        "idle:    ; arch/x86/kernel/smpboot.c",
        "  top:",
        "   0x0000000000001000  hlt       ; sleep",
        "=> 0x0000000000001004  jmp     0x1000  ; top",
    ]


def test_memory_operand_text():
    assert str(mem("rax")) == "[rax]"
    assert str(mem("rsp", 0x10)) == "[rsp + 0x10]"
    assert str(mem("rbp", -8)) == "[rbp - 0x8]"
    assert str(mem(None, 0x1000)) == "[0x1000]"
    assert mem("rdi", 4) == Mem("rdi", 4)


def test_instruction_text():
    assert I("mov", "rax", 0x20).text() == "mov     rax, 0x20"
    assert I("store", mem("rax"), 7).text() == "store   [rax], 0x7"


def test_unknown_instruction_is_refused_with_the_allowed_list():
    with pytest.raises(ValueError) as exc:
        I("vmcall")
    msg = str(exc.value)
    assert msg.startswith("unknown instruction 'vmcall'; allowed: ")
    assert all(op in msg for op in OPS)


def test_operand_count_is_checked():
    with pytest.raises(ValueError, match=r"mov takes 2 operand\(s\), got 1"):
        Instr("mov", ("rax",))
    with pytest.raises(ValueError, match=r"monitor takes 0 operand\(s\), got 1"):
        I("monitor", "rax")
