"""Time travel and breakpoints for the stepper.

Going back is **replay**: a run is deterministic (one seeded generator, lab.trace), so the run
at step N is a fresh run of the same configuration stepped N times.  A spare run is built when
the kernel is idle (0.6 s on report-2016) and stepped along one step behind the live run after
every action (at most FOLLOW_BUDGET_S an action: a Step pays one more model step), so a step
back costs a step of the model plus the views' redraw; "go to step N" before the spare costs a
fresh run stepped to N (about 0.3 ms a step: 0.4 s for the whole report-2016 run, plus the
0.6 s build).  Checkpoints were measured and rejected: a deep copy of a Resume takes 1.3 s,
longer than the replay it would save.

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


#: the most an action spends stepping the spare run along (a Step costs one step of it)
FOLLOW_BUDGET_S = 0.25


class Replay:
    """Builds runs with ``factory`` and brings one to step N by stepping a fresh run.

    A spare run is kept and stepped along behind the live run (``follow``, after every
    action), so a step back costs a step or two and "go to step N" only the steps from the
    spare's step to N (a fresh run when N is before it).  A used spare is rebuilt when the
    kernel is idle (a callback on the running asyncio loop, after the action's reply), or, outside
    a kernel, by ``wait`` or the next ``take``.  Everything runs in one thread: stepping two runs in two
    threads at once made one of them diverge (some state of the model is shared)."""

    def __init__(self, factory: Callable[[], "Resume"], background: bool = True) -> None:
        self.factory = factory
        self.background = background
        self._spare: "Resume | None" = None
        self._pending = False

    def prepare(self) -> None:
        """Have a spare run built: now, or (``background`` in a kernel) once idle."""
        if self._spare is not None or self._pending:
            return
        self._pending = True
        if self.background:
            try:
                asyncio.get_running_loop().call_soon(self.wait)
            except RuntimeError:  # no loop: built at the next action
                pass
            return
        self.wait()

    def wait(self) -> None:
        """Build the spare run now if it is still to be built."""
        if self._pending:
            self._pending = False
            self._spare = self.factory()

    def follow(self, steps: int, budget_s: float = FOLLOW_BUDGET_S) -> None:
        """The live run is at step ``steps``: step the spare towards ``steps - 1`` for at most
        ``budget_s`` seconds (a lagging spare catches up over a few actions).  A spare still
        to be built is left to the idle callback, ``wait`` or the next ``take``."""
        r = self._spare
        deadline = time.perf_counter() + budget_s
        while r is not None and r.steps < steps - 1 and not r.finished:
            r.step()
            if r.steps % 16 == 0 and time.perf_counter() > deadline:
                break

    def take(self, n: int = 0) -> "Resume":
        """A run at step ``n`` or before: the spare if it is not past ``n``, else a fresh one."""
        self.wait()
        r = self._spare if self._spare is not None and self._spare.steps <= n else self.factory()
        self._spare = None
        return r

    def at_step(self, n: int) -> "Resume":
        """A run stepped to step ``n`` (or to its end, if it ends before); a new spare is
        prepared."""
        r = self.take(n)
        while r.steps < n and not r.finished:
            r.step()
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
