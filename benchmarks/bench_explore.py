"""``python -m lab explore --preset workshop --inject-window nmi:1@0-60ms --resolution 0.1ms
--jobs 2`` for every fix: one NMI to CPU 1 at each of the 600 times of a 60 ms window, under
every fix, on a process pool of 2 (one fix per task; this project's machines have 2 cores).

Target (issue 13): <= 60 s in all.  The row also says how many schedules the bounds hold, how
many were distinct (after pruning, lab.explore), and how many resumes were run."""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor

from lab.explore import explore_fixes
from lab.fixes import FIXES

TARGET_S = 60.0


def bench_explore_workshop_nmi_60ms_every_fix_jobs_2():
    """explore(workshop, fix, nmi:1@0-60ms at 0.1 ms) for every fix on ProcessPoolExecutor(2)."""
    t = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        results = explore_fixes("workshop", list(FIXES), ["nmi:1@0-60ms"], "0.1ms", executor=pool)
    elapsed = time.perf_counter() - t
    schedules = sum(r.schedules for r in results)
    distinct = sum(r.distinct for r in results)
    runs = sum(r.run for r in results)
    return {"name": "explore workshop, nmi:1@0-60ms every 0.1 ms, every fix, --jobs 2",
            "median_us": elapsed * 1e6, "target_us": TARGET_S * 1e6, "fixes": len(results),
            "schedules": schedules, "distinct": distinct, "runs": runs,
            "failing_fixes": sum(1 for r in results if r.counterexamples),
            "ok": elapsed <= TARGET_S and all(r.complete for r in results)}
