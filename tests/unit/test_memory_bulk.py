"""Bulk stores (put_ranges, the batched copy_frames) leave memory exactly as the same stores
made one by one, and observers hear of every store in the same order."""
from __future__ import annotations

import numpy as np
import pytest

from lab.hw.memory import ContentTag, PhysicalMemory, TaggedRange


def _state(mem: PhysicalMemory):
    return (list(mem.ranges()), dict(mem._tags), {p: a.tolist() for p, a in mem._frames.items()},
            mem.overridden_sorted())


def _memory(rng: np.random.Generator) -> tuple[PhysicalMemory, list]:
    mem = PhysicalMemory(4096 * 4096)
    heard: list = []
    mem.observers.append(lambda *a: heard.append(a))
    for start in sorted(rng.choice(3000, 40, replace=False).tolist()):  # earlier content to cut through
        mem.put_range(TaggedRange(int(start), int(rng.integers(1, 200)), "data", 7, int(start)), "boot")
    for pfn in rng.choice(4000, 30, replace=False).tolist():
        if rng.integers(2):
            mem.write_page(int(pfn), ContentTag("sparse", 3, int(pfn)), "boot")
        else:
            mem.write_u64(int(pfn) << 12, int(pfn), "boot")
    heard.clear()
    return mem, heard


@pytest.mark.parametrize("seed", range(12))
def test_put_ranges_equals_one_store_after_another(seed):
    rng = np.random.default_rng(seed)
    a, heard_a = _memory(np.random.default_rng(seed + 100))
    b, heard_b = _memory(np.random.default_rng(seed + 100))
    edges = sorted(set(rng.choice(4000, 60, replace=False).tolist()))
    stores: list = []
    for lo, hi in zip(edges[::2], edges[1::2]):
        if rng.integers(3) == 0:
            stores.append((lo, ContentTag("text", 5, lo) if rng.integers(2) else np.full(512, lo, np.uint64)))
        else:
            step = int(rng.choice([1, -1]))
            stores.append(TaggedRange(lo, hi - lo, "sparse", 9, int(rng.integers(0, 50)) + (hi - lo) * (step < 0), step))
    rng.shuffle(stores)
    for x in stores:
        if isinstance(x, TaggedRange):
            a.put_range(x, "loader")
        else:
            a.write_page(x[0], x[1], "loader")
    b.put_ranges(stores, "loader")
    assert _state(a) == _state(b)
    assert heard_a == heard_b and len(heard_b) == len(stores)


def test_put_ranges_refuses_stores_sharing_a_frame():
    mem = PhysicalMemory(1 << 24)
    with pytest.raises(ValueError, match="share frame"):
        mem.put_ranges([TaggedRange(10, 5, "data", 1, 0), (12, ContentTag("data", 2, 0))], "loader")


@pytest.mark.parametrize("seed", range(6))
def test_batched_copy_frames_equals_page_by_page(seed):
    rng = np.random.default_rng(seed)
    a, heard_a = _memory(np.random.default_rng(seed))
    b, _ = _memory(np.random.default_rng(seed))
    # sources below 2000, destinations above: no destination is a later source
    src = np.concatenate([np.arange(100, 400), np.arange(900, 700, -1), rng.choice(np.arange(1200, 2000), 80, replace=False)])
    dst = np.concatenate([np.arange(3000, 2700, -1), np.arange(2200, 2400), rng.choice(np.arange(2400, 2700), 80, replace=False)])
    for s, d in zip(src.tolist(), dst.tolist()):
        b.copy_page(s, d, "cpu0")
    a.copy_frames(src, dst, "cpu0")
    for pfn in range(a.nr_frames):  # the same bytes everywhere (ranges where b has tags page by page)
        assert a.same_content(pfn, b.content(pfn)), pfn
    assert len(a.overridden()) < len(b.overridden())  # consecutive runs stayed ranges, not pages
    covered = []
    for paddr, nbytes, agent, kind in heard_a:
        assert agent == "cpu0" and kind == "store"
        covered += range(paddr >> 12, (paddr + nbytes) >> 12)
    assert sorted(covered) == sorted(dst.tolist())  # every destination heard once


@pytest.mark.parametrize("seed", range(4))
def test_a_few_stores_into_a_long_range_list_edit_it_in_place_with_the_same_result(seed):
    """The copy between two CPUs' events stores a few ranges into a list of thousands:
    put_ranges then edits the list in place (put_range) instead of rebuilding it."""
    rng = np.random.default_rng(seed)
    mems, heard = [], []
    for _ in range(2):
        mem = PhysicalMemory(4096 * 4096)
        for k in range(400):  # a long range list, with frames of their own in between
            mem.put_range(TaggedRange(3 * k, 2, "data", 11, k), "boot")
            if k % 7 == 0:
                mem.write_page(3 * k + 2, ContentTag("sparse", 3, k), "boot")
        log: list = []
        mem.observers.append(lambda *x, log=log: log.append(x))
        mems.append(mem)
        heard.append(log)
    a, b = mems
    stores: list = [TaggedRange(1 + 30 * int(k), 4, "sparse", 9, 7) for k in sorted(rng.choice(12, 3, replace=False))]
    stores.append((2000 + int(rng.integers(0, 100)), ContentTag("text", 5, 1)))
    rng.shuffle(stores)
    assert len([x for x in stores if isinstance(x, TaggedRange)]) * 64 < len(list(b.ranges()))  # the in-place path
    for x in stores:
        a.put_range(x, "loader") if isinstance(x, TaggedRange) else a.write_page(x[0], x[1], "loader")
    b.put_ranges(stores, "loader")
    assert _state(a) == _state(b)
    assert heard[0] == heard[1] and len(heard[1]) == len(stores)
