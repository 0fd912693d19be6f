"""Exhaustive exploration within bounds: every schedule of injected NMIs/SMIs/MCEs on a time
grid, the distinct ones run, the shortest failing one kept as a trace.

A *schedule* is the default run of a configuration (every choice as its seed makes it,
lab.choices) plus at most ``Bounds.max_choices`` deviations; a deviation here is one
injection from a ``Window`` (``nmi:1@0-60ms``: an NMI to CPU 1 at one time of the window's
grid, every ``Bounds.resolution_ns``).  ``explore`` enumerates them, prunes those that cannot
differ, runs the rest (the default schedule first, then by number of deviations, then
earliest) and reports the outcomes and, per failing outcome, the minimal counterexample:
fewest deviations, then earliest.

Pruning (docs/explorer.md says what it assumes):

* *after the verdict*: an injection later than the moment the default run's verdict was taken
  cannot change it (the verdict is taken once, lab.scenario.Resume.outcome): exact;
* *same state*: injections at grid times where the target CPU's state digest is the same
  (``state_digest``: the state of every CPU but the boot CPU's registers, the monitor, the
  phase, and the frames the target's next walks read -- RIP, stack, IDT, the NMI/#MC
  handlers, its IST stack -- with their content and whether the copy has overwritten them or
  will within the wake-up horizon -- and whether the copy ends within that horizon) are one
  class; its earliest time is run for all of them.

The explorer runs whole resumes through ``lab.scenario.Resume``; a counterexample is an
ordinary configuration (``Config.inject``), so ``python -m lab run``/``replay`` and
``widgets.ResumeLab.from_trace`` reproduce it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
import sys
import time
import types
from collections import Counter
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

from .hw.cpu import RunState
from .hw.paging import walk
from .scenario import INJECTABLE, Config, Resume

#: outcomes that are not failures; NO_VERDICT: runs the lab's step budget cut short (no verdict
#: on the fix, lab.scenario), never a counterexample, counted and reported
GOOD = ("resumed",)
NO_VERDICT = ("unfinished",)
UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
MAX_GRID = 1_000_000  # grid points of one window (a bound on the bound)
#: choices ``Bounds.vary`` can set to the ends of their domain (lab.choices), besides injections
VARIABLE = ("wake.exit",)


def parse_duration(text: str | int, what: str = "time") -> int:
    """'0.1ms' -> 100000, '60ms', '250us', '1500' (ns) -> ns; ValueError naming ``what``."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{what} must be >= 0 ns, got {text}")
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ns|us|µs|ms|s)?\s*", str(text))
    if not m:
        raise ValueError(f"{what} {text!r} is not a duration; allowed: a number with ns, us, ms or s, e.g. 0.1ms")
    ns = float(m.group(1)) * UNITS[m.group(2) or "ns"]
    if ns != int(ns):
        raise ValueError(f"{what} {text!r} is not a whole number of ns")
    return int(ns)


@dataclass(frozen=True)
class Window:
    """One injection slot: ``kind`` to CPU ``cpu`` at one time in [start, end) ns."""

    kind: str
    cpu: int
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.kind not in INJECTABLE:
            raise ValueError(f"window kind {self.kind!r}; allowed: {', '.join(INJECTABLE)}")
        if not isinstance(self.cpu, int) or isinstance(self.cpu, bool) or self.cpu < 0:
            raise ValueError(f"window cpu must be a CPU number >= 0, got {self.cpu!r}")
        if not (isinstance(self.start, int) and isinstance(self.end, int)) or not 0 <= self.start < self.end:
            raise ValueError(f"window times must be 0 <= start < end ns, got {self.start!r} to {self.end!r}")

    @classmethod
    def parse(cls, text: str) -> "Window":
        """'nmi:1@0-60ms' (the unit applies to both ends unless each has its own); ``explore``
        also takes 'nmi:1@copy' (the default run's copy)."""
        m = re.fullmatch(r"\s*([a-zA-Z]+):([0-9]+)@([0-9.]+)\s*(ns|us|µs|ms|s)?\s*-\s*([0-9.]+)\s*(ns|us|µs|ms|s)?\s*", text)
        if not m:
            raise ValueError(f"malformed window {text!r}; allowed: KIND:CPU@START-END with KIND one of "
                             f"{', '.join(INJECTABLE)} and times with a unit, e.g. nmi:1@0-60ms")
        kind, cpu, a, ua, b, ub = m.groups()
        ua = ua or ub or "ns"
        ub = ub or ua
        return cls(kind.lower(), int(cpu), parse_duration(a + ua, "window start"), parse_duration(b + ub, "window end"))

    def grid(self, resolution: int) -> range:
        return range(self.start, self.end, resolution)

    def __str__(self) -> str:
        return f"{self.kind}:{self.cpu}@{self.start / 1e6:g}-{self.end / 1e6:g}ms"


