"""Bring your own fix: ``lab.judge(MyFix)`` runs the matrix of lab.compare (every hazard, over
seeds) and the explorer (lab.explore: every injection time within bounds) on a ``Fix``
subclass (or instance) of your own, and returns the verdict per hazard with the minimal
counterexample where one exists.

    from lab.fixes import Fix
    from lab.judge import judge           # or: import lab; lab.judge(...)

    class Parked(Fix):
        name = "parked"
        play_dead = "hlt_play_dead"

    j = judge(Parked, seeds=range(2))
    j.verdicts["stray NMI"].verdict      # "fails" or "survives" (or "n/a")
    print(j)                              # one line per hazard

The fix is registered in ``lab.fixes.FIXES`` only while ``judge`` runs (``registered``), so
nothing leaks from one call to the next, and every run happens in this process (a class
defined in a notebook cannot be sent to worker processes).  Nothing branches on its name:
the model runs the code its hooks choose.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from .fixes import FIXES, Fix, get_fix
from .scenario import Config, Resume

#: the explorer's hazards: name -> injection window (lab.explore.Window, or KIND:CPU@copy)
EXPLORED = {"NMI to CPU 1 in the copy (explored)": "nmi:1@copy",
            "SMI to CPU 1 in the copy (explored)": "smi:1@copy",
            "MCE to CPU 1 in the copy (explored)": "mce:1@copy",
            "NMI to the boot CPU in the copy (explored)": "nmi:0@copy"}


@dataclass
class Verdict:
    """One hazard: ``verdict`` "fails", "survives" or "n/a"; ``detail`` (counts, interval or
    coverage); ``outcome`` the worst outcome seen; ``config`` reproducing it (``reproduce``),
    ``command`` the matching ``python -m lab run`` (runnable as is for the built-in fixes);
    ``counterexample`` the explorer's (with its trace) where the explorer found one."""

    hazard: str
    verdict: str
    detail: str
    source: str  # "matrix" or "explorer"
    outcome: str | None = None
    config: Config | None = None
    command: str | None = None
    counterexample: Any = None  # lab.explore.Counterexample

    def line(self) -> str:
        how = f" -> {self.outcome}" if self.verdict == "fails" else ""
        rep = f"; reproduce: {self.command}" if self.command and self.verdict == "fails" else ""
        return f"{self.hazard:<42} {self.verdict:<9}{how} ({self.detail}){rep}"


@dataclass
class Judgement:
    """``verdicts``: hazard -> Verdict (the matrix's hazards, then the explorer's);
    ``matrix``: the lab.compare DataFrame rows of the fix; ``explorations``: hazard ->
    lab.explore.Exploration."""

    fix: str
    preset: str
    seeds: list[int]
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    matrix: Any = None
    explorations: dict[str, Any] = field(default_factory=dict)

    @property
    def fails(self) -> list[str]:
        return [h for h, v in self.verdicts.items() if v.verdict == "fails"]

    @property
    def survives_everything(self) -> bool:
        """No hazard that applies makes it fail (within these seeds and bounds)."""
        return not self.fails

    def table(self):  # noqa: ANN201 - a pandas DataFrame
        import pandas as pd
        return pd.DataFrame([{"hazard": v.hazard, "verdict": v.verdict, "outcome": v.outcome, "detail": v.detail,
                              "source": v.source, "command": v.command} for v in self.verdicts.values()]
                            ).set_index("hazard")

    def __str__(self) -> str:
        head = (f"judge {self.fix} on {self.preset}, seeds {self.seeds[0]}-{self.seeds[-1]}: "
                + (f"fails under {', '.join(self.fails)}" if self.fails else
                   "no failure found within these seeds and bounds (not a proof about Linux)"))
        return "\n".join([head] + ["  " + v.line() for v in self.verdicts.values()])

    __repr__ = __str__


def as_fix(fix: Any) -> Fix:
    """A Fix instance from a Fix subclass, an instance, or the name of a built-in fix."""
    if isinstance(fix, str):
        return get_fix(fix)
    if isinstance(fix, type) and issubclass(fix, Fix):
        fix = fix()
    if not isinstance(fix, Fix):
        raise ValueError(f"judge needs a lab.fixes.Fix subclass or instance (or a fix's name), got {fix!r}")
    if not isinstance(fix.name, str) or not fix.name.strip():
        raise ValueError(f"fix {type(fix).__name__} needs a name (class attribute name = 'my-fix')")
    return fix


