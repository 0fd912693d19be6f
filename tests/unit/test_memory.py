"""Sparse physical memory (lab/hw/memory.py): frames materialized, tagged or in tagged ranges;
unbacked addresses read all ones; every store and CLFLUSH is reported to observers."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from lab.hw.memory import (ALL_ONES, PAGE_SIZE, QWORDS_PER_PAGE, ZERO, ContentTag,
                           PhysicalMemory, parse_size)


@pytest.fixture
def mem() -> PhysicalMemory:
    return PhysicalMemory(16 << 20)  # 4096 frames


def recorder(mem: PhysicalMemory) -> list[tuple[int, int, str, str]]:
    seen: list[tuple[int, int, str, str]] = []
    mem.observers.append(lambda *a: seen.append(a))
    return seen


# -- loads and stores ----------------------------------------------------------------------
def test_never_written_frame_reads_zero_and_is_tagged_zero(mem):
    assert mem.tag(123) == ZERO
    assert mem.read_u64(123 * PAGE_SIZE + 0x10) == 0


def test_store_then_load_round_trips_little_endian_qwords(mem):
    mem.write_u64(0x5008, 0x1122334455667788, "cpu0")
    assert mem.read_u64(0x5008) == 0x1122334455667788
    assert mem.read_u64(0x5000) == 0 and mem.read_u64(0x5010) == 0
    arr = mem.materialize(5)
    assert int(arr[1]) == 0x1122334455667788  # qword index = byte offset / 8
    assert arr.tobytes()[8:16] == (0x1122334455667788).to_bytes(8, "little")


def test_store_of_full_64_bit_value(mem):
    mem.write_u64(0x2000, ALL_ONES, "cpu0")
    assert mem.read_u64(0x2000) == ALL_ONES


def test_unbacked_physical_addresses_read_all_ones_and_drop_stores(mem):
    beyond = mem.size + 0x40
    assert mem.read_u64(beyond) == ALL_ONES
    seen = recorder(mem)
    mem.write_u64(beyond, 5, "cpu1")
    assert mem.read_u64(beyond) == ALL_ONES
    assert mem.materialized_count == 0
    assert seen == [(beyond, 8, "cpu1", "store")]  # the store still goes out on the bus


def test_last_backed_qword_is_ram(mem):
    last = mem.size - 8
    mem.write_u64(last, 7, "cpu0")
    assert mem.read_u64(last) == 7


@pytest.mark.parametrize("paddr, words", [
    (-8, ["outside", "physical address space", "allowed: 0 to"]),
    (0x1003, ["not 8-byte aligned"]),
    (1 << 46, ["outside the 46-bit physical address space", "allowed: 0 to 0x3fffffffffff"]),
])
def test_bad_physical_addresses_raise_with_reason(mem, paddr, words):
    for op in (lambda: mem.read_u64(paddr), lambda: mem.write_u64(paddr, 0, "cpu0")):
        with pytest.raises(ValueError) as exc:
            op()
        for w in words:
            assert w in str(exc.value)


def test_value_wider_than_64_bits_is_refused(mem):
    with pytest.raises(ValueError, match="does not fit in 64 bits"):
        mem.write_u64(0, 1 << 64, "cpu0")
    with pytest.raises(ValueError, match="does not fit in 64 bits"):
        mem.write_u64(0, -1, "cpu0")


def test_frame_outside_ram_is_refused_by_page_operations(mem):
    with pytest.raises(ValueError, match=r"frame 0x1000 is not RAM \(allowed: 0 to 0xfff\)"):
        mem.write_page(0x1000, ZERO, "loader")
    with pytest.raises(ValueError, match="is not RAM"):
        mem.read_page(-1)


@pytest.mark.parametrize("kwargs, words", [
    (dict(size=1 << 20, phys_bits=35), ["between 36 and 52", "35"]),
    (dict(size=1 << 20, phys_bits=53), ["between 36 and 52"]),
    (dict(size=4095), ["positive multiple of 4096", "4095"]),
    (dict(size=0), ["positive multiple of 4096"]),
    (dict(size=1 << 37, phys_bits=36), ["exceeds the 36-bit physical address space"]),
])
def test_bad_memory_geometry_raises(kwargs, words):
    with pytest.raises(ValueError) as exc:
        PhysicalMemory(**kwargs)
    for w in words:
        assert w in str(exc.value)


# -- sparseness ----------------------------------------------------------------------------
def test_big_memory_materializes_only_written_frames():
    mem = PhysicalMemory(64 << 30)
    rng = np.random.default_rng(1)
    pfns = rng.choice(mem.nr_frames, size=1000, replace=False)
    for pfn in pfns:
        mem.write_u64(int(pfn) << 12, int(pfn), "cpu0")
    assert mem.materialized_count == 1000
    assert mem.footprint_bytes() == 1000 * PAGE_SIZE
    assert mem.overridden() == {int(p) for p in pfns}
    assert mem.read_u64(int(pfns[17]) << 12) == int(pfns[17])


def test_tagged_page_store_does_not_materialize(mem):
    mem.write_page(9, ContentTag("data", 3, 4), "loader")
    assert not mem.is_materialized(9)
    assert mem.tag(9) == ContentTag("data", 3, 4)
    page = mem.read_page(9)  # a copy, still not materialized
    assert not mem.is_materialized(9)
    assert np.array_equal(page, ContentTag("data", 3, 4).materialize())


def test_first_load_materializes_the_tag_contents(mem):
    tag = ContentTag("data", 1, 2)
    mem.write_page(9, tag, "loader")
    assert mem.read_u64(9 * PAGE_SIZE + 0x18) == int(tag.materialize()[3])
    assert mem.is_materialized(9) and mem.tag(9) is None


def test_array_page_store_copies_the_array(mem):
    src = np.arange(QWORDS_PER_PAGE, dtype=np.uint64)
    mem.write_page(3, src, "loader")
    src[0] = 99
    assert mem.read_u64(3 * PAGE_SIZE) == 0
    assert mem.read_u64(3 * PAGE_SIZE + 8 * 511) == 511


def test_array_page_store_checks_shape(mem):
    with pytest.raises(ValueError, match=r"a page is 512 qwords, got shape \(256,\)"):
        mem.write_page(3, np.zeros(256, dtype=np.uint64), "loader")


def test_copy_page_keeps_tags_and_arrays(mem):
    mem.write_page(1, ContentTag("text", 5, 1), "loader")
    mem.copy_page(1, 2, "cpu0")
    assert mem.tag(2) == ContentTag("text", 5, 1) and not mem.is_materialized(2)
    mem.write_u64(0x3000, 42, "cpu0")
    mem.copy_page(3, 4, "cpu0")
    assert mem.is_materialized(4) and mem.read_u64(0x4000) == 42


def test_same_content_compares_bytes_across_forms(mem):
    tag = ContentTag("stack", 2, 9)
    mem.write_page(5, tag, "loader")
    assert mem.same_content(5, tag)
    assert not mem.same_content(5, ContentTag("stack", 2, 10))
    mem.materialize(5)
    assert mem.same_content(5, tag)  # materialized, same bytes
    mem.write_u64(5 * PAGE_SIZE, 1, "cpu0")
    assert not mem.same_content(5, tag)


def test_content_is_a_snapshot(mem):
    mem.write_u64(0x7000, 1, "cpu0")
    snap = mem.content(7)
    mem.write_u64(0x7000, 2, "cpu0")
    assert int(snap[0]) == 1  # type: ignore[index]
    assert mem.content(8) == ZERO


# -- content tags --------------------------------------------------------------------------
def test_content_tag_materialization_is_deterministic():
    a = ContentTag("data", 11, 22).materialize()
    b = ContentTag("data", 11, 22).materialize()
    assert a.dtype == np.uint64 and a.shape == (QWORDS_PER_PAGE,)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, ContentTag("data", 11, 23).materialize())
    assert not np.array_equal(a, ContentTag("data", 12, 22).materialize())
    assert not np.array_equal(a, ContentTag("text", 11, 22).materialize())


def test_content_tag_bytes_are_the_same_in_another_process():
    tag = ContentTag("sparse", 4, 5)
    here = hashlib.sha256(tag.materialize().tobytes()).hexdigest()
    code = ("import hashlib; from lab.hw.memory import ContentTag; "
            "print(hashlib.sha256(ContentTag('sparse', 4, 5).materialize().tobytes()).hexdigest())")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert there.stdout.strip() == here


def test_content_kinds_have_their_densities():
    assert not ContentTag("zero").materialize().any()
    data = ContentTag("data", 1, 1).materialize()
    assert np.count_nonzero(data) >= 500
    sparse = np.count_nonzero(ContentTag("sparse", 1, 1).materialize())
    assert 5 <= sparse <= 80  # about one in 16


def test_all_zero_tags_are_one_content():
    assert ContentTag("zero", 5, 9) == ZERO


def test_content_tag_validation():
    with pytest.raises(ValueError, match="unknown content kind 'code'; allowed: data, sparse, stack, text, zero"):
        ContentTag("code")
    with pytest.raises(ValueError, match="must be >= 0"):
        ContentTag("data", -1)
    with pytest.raises(ValueError, match="must be >= 0"):
        ContentTag("data", 0, -5)


# -- ranges --------------------------------------------------------------------------------
def test_fill_range_tags_each_frame(mem):
    mem.fill_range(100, 50, "data", seed=9, first_index=1000)
    assert mem.tag(100) == ContentTag("data", 9, 1000)
    assert mem.tag(149) == ContentTag("data", 9, 1049)
    assert mem.tag(99) == ZERO and mem.tag(150) == ZERO
    assert mem.materialized_count == 0
    assert mem.read_u64(120 * PAGE_SIZE) == int(ContentTag("data", 9, 1020).materialize()[0])


def test_fill_range_default_index_is_the_frame_number(mem):
    mem.fill_range(200, 4, "text", seed=1)
    assert mem.tag(202) == ContentTag("text", 1, 202)


def test_fill_range_replaces_earlier_frames_and_later_frames_override_it(mem):
    mem.write_u64(10 * PAGE_SIZE, 5, "cpu0")
    mem.write_page(11, ContentTag("stack", 1, 1), "cpu0")
    mem.fill_range(10, 4, "data", seed=2)
    assert mem.tag(10) == ContentTag("data", 2, 10) and mem.tag(11) == ContentTag("data", 2, 11)
    assert mem.overridden() == set()
    mem.write_page(12, ContentTag("zero"), "cpu0")
    assert mem.tag(12) == ZERO
    assert [r.start_pfn for r in mem.ranges()] == [10]


def test_fill_range_is_reported_as_one_store(mem):
    seen = recorder(mem)
    mem.fill_range(8, 3, "data", seed=0, agent="loader")
    assert seen == [(8 * PAGE_SIZE, 3 * PAGE_SIZE, "loader", "store")]


@pytest.mark.parametrize("start, count, words", [
    (0, 0, "range length must be positive"),
    (4090, 10, "is not RAM"),
    (15, 10, "overlaps the range at 0x14"),   # ends inside [20, 30)
    (25, 2, "overlaps the range at 0x14"),    # starts inside it
])
def test_fill_range_errors(mem, start, count, words):
    mem.fill_range(20, 10, "data", seed=0)
    with pytest.raises(ValueError, match=words):
        mem.fill_range(start, count, "data", seed=0)


def test_fill_range_checks_kind(mem):
    with pytest.raises(ValueError, match="unknown content kind"):
        mem.fill_range(0, 1, "bogus", seed=0)


# -- observers -----------------------------------------------------------------------------
def test_stores_and_clflush_are_reported_with_agent(mem):
    seen = recorder(mem)
    mem.write_u64(0x40, 0, "cpu2")           # same value as before: still a store
    mem.write_page(1, ZERO, "loader")
    mem.clflush(0x1234, "cpu3")
    assert seen == [(0x40, 8, "cpu2", "store"), (0x1000, PAGE_SIZE, "loader", "store"),
                    (0x1234, 1, "cpu3", "clflush")]


def test_clflush_does_not_change_memory(mem):
    mem.write_u64(0x2000, 9, "cpu0")
    mem.clflush(0x2000, "cpu1")
    assert mem.read_u64(0x2000) == 9
    with pytest.raises(ValueError, match="outside the 46-bit"):
        mem.clflush(-1, "cpu1")


# -- sizes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [
    ("4096", 4096), (4096, 4096), ("256M", 256 << 20), ("8G", 8 << 30), ("2GiB", 2 << 30),
    ("1T", 1 << 40), ("64k", 64 << 10), (" 16MB ", 16 << 20),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["8XB", "1.5G", "G", "", "-4K", "0x1000", True])
def test_parse_size_rejects_malformed_sizes(text):
    with pytest.raises(ValueError) as exc:
        parse_size(text)
    msg = str(exc.value)
    assert f"malformed size {text!r}" in msg
    assert "allowed: a whole number with an optional unit K, M, G or T" in msg


@pytest.mark.parametrize("text", ["0", "0G", 0, -5])
def test_parse_size_rejects_non_positive_sizes(text):
    with pytest.raises(ValueError, match="size must be positive"):
        parse_size(text)