@dataclass(frozen=True)
class Bounds:
    """What ``explore`` covers: the injection ``windows`` (one injection each at most), their
    grid ``resolution_ns``, at most ``max_choices`` deviations from the default schedule, and
    the budgets (seconds of wall time, number of schedules run) after which it stops and says
    how far it got.  ``prune=False`` runs every grid time (to check the pruning).  ``vary``:
    choices (``VARIABLE``: ``wake.exit``) that one more deviation may set to an end of their
    domain (``lo``, ``hi``): the first ``vary_first`` occurrences from the injection on (from
    the start in the default schedule), on each distinct schedule."""

    windows: tuple[Window, ...]
    resolution_ns: int = 100_000
    max_choices: int = 1
    budget_s: float | None = None
    budget_schedules: int | None = None
    prune: bool = True
    vary: tuple[str, ...] = ()
    vary_first: int = 2

    def __post_init__(self) -> None:
        ws = (self.windows,) if isinstance(self.windows, (str, Window)) else tuple(self.windows)
        object.__setattr__(self, "windows", tuple(Window.parse(w) if isinstance(w, str) else w for w in ws))
        if not self.windows:
            raise ValueError("bounds: at least one window, e.g. nmi:1@0-60ms")
        object.__setattr__(self, "resolution_ns", parse_duration(self.resolution_ns, "resolution"))
        if self.resolution_ns < 1:
            raise ValueError("resolution must be at least 1 ns")
        for w in self.windows:
            if len(w.grid(self.resolution_ns)) > MAX_GRID:
                raise ValueError(f"window {w} has {len(w.grid(self.resolution_ns))} grid times at resolution "
                                 f"{self.resolution_ns} ns; allowed: at most {MAX_GRID} (use a coarser resolution)")
        vary = (self.vary,) if isinstance(self.vary, str) else tuple(self.vary)
        object.__setattr__(self, "vary", vary)
        for name in vary:
            if name not in VARIABLE:
                raise ValueError(f"vary: {name!r} cannot be varied; allowed: {', '.join(VARIABLE)}")
        if not isinstance(self.vary_first, int) or isinstance(self.vary_first, bool) or not 1 <= self.vary_first <= 64:
            raise ValueError(f"vary_first must be 1 to 64 occurrences, got {self.vary_first!r}")
        most = len(self.windows) + (1 if vary else 0)
        if not isinstance(self.max_choices, int) or isinstance(self.max_choices, bool) or not 0 <= self.max_choices <= most:
            raise ValueError(f"max_choices must be 0 to the number of windows{' + 1 (vary)' if vary else ''} ({most}), "
                             f"got {self.max_choices!r}")
        if self.budget_s is not None and not (isinstance(self.budget_s, (int, float)) and self.budget_s > 0):
            raise ValueError(f"budget_s must be a number of seconds > 0 or None, got {self.budget_s!r}")
        if self.budget_schedules is not None and (not isinstance(self.budget_schedules, int) or self.budget_schedules < 1):
            raise ValueError(f"budget_schedules must be a whole number >= 1 or None, got {self.budget_schedules!r}")


Injection = tuple[str, int, int]


@dataclass
class Counterexample:
    """The minimal schedule giving ``outcome``: its ``injections`` (the deviations), the
    configuration, the reproducing command and the trace (lab.trace format)."""

    outcome: str
    injections: tuple[Injection, ...]
    config: Config
    command: str
    trace: dict[str, Any]
    class_size: int = 1  # grid schedules its state class stands for
    schedule: tuple[tuple[str, int, Any], ...] = ()  # choices set (Bounds.vary), as Config.schedule

    @property
    def choices(self) -> int:
        return len(self.injections) + len(self.schedule)

    def save(self, path: str) -> None:
        """Write the trace (atomically); ``python -m lab replay PATH`` reruns it."""
        import json

        from .trace import check_target, write_atomic
        write_atomic(check_target(path), json.dumps(self.trace, separators=(",", ":")) + "\n")

    def describe(self) -> str:
        what = ", ".join([f"{k} to CPU {c} at {t / 1e6:.4f} ms" for k, c, t in self.injections]
                         + [f"{n}#{i} = {v}" for n, i, v in self.schedule]) or "no injection"
        return f"{self.outcome}: {self.choices} choice(s) from the default: {what}"


