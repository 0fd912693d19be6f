"""Judging the fixes: every fix against every hazard, over seeds, as one table.

A *hazard* is a real mechanism expressed as Config settings (never a flag an outcome reads):
``HAZARDS`` maps its name to (description, function config -> overrides).  Each cell of the
matrix runs one fix under the baseline plus one hazard, for every seed, through
``lab.campaign.run_one`` on any ``concurrent.futures`` Executor (a process pool, a dask
client's ``get_executor()``), so the result never depends on how the runs were spread.

    df = compare("workshop", seeds=range(8))      # one row per (fix, hazard)
    matrix(df)                                    # one row per fix, one column per hazard

Extend the table by adding an entry to ``HAZARDS`` (or pass your own ``hazards`` mapping);
new fixes appear by themselves (``lab.fixes.FIXES``).
"""
from __future__ import annotations

import dataclasses
import math
import shlex
from concurrent.futures import Executor
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .campaign import Progress, check_size, resumes_to_failure, run_lazily, run_one
from .fixes import FIXES, get_fix
from .scenario import OUTCOMES, PRESETS, Config, Resume
from .validate import MAX_SEED

Overrides = Callable[[Config], dict[str, Any]]

#: worst first: the order in which a cell's worst outcome is chosen (an outcome not listed here
#: ranks between "timeout" and "unfinished": a failure, though one the lab has no name for)
SEVERITY = ("triple_fault", "shutdown", "panic", "corrupted", "timeout", "unfinished", "resumed")


def severity(outcome: str) -> float:
    """Rank of ``outcome``, 0 the worst (see ``SEVERITY``)."""
    return SEVERITY.index(outcome) if outcome in SEVERITY else SEVERITY.index("unfinished") - 0.5
#: per-run costs taken from lab.campaign.run_one's records, averaged over a cell's seeds
#: (a record without the field gives NaN: the model does not report it yet)
COSTS = ("wakeups", "clflush_wakeups", "wakeups_per_ms", "awake_ns", "ipis", "safe_pages", "sharing_cpus", "store_wakeups")
STRAY_KINDS = ("nmi", "smi", "mce")


def config_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(Config)}


def has_stray() -> bool:
    """Does the model place stray NMI/SMI/MCE itself (``Config.stray``)?  Until it does, the
    stray hazards use ``inject`` at a time drawn from the seed inside the copy window."""
    return "stray" in config_fields()


# -- the copy window (stand-in for Config.stray) ------------------------------------------------
def copy_window(config: Config) -> tuple[int, int]:
    """(start, end) in ns of the copy in a run of ``config``: from the "copy" phase to the
    "image-kernel" phase (or to where the run stopped).  A module-level function, so that an
    executor can run it."""
    r = Resume(config)
    r.run(until="copy")
    start = r.now
    if r.phase == "copy":
        r.run(until="image-kernel")
    return start, max(start, r.now)


_windows: dict[Config, tuple[int, int]] = {}


def _window(config: Config) -> tuple[int, int]:
    if config not in _windows:
        _windows[config] = copy_window(config)
    return _windows[config]


def stray(kind: str) -> Overrides:
    """A stray ``kind`` (nmi, smi, mce) at a seeded random time during the copy, to a seeded
    random parked CPU (an MCE is broadcast to every CPU).  With ``Config.stray`` the model
    draws both; until then the same mechanism as ``inject`` entries, drawn here from the seed
    inside the copy window of the run itself."""
    if kind not in STRAY_KINDS:
        raise ValueError(f"unknown stray kind {kind!r}; allowed: {', '.join(STRAY_KINDS)}")

    def overrides(config: Config) -> dict[str, Any]:
        if has_stray():
            return {"stray": (kind,)}
        lo, hi = _window(config)
        rng = np.random.default_rng([config.seed, 0x57A7, STRAY_KINDS.index(kind)])
        at = int(lo + rng.integers(0, max(hi - lo, 1)))
        cpu = int(rng.integers(1, config.cpus))
        cpus = range(config.cpus) if kind == "mce" else (cpu,)
        return {"inject": tuple((kind, c, at) for c in cpus)}

    overrides.needs_window = True  # type: ignore[attr-defined]
    return overrides


