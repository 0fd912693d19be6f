"""snapshot() and load_image() (kernel/power/snapshot.c): the image holds every frame the image
kernel used; the restore kernel puts each image page either straight into its original frame
(free in the restore kernel) or into a safe page recorded in a pbe; restore_pblist is in
descending original-frame order; safe pages are neither the restore kernel's frames nor image
frames; after the copy verify() finds nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

import lab.scenario
from lab.hw.memory import ContentTag
from lab.kernel.hibernate import verify
from lab.kernel.intervals import intersect, normalize, subtract
from lab.kernel.pagealloc import first_frames
from lab.scenario import Resume


@dataclass
class Loaded:
    r: Resume
    restore_used: list[tuple[int, int]]  # the restore kernel's reserved frames before the load


def image_frames(r: Resume):
    """(pfn, content) of every page of the image, without Image.content's per-call search."""
    for piece in r.image.pieces:
        for pfn in range(piece.start_pfn, piece.start_pfn + piece.count):
            yield pfn, piece.tag_of(pfn)
    yield from r.image.pages.items()


def load(monkeypatch: pytest.MonkeyPatch, **kw) -> Loaded:
    """A Resume whose load_image call is watched: what the restore kernel had reserved just
    before it loaded the image."""
    seen = {}
    real = lab.scenario.load_image

    def watching(memory, image, layout):
        seen["used"] = layout.memblock.intervals()
        return real(memory, image, layout)

    monkeypatch.setattr(lab.scenario, "load_image", watching)
    r = Resume(**kw)
    monkeypatch.undo()
    return Loaded(r, seen["used"])


@pytest.fixture(params=[0, 3], ids=lambda s: f"workshop-seed{s}")
def workshop(request, monkeypatch) -> Loaded:
    return load(monkeypatch, preset="workshop", fix="hlt", seed=request.param)


def reserved(ivs: list[tuple[int, int]], pfn: int) -> bool:
    return any(s <= pfn < e for s, e in ivs)


def test_snapshot_saves_exactly_the_frames_in_use(workshop: Loaded) -> None:
    r = workshop.r
    assert r.image.intervals() == normalize(r.image_kernel.layout.memblock.intervals())
    assert r.image.nr_pages == r.image_kernel.layout.memblock.reserved_count()
    assert not set(r.image.pages) & {p for piece in r.image.pieces
                                     for p in range(piece.start_pfn, piece.start_pfn + piece.count)}


def test_snapshot_content_is_the_image_kernels_memory(workshop: Loaded) -> None:
    r = workshop.r
    mem = r.image_kernel.memory
    bad = [pfn for pfn, content in image_frames(r) if not mem.same_content(pfn, content)]
    assert bad == []


def test_every_image_page_is_in_place_or_in_a_pbe(workshop: Loaded) -> None:
    r, used = workshop.r, workshop.restore_used
    mem = r.machine.memory
    by_orig = {pbe.orig_address: pbe for pbe in r.loaded.pblist}
    in_place = 0
    for pfn, content in image_frames(r):
        if reserved(used, pfn):
            pbe = by_orig.pop(pfn, None)
            assert pbe is not None, f"frame {pfn:#x} is the restore kernel's but has no pbe"
            assert mem.same_content(pbe.address, content), f"safe page of {pfn:#x} holds other bytes"
        elif pfn in by_orig:  # free, but the preallocation did not take it (get_buffer)
            pbe = by_orig.pop(pfn)
            assert mem.same_content(pbe.address, content), f"safe page of {pfn:#x} holds other bytes"
        else:
            assert mem.same_content(pfn, content), f"frame {pfn:#x} was not loaded in place"
            in_place += 1
    assert by_orig == {}, "pbes for frames that are not in the image"
    assert in_place == r.loaded.direct_pages
    assert in_place + len(r.loaded.pblist) == r.image.nr_pages