@dataclass
class Exploration:
    """What ``explore`` found.  ``schedules``: schedules within the bounds; ``distinct``:
    those run (one per class); ``outcomes``: outcome -> schedules within bounds giving it
    (a class's outcome counted for each member); ``distinct_outcomes``: the same over the
    schedules run; ``counterexamples``: failing outcome -> minimal counterexample."""

    config: Config
    bounds: Bounds
    schedules: int = 0
    distinct: int = 0
    run: int = 0
    pruned_after_verdict: int = 0
    pruned_same_state: int = 0
    outcomes: Counter = field(default_factory=Counter)
    distinct_outcomes: Counter = field(default_factory=Counter)
    counterexamples: dict[str, Counterexample] = field(default_factory=dict)
    complete: bool = True
    covered: dict[str, int] = field(default_factory=dict)  # window -> its grid times covered (one injection)
    elapsed_s: float = 0.0
    verdict_ns: int | None = None  # the default run's verdict time
    varied: int = 0  # schedules with a varied choice (Bounds.vary) run; those whose choice was made are distinct
    varied_unmade: int = 0  # of those, the ones whose run never made that choice (the same as their base)

    @property
    def failing(self) -> bool:
        return bool(self.counterexamples)

    def verdict(self) -> str:
        if self.counterexamples:
            return "counterexample found: " + ", ".join(sorted(self.counterexamples))
        cut = sum(self.outcomes.get(o, 0) for o in NO_VERDICT)
        return (("none found within bounds" if self.complete else
                 "none found in the part covered before the budget ran out")
                + (f" ({cut} schedules unfinished: the step budget cut them short, no verdict)" if cut else ""))

    def coverage(self) -> str:
        b = self.bounds
        head = (f"{self.distinct} distinct schedules of the {self.schedules} within bounds ({', '.join(map(str, b.windows))} "
                f"every {b.resolution_ns / 1e6:g} ms, at most {b.max_choices} choice(s) from the default, the "
                f"default included); {self.run} runs (each class checked at both ends)")
        pr = (f"; pruned {self.pruned_after_verdict} after the default verdict"
              + (f" ({self.verdict_ns / 1e6:.3f} ms)" if self.verdict_ns is not None else "")
              + f" and {self.pruned_same_state} with the state of an earlier time")
        if b.vary:
            pr += (f"; {self.varied} of them set {', '.join(b.vary)} to an end of its domain (lo, hi) at one of the "
                   f"first {b.vary_first} occurrences from the injection on, on each distinct schedule "
                   f"({self.varied_unmade} never made: the run had no such occurrence)")
        tail = "" if self.complete else (
            "; STOPPED by the budget: covered " + ", ".join(
                f"{n} of the {len(w.grid(b.resolution_ns))} times of {w}" for w, n in
                ((w, self.covered.get(str(w), 0)) for w in b.windows)) + "; the rest was not run")
        return head + pr + tail

    def report(self) -> str:
        c = self.config
        lines = [f"explore preset {c.preset}, fix {c.fix}, seed {c.seed}: {self.verdict()}",
                 "  covered: " + self.coverage(),
                 f"  outcomes over the schedules within bounds: {_counts(self.outcomes)}",
                 f"  outcomes over the distinct schedules: {_counts(self.distinct_outcomes)}",
                 f"  time: {self.elapsed_s:.2f} s"]
        for outcome, ce in sorted(self.counterexamples.items(), key=lambda kv: _severity(kv[0])):
            lines.append(f"  minimal counterexample, {ce.describe()}")
            lines.append(f"    reproduce: {ce.command}")
        if not self.counterexamples:
            lines.append("  (not a proof about Linux: only these bounds, in this model; docs/explorer.md)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"preset": self.config.preset, "fix": self.config.fix, "seed": self.config.seed,
                "verdict": self.verdict(), "complete": self.complete, "schedules": self.schedules,
                "distinct": self.distinct, "run": self.run, "pruned_after_verdict": self.pruned_after_verdict,
                "pruned_same_state": self.pruned_same_state, "outcomes": dict(self.outcomes),
                "distinct_outcomes": dict(self.distinct_outcomes), "coverage": self.coverage(),
                "elapsed_s": round(self.elapsed_s, 3),
                "counterexamples": {o: {"injections": [list(i) for i in ce.injections], "choices": ce.choices,
                                        "command": ce.command, "trace_digest": ce.trace["trace_digest"]}
                                    for o, ce in self.counterexamples.items()}}


