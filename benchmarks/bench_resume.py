"""Targets of the faithful restore (issue 7): whole resumes with the v4.7 loader's long copy, peak
memory, and one step()."""
from __future__ import annotations

import statistics
import time
import tracemalloc

from harness import median_us

from lab.scenario import Resume


def _full(preset: str) -> None:
    r = Resume(preset=preset, fix="mwait", seed=0)
    r.run()


def bench_default_full_run():
    """Build (two boots, snapshot, load) plus run to the end: <= 0.25 s median."""
    return {"name": "default preset, one full run", "median_us": median_us(lambda: _full("default"), repeat=5, min_time=0),
            "target_us": 250_000}


def bench_report_full_run():
    """report-2016 with mwait, to the panic, and with hlt, to the end: each <= 0.25 s median."""
    mwait = median_us(lambda: _full("report-2016"), repeat=5, min_time=0)
    hlt = median_us(lambda: Resume(preset="report-2016", fix="hlt", seed=0).run(), repeat=5, min_time=0)
    return {"name": "report-2016, one full run (hlt; mwait in extra)", "median_us": hlt, "target_us": 250_000,
            "mwait_us": round(mwait), "ok": mwait <= 250_000}


def bench_default_peak_memory():
    """Peak Python memory of one default run: <= 100 MiB (tracemalloc)."""
    tracemalloc.start()
    t = time.perf_counter()
    _full("default")
    elapsed = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mib = peak / (1 << 20)
    return {"name": "default preset, peak memory (MiB)", "median_us": elapsed * 1e6, "peak_MiB": round(mib, 1),
            "ok": mib <= 100, "target_MiB": 100}


def bench_workshop_full_run():
    return {"name": "workshop preset, one full run", "median_us": median_us(lambda: _full("workshop"), repeat=5),
            "target_us": 200_000}


def bench_one_step():
    """Median of the individual step() calls of a report-2016 run: <= 1 ms."""
    r = Resume(preset="report-2016", fix="hlt", seed=0)
    times = []
    while not r.finished:
        t = time.perf_counter()
        r.step()
        times.append(time.perf_counter() - t)
    return {"name": "one Resume.step()", "median_us": statistics.median(times) * 1e6, "target_us": 1_000,
            "max_us": round(max(times) * 1e6), "steps": len(times)}


def bench_server_mwait_full_run():
    """`server` (192 CPUs, 256 GiB, 5 GiB image) with mwait, build plus run to the end: <= 2 s
    median and <= 300 MiB peak (issue 8).  Also reported: the zero-page ping-pong run to the
    preset's step budget (no target: it stops 'unfinished' by design)."""
    t = median_us(lambda: _full("server"), repeat=3, min_time=0)
    tracemalloc.start()
    _full("server")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mib = peak / (1 << 20)
    z0 = time.perf_counter()
    z = Resume(preset="server", fix="zero-page", seed=0)
    z.run()
    zero_s = time.perf_counter() - z0
    costs = z.copy_costs()
    return {"name": "server preset, one full run (mwait)", "median_us": t, "target_us": 2_000_000,
            "peak_MiB": round(mib, 1), "target_MiB": 300, "ok": mib <= 300 and z.outcome == "unfinished",
            "zero_page_s": round(zero_s, 1), "zero_page_steps": z.steps,
            "zero_page_wakeups_per_cpu_ms": round(costs["wakeups_per_ms"] / (z.config.cpus - 1), 2),
            "zero_page_sharing_cpus": costs["sharing_cpus"]}
