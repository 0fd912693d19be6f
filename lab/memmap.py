"""The physical memory of a resume, frame by frame, summarised in bins: what each frame is to
the restore kernel (its page tables, the idle stacks whose thread_info lines are monitored, the
zero page, the kernel image, safe pages, image pages loaded in place, other memory in use, free,
not RAM) and, for the frames on ``restore_pblist``, whether the copy has reached them yet.

Pure model code (numpy only): the memory-map widget draws it, the tests check it.  Built in
one pass over per-frame category codes (a byte per frame, ~2.4 MB for the 8 GiB presets); the
copy's progress per bin comes from the pblist in copy order, so a step updates only the
pending/restored split (``MemoryMap.split``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .scenario import Resume

# Base categories: a partition of the frames (each frame is in exactly one).
PAGE_TABLE, MONITORED, ZERO_PAGE, KERNEL_IMAGE, SAFE, IN_PLACE, OTHER, FREE, NOT_RAM = range(9)
CATEGORIES = ("page tables", "monitored lines (idle stacks)", "zero page", "kernel image",
              "safe pages", "image loaded in place", "other in use", "free", "not RAM")
#: what a bin is drawn as: the base categories plus the copy's two states of pblist frames
DISPLAY = ("page tables", "monitored lines (idle stacks)", "zero page", "kernel image",
           "image pages pending", "image pages restored", "safe pages", "image loaded in place",
           "other in use", "free", "not RAM")
PENDING_D, RESTORED_D = 4, 5
_PAD = 255  # frames past the end of memory in the last bin (not counted)


def role_category(role: str | None) -> int | None:
    """The base category a restore-kernel role names, or None for a role that is only
    "in use" (early reservations, per-CPU areas, the trampoline, ...)."""
    if not role:
        return None
    if ("pgt" in role or role.startswith("direct-map P") or "page table" in role
            or "PML4" in role):
        return PAGE_TABLE
    if role.startswith("idle stack"):
        return MONITORED
    if role == "empty_zero_page":
        return ZERO_PAGE
    if role.startswith("kernel ") or role == "idt_table":
        return KERNEL_IMAGE
    if "(safe page)" in role:
        return SAFE
    return None


def is_page_table_role(role: str | None) -> bool:
    return role_category(role) == PAGE_TABLE


def _interest(role: str, cat: int | None) -> int:
    """Lower is more interesting (what a click on a bin shows in the page walk)."""
    if cat == PAGE_TABLE:
        return 0 if "temporary" not in role else 4
    if cat == MONITORED:
        return 1 if "thread_info" in role else 2
    if cat == ZERO_PAGE:
        return 3
    if role == "idt_table":
        return 5
    return 9


@dataclass
class MemoryMap:
    """Bins of ``frames_per_bin`` consecutive frames.  ``counts[b, c]``: frames of bin ``b``
    in base category ``c`` (rows sum to the bin's frames, all to ``nr_frames``);
    ``pblist_total[b]``: frames of bin ``b`` the copy writes; ``split(copied)`` divides those
    into pending and restored."""

    nr_frames: int
    frames_per_bin: int
    nbins: int
    counts: np.ndarray  # (nbins, len(CATEGORIES)) int64
    pblist_bins: np.ndarray  # bin of each pbe's original frame, in copy order
    pblist_total: np.ndarray  # (nbins,)
    interesting: np.ndarray  # (nbins,) the frame a click on the bin shows
    roles: list[dict[str, int]]  # per bin: restore-kernel role -> frames (only named roles)
    signature: tuple = ()
    source: object = field(default=None, repr=False)  # the pblist it was built from
    bins: int = 1024
    _copied: int = 0
    _restored: np.ndarray | None = field(default=None, repr=False)

    @property
    def starts(self) -> np.ndarray:
        return np.arange(self.nbins, dtype=np.int64) * self.frames_per_bin

    @property
    def stops(self) -> np.ndarray:
        return np.minimum(self.starts + self.frames_per_bin, self.nr_frames)

    def bin_of(self, pfn: int) -> int:
        if not 0 <= pfn < self.nr_frames:
            raise ValueError(f"no frame {pfn:#x}; allowed: 0 to {self.nr_frames - 1:#x}")
        return pfn // self.frames_per_bin

    def split(self, copied: int) -> tuple[np.ndarray, np.ndarray]:
        """(pending, restored) pblist frames per bin once ``copied`` pages were copied (the
        first ``copied`` entries of the pblist, in its order).  Incremental when the copy only
        moved forward since the last call."""
        copied = max(0, min(int(copied), len(self.pblist_bins)))
        if self._restored is None or copied < self._copied:
            self._restored = np.bincount(self.pblist_bins[:copied], minlength=self.nbins).astype(np.int64)
        elif copied > self._copied:
            self._restored += np.bincount(self.pblist_bins[self._copied:copied], minlength=self.nbins)
        self._copied = copied
        restored = self._restored.copy()
        return self.pblist_total - restored, restored

    def display(self, pending: np.ndarray, restored: np.ndarray) -> np.ndarray:
        """Index into DISPLAY per bin: the most telling thing in it.  Page tables, monitored
        lines, the zero page and the kernel image win; then image pages still pending, then
        restored ones; otherwise the bin's most common base category."""
        c = self.counts
        out = np.full(self.nbins, -1, dtype=np.int64)
        for cat in (PAGE_TABLE, MONITORED, ZERO_PAGE, KERNEL_IMAGE):
            out = np.where((out < 0) & (c[:, cat] > 0), cat, out)
        out = np.where((out < 0) & (pending > 0), PENDING_D, out)
        out = np.where((out < 0) & (restored > 0), RESTORED_D, out)
        rest = [SAFE, IN_PLACE, OTHER, FREE, NOT_RAM]
        dominant = np.argmax(c[:, rest], axis=1) + 6  # DISPLAY index of SAFE is 6, then in order
        return np.where(out < 0, dominant, out)

    def describe_roles(self, b: int, limit: int = 4) -> str:
        items = sorted(self.roles[b].items(), key=lambda kv: (_interest(kv[0], role_category(kv[0])), -kv[1]))
        text = ", ".join(f"{r} x{n}" if n > 1 else r for r, n in items[:limit])
        if len(items) > limit:
            text += f", +{len(items) - limit} more"
        return text


def signature(resume: "Resume") -> tuple:
    """Changes when the restore kernel's roles or reservations change (the temporary page
    tables and the relocated code appear when the copy starts)."""
    k = resume.restore_kernel.layout
    return (len(k.roles), len(resume.loaded.safe.taken), len(resume.loaded.pblist))


def frame_categories(resume: "Resume") -> np.ndarray:
    """The base category of every frame (uint8, one per frame)."""
    lay = resume.restore_kernel.layout
    n = resume.machine.memory.nr_frames
    cat = np.full(n, NOT_RAM, dtype=np.uint8)
    for lo, hi in lay.memblock.usable_pfns():
        cat[max(lo, 0):min(hi, n)] = FREE
    for lo, hi in resume.image.intervals():
        cat[lo:min(hi, n)] = IN_PLACE
    for lo, hi in lay.memblock.intervals():
        cat[lo:min(hi, n)] = OTHER
    taken = np.asarray(resume.loaded.safe.taken, dtype=np.int64)
    if taken.size:
        cat[taken[taken < n]] = SAFE
    img = lay.image.frames
    cat[img.start:min(img.stop, n)] = KERNEL_IMAGE
    if lay.roles:
        pfns = np.fromiter(lay.roles.keys(), dtype=np.int64, count=len(lay.roles))
        cats = np.fromiter((_ROLE_CACHE.get(r, -2) if r in _ROLE_CACHE else _cache_role(r)
                            for r in lay.roles.values()), dtype=np.int64, count=len(lay.roles))
        keep = (cats >= 0) & (pfns < n)
        cat[pfns[keep]] = cats[keep]
    return cat


_ROLE_CACHE: dict[str, int] = {}


def _cache_role(role: str) -> int:
    c = role_category(role)
    _ROLE_CACHE[role] = -1 if c is None else c
    return _ROLE_CACHE[role]


def build(resume: "Resume", bins: int = 1024, pblist_bins: np.ndarray | None = None) -> MemoryMap:
    """Aggregate ``resume``'s memory into at most ``bins`` bins of equal frame counts."""
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a whole number >= 1, got {bins!r}")
    n = resume.machine.memory.nr_frames
    fpb = max(1, -(-n // bins))
    nbins = -(-n // fpb)
    cat = frame_categories(resume)
    padded = np.full(nbins * fpb, _PAD, dtype=np.uint8)
    padded[:n] = cat
    grid = padded.reshape(nbins, fpb)
    counts = np.stack([(grid == c).sum(axis=1) for c in range(len(CATEGORIES))], axis=1).astype(np.int64)
    if pblist_bins is None:
        pbl = resume.loaded.pblist
        orig = np.fromiter((p.orig_address for p in pbl), dtype=np.int64, count=len(pbl))
        pblist_bins = orig // fpb
    total = np.bincount(pblist_bins, minlength=nbins).astype(np.int64)
    # the frame a click shows: the most interesting named frame, else the first frame the copy
    # writes in the bin, else the bin's first frame
    interesting = np.arange(nbins, dtype=np.int64) * fpb
    score = np.full(nbins, 99, dtype=np.int64)
    if len(pblist_bins):
        uniq, first = np.unique(pblist_bins, return_index=True)
        pbl = resume.loaded.pblist
        interesting[uniq] = [pbl[i].orig_address for i in first]
        score[uniq] = 8
    roles: list[dict[str, int]] = [dict() for _ in range(nbins)]
    for pfn, role in resume.restore_kernel.layout.roles.items():
        if not 0 <= pfn < n:
            continue
        b = pfn // fpb
        d = roles[b]
        d[role] = d.get(role, 0) + 1
        s = _interest(role, role_category(role))
        if s < score[b] or (s == score[b] and s < 8 and pfn < interesting[b]):
            score[b] = s
            interesting[b] = pfn
    return MemoryMap(n, fpb, nbins, counts, pblist_bins, total, interesting, roles, signature(resume),
                     resume.loaded.pblist, bins)


def refresh(resume: "Resume", mm: MemoryMap | None, bins: int = 1024) -> MemoryMap:
    """``mm`` if it still describes ``resume``, else a rebuilt map (the pblist's bins are
    reused when only the roles changed)."""
    sig = signature(resume)
    same_run = mm is not None and mm.source is resume.loaded.pblist and mm.bins == bins
    if same_run and mm.signature == sig:
        return mm
    return build(resume, bins, mm.pblist_bins if same_run else None)
