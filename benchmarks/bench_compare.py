"""``python -m lab compare --preset workshop --seeds 0-31 --jobs 2``: every fix against every
hazard, 32 seeds per cell, on a process pool of 2 (this project's machines have 2 cores).

One compare is hundreds of resumes (minutes, not microseconds), so this times one call instead
of harness.median_us's warm-up plus batches: the median of ``REPEAT`` timed calls (1 by
default).  No target: the note states the figure; ``runs`` and ``us_per_run`` say what it
covered."""
from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from lab.compare import HAZARDS, compare
from lab.fixes import FIXES

REPEAT = int(os.environ.get("BENCH_COMPARE_REPEAT", "1"))


def bench_compare_workshop_32_seeds_jobs_2():
    """compare("workshop", every fix, every hazard, seeds 0-31) on ProcessPoolExecutor(2)."""
    samples = []
    df = None
    for _ in range(REPEAT):
        t = time.perf_counter()
        with ProcessPoolExecutor(2) as pool:
            df = compare("workshop", seeds=range(32), executor=pool)
        samples.append(time.perf_counter() - t)
    median = statistics.median(samples) * 1e6
    runs = int(df["n"].sum())
    return {"name": "compare workshop, every fix x hazard, seeds 0-31, --jobs 2", "median_us": median,
            "target_us": None, "runs": runs, "cells": len(df), "fixes": len(FIXES), "hazards": len(HAZARDS),
            "us_per_run": round(median / max(runs, 1)), "ok": runs > 0 and bool(df["applies"].any())}
