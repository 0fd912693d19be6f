"""The outcome is read off the final state only: "resumed" needs the image kernel running with
every CPU online and every image frame holding the image's bytes; otherwise "corrupted",
"timeout", "panic" (an oops) or "triple_fault" (the machine reset).  Each invariant is broken
on purpose here and the outcome must follow.
"""
from __future__ import annotations

import pytest

from lab.hw.cpu import RunState
from lab.hw.memory import ContentTag
from lab.kernel.layout import PAGE_OFFSET, PAGE_SIZE
from lab.scenario import OUTCOMES, Resume

UNMAPPED = PAGE_OFFSET + (1 << 40)  # direct-map address far beyond RAM: PDPT entry not present


def resumed_run(seed: int = 1) -> Resume:
    r = Resume(preset="workshop", fix="hlt", seed=seed)
    r.run()
    assert r.outcome == "resumed", "precondition: the hlt run resumes"
    return r


@pytest.fixture
def done() -> Resume:
    return resumed_run()


def a_piece_frame(r: Resume) -> int:
    """An image frame described by a tagged run (not saved one by one)."""
    piece = max(r.image.pieces, key=lambda p: p.count)
    return piece.start_pfn + piece.count // 2


def a_single_frame(r: Resume) -> int:
    """An image frame saved one by one (a page table, a stack...)."""
    return sorted(r.image.pages)[len(r.image.pages) // 2]


def frames_not_in_image(r: Resume) -> int:
    usable = [(e.start // PAGE_SIZE, e.end // PAGE_SIZE) for e in r.config.e820() if e.usable]
    for lo, hi in reversed(usable):
        for pfn in range(hi - 1, lo, -1):
            if r.image.content(pfn) is None:
                return pfn
    raise AssertionError("every frame is in the image")


# -- resumed and corrupted -------------------------------------------------------------------

def test_outcomes_are_the_documented_ones(done: Resume) -> None:
    assert done.outcome in OUTCOMES
    assert set(OUTCOMES) == {"resumed", "panic", "triple_fault", "corrupted", "timeout"}


@pytest.mark.parametrize("which", [a_piece_frame, a_single_frame], ids=["tagged-run frame", "single frame"])
def test_a_changed_image_frame_is_corrupted(done: Resume, which) -> None:
    pfn = which(done)
    addr = pfn * PAGE_SIZE + 0x128
    old = done.machine.memory.read_u64(addr)
    done.machine.memory.write_u64(addr, old ^ 0x5A5A, "test")
    done._verified = None
    assert done.outcome == "corrupted"
    assert done.mismatched_frames() == [pfn]
    assert done.summary()["mismatched_frames"] == 1


def test_a_store_of_the_same_bytes_is_not_corruption(done: Resume) -> None:
    pfn = a_piece_frame(done)
    addr = pfn * PAGE_SIZE + 0x128
    done.machine.memory.write_u64(addr, done.machine.memory.read_u64(addr), "test")
    done._verified = None
    assert done.outcome == "resumed"


def test_a_frame_outside_the_image_may_change(done: Resume) -> None:
    """Free frames of the image kernel are not saved: what they hold after the resume is
    nobody's business (the restore kernel's leftovers are there)."""
    pfn = frames_not_in_image(done)
    done.machine.memory.write_u64(pfn * PAGE_SIZE, 0xDEAD, "test")
    done._verified = None
    assert done.outcome == "resumed"


def test_an_unrestored_pbe_is_corrupted(done: Resume) -> None:
    """Undo one copy: other bytes back in a frame the pblist restored (as if the copy had
    skipped it)."""
    pbe = done.loaded.pblist[len(done.loaded.pblist) // 2]
    done.machine.memory.write_page(pbe.orig_address, ContentTag("data", 0xBAD, pbe.orig_address), "test")
    done._verified = None
    assert done.outcome == "corrupted"
    assert done.mismatched_frames() == [pbe.orig_address]


# -- timeout ---------------------------------------------------------------------------------

def test_outcome_is_none_while_running() -> None:
    r = Resume(preset="workshop", fix="hlt", seed=1)
    assert r.outcome is None
    r.run(until="copy")
    assert not r.finished
    assert r.outcome is None


def test_a_tiny_step_budget_times_out() -> None:
    r = Resume(preset="workshop", fix="hlt", seed=1, step_budget=50)
    r.run()
    assert r.steps == 50 and r.finished
    assert not r.runtime.done
    assert r.outcome == "timeout"
    assert r.summary()["mismatched_frames"] is None  # not checked unless the resume completed


def test_a_budget_ending_during_bring_up_times_out() -> None:
    """The copy is done, the image kernel runs, but not every CPU is back yet."""
    full = resumed_run()
    r = Resume(preset="workshop", fix="hlt", seed=1)
    r.run(until="online")
    r2 = Resume(preset="workshop", fix="hlt", seed=1, step_budget=r.steps + 3)
    r2.run()
    assert r2.phase == "online"
    assert r2.image_kernel.online != set(range(r2.config.cpus))
    assert r2.outcome == "timeout"
    assert full.steps > r2.steps


def test_a_cpu_missing_from_the_image_kernel_times_out(done: Resume) -> None:
    done.image_kernel.online.discard(2)
    assert done.outcome == "timeout"


def test_resume_not_done_times_out(done: Resume) -> None:
    done.runtime.done = False
    assert done.outcome == "timeout"


# -- panic and triple fault ------------------------------------------------------------------

def test_fault_while_delivering_df_is_a_triple_fault() -> None:
    """An NMI to a CPU whose IDT is unmapped: the IDT read faults (#PF -> #DF), the #DF gate
    read faults again, and the machine shuts down."""
    r = Resume(preset="workshop", fix="hlt", seed=1)
    r.run(until="copy")
    cpu = r.machine.cpus[2]
    cpu.idtr = (UNMAPPED, 0xFFF)
    r.machine.apic.send(2, "nmi", src="test")
    r.run()
    assert r.machine.shutdown is not None and "CPU 2" in r.machine.shutdown
    assert r.outcome == "triple_fault"
    kinds = [(e.kind, e.data.get("during")) for e in r.events if e.kind in ("fault", "triple_fault") and e.cpu == 2]
    assert kinds == [("fault", "NMI"), ("fault", "#DF"), ("triple_fault", None)]
    assert r.finished
    assert all(c.state == RunState.OFF for c in r.machine.cpus)
    assert r.step() == [] and r.machine.step() == []  # a reset machine runs nothing


def nmi_with_unmapped_ist() -> Resume:
    """The NMI's IST stack unmapped: the push faults, #DF is delivered on its own (mapped) IST
    stack, do_double_fault oopses and panics."""
    r = Resume(preset="workshop", fix="hlt", seed=1)
    r.run(until="copy")
    cpu = r.machine.cpus[2]
    ist = list(cpu.ist)
    ist[2] = UNMAPPED  # IST_NMI
    cpu.ist = tuple(ist)
    r.machine.apic.send(2, "nmi", src="test")
    r.run()
    return r


def test_fault_while_delivering_nmi_is_a_double_fault_panic() -> None:
    r = nmi_with_unmapped_ist()
    assert r.machine.shutdown is None
    assert r.outcome == "panic"
    assert [o.kind for o in r.oopses] == ["double fault"]
    assert r.oopses[0].cpu == 2
    assert any(e.kind == "panic" for e in r.events)
    assert r.finished
    # panic stopped every CPU (smp_send_stop): nobody runs, nobody is scheduled
    assert all(c.state in (RunState.HLT, RunState.OFF) and not c.if_flag for c in r.machine.cpus)
    assert r.machine.idle()
    assert not r.runtime.done


def test_triple_fault_outranks_an_oops() -> None:
    """Reset is the final state even after an oops was printed."""
    r = nmi_with_unmapped_ist()
    assert r.outcome == "panic"
    r.machine.triple_fault(0, "test")
    assert r.outcome == "triple_fault"


def test_workshop_mwait_fails_at_seed_0() -> None:
    """The workshop preset's own claim (debug_pagealloc: every frame of the direct map has a PT
    entry of its own, so the copy breaks the walk quickly)."""
    r = Resume(preset="workshop", fix="mwait", seed=0)
    r.run()
    assert r.outcome in ("panic", "triple_fault")
    assert r.faults() and r.faults()[0]["vector"] == "#PF"
    assert r.faults()[0]["address"] == f"{r.mwait_ptr(r.faults()[0]['cpu']):#x}"
