"""lab.kernel.intervals: sorted, disjoint, half-open frame intervals (what the image loader
uses to split the image into frames loaded in place and frames that need a safe page)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lab.kernel.intervals import count, intersect, normalize, subtract


def frames(ivs) -> set[int]:
    return {p for s, e in ivs for p in range(s, e)}


def is_normal(ivs) -> bool:
    """Sorted, non-empty, disjoint and not touching (touching intervals are merged)."""
    return all(s < e for s, e in ivs) and all(a[1] < b[0] for a, b in zip(ivs, ivs[1:]))


def test_normalize_examples() -> None:
    assert normalize([]) == []
    assert normalize([(5, 5), (7, 3)]) == []  # empty and reversed intervals vanish
    assert normalize([(10, 20), (0, 5)]) == [(0, 5), (10, 20)]
    assert normalize([(0, 5), (5, 10)]) == [(0, 10)]  # touching: merged
    assert normalize([(0, 10), (2, 3), (8, 12)]) == [(0, 12)]


def test_subtract_examples() -> None:
    assert subtract([(0, 10)], []) == [(0, 10)]
    assert subtract([(0, 10)], [(3, 5)]) == [(0, 3), (5, 10)]
    assert subtract([(0, 10)], [(0, 10)]) == []
    assert subtract([(0, 10), (20, 30)], [(5, 25)]) == [(0, 5), (25, 30)]
    assert subtract([(5, 8)], [(0, 2), (9, 12)]) == [(5, 8)]
    assert subtract([(0, 4), (6, 10)], [(2, 3), (3, 7)]) == [(0, 2), (7, 10)]


def test_intersect_examples() -> None:
    assert intersect([(0, 10)], [(5, 15)]) == [(5, 10)]
    assert intersect([(0, 10)], [(10, 20)]) == []
    assert intersect([(0, 3), (5, 9)], [(2, 6), (8, 20)]) == [(2, 3), (5, 6), (8, 9)]
    assert intersect([], [(0, 1)]) == []


def test_count() -> None:
    assert count([(0, 3), (10, 11)]) == 4
    assert count([]) == 0


raw = st.lists(st.tuples(st.integers(0, 80), st.integers(0, 80)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(raw)
def test_normalize_matches_sets(a) -> None:
    n = normalize(a)
    assert is_normal(n)
    assert frames(n) == {p for s, e in a for p in range(s, e)}
    assert normalize(n) == n
    assert count(n) == len(frames(n))


@settings(max_examples=200, deadline=None)
@given(raw, raw)
def test_subtract_matches_sets(a, b) -> None:
    a, b = normalize(a), normalize(b)
    out = subtract(a, b)
    assert is_normal(out), out
    assert frames(out) == frames(a) - frames(b)


@settings(max_examples=200, deadline=None)
@given(raw, raw)
def test_intersect_matches_sets(a, b) -> None:
    a, b = normalize(a), normalize(b)
    out = intersect(a, b)
    assert is_normal(out), out
    assert frames(out) == frames(a) & frames(b)
    assert out == intersect(b, a)


@settings(max_examples=200, deadline=None)
@given(raw, raw)
def test_subtract_and_intersect_partition(a, b) -> None:
    """a = (a - b) + (a & b), disjointly: how load_image splits each image run."""
    a, b = normalize(a), normalize(b)
    out, both = subtract(a, b), intersect(a, b)
    assert not frames(out) & frames(both)
    assert normalize(out + both) == a