def _counts(c: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: _severity(kv[0]))) or "none"


def _severity(outcome: str) -> float:
    from .compare import severity
    return severity(outcome)


# -- the state at an injection time ----------------------------------------------------------
def _cpu_state(c: Any, with_regs: bool = True) -> tuple:
    return (str(c.state), c.cstate.name if c.cstate else None, c.rip, c.cr3, c.idtr, c.ist, c.if_flag,
            tuple(c.pending_irqs), tuple(c.pending_exc), c.delivering, c.cr4_mce, c.mcg_status_mcip,
            c.nmi_blocked, c.nmi_pending, c.smm_until is not None, c.smi_latched, c.cpl,
            tuple(sorted(c.regs.items())) if with_regs else None)


def reach(r: Resume, cpu: int) -> list[tuple[str, int]]:
    """(why, pfn) of the frames CPU ``cpu``'s next walks read: its RIP, its stack, its IDT's NMI
    and #MC gates, the handlers they point to and their IST stacks (every table of each walk
    and the frame it ends in), and its monitored line."""
    m = r.machine
    c = m.cpus[cpu]
    out: list[tuple[str, int]] = []
    armed = m.monitor.armed.get(cpu)
    if armed is not None:
        out.append(("line", armed.line >> 12))
    if c.cr3 is None:
        return out

    def add(why: str, va: int) -> int | None:
        w = walk(m.memory, c.cr3, va, set_accessed=False)
        out.extend((why, s.table >> 12) for s in w.steps)
        if w.paddr is not None:
            out.append((why, w.paddr >> 12))
        return w.paddr

    add("rip", c.rip)
    add("stack", c.regs.get("rsp", 0))
    base, limit = c.idtr
    for vector in (2, 18):
        if limit and vector * 16 + 15 <= limit:
            pa = add(f"idt{vector}", base + vector * 16)
            if pa is not None and pa + 16 <= m.memory.size:
                lo, hi = m.memory.read_u64(pa), m.memory.read_u64(pa + 8)
                if lo >> 47 & 1:
                    add(f"handler{vector}", (lo & 0xFFFF) | ((lo >> 48) & 0xFFFF) << 16 | (hi & 0xFFFFFFFF) << 32)
                    ist = lo >> 32 & 7
                    if ist and c.ist[ist]:
                        add(f"ist{vector}", c.ist[ist] - 8)
    return out


def _when(delta: int, lo: int, hi: int, horizon_ns: int) -> str:
    """Where an event ``delta`` ns from now falls for a CPU woken now that runs again between
    ``lo`` and ``hi`` ns from now: before it runs, during the race, or after (or beyond the
    horizon)."""
    if delta < lo:
        return "before"
    if delta <= hi:
        return "race"
    return "after" if delta <= horizon_ns else "later"


