"""lab.explore, lab.judge and ``python -m lab explore``: the minimal counterexample of the bare
trampoline under one NMI in the copy, none for the hardened one, the pruning agreeing with
running every grid time, budgets that say what they covered, traces that replay and open in
the lab at the failure, and a learner's fix judged without leaking into the registry."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lab
from lab import trace
from lab.explore import Bounds, Window, explore, parse_duration
from lab.fixes import FIXES, Fix
from lab.judge import judge, registered
from lab.scenario import Config

REPO = Path(__file__).resolve().parents[2]
WORKSHOP = Config.from_preset("workshop")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", "explore", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONHASHSEED": "0"})


@pytest.fixture(scope="module")
def bare():
    return explore(WORKSHOP, "trampoline", "nmi:1@copy", resolution="0.5ms")


@pytest.fixture(scope="module")
def hardened():
    return explore(WORKSHOP, "trampoline-idt", "nmi:1@copy", resolution="0.5ms")


def test_parsing_windows_and_durations() -> None:
    assert parse_duration("0.1ms") == 100_000 and parse_duration("250us") == 250_000 and parse_duration(7) == 7
    assert Window.parse("nmi:1@0-60ms") == Window("nmi", 1, 0, 60_000_000)
    assert Window.parse("MCE:0@5us-1ms") == Window("mce", 0, 5_000, 1_000_000)
    assert len(Bounds("nmi:1@0-60ms").windows[0].grid(100_000)) == 600


@pytest.mark.parametrize("bad, match", [
    ("nmi:1", "malformed window"), ("foo:1@0-1ms", "malformed window|window kind"),
    ("nmi:1@5-1ms", "start < end"), ("nmi:1@0-١ms", "malformed window"),
])
def test_bad_windows_say_what_is_allowed(bad: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Bounds(bad)


def test_bad_bounds_say_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="resolution"):
        Bounds("nmi:1@0-1ms", resolution_ns="fast")
    with pytest.raises(ValueError, match="max_choices"):
        Bounds("nmi:1@0-1ms", max_choices=2)
    with pytest.raises(ValueError, match="no CPU 9"):
        explore(WORKSHOP, "hlt", "nmi:9@0-1ms")


def test_the_bare_trampoline_has_a_minimal_counterexample(bare) -> None:
    assert bare.complete and bare.verdict().startswith("counterexample found")
    ce = bare.counterexamples["triple_fault"]
    assert ce.choices == 1 and ce.injections[0][:2] == ("nmi", 1)
    lo = bare.bounds.windows[0].start
    assert ce.injections[0][2] == lo  # the earliest time of the copy already fails
    assert "--inject nmi:1@" in ce.command and ce.command.startswith("python -m lab run --preset workshop --fix trampoline")
    again, same = trace.replay(ce.trace)
    assert same and again.outcome == "triple_fault"


def test_the_hardened_trampoline_has_none_within_bounds(hardened) -> None:
    assert hardened.complete and not hardened.counterexamples
    assert hardened.verdict() == "none found within bounds"
    assert hardened.schedules == 1 + len(hardened.bounds.windows[0].grid(hardened.bounds.resolution_ns))
    assert 1 < hardened.distinct < hardened.schedules
    assert sum(hardened.outcomes.values()) == hardened.schedules and set(hardened.outcomes) == {"resumed"}
    assert "not a proof about Linux" in hardened.report()


@pytest.mark.parametrize("fix", ["hlt", "zero-page"])
def test_pruning_agrees_with_running_every_grid_time(fix: str) -> None:
    window = "nmi:1@0.5-17ms"
    pruned = explore(WORKSHOP, fix, window, resolution="0.5ms")
    full = explore(WORKSHOP, fix, window, resolution="0.5ms", prune=False)
    assert full.run == full.schedules and pruned.run < full.run
    assert pruned.outcomes == full.outcomes
    assert {o: c.injections for o, c in pruned.counterexamples.items()} == \
        {o: c.injections for o, c in full.counterexamples.items()}


def test_the_default_schedules_own_failure_is_minimal() -> None:
    res = explore(WORKSHOP, "mwait", "nmi:1@0-3ms", resolution="1ms")
    assert res.counterexamples["panic"].choices == 0 and res.counterexamples["panic"].injections == ()
    assert res.pruned_after_verdict >= 0 and res.verdict_ns is not None


def test_a_schedule_budget_stops_and_says_so() -> None:
    res = explore(WORKSHOP, "hlt", "nmi:1@0.5-17ms", resolution="0.5ms", budget_schedules=3)
    assert not res.complete and res.run <= 3
    assert "STOPPED by the budget" in res.coverage()
    assert res.verdict() != "none found within bounds"


def test_two_windows_two_choices() -> None:
    res = explore(WORKSHOP, "trampoline-idt", ["nmi:1@1-3ms", "smi:2@1-3ms"], resolution="1ms", max_choices=2)
    assert res.schedules == 1 + 2 + 2 + 4 and res.complete


def test_lab_explore_and_lab_judge_are_callable_modules() -> None:
    assert callable(lab.explore) and callable(lab.judge)
    assert lab.judge.judge is judge


def test_from_trace_opens_the_counterexample_at_its_failure(bare, tmp_path: Path) -> None:
    pytest.importorskip("ipywidgets")
    from widgets import ResumeLab

    ce = bare.counterexamples["triple_fault"]
    path = tmp_path / "cx.json"
    ce.save(str(path))
    view = ResumeLab.from_trace(str(path))
    r = view.resume
    assert r.outcome == "triple_fault" and r.config.inject == ce.config.inject
    assert any(e.kind == "verdict" for e in r.events) and r.events[-1].kind in ("verdict", "state", "shutdown")
    assert view.check() == []
    start = ResumeLab.from_trace(ce.trace, at_failure=False)
    assert start.resume.steps == 0


class HaltOnly(Fix):
    name = "halt-only-test"
    play_dead = "hlt_play_dead"


def test_judge_a_learners_fix_and_leave_nothing_behind() -> None:
    before = dict(FIXES)
    j = judge(HaltOnly, seeds=[0], hazards=["nosmt", "stray SMI"], windows={"nmi": "nmi:1@copy"}, resolution="1ms")
    assert FIXES == before
    assert j.verdicts["nosmt"].verdict == "fails" and j.verdicts["nosmt"].outcome == "panic"
    assert j.verdicts["stray SMI"].verdict == "survives"
    v = j.verdicts["nmi"]
    assert v.verdict == "fails" and v.source == "explorer" and v.counterexample.choices == 1
    assert j.fails == ["nosmt", "nmi"] and not j.survives_everything
    assert "halt-only-test" in str(j) and list(j.table().index) == ["nosmt", "stray SMI", "nmi"]


def test_judge_refuses_what_is_not_a_fix() -> None:
    class Taken(Fix):
        name = "hlt"
    with pytest.raises(ValueError, match="taken by a built-in fix"):
        judge(Taken, seeds=[0], hazards=["nosmt"], windows={})
    with pytest.raises(ValueError, match="Fix subclass or instance"):
        judge(42)
    with pytest.raises(ValueError, match="needs a name"):
        judge(type("Nameless", (Fix,), {}))
    assert FIXES["hlt"].__class__.__name__ == "Hlt"


def test_registered_puts_back_what_was_there_on_error() -> None:
    fix = HaltOnly()
    with pytest.raises(RuntimeError):
        with registered(fix):
            assert FIXES[fix.name] is fix
            raise RuntimeError("boom")
    assert fix.name not in FIXES


def test_cli_explore_finds_and_prints_a_reproduction(tmp_path: Path) -> None:
    out = tmp_path / "cx.json"
    p = cli("--preset", "workshop", "--fix", "trampoline", "--inject-window", "nmi:1@copy", "--resolution", "1ms",
            "--out", str(out), "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "counterexample found: triple_fault" in p.stdout
    assert "reproduce: python -m lab run --preset workshop --fix trampoline --seed 0 --inject nmi:1@" in p.stdout
    data = trace.load(out)
    assert data["outcome"] == "triple_fault"
    rp = subprocess.run([sys.executable, "-m", "lab", "replay", str(out)], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
    assert rp.returncode == 0 and "digest matches" in rp.stdout


def test_cli_explore_reports_none_found_and_the_coverage() -> None:
    p = cli("--fix", "trampoline-idt", "--inject-window", "nmi:1@copy", "--resolution", "1ms", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["verdict"] == "none found within bounds" and doc["complete"]
    assert doc["schedules"] > doc["distinct"] > 1 and doc["counterexamples"] == {}


@pytest.mark.parametrize("args, match", [
    (["--inject-window", "nmi:1@0-60"], None),  # no unit: ns, fine (checked below for exit 0)
    (["--inject-window", "nmi:9@0-1ms"], "no such CPU"),
    (["--inject-window", "bogus"], "malformed window"),
    (["--inject-window", "nmi:1@0-1ms", "--resolution", "0"], "resolution"),
    (["--inject-window", "nmi:1@0-1ms", "--fix", "nope"], "unknown fix"),
    (["--inject-window", "nmi:1@0-1ms", "--out", "x.json"], "exactly one --fix"),
    (["--inject-window", "nmi:1@0-1ms", "--fix", "hlt", "--budget-s", "0"], "budget-s"),
])
def test_cli_explore_bad_input_exits_2_with_one_line(args: list[str], match: str | None) -> None:
    if match is None:
        p = cli("--fix", "hlt", "--no-progress", *args)
        assert p.returncode == 0, p.stderr
        return
    p = cli(*args)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and match in p.stderr and "Traceback" not in p.stderr


def test_run_choose_sets_one_choice_and_round_trips_through_run_command() -> None:
    from lab.compare import run_command

    cfg = Config.from_preset("workshop", fix="mwait", schedule=["wake.exit#0=95000"])
    cmd = run_command(cfg)
    assert "--choose 'wake.exit#0=95000'" in cmd
    p = subprocess.run([sys.executable, "-m", "lab", "run", "--preset", "workshop", "--fix", "mwait", "--json",
                        "--choose", "wake.exit#0=95000"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["config"]["schedule"] == [["wake.exit", 0, 95000]]
    bad = subprocess.run([sys.executable, "-m", "lab", "run", "--preset", "workshop", "--choose", "wake.exit#0=1"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "outside its domain 90000 to 110000" in bad.stderr and bad.stderr.count("\n") == 1


def test_varying_exit_latencies_adds_one_choice_per_distinct_schedule() -> None:
    plain = explore(WORKSHOP, "zero-page-shared", "nmi:1@2-6ms", resolution="1ms")
    res = explore(WORKSHOP, "zero-page-shared", "nmi:1@2-6ms", resolution="1ms", vary="wake.exit", max_choices=2)
    assert res.varied == 2 * 2 * (plain.distinct)  # lo and hi, for the first 2 occurrences, on each distinct one
    assert res.schedules == plain.schedules + res.varied
    assert res.distinct == plain.distinct + res.varied - res.varied_unmade
    assert sum(res.outcomes.values()) == res.schedules
    assert "wake.exit to an end of its domain" in res.coverage()
    for o, ce in plain.counterexamples.items():  # one choice more cannot make a minimal one longer
        assert res.counterexamples[o].choices <= ce.choices


def test_a_varied_counterexample_replays_with_its_schedule() -> None:
    import dataclasses

    from lab.explore import Varied, counterexample
    from lab.scenario import Resume

    key = Varied((("nmi", 1, 1_100_003),), (("wake.exit", 0, "hi"),))
    r = Resume(Config.from_preset("workshop", fix="hlt", inject=[key.injections[0]], schedule=list(key.schedule)))
    r.run()
    got = counterexample(dataclasses.replace(WORKSHOP, fix="hlt"), key, r.outcome)
    assert got.choices == 2 and got.schedule == (("wake.exit", 0, "hi"),)
    assert "--choose 'wake.exit#0=hi'" in got.command and "--inject nmi:1@1100003" in got.command
    assert "wake.exit#0 = hi" in got.describe()
    again, same = trace.replay(got.trace)
    assert same and again.machine.choices.deviations[0][:2] == ("wake.exit", 0)


def test_bad_vary_bounds() -> None:
    with pytest.raises(ValueError, match="cannot be varied; allowed: wake.exit"):
        Bounds("nmi:1@0-1ms", vary=("copy.page",))
    with pytest.raises(ValueError, match=r"max_choices must be 0 to the number of windows \+ 1"):
        Bounds("nmi:1@0-1ms", vary=("wake.exit",), max_choices=3)
    with pytest.raises(ValueError, match="vary_first"):
        Bounds("nmi:1@0-1ms", vary=("wake.exit",), vary_first=0)
