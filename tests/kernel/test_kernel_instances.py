"""Two boots of one kernel build: the same text at the same frames and the same symbols (one
binary at one address), but boot allocations, the direct-map page tables among them, that land
where each boot's early reservations leave room (FACTS.md section 1: "the restore kernel's table
frames are not the image kernel's").  And the IDT each boot builds.
"""
from __future__ import annotations

import numpy as np
import pytest

from lab.hw.memory import PhysicalMemory
from lab.hw.paging import walk
from lab.kernel.instance import GATES, BootParams, Kernel, make_gate
from lab.kernel.layout import PAGE_SIZE
from lab.scenario import Config, Resume

MiB = 1 << 20


@pytest.fixture(scope="module")
def workshop() -> Resume:
    return Resume(preset="workshop", fix="hlt", seed=2)  # built, not run


def kernels(r: Resume):
    return (r.image_kernel, r.restore_kernel)


def decode_gate(lo: int, hi: int) -> dict:
    return {"handler": (lo & 0xFFFF) | ((lo >> 48) & 0xFFFF) << 16 | (hi & 0xFFFFFFFF) << 32,
            "selector": (lo >> 16) & 0xFFFF, "ist": (lo >> 32) & 7, "type": (lo >> 40) & 0xF,
            "dpl": (lo >> 45) & 3, "present": (lo >> 47) & 1}


def test_idt_gates_decode_to_the_handlers(workshop: Resume) -> None:
    for k in kernels(workshop):
        idt = k.memory.read_page(k.layout.image.idt_table)
        for name, (vector, symbol, ist) in GATES.items():
            g = decode_gate(int(idt[vector * 2]), int(idt[vector * 2 + 1]))
            assert g["handler"] == k.symbols[symbol], (k.name, name)
            assert g == {"handler": k.symbols[symbol], "selector": 0x10, "ist": ist, "type": 0xE, "dpl": 0,
                         "present": 1}, (k.name, name, g)
            # the gate leads to the entry point placed for that handler
            placed = k.placed[symbol]
            assert placed.base == g["handler"]
        used = {v for v, _, _ in GATES.values()}
        for vector in set(range(32)) - used:
            assert idt[vector * 2] == 0 and idt[vector * 2 + 1] == 0, (k.name, vector)


def test_double_fault_and_nmi_use_their_ist_stacks(workshop: Resume) -> None:
    k = workshop.restore_kernel
    assert GATES["#DF"][2] == 1 and GATES["NMI"][2] == 2 and GATES["#MC"][2] == 3
    assert GATES["#PF"][2] == 0  # on the current stack, hence the #DF when that stack is gone
    for cpu in range(workshop.config.cpus):
        ist = k.ist(cpu)
        assert ist[1] != ist[2] != ist[3]
        for i in (1, 2, 3):  # each IST top is inside the CPU's per-CPU area
            pa = walk(k.memory, k.cr3, ist[i] - 8, set_accessed=False).paddr
            assert pa is not None and k.layout.percpu[cpu] <= pa // PAGE_SIZE < k.layout.percpu[cpu] + 8


def test_make_gate_round_trips() -> None:
    for handler in (0xFFFFFFFF81001000, 0xFFFFFFFF8123_4567, 0):
        for ist in range(8):
            g = decode_gate(*make_gate(handler, ist))
            assert (g["handler"], g["ist"], g["present"]) == (handler, ist, 1)


def test_idtr_points_at_the_idt_through_the_text_mapping(workshop: Resume) -> None:
    for k in kernels(workshop):
        base, limit = k.idtr
        assert limit == 0xFFF
        w = walk(k.memory, k.cr3, base, set_accessed=False)
        assert w.paddr == k.layout.image.idt_table * PAGE_SIZE