def state_digest(r: Resume, cpu: int, horizon_ns: int) -> str:
    """The digest of what an injection into ``cpu`` now can depend on (see the module): the
    phase, every CPU's state (the boot CPU's without its registers, which the copy loop
    changes every page), the armed monitors, each frame ``reach`` lists with its content, and
    when the copy overwrites it and when the copy ends, relative to when ``cpu`` would run
    again if woken now (before, during its exit latency's jitter, after, beyond
    ``horizon_ns``)."""
    m, rt = r.machine, r.runtime
    c = m.cpus[cpu]
    latency = (c.cstate.exit_latency_ns if c.state == RunState.MWAIT and c.cstate else
               m.timing.hlt_exit_ns if c.state == RunState.HLT else 0)
    lo, hi = int(latency * (1 - r.config.jitter)), int(latency * (1 + r.config.jitter)) + 50_000
    h = hashlib.sha256()
    parts: list[Any] = [rt.phase, sorted(rt.in_trampoline), sorted(r.restore_kernel.online),
                        sorted(r.image_kernel.online), repr(rt.kick_state), m.shutdown]
    for k in m.cpus:
        parts.append(_cpu_state(k, with_regs=k.id != 0))
    parts.append(sorted((k, a.line, a.triggered) for k, a in m.monitor.armed.items()))
    copy_start = _copy_start(r)
    ends = rt._copy_end  # noqa: SLF001 - read only, and only once the copy has drawn it
    now = m.sched.now
    if ends is not None and copy_start is not None and len(ends):  # the image kernel takes over
        parts.append(("copy ends", _when(copy_start + int(ends[-1]) - now, lo, hi, horizon_ns)))
    for why, pfn in reach(r, cpu):
        idx = r.loaded.pblist.index_of(pfn) if 0 <= pfn < m.memory.nr_frames else None
        if idx is None:
            status = "-"
        elif idx < rt.copied:
            status = "done"
        elif ends is None or copy_start is None:
            status = "pending"
        else:
            status = _when(copy_start + int(ends[idx]) - now, lo, hi, horizon_ns)
        content = hashlib.sha256(m.memory.read_page(pfn).tobytes()).hexdigest()[:16] \
            if 0 <= pfn < m.memory.nr_frames else "none"
        parts.append((why, pfn, status, content))
    h.update(repr(parts).encode())
    return h.hexdigest()


def _wake_times(config: Config) -> list[int]:
    """When the default run asks for each ``wake.exit`` (one ``wake`` event each)."""
    r = Resume(config)
    r.run()
    return [e.t for e in r.events if e.kind == "wake"]


def _copy_start(r: Resume) -> int | None:
    for e in r.events:
        if e.kind == "phase" and e.data.get("phase") == "copy":
            return e.t
    return None


def horizon(config: Config) -> int:
    """How far ahead a reached frame's overwrite matters: twice the slowest wake-up (the
    deepest C-state's exit latency with full jitter) plus 50 us for the handler."""
    slowest = max(cs.exit_latency_ns for cs in config.cstates())
    return int(2 * slowest * (1 + config.jitter)) + 50_000


def classes(config: Config, window: Window, resolution: int, until: int | None = None) -> list[tuple[int, list[int]]]:
    """The grid times of ``window`` (up to ``until``, inclusive) grouped by ``state_digest``
    in the default run: [(representative time, [times])], representatives the earliest, in
    time order."""
    times = [t for t in window.grid(resolution) if until is None or t <= until]
    if not times:
        return []
    r = Resume(config)
    m = r.machine
    hz = horizon(config)
    seen: dict[str, list[int]] = {}
    order: list[str] = []

    def probe(t: int) -> None:
        d = state_digest(r, window.cpu, hz)
        if d not in seen:
            seen[d] = []
            order.append(d)
        seen[d].append(t)

    for t in times:
        m.at(t, lambda t=t: probe(t))
    r.run(until=times[-1])
    # a run that ended before the last probes: those times see the final state
    while m.sched.next_time() is not None and m.sched.next_time() <= times[-1] and not r.finished:
        r.step()
    done = {t for d in order for t in seen[d]}
    rest = [t for t in times if t not in done]
    if rest:
        d = "ended:" + state_digest(r, window.cpu, hz)
        seen.setdefault(d, []).extend(rest)
        if d not in order:
            order.append(d)
    return sorted(((seen[d][0], seen[d]) for d in order), key=lambda x: x[0])


# -- running schedules -----------------------------------------------------------------------
def with_injections(config: Config, injections: Sequence[Injection]) -> Config:
    return dataclasses.replace(config, inject=tuple(config.inject) + tuple(injections))


def run_schedule(config: Config) -> tuple[str, int | None, int]:
    """(outcome, verdict time, choices the chooser changed) of one schedule (a module-level
    function: executors run it)."""
    r = Resume(config)
    r.run()
    return r.outcome or "timeout", r.resume_ended_ns, len(r.machine.choices.deviations)


class Varied(NamedTuple):
    """A schedule with choices set besides its injections (``Bounds.vary``)."""

    injections: tuple[Injection, ...]
    schedule: tuple[tuple[str, int, Any], ...]


