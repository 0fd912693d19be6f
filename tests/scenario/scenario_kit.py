"""Helpers for the scenario tests: run a resume once and boil it down to the facts that explain
its outcome (which tables a woken CPU walked, what had been copied by then), so that a seed
sweep can keep one small record per run instead of a whole ``Resume``.

Vocabulary (see /work/shared/FACTS.md sections 1, 2 and 5):

* the *boot path* of CPU c: the table frames (PML4, PDPT, PD[, PT]) that a walk of c's
  ``mwait_ptr`` reads through the restore kernel's tables right after boot;
* a *store wake*: a ``wake`` event whose reason is a store to the monitored line;
* the *copy index* of an event: how many pbes the copy loop has restored before it (the copy
  runs in pblist order and reports either one ``page_copied`` (data ``index``) or, in bulk, one
  ``pages_copied`` (data ``first``, ``count``)), so a frame with pbe index i has been restored
  at that event exactly when i < copy index;
* the *window*: open while the brk page tables (low PFNs, copied near the end of the
  descending copy) still hold the restore kernel's content; once they are restored a walk goes
  through the image kernel's own (already restored) tables.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lab.hw.memory import ContentTag
from lab.hw.paging import walk
from lab.kernel.layout import PAGE_SIZE
from lab.scenario import Resume

#: the seeds the sweep looks at (<= 12; about 1 s per run with the "default" preset, two fixes)
SWEEP_SEEDS = tuple(range(8))


def as_array(content: ContentTag | np.ndarray) -> np.ndarray:
    return content.materialize() if isinstance(content, ContentTag) else content


def same_bytes(a: ContentTag | np.ndarray | None, b: ContentTag | np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, ContentTag) and isinstance(b, ContentTag):
        return a == b
    return bool(np.array_equal(as_array(a), as_array(b)))


def is_store_wake(ev: Any) -> bool:
    return ev.kind == "wake" and "monitored line" in ev.data.get("reason", "")


@dataclass
class WokenCpu:
    """What happened to one CPU woken by a store to its monitored line."""

    cpu: int
    wake_copy_index: int  # pages copied when the store woke it
    walked: bool  # False when the run stopped (panic) before it got to walk
    walk_copy_index: int = -1  # pages copied when it walked mwait_ptr (clflush)
    walk_fault: str | None = None
    walk_paddr: int | None = None
    walk_tables: list[int] = field(default_factory=list)  # frames the walk read, PML4 first
    brk_restored: bool = False  # every brk page-table frame restored before the walk
    changed_on_path: list[int] = field(default_factory=list)  # boot-path frames restored with other bytes

    @property
    def explanation(self) -> str | None:
        """Why this CPU's walk could not fault, or None if nothing explains it."""
        if not self.walked or self.walk_fault is not None:
            return None
        if self.brk_restored:
            return "window closed"
        if not self.changed_on_path:
            return "tables intact"
        return None


@dataclass
class Record:
    """The facts of one finished run (small: no memory, no events)."""

    preset: str
    fix: str
    seed: int
    outcome: str | None
    store_wakes: int
    woken: dict[int, WokenCpu]
    ti_pbe: dict[int, int | None]  # cpu -> pbe index of its restore-kernel thread_info frame
    brk_pbe: list[int | None]
    restore_tables: list[int]
    image_tables: list[int]
    restore_roles: dict[int, str]
    image_roles: dict[int, str]
    pblist_len: int
    fault: dict[str, Any] | None = None  # the first faulting mwait_ptr walk, with its context
    online: set[int] = field(default_factory=set)
    mismatched: int | None = None

    @property
    def failed(self) -> bool:
        return self.outcome in ("panic", "triple_fault")


