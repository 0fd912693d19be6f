"""The outcome is the verdict taken once, when the resume ends (``Resume._decide`` after every
step): "resumed" when the image kernel has run ``resume_done`` with every CPU online and every
image frame holds the image's bytes, "corrupted" if some frame does not; "panic" (an oops) or
"triple_fault" (the machine reset) as soon as one happens; "timeout" when the machine has nothing
left to run without any of those (a hang); "unfinished" when the lab's step budget ends the run
first (no verdict on the fix).  Each invariant is broken on purpose here, while the
resume is still going on, and the outcome must follow; what happens after the verdict cannot
change it.
"""
from __future__ import annotations

import pytest

from lab.hw.cpu import RunState
from lab.kernel.hibernate import verify
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


@pytest.fixture
def running() -> Resume:
    """Copy finished, the image kernel running, its CPUs not yet back: the verdict is pending,
    so a change made now is judged when the resume ends."""
    r = Resume(preset="workshop", fix="hlt", seed=1)
    r.run(until="image-kernel")
    assert r.runtime.copied == len(r.loaded.pblist), "precondition: the copy is done"
    assert r.outcome is None and r.resume_ended_ns is None, "precondition: the resume goes on"
    return r


def finish(r: Resume) -> Resume:
    """Run to the end: the resume itself ended (every CPU back in the image kernel)."""
    r.run()
    assert r.runtime.done and r.image_kernel.online == set(range(r.config.cpus))
    assert [e.data["outcome"] for e in r.events if e.kind == "verdict"] == [r.outcome]
    return r


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
    assert set(OUTCOMES) == {"resumed", "panic", "triple_fault", "shutdown", "corrupted", "timeout", "unfinished"}


def test_the_image_kernels_own_stores_after_taking_over_are_not_corruption(running: Resume) -> None:
    """Once the image kernel runs, CPU 0 (and each AP it brought online) writes memory as any
    kernel does; a CPU the image kernel has not brought up yet is still in the restore kernel's
    code, and what it writes to an image frame is corruption."""
    mine, stale = a_single_frame(running), a_piece_frame(running)
    assert 0 in running.image_kernel.online and 2 not in running.image_kernel.online
    mem = running.machine.memory
    mem.write_u64(mine * PAGE_SIZE + 0x40, mem.read_u64(mine * PAGE_SIZE + 0x40) ^ 1, "cpu0")
    mem.write_u64(stale * PAGE_SIZE + 0x40, mem.read_u64(stale * PAGE_SIZE + 0x40) ^ 1, "cpu2")
    finish(running)
    assert running.outcome == "corrupted" and running.mismatched_frames() == [stale]


def test_an_nmi_after_the_cpu_is_back_in_the_image_kernel_is_harmless() -> None:
    """The image kernel's NMI handler pushes its frame on the image kernel's stack: normal work."""
    probe = Resume(preset="workshop", fix="trampoline-idt")
    probe.run(until="cpu_online")
    while 1 not in probe.image_kernel.online:
        probe.run(until="cpu_online")
    r = Resume(preset="workshop", fix="trampoline-idt", inject=(("nmi", 1, probe.now + 1000),))
    r.run()
    assert any(e.kind == "exception" and e.cpu == 1 and e.data["vector"] == "NMI" for e in r.events)
    assert r.outcome == "resumed"


@pytest.mark.parametrize("which", [a_piece_frame, a_single_frame], ids=["tagged-run frame", "single frame"])
def test_a_changed_image_frame_is_corrupted(running: Resume, which) -> None:
    pfn = which(running)
    addr = pfn * PAGE_SIZE + 0x128
    old = running.machine.memory.read_u64(addr)
    running.machine.memory.write_u64(addr, old ^ 0x5A5A, "test")
    finish(running)
    assert running.outcome == "corrupted"
    assert running.mismatched_frames() == [pfn]
    assert running.summary()["mismatched_frames"] == 1


def test_a_store_of_the_same_bytes_is_not_corruption(running: Resume) -> None:
    pfn = a_piece_frame(running)
    addr = pfn * PAGE_SIZE + 0x128
    running.machine.memory.write_u64(addr, running.machine.memory.read_u64(addr), "test")
    finish(running)
    assert running.outcome == "resumed"
    assert running.mismatched_frames() == []


