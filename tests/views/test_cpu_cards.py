"""The CPU cards show each CPU as the model has it."""
from __future__ import annotations

import html

import widgets

from widgetkit import FAULT_ADDRESS


def card_matches(lab: widgets.ResumeLab) -> None:
    r = lab.resume
    assert len(lab.cards) == r.config.cpus
    for i, card in enumerate(lab.cards.cards):
        v = r.cpu(i)
        assert card.state == v.state
        assert card.view == v
        assert f"lab-cpu-{i}" in card._dom_classes and "lab-cpu-card" in card._dom_classes
        assert card.faulted == bool(v.oops)
        assert f"wake-ups {v.wakeups} " in card.summary.value
        if i != lab.cards.selected:
            continue  # the detail pane shows the selected CPU only
        assert f"TLB entries {v.tlb_entries}" in card.info_html
        if v.cr3 is not None:
            assert f"CR3 {v.cr3:#x}" in card.info_html
        marked = [ln for ln in v.listing.splitlines() if ln.startswith("=>")]
        if marked:
            assert f'<span class="lab-rip">{html.escape(marked[0])}</span>' in card.listing_html
        # the pane shows the note, the oops and the listing, in that order, as one widget
        assert lab.cards.detail.children == (card.detail,)
        assert card.detail.value == card.info_html + card.oops_html + card.listing_html


def test_cards_follow_each_step(workshop_lab: widgets.ResumeLab) -> None:
    s = workshop_lab.stepper
    states = set()
    for i in range(60):
        if i == 30:
            workshop_lab.cards.pick.value = 0  # the detail pane follows the pick
        s.step_button.click()
        card_matches(workshop_lab)
        states |= {c.state for c in workshop_lab.cards.cards}
    assert {"running", "hlt"} <= states or {"running", "mwait"} <= states


def test_mwait_card_shows_the_cstate_and_armed_line(report_lab: widgets.ResumeLab) -> None:
    s, r = report_lab.stepper, report_lab.resume
    s.target.value = "phase change"
    while r.phase != "copy" and not r.finished:
        s.next_button.click()
    card_matches(report_lab)
    v = r.cpu(1)
    assert v.state == "mwait" and v.cstate == "C6"
    assert "mwait C6" in report_lab.cards[1].header.value
    report_lab.cards.pick.value = 1
    assert f"monitor armed on {v.armed_line:#x}" in report_lab.cards[1].info_html
    assert "thread_info" in report_lab.cards[1].info_html


def test_faulted_card_shows_the_oops(faulted_lab: widgets.ResumeLab) -> None:
    r = faulted_lab.resume
    card_matches(faulted_lab)
    faulted = [c for c in faulted_lab.cards.cards if c.faulted]
    assert len(faulted) == 1
    card = faulted[0]
    assert card.cpu == r.faults()[0]["cpu"]
    assert "<pre" in card.oops_html and FAULT_ADDRESS in card.oops_html
    assert html.escape(r.cpu(card.cpu).oops) in card.oops_html
    for other in faulted_lab.cards.cards:
        if other is not card:
            assert other.oops_html == "" and "lab-cpu-faulted" not in other._dom_classes


def test_hlt_run_ends_with_no_faulted_card() -> None:
    lab = widgets.ResumeLab(preset="report-2016", fix="hlt")
    lab.stepper.fault_button.click()
    assert lab.resume.outcome == "resumed"
    card_matches(lab)
    assert not any(c.faulted for c in lab.cards.cards)


def test_the_cards_a_step_changed_are_marked_and_a_reset_marks_none(report_lab: widgets.ResumeLab) -> None:
    """lab-changed on a card: the last step changed its CPU (its view or its state's name).
    After Reset no step has run, so no card is marked (and the first step sends no class change
    for a CPU it left alone)."""
    lab, r = report_lab, report_lab.resume

    def marked() -> set[int]:
        return {c.cpu for c in lab.cards.cards if "lab-changed" in c._dom_classes}

    assert marked() == set()
    seen = set()
    for _ in range(30):
        before = [r.cpu(i) for i in range(r.config.cpus)]
        lab.stepper.step_button.click()
        r = lab.resume
        after = [r.cpu(i) for i in range(r.config.cpus)]
        want = {i for i in range(r.config.cpus) if before[i] != after[i]}
        assert want <= marked(), f"cards changed by the step not marked: {want - marked()}"
        assert marked() <= want | {i for i in range(r.config.cpus) if lab.cards[i]._label == "waking"}
        seen |= marked()
    assert 0 in seen and 1 in seen, "the run changed no CPU to check"
    lab.stepper.reset()
    assert marked() == set()
