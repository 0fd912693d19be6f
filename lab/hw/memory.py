"""Sparse physical memory.

A frame (4 KiB) is in one of three forms, looked up in this order:

1. materialized: a ``numpy.uint64[512]`` array (little-endian qwords), created on the first
   8-byte store into the frame or on ``materialize()``;
2. tagged: a :class:`ContentTag` that names the frame's content without storing it;
3. covered by a tagged *range* (``fill_range``), which stands for one tag per frame;
4. never written: reads as zero.

Tags let the model hold an 8 GiB machine and a 2 GiB image while only the frames that code
really reads or writes with 8-byte accesses take memory.  Two frames hold equal bytes exactly
when their tags are equal (or their materialized arrays are).

Every store reports the physical bytes it touched and who stored ("cpu3", "loader") to the
registered store observers (the monitor unit); CLFLUSH reports a snoop the same way.
Physical addresses at or above the installed RAM but below ``2**phys_bits`` are not backed:
reads return all ones and stores are dropped, as on a PC bus with nothing behind the address.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
QWORDS_PER_PAGE = PAGE_SIZE // 8
ALL_ONES = (1 << 64) - 1

#: how densely each content kind fills a page with non-zero qwords (one in N)
_KIND_DENSITY = {"zero": 0, "data": 1, "sparse": 16, "text": 1, "stack": 8}
_KIND_CODE = {k: i for i, k in enumerate(sorted(_KIND_DENSITY))}


@dataclass(frozen=True, slots=True)
class ContentTag:
    """Names a page's content: ``kind`` (zero, data, sparse, text, stack), a ``seed`` and an
    ``index``.  Equal tags are equal bytes; the bytes are derived deterministically."""

    kind: str
    seed: int = 0
    index: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KIND_DENSITY:
            raise ValueError(
                f"unknown content kind {self.kind!r}; allowed: {', '.join(sorted(_KIND_DENSITY))}"
            )
        if self.seed < 0 or self.index < 0:
            raise ValueError(f"content tag seed and index must be >= 0, got {self.seed}, {self.index}")
        if self.kind == "zero" and (self.seed or self.index):  # all zero pages are one content
            object.__setattr__(self, "seed", 0)
            object.__setattr__(self, "index", 0)

    def materialize(self) -> np.ndarray:
        """The 512 qwords this tag stands for (same in every process)."""
        density = _KIND_DENSITY[self.kind]
        if density == 0:
            return np.zeros(QWORDS_PER_PAGE, dtype=np.uint64)
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([_KIND_CODE[self.kind], self.seed, self.index]))
        )
        words = rng.integers(0, ALL_ONES, size=QWORDS_PER_PAGE, dtype=np.uint64, endpoint=True)
        if density > 1:
            keep = rng.integers(0, density, size=QWORDS_PER_PAGE) == 0
            words = np.where(keep, words, np.uint64(0))
        return words


ZERO = ContentTag("zero")

#: a store or snoop observer: (first physical byte, number of bytes, agent, "store"|"clflush")
StoreObserver = Callable[[int, int, str, str], None]


@dataclass(frozen=True, slots=True)
class TaggedRange:
    """``count`` frames from ``start_pfn``; frame ``start_pfn + i`` holds
    ``ContentTag(kind, seed, first_index + step * i)``.  ``step`` is 1, or -1 for a run of
    frames filled in the opposite order (the loader's safe pages, handed out last-in first-out,
    hold ascending image pages in descending frames)."""

    start_pfn: int
    count: int
    kind: str
    seed: int
    first_index: int
    step: int = 1

    def index_of(self, pfn: int) -> int:
        return self.first_index + self.step * (pfn - self.start_pfn)

    def tag_of(self, pfn: int) -> ContentTag:
        return ContentTag(self.kind, self.seed, self.index_of(pfn))

    def part(self, start: int, stop: int) -> "TaggedRange":
        """The frames [start, stop) of this range, as a range of their own."""
        return TaggedRange(start, stop - start, self.kind, self.seed, self.index_of(start), self.step)

    def same_content(self, other: "TaggedRange") -> bool:
        """Do the two describe the same content for the frames they share?"""
        return (self.kind, self.seed, self.step) == (other.kind, other.seed, other.step) \
            and self.index_of(other.start_pfn) == other.first_index


_SIZE_RE = re.compile(r"^(\d+)\s*(?:([KMGT])(?:i?B)?|B)?$", re.IGNORECASE)
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str | int) -> int:
    """'256M', '8G', '2GiB', '16 MB', '4096' -> bytes (binary units).  Raises ValueError
    naming the allowed forms."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE_RE.match(str(text).strip()) if isinstance(text, str) else None
        if m is None or not m.group(1).isascii():
            raise ValueError(
                f"malformed size {text!r}; allowed: a whole number with an optional unit "
                "K, M, G or T (e.g. 256M, 8G, 2GiB)"
            )
        value = int(m.group(1)) * (_UNITS[m.group(2).upper()] if m.group(2) else 1)
    if value <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return value