TEXT_MAPPING_KEYS = ("play_dead_at_text_end", "kernel_text_pages", "kernel_version", "restore_initcalls",
                     "image_initcalls")


def text_mapping(config: Config) -> dict[str, Any]:
    """The text-mapping preset's calibration (lab.scenario.CALIBRATION): play_dead in the last
    text page, which mark_rodata_ro() splits into a PT made at run time at a different frame
    in each boot."""
    settings = PRESETS["text-mapping"][1]
    return {k: settings[k] for k in TEXT_MAPPING_KEYS}


#: name -> (description, config -> overrides applied on top of the baseline's).  The first
#: entry is the baseline; every other hazard is the baseline plus its own settings.
HAZARDS: dict[str, tuple[str, Overrides]] = {
    "copy stores": ("the baseline: the copy stores into the frames of monitored lines (always on); remote "
                    "CLFLUSH does not trigger monitors here", lambda c: {"clflush_triggers": False}),
    "nosmt": ("SMT siblings offline since boot, parked in the default mwait_play_dead (ec527c318036)",
              lambda c: {"nosmt": True}),
    "stray NMI": ("an NMI at a seeded random time during the copy, to a seeded random parked CPU", stray("nmi")),
    "stray SMI": ("an SMI at a seeded random time during the copy, to a seeded random parked CPU", stray("smi")),
    "stray MCE": ("a machine check at a seeded random time during the copy, broadcast to every CPU", stray("mce")),
    "clflush ping-pong": ("a remote CLFLUSH of a monitored line triggers the monitor (an implementation "
                          "choice, SDM): CPUs sharing a line wake each other", lambda c: {"clflush_triggers": True}),
    "more CPUs than lines": ("72 CPUs: more than the 4096 / 64 = 64 lines of one zero page, so some CPUs share a "
                             "line (see sharing_cpus; with the clflush ping-pong on as well, the sharers wake each "
                             "other)", lambda c: {"cpus": 72}),
    "text mapping": ("play_dead in the text page mark_rodata_ro() splits into a run-time PT (ab76f7b4ab23)",
                     text_mapping),
    "mailbox wakeup": ("APs started through a mailbox, not INIT/SIPI (45e34c8af58f: 'special wakeup "
                       "mechanisms which are not using INIT')", lambda c: {"wakeup": "mailbox"}),
}
BASELINE = next(iter(HAZARDS))


# -- run commands --------------------------------------------------------------------------------
def _bool_option(name: str) -> Callable[[Any], list[str]]:
    return lambda v: [f"--{name}" if v else f"--no-{name}"]


#: Config field -> its options of ``python -m lab run`` (every hazard setting needs one)
RUN_OPTIONS: dict[str, Callable[[Any], list[str]]] = {
    "cpus": lambda v: ["--cpus", str(v)],
    "threads_per_core": lambda v: ["--threads-per-core", str(v)],
    "ram": lambda v: ["--ram", str(v)],
    "image": lambda v: ["--image", str(v)],
    "kernel_version": lambda v: ["--kernel-version", str(v)],
    "nosmt": lambda v: ["--nosmt"] if v else [],
    "inject": lambda v: [a for kind, cpu, at in v for a in ("--inject", f"{kind}:{cpu}@{at}")],
    "stray": lambda v: [a for kind in v for a in ("--stray", kind)],
    "schedule": lambda v: [a for name, i, value in v for a in ("--choose", f"{name}#{i}={value}")],
    "wakeup": lambda v: ["--wakeup", str(v)],
    "clflush_triggers": _bool_option("clflush-triggers"),
    "play_dead_at_text_end": _bool_option("play-dead-at-text-end"),
    "kernel_text_pages": lambda v: ["--kernel-text-pages", str(v)],
    "restore_initcalls": lambda v: ["--restore-initcalls", str(v)],
    "image_initcalls": lambda v: ["--image-initcalls", str(v)],
    "step_budget": lambda v: ["--step-budget", str(v)],
}


