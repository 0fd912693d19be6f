"""lab/hw targets: a page walk that misses the TLB, a 4 KiB page store, the model's memory.

Timings are medians of many single calls measured with ``time.perf_counter_ns`` (the clock
call itself, about 0.1 us, is included); memory is measured with ``tracemalloc``.
"""
from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from typing import Callable

import numpy as np

from lab.hw import Machine, walk
from lab.hw.memory import PhysicalMemory
from lab.hw.pagetable import PageTables
from lab.hw.paging import TLB

DIRECT_MAP = 0xFFFF_8800_0000_0000


def _median_us(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, 90th percentile) of ``repeat`` single calls, in microseconds."""
    for _ in range(min(repeat, 1000)):  # warm up
        fn()
    samples = []
    clock = time.perf_counter_ns
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = clock()
            fn()
            samples.append(clock() - t0)
    finally:
        if was_enabled:
            gc.enable()
    samples.sort()
    return statistics.median(samples) / 1e3, samples[int(len(samples) * 0.9)] / 1e3


def _alloc_from(start_pfn: int) -> Callable[[], int]:
    nxt = [start_pfn]

    def alloc() -> int:
        nxt[0] += 1
        return nxt[0] - 1

    return alloc


def bench_walk_tlb_miss_4k():
    """A 4-level walk of a 4 KiB page on an 8 GiB machine, TLB and paging-structure caches
    empty (flushed before each walk, the flush is timed too): <= 5 us median."""
    mem = PhysicalMemory(8 << 30)
    pt = PageTables(mem, _alloc_from(0x1000))
    va = 0xFFFF_C900_1234_5000
    pt.map(va, 0x1_2345_6000)
    pt.map_range(DIRECT_MAP, 0, 64 << 20)  # other mappings around it
    tlb = TLB()
    cr3 = pt.root

    def one() -> object:
        tlb.flush_all()
        return walk(mem, cr3, va + 0x18, tlb=tlb, agent="cpu0")

    w = one()
    ok = len(w.steps) == 4 and w.paddr == 0x1_2345_6018 and not w.tlb_hit
    median, p90 = _median_us(one, 50_000)
    return {"name": "hw: 4-level walk, TLB miss, 4 KiB page", "median_us": median, "target_us": 5.0,
            "p90_us": round(p90, 2), "ok": ok}


def bench_walk_tlb_hit():
    """For comparison: the same translation served by the TLB (no target)."""
    mem = PhysicalMemory(8 << 30)
    pt = PageTables(mem, _alloc_from(0x1000))
    va = 0xFFFF_C900_1234_5000
    pt.map(va, 0x1_2345_6000)
    tlb = TLB()
    walk(mem, pt.root, va, tlb=tlb)
    w = walk(mem, pt.root, va + 8, tlb=tlb)
    median, p90 = _median_us(lambda: walk(mem, pt.root, va + 8, tlb=tlb), 50_000)
    return {"name": "hw: translation, TLB hit", "median_us": median, "target_us": None,
            "p90_us": round(p90, 2), "ok": w.tlb_hit}


def bench_page_store():
    """``write_page`` of a 4 KiB ndarray on an 8 GiB machine (copy plus the monitor check),
    with monitors armed by four CPUs in other pages: <= 3 us median."""
    m = Machine(8, 8 << 30, np.random.default_rng(0))
    for cpu in range(1, 5):
        m.monitor.arm(cpu, (0x10_0000 + cpu) << 12)  # thread_info lines elsewhere
    page = np.arange(512, dtype=np.uint64)
    pfns = [0x18_0000 + i for i in range(1024)]
    state = {"i": 0}

    def one() -> None:
        i = state["i"] = (state["i"] + 1) & 1023
        m.memory.write_page(pfns[i], page, "cpu0")

    median, p90 = _median_us(one, 50_000)
    quiet = all(m.monitor.is_armed_and_quiet(cpu) for cpu in range(1, 5))
    right = int(m.memory.read_u64((pfns[5] << 12) + 8 * 7)) == 7
    return {"name": "hw: 4 KiB page store (ndarray), 4 monitors armed", "median_us": median,
            "target_us": 3.0, "p90_us": round(p90, 2), "ok": quiet and right}


def bench_page_store_hitting_a_monitor():
    """For comparison: the store lands on an armed line and wakes a CPU (no target)."""
    m = Machine(8, 8 << 30, np.random.default_rng(0))
    page = np.zeros(512, dtype=np.uint64)
    line = 0x10_0000 << 12

    def one() -> None:
        m.monitor.arm(1, line)
        m.memory.write_page(line >> 12, page, "cpu0")

    median, p90 = _median_us(one, 20_000)
    return {"name": "hw: page store that triggers a monitor (re-armed each time)", "median_us": median,
            "target_us": None, "p90_us": round(p90, 2), "ok": m.monitor.armed[1].triggered}


def bench_machine_memory():
    """An 8 GiB, 8-CPU machine with 1,000 materialized frames: <= 40 MiB of Python memory
    (tracemalloc, which also sees numpy's buffers).  median_us is the time to build it."""
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter_ns()
    m = Machine(8, 8 << 30, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for pfn in rng.choice(m.memory.nr_frames, size=1000, replace=False):
        m.memory.write_u64(int(pfn) << 12, int(pfn), "cpu0")
    elapsed_us = (time.perf_counter_ns() - t0) / 1e3
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mib = current / (1 << 20)
    ok = m.memory.materialized_count == 1000 and mib <= 40
    return {"name": "hw: 8 GiB machine, 1,000 frames (build time; memory in MiB)", "median_us": elapsed_us,
            "target_us": None, "MiB": round(mib, 2), "peak_MiB": round(peak / (1 << 20), 2),
            "target_MiB": 40, "ok": ok}