def test_one_build_same_text_and_symbols(workshop: Resume) -> None:
    img, rst = kernels(workshop)
    assert img.symbols == rst.symbols
    assert {n: p.base for n, p in img.placed.items()} == {n: p.base for n, p in rst.placed.items()}
    assert img.layout.image == rst.layout.image  # same sections at the same frames
    text = img.layout.image.text
    image_mem, machine_mem = img.memory, workshop.machine.memory
    assert machine_mem is rst.memory and image_mem is not machine_mem
    assert all(image_mem.tag(p) == machine_mem.tag(p) for p in text)
    assert image_mem.tag(img.layout.trampoline) == machine_mem.tag(rst.layout.trampoline)
    # and the same code is placed from the same symbols: the IDTs are equal too
    assert np.array_equal(image_mem.read_page(img.layout.image.idt_table),
                          machine_mem.read_page(rst.layout.image.idt_table))


def test_two_boots_have_different_data(workshop: Resume) -> None:
    """.data and .bss differ between boots (what the running kernel wrote there)."""
    img, rst = kernels(workshop)
    assert img.boot_seed != rst.boot_seed
    data = img.layout.image.data
    assert any(img.memory.tag(p) != rst.memory.tag(p) for p in data if img.memory.tag(p) is not None)


def test_another_build_has_other_text() -> None:
    r = Resume(preset="workshop", fix="hlt", seed=2, same_build=False)
    img, rst = kernels(r)
    text = img.layout.image.text
    assert all(img.memory.tag(p) != r.machine.memory.tag(p) for p in list(text)[:64])


def test_table_frames_differ_between_boots_for_some_seeds() -> None:
    """Two boots one after the other on the default machine (seeded early reservations, as in
    a Resume): for some seeds both put their direct-map tables in the same frames, for others
    not.  The brk tables, part of the kernel image, are the same frames every time."""
    c = Config.from_preset("default")
    same, differ = [], []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        a, b = (Kernel(name, PhysicalMemory(c.phys_size), c.e820(),
                       BootParams(nr_cpus=8, early_noise_pages=c.early_noise_pages), rng)
                for name in ("image", "restore"))
        brk = list(a.layout.image.brk_pgt_buf)
        assert [t for t in a.layout.table_frames if t in brk] == [t for t in b.layout.table_frames if t in brk]
        (same if a.layout.table_frames == b.layout.table_frames else differ).append(seed)
        if same and differ:
            break
    assert same and differ, (same, differ)


def test_resume_boots_differ_in_table_frames_for_some_seeds() -> None:
    """The same in a Resume (its image kernel and restore kernel), workshop preset."""
    same, differ = [], []
    for seed in range(8):
        img, rst = kernels(Resume(preset="workshop", fix="hlt", seed=seed))
        assert img.symbols == rst.symbols
        brk = set(img.layout.image.brk_pgt_buf)
        memblock_tables = [set(t for t in k.layout.table_frames if t not in brk) for k in (img, rst)]
        assert memblock_tables[0] and memblock_tables[1]
        if memblock_tables[0] == memblock_tables[1]:
            same.append(seed)
        else:
            assert not memblock_tables[0] & memblock_tables[1]  # not one frame in common
            differ.append(seed)
        if same and differ:
            break
    assert same and differ, (same, differ)


def boot_pair(early_a: int, early_b: int) -> tuple[Kernel, Kernel]:
    c = Config.from_preset("default")
    out = []
    for i, early in enumerate((early_a, early_b)):
        out.append(Kernel(f"boot{i}", PhysicalMemory(c.phys_size), c.e820(),
                          BootParams(nr_cpus=8, early_noise_exact=early), np.random.default_rng(i)))
    return out[0], out[1]


@pytest.mark.parametrize("early_a, early_b, same", [
    (100, 500, True),  # both within the top 2 MiB block (512 frames)
    (300, 300, True),
    (600, 1000, True),  # both reach into the second block
    (300, 700, False),  # the report's boots: one block vs two
    (500, 520, False),
])
def test_tables_move_with_the_2m_blocks_the_early_reservations_touch(early_a, early_b, same) -> None:
    a, b = boot_pair(early_a, early_b)
    assert (a.layout.table_frames == b.layout.table_frames) == same
    blocks = lambda n: -(-n // 512)  # noqa: E731  2 MiB blocks the top-down reservation touches
    assert (blocks(early_a) == blocks(early_b)) == same