def settings_of(config: Config) -> dict[str, Any]:
    """The settings of ``config`` that differ from its preset's (besides fix and seed)."""
    base = Config.from_preset(config.preset)
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(Config)
            if f.name not in ("preset", "fix", "seed") and getattr(config, f.name) != getattr(base, f.name)}


def run_command(config: Config) -> str:
    """``python -m lab run --preset P --fix F --seed S [options]`` that runs ``config``: the
    settings that differ from the preset's, as options.  Raises ValueError for a setting the
    run command has no option for."""
    args = ["python", "-m", "lab", "run", "--preset", config.preset, "--fix", config.fix, "--seed", str(config.seed)]
    for name, value in settings_of(config).items():
        if name not in RUN_OPTIONS:
            raise ValueError(f"setting {name}={value!r} has no option of 'python -m lab run'")
        opts = RUN_OPTIONS[name](value)
        if not opts:
            raise ValueError(f"setting {name}={value!r} cannot be written as an option of 'python -m lab run'")
        args += opts
    return shlex.join(args)


# -- the matrix ----------------------------------------------------------------------------------
def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a failure rate k/n:
    ``scipy.stats.binomtest(k, n).proportion_ci(confidence, method="wilson")``."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def cell_label(k: int, n: int, lo: float, hi: float) -> str:
    """'k/n fail [lo-hi%]'."""
    return f"{k}/{n} fail [{lo * 100:.0f}-{hi * 100:.0f}%]"


def _select(names: Sequence[str] | None, table: Mapping[str, Any], what: str) -> list[str]:
    if names is None:
        return list(table)
    if isinstance(names, str):
        names = [names]
    out = []
    for n in names:
        if n not in table:
            raise ValueError(f"unknown {what} {n!r}; allowed: {', '.join(table)}")
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError(f"no {what} chosen; allowed: {', '.join(table)}")
    return out


def _missing_settings(overrides: Mapping[str, Any]) -> list[str]:
    return sorted(set(overrides) - config_fields())


def _submit_all(fn: Callable[[Config], Any], configs: list[Config], executor: Executor | None,
                tick: Callable[[], None]) -> list[Any]:
    out = []
    for result in run_lazily(fn, configs, executor):  # a bounded number submitted at a time
        out.append(result)
        tick()
    return out