class PhysicalMemory:
    """Sparse physical memory of ``size`` bytes of RAM in a ``phys_bits`` address space.

    Source: SDM vol. 3 ch. 4 (MAXPHYADDR); the all-ones read of unbacked addresses is PC
    platform behaviour (master abort), noted in docs/fidelity.md.
    """

    def __init__(self, size: int, phys_bits: int = 46) -> None:
        if not 36 <= phys_bits <= 52:
            raise ValueError(f"phys_bits must be between 36 and 52 (x86-64 MAXPHYADDR), got {phys_bits}")
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"memory size must be a positive multiple of 4096 bytes, got {size}")
        if size > 1 << phys_bits:
            raise ValueError(
                f"memory size {size:#x} exceeds the {phys_bits}-bit physical address space "
                f"({1 << phys_bits:#x} bytes)"
            )
        self.size = size
        self.phys_bits = phys_bits
        self.nr_frames = size >> PAGE_SHIFT
        self._frames: dict[int, np.ndarray] = {}
        self._tags: dict[int, ContentTag] = {}
        self._range_starts: list[int] = []
        self._ranges: list[TaggedRange] = []
        self.observers: list[StoreObserver] = []
        self._own: list[int] = []  # sorted: the frames in _frames or _tags (content of their own)

    # -- checks -----------------------------------------------------------------------------
    def check_paddr(self, paddr: int, align: int = 1) -> None:
        if paddr < 0 or paddr >= 1 << self.phys_bits:
            raise ValueError(
                f"physical address {paddr:#x} outside the {self.phys_bits}-bit physical address "
                f"space (allowed: 0 to {(1 << self.phys_bits) - 1:#x})"
            )
        if paddr % align:
            raise ValueError(f"physical address {paddr:#x} is not {align}-byte aligned")

    def check_pfn(self, pfn: int) -> None:
        if not 0 <= pfn < self.nr_frames:
            raise ValueError(
                f"frame {pfn:#x} is not RAM (allowed: 0 to {self.nr_frames - 1:#x})"
            )

    # -- what a frame holds -----------------------------------------------------------------
    def _range_of(self, pfn: int) -> TaggedRange | None:
        i = bisect_right(self._range_starts, pfn) - 1
        if i >= 0:
            r = self._ranges[i]
            if pfn < r.start_pfn + r.count:
                return r
        return None

    def tag(self, pfn: int) -> ContentTag | None:
        """The frame's content tag, or None if it is materialized."""
        if pfn in self._frames:
            return None
        t = self._tags.get(pfn)
        if t is not None:
            return t
        r = self._range_of(pfn)
        return r.tag_of(pfn) if r is not None else ZERO

    def is_materialized(self, pfn: int) -> bool:
        return pfn in self._frames

    @property
    def materialized_count(self) -> int:
        return len(self._frames)

    def materialize(self, pfn: int) -> np.ndarray:
        """The frame's live array (created from its tag on first use)."""
        arr = self._frames.get(pfn)
        if arr is None:
            self.check_pfn(pfn)
            arr = self.tag(pfn).materialize()  # type: ignore[union-attr]
            if self._tags.pop(pfn, None) is None:
                insort(self._own, pfn)
            self._frames[pfn] = arr
        return arr

    def read_page(self, pfn: int) -> np.ndarray:
        """A copy of the frame's 512 qwords (does not materialize it)."""
        arr = self._frames.get(pfn)
        if arr is not None:
            return arr.copy()
        self.check_pfn(pfn)
        return self.tag(pfn).materialize()  # type: ignore[union-attr]

    def content(self, pfn: int) -> ContentTag | np.ndarray:
        """What the frame holds, as a tag or a copy of its array: what a snapshot keeps."""
        arr = self._frames.get(pfn)
        return arr.copy() if arr is not None else self.tag(pfn)  # type: ignore[return-value]

    def same_content(self, pfn: int, content: ContentTag | np.ndarray) -> bool:
        """Does the frame hold exactly ``content``?"""
        mine = self._frames.get(pfn)
        if mine is None and isinstance(content, ContentTag):
            return self.tag(pfn) == content
        if mine is None:
            mine = self.read_page(pfn)
        other = content.materialize() if isinstance(content, ContentTag) else content
        return bool(np.array_equal(mine, other))

    # -- loads ------------------------------------------------------------------------------
    def read_u64(self, paddr: int) -> int:
        """An aligned 8-byte load."""
        if paddr & 7:
            self.check_paddr(paddr, 8)
        pfn = paddr >> PAGE_SHIFT
        arr = self._frames.get(pfn)
        if arr is not None:
            return arr.item((paddr & 0xFFF) >> 3)  # a Python int, as int(arr[i]) but faster
        if pfn >= self.nr_frames:
            self.check_paddr(paddr, 8)
            return ALL_ONES
        if paddr < 0:
            self.check_paddr(paddr, 8)
        return int(self.materialize(pfn)[(paddr & 0xFFF) >> 3])

    # -- stores -----------------------------------------------------------------------------
    def _notify(self, paddr: int, nbytes: int, agent: str, kind: str) -> None:
        for observer in self.observers:
            observer(paddr, nbytes, agent, kind)

    def write_u64(self, paddr: int, value: int, agent: str) -> None:
        """An aligned 8-byte store by ``agent``; a store of the value already there is still a
        store (SDM vol. 2 MONITOR: any write to the range triggers it)."""
        if not 0 <= value <= ALL_ONES:
            raise ValueError(f"value {value:#x} does not fit in 64 bits")
        self.check_paddr(paddr, 8)
        pfn = paddr >> PAGE_SHIFT
        if pfn < self.nr_frames:
            self.materialize(pfn)[(paddr & 0xFFF) >> 3] = value
        self._notify(paddr, 8, agent, "store")

    def write_page(self, pfn: int, content: ContentTag | np.ndarray, agent: str) -> None:
        """Store a whole frame (``rep movsq`` of 4 KiB): by tag when the content is tagged, so
        nothing is materialized; every line of the frame is reported as stored."""
        self.check_pfn(pfn)
        if not isinstance(content, ContentTag) and content.shape != (QWORDS_PER_PAGE,):
            raise ValueError(f"a page is 512 qwords, got shape {content.shape}")
        self._set_page(pfn, content)
        self._notify(pfn << PAGE_SHIFT, PAGE_SIZE, agent, "store")

    def _set_page(self, pfn: int, content: ContentTag | np.ndarray) -> None:
        """Give frame ``pfn`` content of its own (a tag, or a copy of 512 qwords)."""
        if pfn not in self._frames and pfn not in self._tags:
            insort(self._own, pfn)
        if isinstance(content, ContentTag):
            self._frames.pop(pfn, None)
            self._tags[pfn] = content
        else:
            self._tags.pop(pfn, None)
            self._frames[pfn] = np.array(content, dtype=np.uint64, copy=True)

    def copy_page(self, src_pfn: int, dst_pfn: int, agent: str) -> None:
        """Copy a frame to another (what ``core_restore_code`` does per pbe)."""
        self.write_page(dst_pfn, self.content(src_pfn), agent)

    def fill_range(
        self, start_pfn: int, count: int, kind: str, seed: int,
        first_index: int | None = None, agent: str = "loader", step: int = 1,
    ) -> None:
        """Describe ``count`` frames at once (boot-time contents, an image loaded in place).

        Reported to observers as one store per frame's lines.  Frames inside the range lose any
        earlier per-frame content.  Ranges may not overlap earlier ranges."""
        if count <= 0:
            raise ValueError(f"range length must be positive, got {count}")
        self.check_pfn(start_pfn)
        self.check_pfn(start_pfn + count - 1)
        if kind not in _KIND_DENSITY or seed < 0:
            ContentTag(kind, seed, 0)  # raises, naming what is allowed
        i = bisect_right(self._range_starts, start_pfn)
        if i > 0:
            prev = self._ranges[i - 1]
            if prev.start_pfn + prev.count > start_pfn:
                raise ValueError(f"range at {start_pfn:#x} overlaps the range at {prev.start_pfn:#x}")
        if i < len(self._ranges) and self._ranges[i].start_pfn < start_pfn + count:
            raise ValueError(f"range at {start_pfn:#x} overlaps the range at {self._ranges[i].start_pfn:#x}")
        self.put_range(TaggedRange(start_pfn, count, kind, seed, start_pfn if first_index is None else first_index,
                                   step), agent)

    def put_range(self, r: TaggedRange, agent: str) -> None:
        """Store ``r``'s content over its frames, whatever they held (``rep movsq`` of many
        pages): ranges around it are cut, per-frame content inside it dropped.  Reported to
        observers as one store over the whole span."""
        start, count = r.start_pfn, r.count
        end = start + count
        if count <= 0 or r.first_index < 0 or r.first_index + r.step * (count - 1) < 0:
            raise ValueError(f"range {r} is empty or has negative content indices")
        if start < 0 or end > self.nr_frames:
            self.check_pfn(start)
            self.check_pfn(end - 1)
        starts, ranges = self._range_starts, self._ranges
        i = bisect_right(starts, start) - 1
        if i >= 0 and starts[i] + ranges[i].count > start:  # a range reaching into ours: cut it
            old = ranges[i]
            keep = [old.part(old.start_pfn, start)] if old.start_pfn < start else []
            if old.start_pfn + old.count > end:
                keep.append(old.part(end, old.start_pfn + old.count))
            del starts[i], ranges[i]
            for k in reversed(keep):
                starts.insert(i, k.start_pfn)
                ranges.insert(i, k)
        j = bisect_right(starts, start - 1)
        k = j
        while k < len(ranges) and starts[k] < end:
            k += 1
        tail = []
        if k > j:
            last = ranges[k - 1]
            if last.start_pfn + last.count > end:
                tail = [last.part(end, last.start_pfn + last.count)]
        starts[j:k] = [r.start_pfn] + [t.start_pfn for t in tail]
        ranges[j:k] = [r] + tail
        self._drop_own(start, end)  # per-frame content inside the range is dropped
        self._notify(start << PAGE_SHIFT, r.count << PAGE_SHIFT, agent, "store")

    def _drop_own(self, start: int, end: int) -> None:
        """Forget the content of their own that frames ``start`` to ``end`` - 1 had (a range
        now describes them); the frames are found by bisection in the sorted list."""
        own = self._own
        a, b = bisect_left(own, start), bisect_left(own, end)
        if a < b:
            for pfn in own[a:b]:
                self._frames.pop(pfn, None)
                self._tags.pop(pfn, None)
            del own[a:b]

    def put_ranges(self, stores: list[TaggedRange | tuple[int, ContentTag | np.ndarray]], agent: str) -> None:
        """Many stores at once, to frames no two of them share: each a TaggedRange (as
        ``put_range``) or a (pfn, content) pair (as ``write_page``).  Memory ends exactly as
        after those calls in turn; the ranges are merged into the range list in one pass
        instead of one list edit each, and observers are told of every store, in the given
        order, once all are made (the loader's bulk fill: no CPU runs in between)."""
        ranges = [x for x in stores if isinstance(x, TaggedRange)]
        pages = [x for x in stores if not isinstance(x, TaggedRange)]
        spans = sorted([(r.start_pfn, r.start_pfn + r.count) for r in ranges] + [(p, p + 1) for p, _ in pages])
        for (_, e), (s2, _) in zip(spans, spans[1:]):
            if s2 < e:
                raise ValueError(f"put_ranges: two stores share frame {s2:#x}")
        for r in ranges:
            if r.count <= 0 or r.index_of(r.start_pfn + r.count - 1) < 0 or r.first_index < 0:
                raise ValueError(f"range {r} is empty or has negative content indices")
            self.check_pfn(r.start_pfn)
            self.check_pfn(r.start_pfn + r.count - 1)
        for pfn, content in pages:
            self.check_pfn(pfn)
            if not isinstance(content, ContentTag) and content.shape != (QWORDS_PER_PAGE,):
                raise ValueError(f"a page is 512 qwords, got shape {content.shape}")
        if len(ranges) * 64 < len(self._ranges):  # a few stores into a long range list: edit it in
            for x in stores:  # place (rebuilding the whole list would cost more; the result and
                if isinstance(x, TaggedRange):  # the observers' order are the same)
                    self.put_range(x, agent)
                else:
                    self.write_page(x[0], x[1], agent)
            return
        old = iter(self._ranges)
        cur = next(old, None)
        out: list[TaggedRange] = []
        for r in sorted(ranges, key=lambda x: x.start_pfn):
            start, end = r.start_pfn, r.start_pfn + r.count
            while cur is not None and cur.start_pfn < end:  # the ranges before or under r
                cs, ce = cur.start_pfn, cur.start_pfn + cur.count
                if ce <= start:
                    out.append(cur)
                elif cs < start or ce > end:  # cut: keep what lies outside r
                    if cs < start:
                        out.append(cur.part(cs, start))
                    if ce > end:
                        cur = cur.part(end, ce)
                        break
                cur = next(old, None)
            out.append(r)
            self._drop_own(start, end)
        if cur is not None:
            out.append(cur)
            out.extend(old)
        self._ranges[:] = out
        self._range_starts[:] = [r.start_pfn for r in out]
        for pfn, content in pages:
            self._set_page(pfn, content)
        if self.observers:
            for x in stores:
                if isinstance(x, TaggedRange):
                    self._notify(x.start_pfn << PAGE_SHIFT, x.count << PAGE_SHIFT, agent, "store")
                else:
                    self._notify(x[0] << PAGE_SHIFT, PAGE_SIZE, agent, "store")

    def copy_frames(self, src: np.ndarray, dst: np.ndarray, agent: str) -> None:
        """Copy frame ``src[k]`` to ``dst[k]`` for every k, in order (the copy loop over many
        pbes): consecutive frames described by one range stay one range; frames with content
        of their own are copied one by one.  No destination may be a later source."""
        n = len(src)
        if n != len(dst):
            raise ValueError(f"copy_frames: {n} sources but {len(dst)} destinations")
        if n == 0:
            return
        if n <= 4:  # a few pages (the copy between two other actors' events): one by one
            for a, b in zip(np.asarray(src).tolist(), np.asarray(dst).tolist()):
                self.copy_page(a, b, agent)
            return
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        edges = stride_runs(src, dst)
        own = self._own  # read only until put_ranges below: every store is gathered first
        stores: list[TaggedRange | tuple[int, ContentTag | np.ndarray]] = []
        first = np.array(edges[:-1], dtype=np.int64)
        last = np.array(edges[1:], dtype=np.int64) - 1
        for ends in zip(src[first].tolist(), src[last].tolist(), dst[first].tolist(), dst[last].tolist()):
            self._copy_run(*ends, own, stores)
        # no source is a later destination, so every source is read before any store: the
        # stores can be made together (observers hear of each, in copy order)
        self.put_ranges(stores, agent)

    def _copy_run(self, s0: int, s1: int, d0: int, d1: int, own: list[int], stores: list) -> None:
        """One run of consecutive sources (``s0`` to ``s1``, by +1 or -1) to consecutive
        destinations (``d0`` to ``d1``): each stretch of it that one range describes (and no
        frame of its own interrupts) is copied as one range, the rest page by page.  The stores
        are appended to ``stores``."""
        if s0 == s1:
            stores.append((d0, self.content(s0)))
            return
        sstep = 1 if s1 > s0 else -1
        dstep = 1 if d1 > d0 else -1
        to_dst = lambda pfn: d0 + dstep * sstep * (pfn - s0)  # noqa: E731
        lo, hi = min(s0, s1), max(s0, s1)
        pieces: list[tuple[int, int, TaggedRange | None]] = []  # [a, b] source stretches
        cur = lo
        while cur <= hi:
            i = bisect_right(own, cur - 1)
            nxt_own = own[i] if i < len(own) else hi + 1
            r = self._range_of(cur)
            if nxt_own == cur or r is None:
                pieces.append((cur, cur, None))
                cur += 1
                continue
            end = min(hi, r.start_pfn + r.count - 1, nxt_own - 1)
            pieces.append((cur, end, r))
            cur = end + 1
        if sstep < 0:
            pieces.reverse()  # copy in the run's own order
        for a, b, r in pieces:
            if r is None or a == b:
                for pfn in (range(a, b + 1) if sstep > 0 else range(b, a - 1, -1)):
                    stores.append((to_dst(pfn), self.content(pfn)))
                continue
            da, db = to_dst(a), to_dst(b)
            low_src = a if da < db else b  # the source of the lowest destination
            stores.append(TaggedRange(min(da, db), b - a + 1, r.kind, r.seed, r.index_of(low_src),
                                      r.step * sstep * dstep))

    def ranges(self) -> Iterable[TaggedRange]:
        return tuple(self._ranges)

    def overridden_sorted(self) -> list[int]:
        """``overridden()`` as a sorted list (a copy: later stores do not change it)."""
        return list(self._own)

    def overridden(self) -> set[int]:
        """Frames with per-frame content (materialized or tagged one by one)."""
        return set(self._frames) | set(self._tags)

    def clflush(self, paddr: int, agent: str) -> None:
        """CLFLUSH: invalidates the line in every cache; other agents see a snoop (SDM vol. 2
        CLFLUSH).  Memory contents do not change."""
        self.check_paddr(paddr)
        self._notify(paddr, 1, agent, "clflush")

    def footprint_bytes(self) -> int:
        """Bytes held by materialized frames (the model's own memory grows with these only)."""
        return len(self._frames) * PAGE_SIZE