def config_of(config: Config, key: "tuple[Injection, ...] | Varied") -> Config:
    if isinstance(key, Varied):
        return dataclasses.replace(with_injections(config, key.injections),
                                   schedule=tuple(config.schedule) + key.schedule)
    return with_injections(config, key)


def counterexample(config: Config, injections: "tuple[Injection, ...] | Varied", outcome: str,
                   size: int = 1) -> Counterexample:
    """Run the schedule again and keep its trace; the command reproduces it."""
    from . import trace
    from .compare import run_command

    cfg = config_of(config, injections)
    schedule = injections.schedule if isinstance(injections, Varied) else ()
    injections = injections.injections if isinstance(injections, Varied) else injections
    r = Resume(cfg)
    r.run()
    if r.outcome != outcome:  # the model is deterministic: this is a bug, not bad luck
        raise RuntimeError(f"schedule {injections} gave {r.outcome} on a re-run, {outcome} before")
    try:
        cmd = run_command(cfg)
    except ValueError:
        cmd = f"lab.explore.with_injections(Config(...), {list(injections)!r})"
    return Counterexample(outcome, injections, cfg, cmd, trace.export(r), size, schedule)


Progress = Callable[[int, int], None]


def _order(key: "tuple[Injection, ...] | Varied") -> tuple[int, list[int], list[int]]:
    """Minimal first: fewest choices away from the default, then earliest (injection times,
    then occurrences of the choices set)."""
    if isinstance(key, Varied):
        return (len(key.injections) + len(key.schedule), sorted(t for *_, t in key.injections),
                sorted(i for _, i, _ in key.schedule))
    return len(key), sorted(t for *_, t in key), []


def resolve_windows(config: Config, windows: str | Window | Sequence[str | Window]) -> tuple[str | Window, ...]:
    """Windows as given, with ``KIND:CPU@copy`` replaced by the copy of ``config``'s default
    run: from the "copy" phase to the "image-kernel" phase (lab.compare.copy_window)."""
    ws = (windows,) if isinstance(windows, (str, Window)) else tuple(windows)
    out: list[str | Window] = []
    for w in ws:
        if isinstance(w, str) and w.strip().lower().endswith("@copy"):
            from .compare import copy_window
            lo, hi = copy_window(config)
            if hi <= lo:
                raise ValueError(f"window {w!r}: the default run of {config.fix} never copies (it ends first)")
            w = w.strip()[:-len("copy")] + f"{lo}-{hi}ns"
        out.append(w)
    return tuple(out)