def boot_paths(r: Resume) -> dict[int, list[int]]:
    """Table frames on each non-boot CPU's walk of its mwait_ptr through the restore kernel's
    tables, as booted (no A bits touched)."""
    k = r.restore_kernel
    out = {}
    for c in range(1, r.config.cpus):
        w = walk(r.machine.memory, k.cr3, k.layout.mwait_ptr(c), set_accessed=False)
        assert w.fault is None, f"CPU {c}: mwait_ptr does not translate at boot: {w.fault}"
        out[c] = [s.table // PAGE_SIZE for s in w.steps]
    return out


def record_run(preset: str, fix: str, seed: int, **overrides: Any) -> Record:
    """Build, run and analyse one resume."""
    r = Resume(preset=preset, fix=fix, seed=seed, **overrides)
    lay = r.restore_kernel.layout
    mem = r.machine.memory
    paths = boot_paths(r)
    watched = {p for path in paths.values() for p in path} | set(lay.table_frames)
    boot_content = {p: mem.content(p) for p in watched}
    r.run()
    return analyse(r, paths, boot_content)


def analyse(r: Resume, paths: dict[int, list[int]], boot_content: dict[int, Any]) -> Record:
    lay = r.restore_kernel.layout
    pbl = r.loaded.pblist
    brk_pbe = [pbl.index_of(p) for p in lay.image.brk_pgt_buf]
    brk_last = max((i for i in brk_pbe if i is not None), default=-1)

    def changed(pfn: int, copy_index: int) -> bool:
        i = pbl.index_of(pfn)
        return i is not None and i < copy_index and not same_bytes(boot_content[pfn], r.image.content(pfn))

    copies = 0
    woken: dict[int, WokenCpu] = {}
    pending: dict[int, WokenCpu] = {}
    fault = None
    for ev in r.events:
        if ev.kind == "page_copied":
            assert ev.data["index"] == copies, f"copy out of pblist order at {ev}"
            copies += 1
        elif ev.kind == "pages_copied":
            assert ev.data["first"] == copies, f"copy out of pblist order at {ev}"
            copies += ev.data["count"]
        elif is_store_wake(ev) and ev.cpu not in woken:
            woken[ev.cpu] = pending[ev.cpu] = WokenCpu(ev.cpu, copies, walked=False)
        elif ev.kind == "walk" and ev.data.get("why") == "clflush" and ev.cpu in pending:
            w = pending.pop(ev.cpu)
            w.walked = True
            w.walk_copy_index = copies
            w.walk_fault = ev.data["fault"]
            w.walk_paddr = ev.data["paddr"]
            w.walk_tables = [tbl // PAGE_SIZE for _, tbl, _, _ in ev.data["steps"]]
            w.brk_restored = brk_last >= 0 and brk_last < copies
            w.changed_on_path = [p for p in paths[ev.cpu] if changed(p, copies)]
            if w.walk_fault is not None and fault is None:
                lvl, tbl, idx, entry = ev.data["steps"][-1]
                pfn = tbl // PAGE_SIZE
                boot_entry = int(as_array(boot_content[pfn])[idx]) if pfn in boot_content else None
                fault = {"cpu": ev.cpu, "va": ev.data["va"], "level": lvl, "table": pfn, "index": idx,
                         "entry": entry, "boot_entry": boot_entry, "table_pbe": pbl.index_of(pfn),
                         "copy_index": copies, "table_changed": changed(pfn, copies),
                         "brk_restored": w.brk_restored}
    ti_pbe = {c: pbl.index_of(lay.idle_stacks[c]) for c in range(1, r.config.cpus)}
    outcome = r.outcome
    return Record(
        preset=r.config.preset, fix=r.config.fix, seed=r.config.seed, outcome=outcome,
        store_wakes=sum(1 for e in r.events if is_store_wake(e)), woken=woken, ti_pbe=ti_pbe,
        brk_pbe=brk_pbe, restore_tables=list(lay.table_frames),
        image_tables=list(r.image_kernel.layout.table_frames),
        restore_roles={p: lay.roles.get(p, "") for p in watched_roles(r, fault)},
        image_roles={p: r.image_kernel.layout.roles.get(p, "") for p in watched_roles(r, fault)},
        pblist_len=len(r.loaded.pblist), fault=fault, online=set(r.image_kernel.online),
        mismatched=len(r.mismatched_frames()) if outcome in ("resumed", "corrupted") else None)


def watched_roles(r: Resume, fault: dict[str, Any] | None) -> set[int]:
    lay = r.restore_kernel.layout
    frames = set(lay.table_frames) | set(r.image_kernel.layout.table_frames)
    frames |= {lay.idle_stacks[c] for c in range(1, r.config.cpus)}
    if fault is not None:
        frames.add(fault["table"])
    return frames


class RecordCache:
    """Records keyed by (preset, fix, seed, overrides), computed once per test session."""

    def __init__(self) -> None:
        self._records: dict[tuple, Record] = {}

    def get(self, preset: str, fix: str, seed: int, **overrides: Any) -> Record:
        key = (preset, fix, seed, tuple(sorted(overrides.items())))
        if key not in self._records:
            self._records[key] = record_run(preset, fix, seed, **overrides)
        return self._records[key]

    def first(self, predicate, preset: str = "default", fix: str = "mwait", seeds=SWEEP_SEEDS) -> Record | None:
        """The first record over ``seeds`` that satisfies ``predicate`` (runs only as many as
        needed, in seed order)."""
        for s in seeds:
            rec = self.get(preset, fix, s)
            if predicate(rec):
                return rec
        return None


def main_in_process(argv: list[str], capsys) -> subprocess.CompletedProcess:
    """lab.cli.main in this process (an exception escaping it fails the test, as a traceback
    would); argparse's own errors leave through SystemExit."""
    from lab.cli import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def saved_trace(folder: Path, seed: int) -> Path:
    """A finished workshop run with the hlt fix, saved as ``good.json`` in ``folder``."""
    from lab import trace

    path = folder / "good.json"
    r = Resume(preset="workshop", fix="hlt", seed=seed)
    r.run()
    trace.save(r, path)
    return path
