"""The fixes of the thread and its sequels, each failing or surviving by its mechanics (issue 8):
the clflush ping-pong of a shared zero-page line, lines shared past 64 CPUs, the trampoline's
way back and its IDT, the 2023 dedicated line and its kick, INIT on a mailbox platform, and the
stray NMI/SMI/MCE during the copy.
"""
from __future__ import annotations

import pytest

from lab.hw.cpu import RunState
from lab.kernel.programs import CPUDEAD_MWAIT_KEXEC_HLT, MD_STATUS, MWAIT_CPU_DEAD
from lab.scenario import Config, Resume


def run(**kw) -> Resume:
    r = Resume(preset=kw.pop("preset", "workshop"), **kw)
    r.run()
    return r


def clflush_wakes(r: Resume) -> int:
    return sum(1 for e in r.events if e.kind == "wake" and e.data["reason"].startswith("clflush"))


def test_a_shared_zero_page_line_ping_pongs() -> None:
    """'CPU2 clflush zero page, wake CPU1 up ... then the nonboot CPUs never sleep for long'."""
    shared, own = run(fix="zero-page-shared"), run(fix="zero-page")
    assert shared.outcome == own.outcome == "resumed"
    assert clflush_wakes(own) == 0 and clflush_wakes(shared) > 50 * (shared.config.cpus - 1)
    assert shared.runtime.sharing_cpus == shared.config.cpus - 1
    # with the remote-clflush trigger off the ping-pong is gone: it is that mechanism
    quiet = run(fix="zero-page-shared", clflush_triggers=False)
    assert clflush_wakes(quiet) == 0


def test_more_cpus_than_zero_page_lines_share_lines() -> None:
    """PAGE_SIZE / L1_CACHE_BYTES = 64 lines: CPU 64 + k shares line k with CPU k."""
    r = Resume(preset="workshop", fix="zero-page", cpus=72)
    r.run(until="copy")
    users = r.runtime.line_users
    assert all(len(u) <= 2 for u in users.values())
    assert {frozenset(u) for u in users.values() if len(u) == 2} == {frozenset({k, 64 + k}) for k in range(1, 8)}
    assert r.runtime.sharing_cpus == 14


def test_the_trampoline_releases_cpus_back_to_the_image_kernel() -> None:
    r = run(fix="trampoline")
    assert r.outcome == "resumed"
    back = next(i for i, e in enumerate(r.events) if e.kind == "phase" and e.data["phase"] == "image-kernel")
    after = [e for e in r.events[back:] if e.kind == "ipi" and e.data["ipi"] in ("init", "sipi")]
    assert after == []  # no INIT/SIPI: the release word did it
    released = [e for e in r.events if e.kind == "wake" and "store" in e.data["reason"] and e.cpu]
    assert {e.cpu for e in released} == set(range(1, r.config.cpus))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_stray_nmi_kills_the_trampoline_but_not_the_hardened_one(seed) -> None:
    bare = run(fix="trampoline", stray=("nmi",), seed=seed)
    assert bare.outcome == "triple_fault"
    # the NMI gate is read through the trampoline's tables, which do not map the kernel's IDT
    assert any(e.kind == "fault" and e.data.get("during") == "NMI" for e in bare.events)
    hard = run(fix="trampoline-idt", stray=("nmi",), seed=seed)
    assert hard.outcome == "resumed"
    assert any(e.kind == "exception" and e.data["vector"] == "NMI" for e in hard.events)


def test_dedicated_line_kick_sends_every_cpu_to_hlt_before_the_copy() -> None:
    r = Resume(preset="workshop", fix="dedicated-line")
    r.run(until="copy")
    mem, lay = r.machine.memory, r.restore_kernel.layout
    for cpu in range(1, r.config.cpus):
        status = mem.read_u64(lay.percpu[cpu] * 4096 + MWAIT_CPU_DEAD + MD_STATUS)
        assert status == CPUDEAD_MWAIT_KEXEC_HLT
        assert r.machine.cpus[cpu].state == RunState.HLT
    r.run()
    assert r.outcome == "resumed"


def test_dedicated_line_does_not_protect_against_a_stray_nmi() -> None:
    """d7893093a741's own comment: 'This does _NOT_ protect against a stray MCE, NMI, SMI'."""
    outcomes = {run(fix="dedicated-line", stray=("nmi",), seed=s).outcome for s in range(6)}
    assert outcomes - {"resumed"}


def test_init_is_not_available_with_mailbox_wakeup_and_cpus_come_up_through_the_mailbox() -> None:
    with pytest.raises(ValueError, match="fix 'init' is not available here: INIT parking needs INIT/SIPI"):
        Config.from_preset("workshop", fix="init", wakeup="mailbox")
    r = run(fix="hlt", wakeup="mailbox")
    assert r.outcome == "resumed"
    kinds = {e.data["ipi"] for e in r.events if e.kind == "ipi" and e.data.get("src") == "cpu0"}
    assert "mailbox" in kinds and not kinds & {"init", "sipi"}


def test_init_survives_a_stray_nmi() -> None:
    assert {run(fix="init", stray=("nmi",), seed=s).outcome for s in range(3)} == {"resumed"}


def test_stray_events_are_seeded_and_inside_the_copy() -> None:
    a, b = run(fix="hlt", stray=("nmi",), seed=4), run(fix="hlt", stray=("nmi",), seed=4)
    sa = [(e.t, e.cpu) for e in a.events if e.kind == "inject"]
    assert sa == [(e.t, e.cpu) for e in b.events if e.kind == "inject"] and len(sa) == 1
    start = next(e.t for e in a.events if e.kind == "phase" and e.data["phase"] == "copy")
    assert sa[0][0] >= start and sa[0][1] != 0


def test_a_broadcast_machine_check_takes_init_down() -> None:
    """45e34c8af58f: 'A broadcast MCE will take the machine down': after INIT, CR4.MCE is 0."""
    r = run(fix="init", stray=("mce",), seed=0)
    assert r.outcome == "shutdown" and r.machine.shutdown_cause == "machine check"
    assert "CR4.MCE=0" in r.machine.shutdown


def test_past_64_cpus_the_sharers_ping_pong_and_a_long_run_ends_unfinished() -> None:
    """130 CPUs on 64 zero-page lines: every parked CPU shares its line, the sharers' own
    CLFLUSHes wake each other during the copy, and the step budget stops the lab (not the
    machine) with the outcome "unfinished" (the `server` preset does the same at 192 CPUs)."""
    probe = Resume(preset="workshop", fix="zero-page", cpus=130)
    probe.run(until="copy")
    r = Resume(preset="workshop", fix="zero-page", cpus=130, step_budget=probe.steps + 5000)
    r.run()
    assert r.runtime.sharing_cpus == 129
    assert r.phase == "copy" and r.outcome == "unfinished" and r.stopped_by == "step budget"
    copy_t = next(e.t for e in r.events if e.kind == "phase" and e.data["phase"] == "copy")
    pinged = {e.cpu for e in r.events if e.kind == "wake" and e.t >= copy_t and e.data["reason"].startswith("clflush")}
    assert len(pinged) > 100
    costs = r.copy_costs()
    assert costs["wakeups"] >= len(pinged) and costs["wakeups_per_ms"] > 100
