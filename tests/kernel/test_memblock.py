"""Memblock, the boot allocator (mm/memblock.c, bottom_up false): top-down allocation inside the
usable e820 ranges, below a limit, skipping what is reserved; reservations kept as sorted,
merged frame intervals.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.kernel.intervals import normalize
from lab.kernel.layout import PAGE_SIZE, E820Entry, Memblock, e820_for

MiB = 1 << 20
RAM = 64 * MiB
TOP = RAM // PAGE_SIZE  # first frame past RAM


def fresh(ram: int = RAM, hole: tuple[int, int] | None = None, limit: int | None = None) -> Memblock:
    return Memblock(e820_for(ram, hole), limit if limit is not None else ram)


def test_usable_frames_follow_the_e820_map() -> None:
    mb = fresh()
    assert mb.usable_pfns() == [(1, 0x9F), (0x100, TOP)]


def test_alloc_is_top_down() -> None:
    mb = fresh()
    assert mb.alloc() == TOP - 1
    assert mb.alloc() == TOP - 2
    assert mb.alloc(4) == TOP - 6
    assert mb.intervals() == [(TOP - 6, TOP)]
    assert mb.reserved_count() == 6


def test_alloc_respects_alignment() -> None:
    mb = fresh()
    mb.alloc(1)  # TOP - 1: the next aligned run of 4 must end below it
    got = mb.alloc(4, align=4)
    assert got % 4 == 0
    assert got == TOP - 8
    assert not mb.is_reserved(TOP - 2) and not mb.is_reserved(TOP - 4)  # the gap stays free


def test_alloc_respects_below_and_the_limit() -> None:
    mb = fresh(limit=32 * MiB)
    assert mb.alloc() == 32 * MiB // PAGE_SIZE - 1
    assert mb.alloc(below=16 * MiB) == 16 * MiB // PAGE_SIZE - 1
    # under 1 MiB only the first 640 KiB are RAM: the e820 hole 0x9f000..0x100000 is skipped
    assert mb.alloc(below=1 * MiB) == 0x9E


def test_alloc_skips_reserved_ranges() -> None:
    mb = fresh()
    mb.reserve(TOP - 10, 10)
    assert mb.alloc() == TOP - 11
    mb.reserve(TOP - 20, 8)  # [TOP-20, TOP-12): a free hole of one frame at TOP-12 remains
    assert mb.alloc(2) == TOP - 22  # does not fit in the hole
    assert mb.alloc(1) == TOP - 12  # fits


def test_alloc_does_not_straddle_an_e820_hole() -> None:
    hole = (32 * MiB, 32 * MiB + 8 * PAGE_SIZE)
    mb = fresh(hole=hole)
    mb.reserve(hole[1] // PAGE_SIZE, TOP - hole[1] // PAGE_SIZE)  # everything above the hole
    got = mb.alloc(4)
    assert got + 4 <= hole[0] // PAGE_SIZE
    assert got == hole[0] // PAGE_SIZE - 4


def test_alloc_out_of_memory_raises_value_error() -> None:
    mb = fresh()
    with pytest.raises(ValueError, match="out of memory"):
        mb.alloc(TOP)  # more than any usable range
    mb2 = fresh()
    mb2.reserve(0, TOP)
    with pytest.raises(ValueError, match="out of memory"):
        mb2.alloc()


def test_reserve_merges_adjacent_and_overlapping() -> None:
    mb = fresh()
    mb.reserve(10, 5)
    mb.reserve(15, 5)  # adjacent above
    assert mb.intervals() == [(10, 20)]
    mb.reserve(12, 2)  # inside
    assert mb.intervals() == [(10, 20)]
    mb.reserve(5, 6)  # overlapping below
    assert mb.intervals() == [(5, 20)]
    mb.reserve(30, 1)
    assert mb.intervals() == [(5, 20), (30, 31)]
    mb.reserve(20, 10)  # bridges the two
    assert mb.intervals() == [(5, 31)]
    mb.reserve(1, 100)  # swallows everything
    assert mb.intervals() == [(1, 101)]
    assert mb.reserved_count() == 100


def test_is_reserved_at_interval_edges() -> None:
    mb = fresh()
    mb.reserve(100, 10)
    assert not mb.is_reserved(99)
    assert mb.is_reserved(100) and mb.is_reserved(109)
    assert not mb.is_reserved(110)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 40)), max_size=25))
def test_reserve_keeps_sorted_merged_intervals(ops: list[tuple[int, int]]) -> None:
    mb = fresh()
    want: set[int] = set()
    for start, count in ops:
        mb.reserve(start, count)
        want |= set(range(start, start + count))
    ivs = mb.intervals()
    assert ivs == normalize(ivs)  # sorted, disjoint, not touching
    assert {p for s, e in ivs for p in range(s, e)} == want
    assert mb.reserved_count() == len(want)
    assert all(mb.is_reserved(p) == (p in want) for p in range(0, 345))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0x100, 0x1F0), st.integers(1, 8)), max_size=10),
       st.lists(st.tuples(st.integers(1, 6), st.sampled_from([1, 2, 4])), min_size=1, max_size=10))
def test_alloc_returns_the_highest_free_fit(reserved, allocs) -> None:
    """Against a brute-force top-down search over a small machine."""
    ram = 2 * MiB  # frames 1..0x9f and 0x100..0x200
    mb = fresh(ram=ram)
    free = {p for lo, hi in mb.usable_pfns() for p in range(lo, hi)}
    for s, n in reserved:
        mb.reserve(s, n)
        free -= set(range(s, s + n))
    for count, align in allocs:
        fits = [c for c in range(0x200 - count, 0, -1)
                if c % align == 0 and all(p in free for p in range(c, c + count))]
        if not fits:
            with pytest.raises(ValueError):
                mb.alloc(count, align=align)
            continue
        got = mb.alloc(count, align=align)
        assert got == fits[0]
        free -= set(range(got, got + count))


def test_e820_entry_validation() -> None:
    with pytest.raises(ValueError, match="page aligned"):
        E820Entry(0x1001, 0x2000, True)
    with pytest.raises(ValueError, match="non-empty"):
        E820Entry(0x2000, 0x2000, True)