def direct_frames(r: Resume, used: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """prepare_image + get_buffer: an image page goes straight into its frame exactly when
    that frame is among the first allocations (chain pages + the image's page count) of the
    restore kernel's page allocator."""
    free = subtract(normalize(r.restore_kernel.layout.memblock.usable_pfns()), normalize(used))
    n = r.image.nr_pages
    got = first_frames(free, n + len(r.loaded.chain_pages))
    return intersect(r.image.intervals(), normalize([(p, p + 1) for p in got.tolist()]))


def test_pbes_cover_exactly_image_frames_the_preallocation_did_not_take(workshop: Loaded) -> None:
    r = workshop.r
    direct = direct_frames(r, workshop.restore_used)
    assert direct, "nothing loaded in place: the test shows nothing"
    want = subtract(r.image.intervals(), direct)
    got = normalize([(int(p), int(p) + 1) for p in r.loaded.pblist.orig])
    assert got == want
    assert intersect(direct, normalize(workshop.restore_used)) == []  # frames in use always go through a pbe


def test_pblist_is_in_descending_orig_pfn_order(workshop: Loaded) -> None:
    origs = [p.orig_address for p in workshop.r.loaded.pblist]
    assert origs, "no pbe: the test shows nothing"
    assert all(a > b for a, b in zip(origs, origs[1:]))
    assert [workshop.r.loaded.pblist.index_of(p) for p in origs] == list(range(len(origs)))


def test_safe_pages_are_neither_restore_nor_image_frames(workshop: Loaded) -> None:
    r, used = workshop.r, workshop.restore_used
    safe = [p.address for p in r.loaded.pblist]
    assert len(set(safe)) == len(safe)
    image = r.image.intervals()
    usable = r.restore_kernel.layout.memblock.usable_pfns()
    for pfn in safe:
        assert not reserved(used, pfn), f"safe page {pfn:#x} is a restore-kernel frame"
        assert not reserved(image, pfn), f"safe page {pfn:#x} is an image frame"
        assert reserved(usable, pfn), f"safe page {pfn:#x} is not RAM"
        # and it is reserved now, so nothing else of the restore kernel takes it
        assert r.restore_kernel.layout.memblock.is_reserved(pfn)


def test_before_the_copy_only_pbe_frames_differ(workshop: Loaded) -> None:
    """What is wrong right after the load is exactly what the pblist will fix."""
    r = workshop.r
    bad = verify(r.machine.memory, r.image)
    origs = {p.orig_address for p in r.loaded.pblist}
    assert bad, "nothing to restore: the test shows nothing"
    assert set(bad) <= origs


def test_verify_is_empty_after_a_full_hlt_run(workshop: Loaded) -> None:
    r = workshop.r
    r.run()
    assert r.outcome == "resumed"
    assert r.runtime.copied == len(r.loaded.pblist)
    assert verify(r.machine.memory, r.image) == []
    positions = []
    for e in r.events:
        if e.kind == "page_copied":
            positions.append(e.data["index"])
        elif e.kind == "pages_copied":
            positions.extend(range(e.data["first"], e.data["first"] + e.data["count"]))
    assert positions == list(range(len(r.loaded.pblist)))  # in list order, each once


def test_verify_reports_changed_frames(workshop: Loaded) -> None:
    r = workshop.r
    r.run()
    piece = max(r.image.pieces, key=lambda p: p.count)
    a = piece.start_pfn + 1  # inside a run the image describes by tag
    b = sorted(r.image.pages)[0]  # a frame saved one by one
    r.machine.memory.write_page(a, ContentTag("data", 99, a), "test")
    r.machine.memory.write_u64(b * 4096 + 8, r.machine.memory.read_u64(b * 4096 + 8) ^ 1, "test")
    assert verify(r.machine.memory, r.image) == sorted({a, b})


def test_load_on_the_default_machine(monkeypatch) -> None:
    """The same rules on 8 GiB with a 2 GiB image (structure only: order and safe pages)."""
    ld = load(monkeypatch, preset="default", fix="hlt", seed=0)
    r = ld.r
    origs = [p.orig_address for p in r.loaded.pblist]
    assert all(a > b for a, b in zip(origs, origs[1:]))
    want = subtract(r.image.intervals(), direct_frames(r, ld.restore_used))
    assert normalize([(p, p + 1) for p in origs]) == want
    safe = normalize([(p.address, p.address + 1) for p in r.loaded.pblist])
    assert intersect(safe, normalize(ld.restore_used)) == []
    assert intersect(safe, r.image.intervals()) == []
    # the restore kernel's direct-map tables that are image frames are overwritten by the copy
    lay = r.restore_kernel.layout
    image = r.image.intervals()
    assert {t for t in lay.table_frames if reserved(image, t)} <= set(origs)
    # and so are the idle stacks it monitors, when the image kernel used those frames
    for cpu in range(1, r.config.cpus):
        ti = lay.idle_stacks[cpu]
        assert (r.loaded.pblist.index_of(ti) is not None) == reserved(r.image.intervals(), ti)
