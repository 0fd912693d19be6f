"""Time travel and breakpoints for the stepper.

Going back is **replay** from **checkpoints**: a run is deterministic (one seeded generator,
lab.trace), so the run at step N is a run of the same configuration stepped to N.  A run cannot
be copied (deepcopy and pickle fail: the CPUs' programs are generators), so the checkpoints
are whole runs kept at a step: ``Replay`` keeps SPARES runs one step apart behind the live run
(N-1, N-2, N-3), built and stepped along while the kernel is idle, so consecutive step backs
each cost a step of the model plus the views' redraw, not a build (0.3-0.6 s on report-2016)
and a replay; "go to step N" before every spare costs a fresh run stepped to N (about 0.3 ms a
step, plus the build).  The memory cost is SPARES runs (benchmarks: the step-back row).

``state_digest(resume)`` is a SHA-256 over what the state is (clock, steps, CPUs, memory,
events, watched frames): equal digests after "step back" and after stepping forward to the
same step are the test that the replay is exact.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from lab.trace import digest as events_digest

from ._common import parse_va

if TYPE_CHECKING:  # pragma: no cover
    from lab.hw.sched import Event
    from lab.scenario import Resume


def state_digest(r: "Resume") -> str:
    """SHA-256 of a run's state: clock, steps, phase, copy progress, every CPU's registers and
    run state, every frame's content (materialized frames by bytes, the others by tag and
    range) and the event stream."""
    h = hashlib.sha256()
    m = r.machine
    h.update(repr((r.steps, r.now, r.phase, r.runtime.copied, m.shutdown, sorted(m.watched_frames))).encode())
    for c in m.cpus:
        h.update(repr((c.id, str(c.state), c.cstate.name if c.cstate else None, c.rip, c.cr3, c.zf,
                       sorted(c.regs.items()), sorted(c.tlb.entries.items()), c.wakeups,
                       tuple(c.pending_irqs), tuple(c.pending_exc))).encode())
    mem = m.memory
    for pfn in sorted(mem.overridden()):
        h.update(pfn.to_bytes(8, "little"))
        h.update(mem.read_page(pfn).tobytes())
    h.update(repr(mem.ranges()).encode())
    h.update(events_digest(m.events).encode())
    return h.hexdigest()


#: the most an action spends stepping the spare runs along (a Step costs one step of each)
FOLLOW_BUDGET_S = 0.25
#: spare runs kept, one step apart behind the live run (the "checkpoints" of a replay: a run
#: cannot be copied, its CPUs' programs are generators, so a checkpoint is a run kept at a step)
SPARES = 3


class Replay:
    """Builds runs with ``factory`` and brings one to step N by stepping a fresh run.

    Up to ``spares`` runs are kept behind the live run at N, stepped along to N-1, N-2, N-3
    (``follow``), so consecutive step backs each take a spare that is already there: a step or
    two and the views' redraw, not a build (0.3 to 0.6 s on report-2016) plus the replay.  A
    used spare is rebuilt when the kernel is idle: one build per callback on the running asyncio
    loop, after the action's reply (so a click in between is served first), and the spares
    are stepped along in the same idle time; outside a kernel ``wait`` builds them, or the next
    ``take`` makes a fresh run.  "Go to step N" takes the spare nearest below N (a fresh run
    when there is none).  Memory: a report-2016 run is about 14 MB (``benchmarks``: the step-back
    row reports it), so the spares cost ``spares`` times that.  Everything runs in one thread:
    stepping two runs in two threads at once made one of them diverge (some state of the model
    is shared)."""

    def __init__(self, factory: Callable[[], "Resume"], background: bool = True, spares: int = SPARES) -> None:
        self.factory = factory
        self.background = background
        self.spares = spares
        self._spares: list["Resume"] = []
        self._pending = False
        self._target = 0  # the live run's step the spares follow

    def _loop(self):  # noqa: ANN202
        if not self.background:
            return None
        try:
            return asyncio.get_running_loop()
        except RuntimeError:  # no loop: built at the next action, or by wait()
            return None

    def prepare(self) -> None:
        """Have the missing spare runs built: now, or (``background`` in a kernel) one at a
        time once idle."""
        if self._pending or len(self._spares) >= self.spares:
            return
        self._pending = True
        loop = self._loop()
        if loop is not None:
            loop.call_soon(self._idle_build)
        elif not self.background:
            self.wait()

    def _idle_build(self) -> None:
        """One spare built (and all stepped along) in idle time; the next one in a later
        callback."""
        if not self._pending:
            return
        self._pending = False
        if len(self._spares) < self.spares:
            self._spares.append(self.factory())
        self._step_along(self._target, FOLLOW_BUDGET_S)
        if len(self._spares) < self.spares:
            self._pending = True
            loop = self._loop()
            if loop is not None:  # later, not at once: a click that came in meanwhile goes first
                loop.call_later(0.05, self._idle_build)

    def wait(self) -> None:
        """Build now the spare runs still to be built."""
        self._pending = False
        while len(self._spares) < self.spares:
            self._spares.append(self.factory())

    def follow(self, steps: int, budget_s: float = FOLLOW_BUDGET_S) -> None:
        """The live run is at step ``steps``: step the spares towards ``steps - 1``,
        ``steps - 2``, ... for at most ``budget_s`` seconds (in a kernel: in idle time, after
        the reply)."""
        self._target = steps
        loop = self._loop()
        if loop is not None:
            loop.call_soon(self._step_along, steps, budget_s)
        else:
            self._step_along(steps, budget_s)

    def _step_along(self, steps: int, budget_s: float) -> None:
        if steps != self._target:
            return  # an older request: a later action asked for another position
        deadline = time.perf_counter() + budget_s
        self._spares.sort(key=lambda r: r.steps, reverse=True)
        for i, r in enumerate(self._spares):
            want = steps - 1 - i
            while r.steps < want and not r.finished:
                r.step()
                if r.steps % 16 == 0 and time.perf_counter() > deadline:
                    return

    def take(self, n: int = 0) -> "Resume":
        """A run at step ``n`` or before: the spare nearest below ``n``, else a fresh one."""
        fit = [r for r in self._spares if r.steps <= n]
        if not fit:
            return self.factory()
        r = max(fit, key=lambda r: r.steps)
        self._spares.remove(r)
        return r

    def at_step(self, n: int) -> "Resume":
        """A run stepped to step ``n`` (or to its end, if it ends before); the spares are
        topped up."""
        r = self.take(n)
        while r.steps < n and not r.finished:
            r.step()
        self._target = n
        self.prepare()
        return r


BREAK_KINDS = ("frame written", "address walked", "CPU changes state")


@dataclass
class Breakpoint:
    """Stop when frame ``value`` is written (any store, a page copy too), when a walk goes
    through page ``value`` (a virtual address; walks are the ``walk`` events of TLB misses) or
    when CPU ``value`` changes its run state (``state`` and ``wake`` events)."""

    kind: str
    value: int
    hits: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, kind: str, text: str | int, resume: "Resume") -> "Breakpoint":
        if kind not in BREAK_KINDS:
            raise ValueError(f"unknown breakpoint kind {kind!r}; allowed: {', '.join(BREAK_KINDS)}")
        if kind == "address walked":
            return cls(kind, parse_va(text))
        s = str(text).strip().lower().replace("_", "")
        try:
            value = int(s, 0) if isinstance(text, str) else int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number (e.g. 0x2453fe or 1)") from None
        if kind == "frame written":
            resume.frame(value)  # raises: no such frame
        else:
            resume.cpu(value)
        return cls(kind, value)

    def label(self) -> str:
        what = {"frame written": f"frame {self.value:#x} written", "address walked": f"walk of {self.value:#x}",
                "CPU changes state": f"cpu{self.value} changes state"}
        return what[self.kind]

    def attach(self, resume: "Resume") -> None:
        """Frame breakpoints observe the stores themselves (an 8-byte store makes no event)."""
        if self.kind == "frame written":
            resume.machine.memory.observers.append(self._on_store)
            self._now = lambda: resume.now

    def detach(self, resume: "Resume") -> None:
        obs = resume.machine.memory.observers
        if self._on_store in obs:
            obs.remove(self._on_store)

    def _on_store(self, paddr: int, nbytes: int, agent: str, kind: str) -> None:
        if kind == "store" and paddr >> 12 <= self.value <= (paddr + nbytes - 1) >> 12:
            self.hits.append(f"frame {self.value:#x} written by {agent} at t={self._now() / 1e6:.6f} ms")

    def matches(self, e: "Event") -> bool:
        if self.kind == "address walked":
            return e.kind == "walk" and e.data.get("va", -1) >> 12 == self.value >> 12
        if self.kind == "CPU changes state":
            return e.kind in ("state", "wake") and e.cpu == self.value
        return False

    def take_hit(self, events: list["Event"]) -> str | None:
        """What made it stop in ``events`` (a step's events), or None."""
        if self.hits:
            text = self.hits[0]
            self.hits.clear()
            return text
        for e in events:
            if self.matches(e):
                return f"{self.label()} (t={e.t / 1e6:.6f} ms)"
        return None