def test_a_frame_outside_the_image_may_change(running: Resume) -> None:
    """Free frames of the image kernel are not saved: what they hold after the resume is
    nobody's business (the restore kernel's leftovers are there)."""
    pfn = frames_not_in_image(running)
    running.machine.memory.write_u64(pfn * PAGE_SIZE, 0xDEAD, "test")
    finish(running)
    assert running.machine.memory.read_u64(pfn * PAGE_SIZE) == 0xDEAD  # the change is still there
    assert running.outcome == "resumed"


def test_a_change_after_the_verdict_does_not_change_it(done: Resume) -> None:
    """The verdict is taken when the resume ends; memory changed later is still simulated (a
    fresh verify() sees it) but the outcome stays what it was."""
    ended = done.resume_ended_ns
    assert ended is not None and ended <= done.now
    pfn = a_piece_frame(done)
    addr = pfn * PAGE_SIZE + 0x128
    done.machine.memory.write_u64(addr, done.machine.memory.read_u64(addr) ^ 0x5A5A, "test")
    assert verify(done.machine.memory, done.image) == [pfn]
    assert done.outcome == "resumed"
    assert done.mismatched_frames() == []
    assert done.resume_ended_ns == ended
    assert sum(1 for e in done.events if e.kind == "verdict") == 1


