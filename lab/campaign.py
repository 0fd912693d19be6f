"""Seeded campaigns: many resumes over fixes and seeds, on any concurrent.futures Executor.

Each run is independent and fully determined by its Config (one generator per run from its
seed), so the results do not depend on the executor, the number of workers or the order in
which runs finish: they are returned sorted by (fix, seed).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from concurrent.futures import Executor
from typing import Any, Callable, Iterable, Sequence

from .fixes import get_fix
from .scenario import Config, Resume
from .trace import digest

Progress = Callable[[int, int], None]  # (runs done, runs in all)


def run_one(config: Config) -> dict[str, Any]:
    """One resume, reduced to a flat record (picklable, for process pools), with what the fix
    cost during the copy: wake-ups of the non-boot CPUs (and per ms of copy), their time awake,
    IPIs sent, safe pages used, CPUs sharing a monitored line."""
    r = Resume(config)
    r.run()
    faults = r.faults()
    first = faults[0] if faults else None
    return {"preset": config.preset, "fix": config.fix, "seed": config.seed, "outcome": r.outcome,
            "fault_cpu": first["cpu"] if first else None, "fault_address": first["address"] if first else None,
            "store_wakeups": sum(1 for e in r.events if e.kind == "wake" and "monitored line" in e.data["reason"]),
            "pages_copied": r.runtime.copied, "time_ns": r.now, "resume_ended_ns": r.resume_ended_ns,
            **copy_costs(r), "digest": digest(r.events)}


def copy_costs(r: Resume) -> dict[str, Any]:
    """The non-boot CPUs during the copy (from the copy phase to the image kernel, or to the
    end): wake-ups, wake-ups per ms, ns spent running; IPIs and safe pages of the whole run."""
    start = end = None
    for e in r.events:
        if e.kind == "phase" and e.data["phase"] == "copy":
            start = e.t
        elif e.kind == "phase" and e.data["phase"] == "image-kernel" and start is not None:
            end = e.t
            break
    if start is None:
        start = end = r.now
    end = r.now if end is None else end
    wakes = 0
    awake = 0
    running_since: dict[int, int] = {}
    for e in r.events:
        if e.cpu is None or e.cpu == 0:
            continue
        if e.kind == "wake":  # leaving the C-state counts as awake
            wakes += start <= e.t <= end
            running_since.setdefault(e.cpu, e.t)
        elif e.kind == "state":
            if e.data.get("state") == "running":
                running_since.setdefault(e.cpu, e.t)
            elif e.cpu in running_since:
                t0 = running_since.pop(e.cpu)
                awake += max(0, min(e.t, end) - max(t0, start))
    for t0 in running_since.values():
        awake += max(0, end - max(t0, start))
    span_ms = max(end - start, 1) / 1e6
    return {"wakeups": wakes, "wakeups_per_ms": round(wakes / span_ms, 3), "awake_ns": awake,
            "ipis": r.machine.apic.sent, "safe_pages": len(r.loaded.safe.taken),
            "sharing_cpus": r.runtime.sharing_cpus}


def parse_seeds(text: str) -> list[int]:
    """'0-15', '3', '1,4,9-11' -> seeds.  Raises ValueError naming the allowed forms."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            a, b = int(lo), int(hi) if hi else int(lo)
            if a < 0 or b < a:
                raise ValueError
            seeds.extend(range(a, b + 1))
    except ValueError:
        raise ValueError(f"malformed seeds {text!r}; allowed: N, A-B or a comma list of those, "
                         "with 0 <= A <= B (e.g. 0-15 or 1,4,9-11)") from None
    return sorted(set(seeds))


def sweep(base: Config, fixes: Sequence[str], seeds: Iterable[int], executor: Executor | None = None,
          progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run ``base`` with every fix and seed.  ``executor`` (e.g. a ProcessPoolExecutor, or a
    dask.distributed client's ``get_executor()``) runs them; None runs them here, in order."""
    for f in fixes:
        get_fix(f)
    configs = [dataclasses.replace(base, fix=f, seed=s) for f in fixes for s in seeds]
    total = len(configs)
    records: list[dict[str, Any]] = []
    if executor is None:
        for c in configs:
            records.append(run_one(c))
            if progress:
                progress(len(records), total)
    else:
        futures = [executor.submit(run_one, c) for c in configs]
        for fut in futures:
            records.append(fut.result())
            if progress:
                progress(len(records), total)
    return sorted(records, key=lambda rec: (rec["fix"], rec["seed"]))


def tally(records: Iterable[dict[str, Any]]) -> dict[str, Counter]:
    """Outcomes counted per fix."""
    out: dict[str, Counter] = {}
    for rec in records:
        out.setdefault(rec["fix"], Counter())[rec["outcome"]] += 1
    return out


def to_dataframe(records: Sequence[dict[str, Any]]):  # noqa: ANN201 - pandas is optional
    """The records as a pandas DataFrame (pandas is not a dependency of the lab)."""
    try:
        import pandas as pd
    except ImportError:
        raise ValueError("to_dataframe needs pandas; install it (pip install pandas) or use the records") from None
    return pd.DataFrame.from_records(list(records))