@contextlib.contextmanager
def registered(fix: Fix) -> Iterator[str]:
    """``fix`` in ``lab.fixes.FIXES`` for the ``with`` block only (what was there before is put
    back).  A built-in fix's name is refused unless it is that very fix."""
    name = fix.name
    before = FIXES.get(name)
    if before is not None and before is not fix:
        raise ValueError(f"fix name {name!r} is taken by a built-in fix; allowed: a name not in {', '.join(FIXES)}")
    FIXES[name] = fix
    try:
        yield name
    finally:
        if before is None:
            FIXES.pop(name, None)
        else:
            FIXES[name] = before


def reproduce(fix: Any, config: Config) -> Resume:
    """Run ``config`` (e.g. a verdict's ``config``) with ``fix`` registered; returns the run."""
    fix = as_fix(fix)
    with registered(fix):
        r = Resume(dataclasses.replace(config, fix=fix.name))
        r.run()
        return r


def judge(fix: Any, preset: str = "workshop", seeds: Iterable[int] = range(4),
          hazards: Sequence[str] | None = None, windows: dict[str, str] | None = None,
          resolution: str | int = "0.1ms", budget_s: float | None = None) -> Judgement:
    """Judge ``fix`` (a Fix subclass, an instance, or a built-in fix's name) on ``preset``:
    the lab.compare matrix over ``seeds`` and ``hazards`` (default: every hazard of
    lab.compare.HAZARDS), then the explorer over ``windows`` (hazard name -> window, default
    ``EXPLORED``: an NMI, an SMI, an MCE to CPU 1 at every ``resolution`` of the copy of the
    seed-``min(seeds)`` run).  Returns a ``Judgement`` (verdict per hazard)."""
    from .compare import HAZARDS, compare, run_command
    from .explore import explore

    fix = as_fix(fix)
    seeds = sorted(set(int(s) for s in seeds))
    if not seeds:
        raise ValueError("seeds: at least one")
    windows = EXPLORED if windows is None else dict(windows)
    if hazards is not None:
        hazards = [hazards] if isinstance(hazards, str) else list(hazards)
        for h in hazards:
            if h not in HAZARDS:
                raise ValueError(f"unknown hazard {h!r}; allowed: {', '.join(HAZARDS)}")
    out = Judgement(fix.name, preset, seeds)
    with registered(fix) as name:
        df = compare(preset, fixes=[name], hazards=hazards, seeds=seeds)  # here, in order: the fix is local
        out.matrix = df.loc[name]
        for hz, row in out.matrix.iterrows():
            if not row["applies"]:
                out.verdicts[hz] = Verdict(hz, "n/a", row["reason"], "matrix")
                continue
            failing = int(row["failures"]) > 0
            cfg = None
            if failing:
                cfg = Config.from_preset(preset, fix=name, seed=int(row["worst_seed"]), **(row["settings"] or {}))
            out.verdicts[hz] = Verdict(hz, "fails" if failing else "survives", row["label"], "matrix",
                                       row["worst"] if failing else "resumed", cfg,
                                       row["command"] if failing else None)
        for hz, window in windows.items():
            config = Config.from_preset(preset, fix=name, seed=seeds[0])
            try:
                ex = explore(config, bounds=window, resolution=resolution, budget_s=budget_s)
            except ValueError as exc:
                out.verdicts[hz] = Verdict(hz, "n/a", str(exc), "explorer")
                continue
            out.explorations[hz] = ex
            detail = f"{ex.distinct} distinct of {ex.schedules} schedules, {ex.verdict()}"
            if ex.counterexamples:
                from .compare import severity
                ce = min(ex.counterexamples.values(), key=lambda c: (c.choices, severity(c.outcome)))
                try:
                    cmd = run_command(ce.config)
                except ValueError:
                    cmd = None
                out.verdicts[hz] = Verdict(hz, "fails", detail, "explorer", ce.outcome, ce.config, cmd, ce)
            else:
                out.verdicts[hz] = Verdict(hz, "survives", detail + ("" if ex.complete else " (budget ran out)"),
                                           "explorer", "resumed")
    return out


class _CallableModule(types.ModuleType):
    """``lab.judge`` is this module and, called, the function (``lab.judge(MyFix)``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Judgement:
        return judge(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