def test_an_unrestored_pbe_is_corrupted() -> None:
    """Undo one copy: right after the copy loop restored one pbe's frame, put back what the
    restore kernel had there (as if the copy had skipped it).  A frame on
    ``machine.watched_frames`` is copied in a step of its own, so the run can stop right
    after it."""
    r = Resume(preset="workshop", fix="hlt", seed=1)
    mem, pbl = r.machine.memory, r.loaded.pblist
    # a pbe in the middle of the list whose frame holds other bytes in the restore kernel
    k = next(k for k in range(len(pbl) // 2, len(pbl))
             if not mem.same_content(int(pbl.orig[k]), r.image.content(int(pbl.orig[k]))))
    pfn = int(pbl.orig[k])
    before = mem.content(pfn)
    r.machine.watched_frames.add(pfn)
    r.run(until="page_copied")
    ev = [e for e in r.events if e.kind == "page_copied"]
    assert [(e.data["pfn"], e.data["index"]) for e in ev] == [(pfn, k)]
    assert r.runtime.copied == k + 1  # the pbes before it went in bulk, none after it yet
    assert mem.same_content(pfn, r.image.content(pfn)), "the copy restored the frame"
    mem.write_page(pfn, before, "test")
    finish(r)
    assert r.outcome == "corrupted"
    assert r.mismatched_frames() == [pfn]


# -- timeout (a hang) and unfinished (the budget) ---------------------------------------------------------------------------------

def test_outcome_is_none_while_running() -> None:
    r = Resume(preset="workshop", fix="hlt", seed=1)
    assert r.outcome is None
    r.run(until="copy")
    assert not r.finished
    assert r.outcome is None


def test_a_tiny_step_budget_leaves_the_run_unfinished() -> None:
    """A budget that runs out during the copy (the copy runs in bulk, so a whole resume takes
    only a few dozen steps: the budget is taken from a run of the same seed)."""
    probe = Resume(preset="workshop", fix="hlt", seed=1)
    probe.run(until="copy")
    budget = probe.steps + 1
    r = Resume(preset="workshop", fix="hlt", seed=1, step_budget=budget)
    r.run()
    assert r.steps == budget and r.finished
    assert r.phase == "copy" and r.runtime.copied < len(r.loaded.pblist)
    assert not r.runtime.done
    assert r.outcome == "unfinished" and r.stopped_by == "step budget"
    assert r.resume_ended_ns == r.now
    assert r.summary()["mismatched_frames"] is None  # not checked unless the resume completed


def test_a_budget_ending_during_bring_up_leaves_it_unfinished() -> None:
    """The copy is done, the image kernel runs, but not every CPU is back yet."""
    full = resumed_run()
    r = Resume(preset="workshop", fix="hlt", seed=1)
    r.run(until="online")
    r2 = Resume(preset="workshop", fix="hlt", seed=1, step_budget=r.steps + 3)
    r2.run()
    assert r2.phase == "online"
    assert r2.image_kernel.online != set(range(r2.config.cpus))
    assert r2.outcome == "unfinished"
    assert full.steps > r2.steps


def test_a_cpu_missing_from_the_image_kernel_times_out() -> None:
    """CPU 2 powered off during the copy: the image kernel's INIT/SIPI are ignored, do_boot_cpu
    gives up on it, resume_done still runs, and with a CPU missing the resume never ends."""
    r = Resume(preset="workshop", fix="hlt", seed=1)
    r.run(until="copy")
    r.machine.cpus[2].state = RunState.OFF
    r.machine.sched.cancel(2)
    r.run()
    assert r.runtime.done and r.machine.idle()
    assert any(e.kind == "cpu_up_failed" and e.cpu == 2 for e in r.events)
    assert r.image_kernel.online == set(range(r.config.cpus)) - {2}
    assert r.steps < r.config.step_budget  # the run ended with nothing left to do
    assert r.outcome == "timeout" and r.stopped_by == "idle"
    assert r.summary()["mismatched_frames"] is None


def test_resume_not_done_when_the_budget_ends_is_unfinished() -> None:
    """Every CPU is back in the image kernel, but resume_done has not run when the budget ends:
    the resume is not over, so no verdict: unfinished."""
    probe = Resume(preset="workshop", fix="hlt", seed=1)
    everyone = set(range(probe.config.cpus))
    while probe.image_kernel.online != everyone:
        assert probe.step(), "the probe run ended before every CPU was online"
    assert not probe.runtime.done and probe.outcome is None
    r = Resume(preset="workshop", fix="hlt", seed=1, step_budget=probe.steps)
    r.run()
    assert r.image_kernel.online == everyone
    assert not r.runtime.done
    assert r.outcome == "unfinished"
    full = resumed_run()
    assert full.steps > r.steps


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
    r = nmi_on_an_unmapped_ist()
    r.run()
    return r


def nmi_on_an_unmapped_ist() -> Resume:
    """A workshop hlt run at the copy, CPU 2's NMI IST stack unmapped and an NMI sent to it."""
    r = Resume(preset="workshop", fix="hlt", seed=1)
    r.run(until="copy")
    cpu = r.machine.cpus[2]
    ist = list(cpu.ist)
    ist[2] = UNMAPPED  # IST_NMI
    cpu.ist = tuple(ist)
    r.machine.apic.send(2, "nmi", src="test")
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
    """An oops and a reset both there when the verdict is taken: the reset wins.  The machine
    is stepped directly (no verdict between its steps) up to the oops, then reset."""
    r = nmi_on_an_unmapped_ist()
    while not r.oopses:
        assert r.machine.step(), "the machine stopped before the oops"
    assert not any(e.kind == "verdict" for e in r.events)  # not judged yet
    r.machine.triple_fault(0, "test")
    assert r.outcome == "triple_fault"


def test_a_reset_after_the_panic_does_not_change_the_verdict() -> None:
    """The verdict is taken when the panic happens; a later reset is shown but changes nothing."""
    r = nmi_with_unmapped_ist()
    assert r.outcome == "panic"
    ended = r.resume_ended_ns
    r.machine.triple_fault(0, "test")
    assert r.machine.shutdown is not None
    assert r.outcome == "panic" and r.resume_ended_ns == ended
    assert [e.data["outcome"] for e in r.events if e.kind == "verdict"] == ["panic"]


def test_workshop_mwait_fails_at_seed_0() -> None:
    """The workshop preset's own claim (debug_pagealloc: every frame of the direct map has a PT
    entry of its own, so the copy breaks the walk quickly)."""
    r = Resume(preset="workshop", fix="mwait", seed=0)
    r.run()
    assert r.outcome in ("panic", "triple_fault")
    assert r.phase == "copy" and not r.runtime.done  # during the copy, the danger window
    assert r.faults() and r.faults()[0]["vector"] == "#PF"
    assert r.faults()[0]["address"] == f"{r.mwait_ptr(r.faults()[0]['cpu']):#x}"