def explore(config: Config, fix: str | None = None, bounds: Bounds | Sequence[str] | str | None = None, *,
            executor: Executor | None = None, progress: bool | Progress = False,
            window: str | None = None, resolution: str | int = "0.1ms", **bounds_kw: Any) -> Exploration:
    """Explore the schedules of ``config`` (with ``fix``, if given, in place of its fix) within
    ``bounds`` (a ``Bounds``, or windows such as ``"nmi:1@0-60ms"``; then ``resolution`` and
    the other ``Bounds`` fields as keywords).  ``executor``: where schedules run (None: here,
    in order).  ``progress``: True for a tqdm bar on stderr, or a callable (done, total)."""
    t0 = time.perf_counter()
    if isinstance(config, str):
        config = Config.from_preset(config)
    if not isinstance(config, Config):
        raise ValueError(f"config must be a lab.scenario.Config or a preset name, got {type(config).__name__}")
    if fix is not None:
        config = dataclasses.replace(config, fix=fix)
    if bounds is None:
        if window is None:
            raise ValueError("explore needs bounds, e.g. bounds='nmi:1@0-60ms'")
        bounds = window
    if not isinstance(bounds, Bounds):
        bounds = Bounds(resolve_windows(config, bounds), resolution_ns=resolution, **bounds_kw)
    for w in bounds.windows:
        if w.cpu >= config.cpus:
            raise ValueError(f"window {w}: no CPU {w.cpu}; allowed: 0 to {config.cpus - 1}")
    res = Exploration(config, bounds)
    deadline = None if bounds.budget_s is None else t0 + bounds.budget_s

    bar = None
    tick: Progress | None = None
    if progress is True:
        from tqdm import tqdm
        # as the campaigns' bars: after a second, and only on a terminal (silent in CI)
        bar = tqdm(total=0, unit="schedule", desc=f"explore {config.fix}", leave=False, delay=1.0, disable=None)

        def tick(done: int, total: int) -> None:  # noqa: F811
            bar.total = total
            bar.n = done
            bar.refresh()
    elif callable(progress):
        tick = progress

    # level 0: the default schedule
    base_outcome, verdict_ns, _ = run_schedule(config)
    res.verdict_ns = verdict_ns
    res.schedules = res.distinct = res.run = 1
    res.outcomes[base_outcome] += 1
    res.distinct_outcomes[base_outcome] += 1
    if base_outcome not in GOOD + NO_VERDICT:
        res.counterexamples[base_outcome] = counterexample(config, (), base_outcome)

    # the classes of each window's grid times in the default run
    per_window: list[list[tuple[int, list[int]]]] = []
    for w in bounds.windows:
        grid = w.grid(bounds.resolution_ns)
        live = [t for t in grid if verdict_ns is None or t <= verdict_ns]
        if bounds.prune:
            cls = classes(config, w, bounds.resolution_ns, verdict_ns)
            res.pruned_after_verdict += len(grid) - len(live)
        else:
            cls = [(t, [t]) for t in grid]
        per_window.append(cls)
        res.covered[str(w)] = 0
    for k in range(1, bounds.max_choices + 1):  # the schedules within bounds
        for combo in itertools.combinations(range(len(bounds.windows)), k):
            n = 1
            for i in combo:
                n *= len(bounds.windows[i].grid(bounds.resolution_ns))
            res.schedules += n
    res.outcomes[base_outcome] += res.pruned_after_verdict  # after the verdict: the default outcome

    outcomes: dict[Any, str] = {}
    made: dict[Any, int] = {}  # schedule -> choices its chooser changed
    total = [1]

    def run_all(schedules: list[tuple[Injection, ...]]) -> bool:
        """Run those not run yet (through the executor); False when the budget stopped it."""
        todo = [s for s in dict.fromkeys(schedules) if s not in outcomes]
        total[0] += len(todo)
        chunk = 1 if executor is None else 32  # the budget is checked between chunks
        i = 0
        while i < len(todo):
            room = None if bounds.budget_schedules is None else bounds.budget_schedules - res.run
            if (deadline is not None and time.perf_counter() > deadline) or (room is not None and room <= 0):
                res.complete = False
                return False
            batch = todo[i:i + (chunk if room is None else min(chunk, room))]
            i += len(batch)
            if executor is None:
                got = [run_schedule(config_of(config, inj)) for inj in batch]
            else:
                futs = [executor.submit(run_schedule, config_of(config, inj)) for inj in batch]
                got = [f.result() for f in futs]
            for inj, (o, _, changed) in zip(batch, got):
                outcomes[inj] = o
                made[inj] = changed
                res.run += 1
                if tick:
                    tick(res.run, total[0])
        return True

    def one(w: Window, t: int) -> tuple[Injection, ...]:
        return ((w.kind, w.cpu, t),)

    # level 1: each window's classes, checked at both ends; a class whose ends disagree is
    # split by bisection until each part's ends agree
    segments: list[tuple[tuple[Injection, ...], list[tuple[Injection, ...]]]] = []  # (run, stands for)
    if bounds.max_choices >= 1:
        for w, cls in zip(bounds.windows, per_window):
            run_all([one(w, ms[0]) for _, ms in cls] + [one(w, ms[-1]) for _, ms in cls])
            parts, final = [ms for _, ms in cls], []
            while parts:
                split, mids = [], []
                for ms in parts:
                    a, b = outcomes.get(one(w, ms[0])), outcomes.get(one(w, ms[-1]))
                    if a is None or b is None or a == b or len(ms) <= 2:
                        final.append(ms)
                    else:
                        split.append(ms)
                        mids.append(one(w, ms[len(ms) // 2]))
                if not split or not run_all(mids):
                    final += split
                    break
                parts = [half for ms in split for half in (ms[:len(ms) // 2 + 1], ms[len(ms) // 2:])]
            rep_of: dict[int, int] = {}
            for ms in sorted(final):
                a, b = outcomes.get(one(w, ms[0])), outcomes.get(one(w, ms[-1]))
                if a is None:
                    continue  # the budget stopped before it: not covered
                if b is None:  # its other end was not checked: only its first time is covered
                    rep_of.setdefault(ms[0], ms[0])
                    continue
                for t in ms:
                    rep_of.setdefault(t, ms[0] if a == b or one(w, t) not in outcomes else t)
            groups: dict[int, list[int]] = {}
            for t, rep in sorted(rep_of.items()):
                groups.setdefault(rep, []).append(t)
            segments += [(one(w, rep), [one(w, t) for t in ts]) for rep, ts in sorted(groups.items())]
    # levels 2..max_choices: one class representative from each of k windows (not refined)
    for k in range(2, bounds.max_choices + 1):
        for combo in itertools.combinations(range(len(bounds.windows)), k):
            combos = []
            for reps in itertools.product(*(per_window[i] for i in combo)):
                inj = tuple(sorted(((bounds.windows[i].kind, bounds.windows[i].cpu, t)
                                    for i, (t, _) in zip(combo, reps)), key=lambda x: x[2]))
                size = 1
                for _, ms in reps:
                    size *= len(ms)
                combos.append((inj, size))
            run_all([inj for inj, _ in combos])
            segments += [(inj, [inj] * size) for inj, size in combos if inj in outcomes]
    # one more choice: a varied choice at an end of its domain, on each distinct schedule
    varied: list[Varied] = []
    if bounds.vary:
        wakes = _wake_times(config)
        bases: list[tuple[Injection, ...]] = [()] + [inj for inj, _ in segments]
        for inj in bases:
            if len(inj) + 1 > bounds.max_choices:
                continue
            first = sum(1 for t in wakes if t < min(x[2] for x in inj)) if inj else 0
            for name in bounds.vary:
                for i in range(first, first + bounds.vary_first):
                    varied += [Varied(inj, ((name, i, end),)) for end in ("lo", "hi")]
        run_all(list(varied))
        res.varied = sum(1 for v in varied if v in outcomes)
        res.schedules += res.varied
        for v in varied:  # the run never asked for that occurrence: the same run as its base
            if v in outcomes and not made.get(v):
                res.varied_unmade += 1
                res.outcomes[outcomes[v]] += 1
        varied = [v for v in varied if v in outcomes and made.get(v)]
        segments += [(v, [v]) for v in varied]
    if bar is not None:
        bar.close()

    res.distinct = 1 + len(segments)
    minimal: dict[str, tuple[tuple[Injection, ...], int]] = {}
    res.pruned_same_state = sum(len(ms) - 1 for inj, ms in segments if not isinstance(inj, Varied) and len(inj) == 1)
    for inj, members in segments:
        o = outcomes[inj]
        res.outcomes[o] += len(members)
        res.distinct_outcomes[o] += 1
        if not isinstance(inj, Varied) and len(inj) == 1:
            kind, cpu, t = inj[0]
            key = next(str(w) for w in bounds.windows if w.kind == kind and w.cpu == cpu and w.start <= t < w.end)
            res.covered[key] += len(members)
        if o not in GOOD + NO_VERDICT:
            best = minimal.get(o)
            if best is None or _order(inj) < _order(best[0]):
                minimal[o] = (inj, len(members))
    for o, (inj, size) in minimal.items():
        if o not in res.counterexamples:  # the default schedule's own failure is minimal already
            res.counterexamples[o] = counterexample(config, inj, o, size)
    res.elapsed_s = time.perf_counter() - t0
    return res




def _explore_one(config: Config, windows: tuple[str, ...], resolution: str | int, kw: dict[str, Any]) -> Exploration:
    return explore(config, bounds=windows, resolution=resolution, **kw)


def explore_fixes(preset: str | Config, fixes: Sequence[str], windows: Sequence[str], resolution: str | int = "0.1ms",
                  executor: Executor | None = None, **bounds_kw: Any) -> list[Exploration]:
    """``explore`` for each fix (in order), one fix per task on ``executor`` (None: here).
    The fixes must be registered in every worker (the built-in ones are)."""
    base = Config.from_preset(preset) if isinstance(preset, str) else preset
    configs = [dataclasses.replace(base, fix=f) for f in fixes]
    if executor is None:
        return [_explore_one(c, tuple(windows), resolution, bounds_kw) for c in configs]
    futs = [executor.submit(_explore_one, c, tuple(windows), resolution, bounds_kw) for c in configs]
    return [f.result() for f in futs]


class _CallableModule(types.ModuleType):
    """``lab.explore`` is this module and, called, the function (``lab.explore(config, fix, bounds)``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Exploration:
        return explore(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