def compare(preset: str, fixes: Sequence[str] | None = None, hazards: Sequence[str] | Mapping[str, tuple[str, Overrides]] | None = None,
            seeds: Iterable[int] = range(32), executor: Executor | None = None,
            progress: Progress | bool | None = None):  # noqa: ANN201 - a pandas DataFrame
    """Every fix (default: ``lab.fixes.FIXES``) under every hazard (default: ``HAZARDS``;
    names from it, or a mapping name -> (description, overrides) of your own) on ``preset``,
    for every seed.  Returns a pandas DataFrame indexed by (fix, hazard), one row per cell:

    * ``applies``, ``reason``: False and why, where the fix cannot run with the hazard's
      settings (a ValueError from Config, e.g. a fix that needs INIT on a mailbox machine),
    * ``n`` runs, one count per outcome (``resumed``, ``panic``, ...), ``failures`` (every
      outcome but resumed and unfinished), ``failure_rate`` over the ``judged`` runs (those
      the lab simulated to a verdict: unfinished runs, cut by the step budget, are counted
      but judge nothing) and its Wilson 95% interval ``ci_low``,
      ``ci_high``, computed with ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``,
    * the costs, means over the seeds of lab.campaign.run_one's record fields (NaN where the
      record has no such field): ``wakeups``, ``wakeups_per_ms``, ``awake_ns``, ``ipis``,
      ``safe_pages``, ``sharing_cpus``, ``store_wakeups``,
    * ``worst`` outcome (triple_fault > shutdown > panic > corrupted > timeout > unfinished > resumed),
      ``worst_seed``
      (the lowest seed giving it) and ``command``: ``python -m lab run ...`` reproducing it,
    * ``settings`` (the hazard's settings of that run), ``label`` ("k/n fail [lo-hi%]" or
      "n/a") and ``description``.

    ``matrix(df)`` turns it into one row per fix and one column per hazard.  Runs go through
    ``executor.submit(lab.campaign.run_one, config)`` (None: here, in order), each distinct
    configuration once; ``progress(done, total)`` is called after each run (and, while the
    stray stand-in is in use, first after each copy-window probe); None draws a tqdm.auto bar
    once it takes a second (``lab.campaign.ProgressBar``), False nothing.  More than
    ``lab.campaign.MAX_CAMPAIGN_RUNS`` runs: ValueError before anything is built.  Each row also
    has ``resumes_to_failure`` with ``resumes_low``, ``resumes_high`` (1 / rate and its
    interval from the Wilson bounds: ``lab.campaign.resumes_to_failure``)."""
    import pandas as pd

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    fix_names = _select(fixes, FIXES, "fix")
    for f in fix_names:
        get_fix(f)
    if isinstance(hazards, Mapping):
        table = dict(hazards)
        hazard_names = list(table)
    else:
        table = HAZARDS
        hazard_names = _select(hazards, HAZARDS, "hazard")
    base_over = HAZARDS[BASELINE][1]  # every cell: the baseline plus its hazard's own settings
    if hasattr(seeds, "__len__"):
        check_size(len(fix_names) * len(hazard_names) * len(seeds),  # type: ignore[arg-type]
                   f"{len(fix_names)} fixes x {len(hazard_names)} hazards x {len(seeds):,} seeds")  # type: ignore[arg-type]
    seeds = sorted(set(int(s) for s in seeds))
    if not seeds or seeds[0] < 0:
        raise ValueError("seeds: at least one, each >= 0")
    if seeds[-1] > MAX_SEED:  # else every cell would read "does not apply" (Config refuses the seed)
        raise ValueError(f"seeds: each at most 2**63 - 1 (lab.validate.MAX_SEED), got {seeds[-1]}")

    # 1. the configuration of every run, or why the cell does not apply
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    pending: list[tuple[tuple[str, str], int, Config, Overrides]] = []  # hazard settings need the window
    for fix in fix_names:
        for hz in hazard_names:
            desc, fn = table[hz]
            cell = cells[(fix, hz)] = {"description": desc, "applies": True, "reason": "", "configs": {}}
            for seed in seeds:
                try:
                    base = Config.from_preset(preset, fix=fix, seed=seed)
                    base = dataclasses.replace(base, **base_over(base))
                    if getattr(fn, "needs_window", False) and not has_stray():
                        pending.append(((fix, hz), seed, base, fn))
                        continue
                    over = fn(base)
                    _prepare(cell, seed, base, over)
                except ValueError as exc:
                    cell["applies"], cell["reason"] = False, str(exc)
                    break
    done = [0]
    total = [0]
    if progress is None:
        from .campaign import ProgressBar
        progress = ProgressBar()

    def tick() -> None:
        done[0] += 1
        if progress:
            progress(done[0], total[0])

    if pending:  # the stand-in for Config.stray: the copy window of each run, through the executor
        probes = sorted({base for _, _, base, _ in pending if base not in _windows}, key=repr)
        total[0] = len(probes)
        for cfg, win in zip(probes, _submit_all(copy_window, probes, executor, tick)):
            _windows[cfg] = win
        for key, seed, base, fn in pending:
            cell = cells[key]
            if not cell["applies"]:
                continue
            try:
                _prepare(cell, seed, base, fn(base))
            except ValueError as exc:
                cell["applies"], cell["reason"] = False, str(exc)
        for key in {k for k, _, _, _ in pending}:
            cells[key]["configs"] = dict(sorted(cells[key]["configs"].items()))

    # 2. run each distinct configuration once
    unique = list(dict.fromkeys(cfg for cell in cells.values() if cell["applies"]
                                for cfg, _ in cell["configs"].values()))
    done[0], total[0] = 0, len(unique)
    by_config = dict(zip(unique, _submit_all(run_one, unique, executor, tick)))
    _windows.clear()
    if hasattr(progress, "close"):
        progress.close()

    # 3. reduce each cell
    rows = []
    for (fix, hz), cell in cells.items():
        row: dict[str, Any] = {"fix": fix, "hazard": hz, "applies": cell["applies"], "reason": cell["reason"],
                               "description": cell["description"]}
        recs = [(seed, cfg, over, by_config[cfg]) for seed, (cfg, over) in cell["configs"].items()] \
            if cell["applies"] else []
        n = len(recs)
        counts = {o: sum(1 for *_, rec in recs if rec["outcome"] == o) for o in OUTCOMES}
        judged = n - counts["unfinished"]
        k = judged - counts["resumed"]
        row.update(n=n, **counts, judged=judged, failures=k)
        if n:
            lo, hi = wilson(k, judged) if judged else (math.nan, math.nan)
            mean, rlo, rhi = resumes_to_failure(k, judged, lo, hi) if judged else (math.nan,) * 3
            row.update(failure_rate=k / judged if judged else math.nan, ci_low=lo, ci_high=hi,
                       resumes_to_failure=mean, resumes_low=rlo, resumes_high=rhi)
            worst = min((rec["outcome"] for *_, rec in recs), key=severity)
            seed, cfg, over, _ = next(x for x in recs if x[3]["outcome"] == worst)
            label = cell_label(k, judged, lo, hi) if judged else "none judged"
            if counts["unfinished"]:
                label += f" ({counts['unfinished']} unfinished)"
            row.update(worst=worst, worst_seed=seed, command=run_command(cfg), settings=settings_of(cfg),
                       label=label)
        else:
            row.update(failure_rate=math.nan, ci_low=math.nan, ci_high=math.nan, resumes_to_failure=math.nan,
                       resumes_low=math.nan, resumes_high=math.nan, worst=None, worst_seed=None,
                       command=None, settings=None, label="n/a")
        for c in COSTS:
            vals = [rec.get(c) for *_, rec in recs]
            vals = [float(v) for v in vals if v is not None]
            row[c] = sum(vals) / len(vals) if vals else math.nan
        rows.append(row)
    columns = ["fix", "hazard", "applies", "reason", "n", *OUTCOMES, "judged", "failures", "failure_rate", "ci_low",
               "ci_high", "resumes_to_failure", "resumes_low", "resumes_high", *COSTS, "worst", "worst_seed", "command",
               "settings", "label", "description"]
    df = pd.DataFrame.from_records(rows, columns=columns)
    df["worst_seed"] = df["worst_seed"].astype("Int64")  # a whole number, or <NA> where n/a
    df = df.set_index(["fix", "hazard"])
    df.attrs.update(preset=preset, seeds=seeds, fixes=fix_names, hazards=hazard_names)
    return df


