"""lab.choices: every draw of the run's generator is a named choice; the seeded chooser gives
exactly what the generator gives, a scheduled one changes the occurrences it names and nothing
else, and a value outside a choice's domain is refused, never clamped."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lab import trace
from lab.choices import (CHOICES, SCHEDULABLE, ChoiceJitter, ScheduledChooser, SeededChooser, parse_choice)
from lab.hw.sched import Jitter
from lab.scenario import Config, Resume

LAB = Path(__file__).resolve().parents[2] / "lab"


def test_seeded_jitter_draws_exactly_what_jitter_draws() -> None:
    a = Jitter(np.random.default_rng(7), 0.1)
    b = ChoiceJitter(np.random.default_rng(7), 0.1, SeededChooser())
    assert [a.scale(100_000) for _ in range(50)] == [b.scale(100_000) for _ in range(50)]
    assert np.array_equal(a.scale_many(1_000, 300), b.scale_many(1_000, 300))
    assert [a.scale(2_000) for _ in range(5)] == [b.scale(2_000) for _ in range(5)]  # the streams stay aligned
    assert b.chooser.counts == {"wake.exit": 55, "copy.page": 300} and b.chooser.deviations == []


def test_every_file_drawing_from_the_generator_is_named() -> None:
    """Each module that calls the run's generator (rng.integers, .uniform, .geometric, ...)
    appears in the ``where`` of some choice point."""
    drawing = set()
    for path in LAB.rglob("*.py"):
        if path.name == "choices.py":  # the list itself quotes the draws
            continue
        text = path.read_text()
        if re.search(r"\brng\.(integers|uniform|geometric|random|choice|normal|permutation)\(", text):
            drawing.add(path.relative_to(LAB.parent).as_posix())
    named = " ".join(c.where for c in CHOICES.values())
    # lab/hw/memory.py seeds its own generator per page from (kind, boot seed, index): page.bytes
    assert drawing, "the scan found no generator use at all"
    for f in drawing:
        assert f in named, f"{f} draws from a generator but no choice point names it"


def test_a_schedule_with_the_seeded_values_is_the_seeded_run() -> None:
    base = Resume(Config.from_preset("workshop", fix="mwait"))
    base.run()
    wakes = [e for e in base.events if e.kind == "wake"]
    assert wakes, "mwait at seed 0 wakes a parked CPU"
    same = [("wake.exit", i, e.data["resumes_at"] - e.t) for i, e in enumerate(wakes)]
    again = Resume(Config.from_preset("workshop", fix="mwait", schedule=same))
    again.run()
    assert trace.digest(again.events) == trace.digest(base.events)
    assert again.machine.choices.deviations == []


def test_one_scheduled_value_changes_that_occurrence_only() -> None:
    base = Resume(Config.from_preset("workshop", fix="zero-page-shared", seed=1))
    base.run()
    wakes = [e for e in base.events if e.kind == "wake"]
    assert len(wakes) >= 2
    first = wakes[0].data["resumes_at"] - wakes[0].t
    lo = max(1, int(round((first / 1.1))))  # a value inside the domain, different from the seeded one
    r = Resume(Config.from_preset("workshop", fix="zero-page-shared", seed=1, schedule=[f"wake.exit#0={first + 1}"]))
    r.run()
    w = [e for e in r.events if e.kind == "wake"]
    assert w[0].data["resumes_at"] - w[0].t == first + 1
    assert r.machine.choices.deviations == [("wake.exit", 0, first, first + 1)]
    assert lo > 0


def test_a_value_outside_the_domain_is_refused() -> None:
    with pytest.raises(ValueError, match=r"wake.exit#0 = 1 is outside its domain"):
        Resume(Config.from_preset("workshop", fix="mwait", schedule=[("wake.exit", 0, 1)])).run()


@pytest.mark.parametrize("bad, match", [
    ("wake.exit", "malformed choice"),
    ("boot.seed#0=5", "cannot be scheduled"),
    ("nope#0=1", "cannot be scheduled"),
    ("wake.exit#-1=5", "index must be a whole number >= 0"),
])
def test_bad_schedules_name_what_is_allowed(bad: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Config.from_preset("workshop", schedule=[bad])


def test_parse_choice_and_the_schedulable_set() -> None:
    assert parse_choice("copy.page#3=900") == ("copy.page", 3, 900)
    assert set(SCHEDULABLE) == {"wake.exit", "copy.page", "stray.time", "stray.cpu"}
    assert ScheduledChooser([("copy.page", 2, 5)]).values == {("copy.page", 2): 5}


def test_a_scheduled_stray_goes_where_the_schedule_says() -> None:
    r = Resume(Config.from_preset("workshop", fix="hlt", stray=("nmi",), schedule=[("stray.cpu", 0, 3)]))
    r.run()
    inj = [e for e in r.events if e.kind == "inject"]
    assert [e.cpu for e in inj] == [3]


def test_a_scheduled_run_replays_from_its_trace(tmp_path: Path) -> None:
    r = Resume(Config.from_preset("workshop", fix="hlt", schedule=[("copy.page", 10, 1050)]))
    r.run()
    path = tmp_path / "s.json"
    trace.save(r, path)
    again, same = trace.replay(trace.load(path))
    assert same and again.machine.choices.deviations == [("copy.page", 10, again.machine.choices.deviations[0][2], 1050)]