def stride_runs(src: np.ndarray, dst: np.ndarray) -> list[int]:
    """Edges [0, ..., n] of the maximal runs in which both ``src`` and ``dst`` move by a
    constant +1 or -1 per position (numpy finds the few places where that changes)."""
    n = len(src)
    if n < 2:
        return [0, n]
    if n <= 64:  # a short stretch (the copy between two other actors' events): numpy's
        return _stride_runs_small(src.tolist(), dst.tolist())  # per-call cost would dominate
    return _stride_runs_numpy(src, dst)


def _stride_runs_numpy(src: np.ndarray, dst: np.ndarray) -> list[int]:
    """``stride_runs`` for many positions, vectorized."""
    n = len(src)
    ds, dd = np.diff(src), np.diff(dst)
    linked = ds * ds + dd * dd == 2  # both steps +1 or -1 (whole numbers)
    key = ds * 3 + dd
    key[~linked] = 99
    changed = np.flatnonzero(~linked | (key != np.r_[key[:1], key[:-1]]))
    edges = [0]
    for k, ok in zip(changed.tolist(), linked[changed].tolist()):
        if not ok:
            if k + 1 > edges[-1]:
                edges.append(k + 1)
        elif k > edges[-1] and linked[k - 1] and key[k] != key[k - 1]:
            edges.append(k)
    edges.append(n)
    return edges


def _stride_runs_small(src: list[int], dst: list[int]) -> list[int]:
    """``stride_runs`` for a few positions, in plain Python (the same rules, the same edges)."""
    n = len(src)
    edges = [0]
    prev_key = None
    for k in range(n - 1):
        ds, dd = src[k + 1] - src[k], dst[k + 1] - dst[k]
        linked = ds * ds + dd * dd == 2
        key = ds * 3 + dd if linked else 99
        if not linked:
            if k + 1 > edges[-1]:
                edges.append(k + 1)
        elif k > 0 and key != prev_key and k > edges[-1] and prev_key != 99:
            edges.append(k)
        prev_key = key
    edges.append(n)
    return edges