def _prepare(cell: dict[str, Any], seed: int, base: Config, over: Mapping[str, Any]) -> None:
    missing = _missing_settings(over)
    if missing:
        raise ValueError(f"this model has no setting {', '.join(missing)} yet")
    cfg = dataclasses.replace(base, **over)
    cell["configs"][seed] = (cfg, dict(over))


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def worst_run(df, fix: str, hazard: str) -> dict[str, Any]:  # noqa: ANN001
    """The keyword arguments of ``Resume(...)`` / ``widgets.ResumeLab(...)`` for the cell's
    worst run: preset, fix, seed and its settings (what its ``command`` says)."""
    row = _row(df, fix, hazard)
    if not row["applies"]:
        raise ValueError(f"{fix} does not apply under {hazard!r}: {row['reason']}")
    return {"preset": df.attrs["preset"], "fix": fix, "seed": int(row["worst_seed"]), **row["settings"]}


def failure_for(df, fix: str, prefer: Sequence[str] = ()) -> str | None:  # noqa: ANN001
    """The first hazard, of ``prefer`` and then in the matrix's order, under which ``fix``
    failed at least once (None: it never failed in these seeds)."""
    hazards = df.attrs.get("hazards") or list(dict.fromkeys(df.index.get_level_values("hazard")))
    for hz in [*prefer, *hazards]:
        row = _row(df, fix, hz)
        if row["applies"] and row["failures"] > 0:
            return hz
    return None


