"""widgets.history: the spare runs kept behind the live run are the checkpoints of Step back;
consecutive step backs take them (no new run is built) and land on the same state as
stepping forward to the same step."""
from __future__ import annotations

import asyncio
import threading

import widgets
from lab.scenario import Resume
from widgets.history import SPARES, Replay, state_digest


def forward_digest(n: int) -> str:
    r = Resume(preset="report-2016", fix="mwait", seed=0)
    r.watch()
    while r.steps < n:
        r.step()
    return state_digest(r)


def test_consecutive_step_backs_take_the_spares_and_match_stepping_forward() -> None:
    lab = widgets.ResumeLab(preset="report-2016", fix="mwait", seed=0)
    s = lab.stepper
    s.replay.background = False  # the idle work at once, whatever event loop the test runner has
    s.step_to("sleeping CPU's table overwritten")
    n = lab.resume.steps
    s.replay.wait()
    s.replay.follow(n)
    assert sorted(r.steps for r in s.replay._spares) == [n - SPARES + i for i in range(SPARES)]
    s.replay.background = True  # from here: no idle time between the clicks (no refill)
    kept = list(s.replay._spares)  # held here: a freed spare's id could be reused by a new run
    for i in range(1, SPARES + 1):
        s.back_button.click()
        assert lab.resume.steps == n - i
        assert any(lab.resume is r for r in kept), "a step back built a new run although a spare was there"
    assert state_digest(lab.resume) == forward_digest(n - SPARES)
    s.back_button.click()  # the spares are used up: a fresh run, replayed
    assert not any(lab.resume is r for r in kept) and lab.resume.steps == n - SPARES - 1
    assert state_digest(lab.resume) == forward_digest(n - SPARES - 1)
    assert lab.check() == []


def test_in_a_kernel_the_spares_are_built_and_stepped_along_in_idle_time() -> None:
    async def main() -> tuple[list[int], int]:
        r = Resume(preset="report-2016", fix="mwait", seed=0)
        replay = Replay(lambda: Resume(preset="report-2016", fix="mwait", seed=0))
        replay.prepare()
        assert replay._spares == []  # nothing built during the action itself
        for _ in range(20):
            r.step()
        replay.follow(r.steps)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(replay._spares) == SPARES and min(x.steps for x in replay._spares) == r.steps - SPARES:
                break
        return sorted(x.steps for x in replay._spares), r.steps

    out: list = []  # in a thread of its own: the test runner's thread may have a loop running already
    t = threading.Thread(target=lambda: out.append(asyncio.run(main())))
    t.start()
    t.join(60)
    steps, n = out[0]
    assert steps == [n - SPARES + i for i in range(SPARES)]
