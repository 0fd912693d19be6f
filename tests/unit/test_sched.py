"""Discrete-event time and jitter (lab/hw/sched.py): deterministic order, seeded jitter."""
from __future__ import annotations

import numpy as np
import pytest

from hwkit import Rig
from lab.hw import I
from lab.hw.sched import Event, Jitter, Scheduler


def drain(s: Scheduler) -> list[tuple[int, int]]:
    out = []
    while (nxt := s.pop()) is not None:
        out.append(nxt)
    return out


def test_events_come_out_in_time_order_and_advance_now():
    s = Scheduler()
    s.schedule(1, 30)
    s.schedule(2, 10)
    s.schedule(3, 20)
    assert s.next_time() == 10
    assert drain(s) == [(10, 2), (20, 3), (30, 1)]
    assert s.now == 30 and s.pop() is None and s.next_time() is None


def test_ties_go_to_the_actor_scheduled_first():
    for order in ([5, 1, 3, 0], [0, 1, 3, 5], [3, 5, 0, 1]):
        s = Scheduler()
        for actor in order:
            s.schedule(actor, 100)
        assert [a for _, a in drain(s)] == order


def test_rescheduling_replaces_the_earlier_entry():
    s = Scheduler()
    s.schedule(1, 10)
    s.schedule(2, 15)
    s.schedule(1, 20)
    assert drain(s) == [(15, 2), (20, 1)]


def test_cancel_and_is_scheduled():
    s = Scheduler()
    s.schedule(1, 10)
    assert s.is_scheduled(1)
    s.cancel(1)
    assert not s.is_scheduled(1) and s.next_time() is None and s.pop() is None
    s.cancel(7)  # harmless


def test_cannot_schedule_in_the_past():
    s = Scheduler()
    s.schedule(1, 50)
    s.pop()
    with pytest.raises(ValueError, match=r"cannot schedule actor 2 in the past \(49 < 50\)"):
        s.schedule(2, 49)
    s.schedule(2, 50)  # now is fine


def test_jitter_from_the_same_seed_gives_the_same_sequence():
    a = Jitter(np.random.default_rng(42), 0.2)
    b = Jitter(np.random.default_rng(42), 0.2)
    seq_a = [a.scale(100_000) for _ in range(3000)]  # crosses block boundaries
    seq_b = [b.scale(100_000) for _ in range(3000)]
    assert seq_a == seq_b
    c = Jitter(np.random.default_rng(43), 0.2)
    assert [c.scale(100_000) for _ in range(3000)] != seq_a


def test_jitter_stays_within_its_spread():
    j = Jitter(np.random.default_rng(0), 0.1)
    values = [j.scale(10_000) for _ in range(2000)]
    assert min(values) >= 9_000 and max(values) <= 11_000
    assert len(set(values)) > 100  # it does vary
    assert abs(np.mean(values) - 10_000) < 100


def test_jitter_zero_spread_and_zero_time_draw_nothing():
    rng = np.random.default_rng(0)
    j = Jitter(rng, 0.0)
    assert [j.scale(n) for n in (0, 1, 12345)] == [0, 1, 12345]
    k = Jitter(np.random.default_rng(0), 0.5)
    assert k.scale(0) == 0 and k._i == 0  # no draw for a zero time
    assert k.scale(1) >= 1  # never rounds down to zero


@pytest.mark.parametrize("spread", [-0.1, 1.0, 2])
def test_jitter_spread_must_be_in_0_1(spread):
    with pytest.raises(ValueError, match=rf"jitter spread must be in \[0, 1\), got {spread}"):
        Jitter(np.random.default_rng(0), spread)


def test_event_to_json():
    ev = Event(5, "wake", 2, {"reason": "NMI"})
    assert ev.to_json() == {"t": 5, "kind": "wake", "cpu": 2, "reason": "NMI"}


def trace(seed: int) -> list[tuple]:
    """Two CPUs parked in MWAIT on one line, woken together: the order and times of what
    follows depend only on the seed."""
    rig = Rig(seed=seed, jitter=0.3)
    for cpu in (0, 1):
        prog = rig.code(f"p{cpu}", [I("mov", "rax", rig.data_va(0x40)), I("monitor"),
                                    I("mov", "rax", 0x20), I("mov", "rcx", 0), I("mwait"),
                                    I("mov", "rbx", 1), I("hlt")])
        rig.start(cpu, prog.base)
    rig.run()
    rig.memory.write_u64(rig.data_pa(0x40), 0, "loader")
    rig.run()
    return [(e.t, e.kind, e.cpu, tuple(sorted((k, str(v)) for k, v in e.data.items())))
            for e in rig.machine.events]


def test_a_machine_run_is_deterministic_per_seed():
    assert trace(3) == trace(3)
    assert trace(3) != trace(4)  # jitter moves the wake-up times


def test_advance_moves_the_clock_up_to_the_next_event_only():
    s = Scheduler()
    s.schedule(1, 100)
    s.advance(60)
    assert s.now == 60
    s.advance(100)  # up to the next event is allowed
    with pytest.raises(ValueError, match="cannot advance the clock to 101: now 100, next event 100"):
        s.advance(101)
    with pytest.raises(ValueError, match="cannot advance the clock to 99"):
        s.advance(99)


def test_machine_timer_runs_its_action_at_its_time_between_cpu_steps():
    rig = Rig()
    prog = rig.code("spin", ["top:", I("add", "rbx", 1), I("jmp", "top")])
    rig.start(0, prog.base)
    seen = []
    rig.machine.at(10, lambda: seen.append((rig.machine.sched.now, rig.machine.cpus[0].regs["rbx"])))
    for _ in range(30):
        rig.machine.step()
    assert seen == [(10, 5)]  # ran once, at t=10, after the instructions due before it


def test_machine_timers_registered_after_one_fired_do_not_replace_pending_ones():
    rig = Rig()
    prog = rig.code("spin", ["top:", I("add", "rbx", 1), I("jmp", "top")])
    rig.start(0, prog.base)
    fired = []
    m = rig.machine
    m.at(5, lambda: fired.append("a"))
    m.at(50, lambda: fired.append("b"))
    for _ in range(20):
        m.step()
    assert fired == ["a"]
    m.at(30, lambda: fired.append("c"))  # registered while "b" is still pending
    for _ in range(100):
        m.step()
    assert fired == ["a", "c", "b"]