def _row(df, fix: str, hazard: str):  # noqa: ANN001, ANN202
    try:
        return df.loc[(fix, hazard)]
    except KeyError:
        raise ValueError(f"no cell ({fix!r}, {hazard!r}) in this matrix; fixes: {', '.join(df.attrs.get('fixes', []))}; "
                         f"hazards: {', '.join(df.attrs.get('hazards', []))}") from None


def matrix(df, value: str = "label"):  # noqa: ANN001, ANN201 - pandas
    """One row per fix, one column per hazard (in the order compared), each cell ``value``
    (a column of ``compare``'s result, e.g. "label", "failure_rate", "wakeups_per_ms")."""
    fixes = df.attrs.get("fixes") or list(dict.fromkeys(df.index.get_level_values("fix")))
    hazards = df.attrs.get("hazards") or list(dict.fromkeys(df.index.get_level_values("hazard")))
    out = df[value].unstack("hazard").reindex(index=fixes, columns=hazards)
    out.columns.name, out.index.name = "hazard", "fix"
    return out


def to_records(df) -> list[dict[str, Any]]:  # noqa: ANN001
    """Every cell as a JSON-ready dict (NaN -> None)."""
    import pandas as pd

    out = []
    for (fix, hz), row in df.iterrows():
        rec: dict[str, Any] = {"fix": fix, "hazard": hz}
        for k, v in row.items():
            if v is None or (not isinstance(v, (dict, list, tuple, str)) and pd.isna(v)):
                v = None
            elif isinstance(v, (float, np.floating)) and math.isinf(v):  # no failure: no finite mean (JSON has no inf)
                v = None
            rec[str(k)] = _jsonable(v.item() if isinstance(v, np.generic) else v)
        out.append(rec)
    return out


def to_json(df) -> dict[str, Any]:  # noqa: ANN001
    """One JSON document: the preset, seeds, fixes and hazards compared, and every cell."""
    return {"preset": df.attrs.get("preset"), "seeds": list(df.attrs.get("seeds", [])),
            "fixes": list(df.attrs.get("fixes", [])), "hazards": list(df.attrs.get("hazards", [])),
            "interval": "Wilson 95% (scipy.stats.binomtest(k, n).proportion_ci(method='wilson'))",
            "cells": to_records(df)}


def to_text(df) -> str:  # noqa: ANN001
    """The matrix as a table for a terminal: fixes as rows, hazards as columns."""
    m = matrix(df, "label")
    hazards = list(m.columns)
    first = max([len("fix")] + [len(f) for f in m.index])
    widths = [max(len(h), *(len(str(x)) for x in m[h])) for h in hazards]
    lines = [f"preset {df.attrs.get('preset')}, seeds {_seed_text(df.attrs.get('seeds', []))} "
             f"({len(df.attrs.get('seeds', []))} runs per cell); each cell: failures/runs [Wilson 95% interval]",
             "  ".join([f"{'fix':<{first}}"] + [f"{h:<{w}}" for h, w in zip(hazards, widths)]).rstrip()]
    for fix, row in m.iterrows():
        lines.append("  ".join([f"{fix:<{first}}"] + [f"{str(row[h]):<{w}}" for h, w in zip(hazards, widths)]).rstrip())
    na = df[~df["applies"]]
    if len(na):
        lines.append("n/a:")
        for (fix, hz), row in na.iterrows():
            lines.append(f"  {fix} / {hz}: {row['reason']}")
    return "\n".join(lines)


def _seed_text(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    parts: list[str] = []
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(parts)
