"""Closed-form companions to the simulation, with sympy: the address arithmetic of a walk,
the zero-page proposal's line capacity, and the window in which a woken CPU faults.

The simulation never uses these; tests compare the two, so each checks the other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sympy as sp

if TYPE_CHECKING:  # pragma: no cover
    from .scenario import Resume

LEVELS = ("PML4", "PDPT", "PD", "PT")
SHIFTS = (39, 30, 21, 12)


def address_indices(va: int | sp.Expr) -> dict[str, sp.Expr]:
    """index_level = floor(va / 2**shift) mod 512 for each level, and the page offset
    (SDM vol. 3A 4.5, figure 4-8).  Exact integers for an int, expressions for a symbol."""
    v = sp.Integer(va) if isinstance(va, int) else va
    out = {name: sp.Mod(sp.floor(v / 2**shift), 512) for name, shift in zip(LEVELS, SHIFTS)}
    out["offset"] = sp.Mod(v, 4096)
    return out


def line_capacity(page_size: int | sp.Expr = 4096, line_size: int | sp.Expr = 64) -> sp.Expr:
    """How many CPUs can each monitor a line of their own in one page (the zero-page
    proposal's limit): PAGE_SIZE / L1_CACHE_BYTES."""
    return sp.simplify(sp.sympify(page_size) / sp.sympify(line_size))


L, c, w, t, b = sp.symbols("L c w t b", positive=True)  # latency, ns per page, three copy positions


def fault_window() -> tuple[sp.Expr, sp.Expr]:
    """A CPU woken when the copy reaches position ``w`` of restore_pblist walks after its exit
    latency ``L``, i.e. at position w + L/c.  It reads a junk table if that table's frame (at
    position ``t``) was copied before, and the image's own tables are not yet in use if the
    walk comes before position ``b`` (where the kernel image's page tables are restored).
    Solving t < w + L/c < b for L gives the latencies that fault: (L_min, L_max)."""
    at = w + L / c
    lo = sp.solve(sp.Eq(at, t), L)[0]
    hi = sp.solve(sp.Eq(at, b), L)[0]
    return sp.simplify(lo), sp.simplify(hi)


@dataclass(frozen=True)
class Prediction:
    cpu: int
    woken_at: int | None  # pblist position of the monitored frame (None: not in the image)
    junk_at: int | None  # position of the first walk-path table frame overwritten with junk
    closes_at: int | None  # position where the walk path reaches the image kernel's tables
    walk_at: float | None  # w + L/c
    faults: bool

    def explain(self) -> str:
        if self.woken_at is None:
            return f"cpu{self.cpu}: its monitored frame is not in the image: never woken by the copy"
        if self.junk_at is None:
            return f"cpu{self.cpu}: woken at pbe {self.woken_at}, but no table on its walk holds junk"
        verdict = "faults" if self.faults else "is safe"
        return (f"cpu{self.cpu}: woken at pbe {self.woken_at}, walks at about {self.walk_at:.0f}; table junk from "
                f"{self.junk_at}, image tables from {self.closes_at}: {verdict}")


def predict(resume: "Resume", cpu: int) -> Prediction:
    """Predict, from a built (not yet run) Resume and the window formula, whether ``cpu``
    faults when parked with mwait_play_dead."""
    from .hw.paging import P, decode, walk
    from .kernel.layout import PAGE_SIZE

    k = resume.restore_kernel
    pos = resume.loaded.pblist.index_of  # pblist position of a frame, None if not on it
    ptr = k.layout.mwait_ptr(cpu)
    woken = pos(k.layout.idle_stacks[cpu])
    before = walk(resume.machine.memory, k.cr3, ptr, set_accessed=False)
    brk = set(k.layout.image.brk_pgt_buf) | {k.layout.image.init_level4_pgt}
    junk = closes = None
    for step in before.steps:
        frame = step.table // PAGE_SIZE
        if frame in brk:  # restored from the image, it leads the walk into the image's own tables
            if pos(frame) is not None:
                closes = pos(frame) if closes is None else min(closes, pos(frame))
            continue
        new = resume.image.content(frame)
        if new is None or pos(frame) is None:
            continue
        entry = int((new.materialize() if hasattr(new, "materialize") else new)[step.index])
        bad = not entry & P or decode(entry, step.level, resume.machine.memory.phys_bits).reserved
        if bad and entry != step.entry:
            junk = pos(frame) if junk is None else min(junk, pos(frame))
    if woken is None or junk is None:
        return Prediction(cpu, woken, junk, closes, None, False)
    cfg = resume.config
    lo, hi = fault_window()
    subs = {w: woken, t: junk, b: closes if closes is not None else len(resume.loaded.pblist) + 1, c: cfg.page_copy_ns}
    latency = cfg.c6_exit_ns
    faults = bool(lo.subs(subs) < latency < hi.subs(subs))
    return Prediction(cpu, woken, junk, closes, woken + latency / cfg.page_copy_ns, faults)


# -- from one seed to a rate ---------------------------------------------------------------------
s = sp.Symbol("s", nonnegative=True)  # jitter spread: the exit latency is L * (1 + s*u), u ~ U(-1, 1)


def fault_probability() -> sp.Expr:
    """The probability that a parked CPU faults, given its layout (woken at pblist position
    ``w``, a junk table on its walk at ``t``, the image's own tables from ``b``) and the timing
    (exit latency ``L`` ns, ``c`` ns per page copied, jitter spread ``s``).

    The exit latency actually taken is L' = L (1 + s u) with u uniform in [-1, 1)
    (lab.hw.sched.Jitter.scale), so L' is uniform on [L (1 - s), L (1 + s)] and the CPU faults
    when L' falls in the window (L_min, L_max) of ``fault_window``:

        P = max(0, min(L_max, L (1 + s)) - max(L_min, L (1 - s))) / (2 L s)

    and, without jitter (s = 0), 1 inside the window and 0 outside.  Assumes the copy passes one
    pbe every ``c`` ns (the per-page jitter averages out over the hundreds of pages between a
    wake and the walk) and that a CPU is woken once, by the copy's store into its monitored line."""
    lo, hi = fault_window()
    band = sp.Max(0, sp.Min(hi, L * (1 + s)) - sp.Max(lo, L * (1 - s))) / (2 * L * s)
    inside = sp.Piecewise((1, sp.And(lo < L, L < hi)), (0, True))
    return sp.Piecewise((inside, sp.Eq(s, 0)), (band, True))


def run_fault_probability() -> tuple[sp.Expr, tuple[sp.Symbol, ...]]:
    """P(the run fails) for two CPUs exposed to the window, each with its own (w, t, b) and its
    own latency draw: 1 - (1 - P_1)(1 - P_2); in general 1 - prod(1 - P_i) over the exposed
    CPUs (``predicted_failure``).  Returned with the symbols of the second CPU."""
    w2, t2, b2 = sp.symbols("w2 t2 b2", positive=True)
    p = fault_probability()
    return 1 - (1 - p) * (1 - p.subs({w: w2, t: t2, b: b2})), (w2, t2, b2)


@dataclass(frozen=True)
class Exposure:
    """Where a parked CPU stands in one run's layout: woken at ``woken_at``, a junk table on its
    walk at ``junk_at``, the image's own tables from ``closes_at`` (pblist positions)."""

    cpu: int
    woken_at: int
    junk_at: int
    closes_at: int


def exposures(resume: "Resume") -> list[Exposure]:
    """The parked CPUs of a built (not yet run) Resume that the window can reach: woken by the
    copy and with junk on their walk (the layout part of ``predict``; timing does not enter)."""
    out = []
    for cpu in range(1, resume.config.cpus):
        p = predict(resume, cpu)
        if p.woken_at is not None and p.junk_at is not None:
            closes = p.closes_at if p.closes_at is not None else len(resume.loaded.pblist) + 1
            out.append(Exposure(cpu, p.woken_at, p.junk_at, closes))
    return out


_probability = None


def predicted_failure(exposed: list[Exposure], latency_ns: float, page_copy_ns: float, spread: float) -> float:
    """1 - prod(1 - P_i): the probability that a run with these exposed CPUs fails, from
    ``fault_probability`` evaluated for each (independent latency draws)."""
    global _probability
    if _probability is None:
        _probability = sp.lambdify((w, t, b, L, c, s), fault_probability(), "math")
    survive = 1.0
    for e in exposed:
        survive *= 1.0 - float(_probability(e.woken_at, e.junk_at, e.closes_at, latency_ns, page_copy_ns, spread))
    return 1.0 - survive


def predicted_rate(layouts: list[list[Exposure]], latency_ns: float, page_copy_ns: float, spread: float) -> float:
    """The failure rate over runs whose layouts are ``layouts`` (one list of exposures per
    seed): the mean of ``predicted_failure``.  Compare with a campaign's rate and its Wilson
    interval (lab.campaign.stats)."""
    if not layouts:
        raise ValueError("predicted_rate needs at least one layout")
    return sum(predicted_failure(x, latency_ns, page_copy_ns, spread) for x in layouts) / len(layouts)
