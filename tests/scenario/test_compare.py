"""lab.compare: the fixes-by-hazards matrix.  Its structure, the Wilson intervals (against
scipy), cells that do not apply and why, the reproducing command of a cell's worst outcome (run
through the CLI in-process), executor independence, and the CLI.  Small: the workshop preset,
fixes that exist since the start (mwait, hlt, init, ...), two seeds."""
from __future__ import annotations

import dataclasses
import json
import shlex
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import pytest
from scipy.stats import binomtest

from lab import cli
from lab import compare as cmp
from lab.scenario import OUTCOMES, Config

FIXES = ["mwait", "hlt", "init"]
HAZARDS = ["copy stores", "nosmt"]
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return cmp.compare("workshop", FIXES, HAZARDS, SEEDS)


def test_structure(small: pd.DataFrame) -> None:
    assert small.index.names == ["fix", "hazard"]
    assert list(small.index) == [(f, h) for f in FIXES for h in HAZARDS]
    for col in ("applies", "reason", "n", *OUTCOMES, "failures", "failure_rate", "ci_low", "ci_high", *cmp.COSTS,
                "worst", "worst_seed", "command", "settings", "label"):
        assert col in small.columns, col
    m = cmp.matrix(small)
    assert list(m.index) == FIXES and list(m.columns) == HAZARDS
    rates = cmp.matrix(small, "failure_rate")
    for (fix, hz), row in small.iterrows():
        assert row["applies"] and row["n"] == len(SEEDS)
        assert sum(int(row[o]) for o in OUTCOMES) == row["n"]
        assert row["failures"] == row["n"] - row["resumed"]
        assert rates.loc[fix, hz] == row["failures"] / row["n"]
        assert m.loc[fix, hz] == row["label"] == cmp.cell_label(row["failures"], row["n"], row["ci_low"], row["ci_high"])
        assert row["worst_seed"] in SEEDS and row["command"].startswith("python -m lab run --preset workshop")
    # the model's own facts, as the seed sweep shows them: mwait fails at workshop seed 0
    assert small.loc[("mwait", "copy stores"), "failures"] >= 1
    assert small.loc[("mwait", "copy stores"), "worst"] in ("panic", "triple_fault")


def test_worst_outcome_order() -> None:
    order = sorted(["resumed", "unfinished", "timeout", "corrupted", "panic", "shutdown", "triple_fault"],
                   key=cmp.severity)
    assert order == ["triple_fault", "shutdown", "panic", "corrupted", "timeout", "unfinished", "resumed"]
    assert cmp.severity("timeout") < cmp.severity("some new failure") < cmp.severity("unfinished")
    assert set(OUTCOMES) <= set(cmp.SEVERITY)


def test_wilson_intervals_are_scipy_s(small: pd.DataFrame) -> None:
    for _, row in small.iterrows():
        ci = binomtest(int(row["failures"]), int(row["n"])).proportion_ci(confidence_level=0.95, method="wilson")
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-12)
        assert row["ci_low"] <= row["failure_rate"] <= row["ci_high"]
    assert cmp.wilson(0, 32) == pytest.approx((0.0, 0.1072), abs=1e-4)  # 3.84 / (32 + 3.84)


def test_a_cell_that_does_not_apply_says_why() -> None:
    hazards = {"3 CPUs with SMT": ("an odd CPU count on a 2-thread core", lambda c: {"cpus": 3}),
               "a setting from the future": ("not in Config", lambda c: {"no_such_setting": 1})}
    df = cmp.compare("workshop", ["hlt"], hazards, [0])
    odd = df.loc[("hlt", "3 CPUs with SMT")]
    assert not odd["applies"] and "cpus 3" in odd["reason"]
    assert odd["label"] == "n/a" and odd["n"] == 0 and odd["command"] is None and pd.isna(odd["failure_rate"])
    future = df.loc[("hlt", "a setting from the future")]
    assert not future["applies"] and "no_such_setting" in future["reason"]
    assert "n/a:" in cmp.to_text(df) and "cpus 3" in cmp.to_text(df)


def _run_cli(capsys: pytest.CaptureFixture, command: str) -> dict:
    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "lab", "run"]
    assert cli.main(argv[3:] + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_command_reproduces_the_worst_outcome(small: pd.DataFrame, capsys: pytest.CaptureFixture) -> None:
    for key in [("mwait", "copy stores"), ("hlt", "nosmt")]:
        row = small.loc[key]
        s = _run_cli(capsys, row["command"])
        assert s["outcome"] == row["worst"], (key, row["command"])
        assert s["seed"] == row["worst_seed"]
    # hazards whose settings need the run command's hazard options
    df = cmp.compare("workshop", ["mwait-hlt", "hlt"], ["text mapping", "stray NMI", "clflush ping-pong"], [0])
    for (fix, hz), row in df.iterrows():
        s = _run_cli(capsys, row["command"])
        assert s["outcome"] == row["worst"], row["command"]
        assert json.loads(json.dumps(row["settings"])).items() <= s["config"].items()
        kw = cmp.worst_run(df, fix, hz)
        cfg = Config.from_preset(kw.pop("preset"), **kw)  # what Resume(**worst_run(...)) builds
        assert json.loads(json.dumps(cfg.to_dict())) == s["config"]


def test_failure_for_and_worst_run(small: pd.DataFrame) -> None:
    assert cmp.failure_for(small, "mwait") == "copy stores"
    assert cmp.failure_for(small, "mwait", ["nosmt"]) in ("nosmt", "copy stores")
    hz = cmp.failure_for(small, "hlt")
    assert hz is None or small.loc[("hlt", hz), "failures"] > 0
    run = cmp.worst_run(small, "mwait", "copy stores")
    assert run["seed"] == small.loc[("mwait", "copy stores"), "worst_seed"] and run["clflush_triggers"] is False
    with pytest.raises(ValueError, match="no cell"):
        cmp.worst_run(small, "mwait", "nope")


def test_every_hazard_is_a_run_command() -> None:
    base = Config.from_preset("workshop", fix="hlt", seed=3)
    base = dataclasses.replace(base, **cmp.HAZARDS[cmp.BASELINE][1](base))
    fields = cmp.config_fields()
    for name, (desc, fn) in cmp.HAZARDS.items():
        assert desc
        over = fn(base)
        if set(over) - fields:
            continue  # a setting the model does not have yet: the cell says so
        try:
            cfg = dataclasses.replace(base, **over)
        except ValueError:
            continue  # the preset cannot take it: the cell says so
        command = cmp.run_command(cfg)
        parsed = cli.build_parser().parse_args(shlex.split(command)[3:])
        assert parsed.command == "run" and parsed.seed == 3, name


def test_a_process_pool_gives_the_same_matrix(small: pd.DataFrame) -> None:
    with ProcessPoolExecutor(2) as pool:
        pooled = cmp.compare("workshop", FIXES, HAZARDS, SEEDS, executor=pool)
    pd.testing.assert_frame_equal(pooled, small)


def test_progress_and_bad_input() -> None:
    calls: list[tuple[int, int]] = []
    cmp.compare("workshop", ["hlt"], ["copy stores"], [0], progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 1)]
    for kwargs, text in ((dict(fixes=["nope"]), "unknown fix 'nope'"), (dict(hazards=["nope"]), "unknown hazard"),
                         (dict(seeds=[]), "seeds"), (dict(fixes=[]), "no fix chosen")):
        with pytest.raises(ValueError, match=text):
            cmp.compare("workshop", **kwargs)
    with pytest.raises(ValueError, match="unknown preset"):
        cmp.compare("nope")


def test_the_stand_in_for_stray_draws_inside_the_copy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Config.stray, a stray is an injection at a seeded time inside the copy window."""
    monkeypatch.setattr(cmp, "has_stray", lambda: False)
    df = cmp.compare("workshop", ["hlt"], ["stray NMI", "stray MCE"], [0])
    nmi = df.loc[("hlt", "stray NMI"), "settings"]["inject"]
    mce = df.loc[("hlt", "stray MCE"), "settings"]["inject"]
    base = Config.from_preset("workshop", fix="hlt", seed=0, clflush_triggers=False)
    lo, hi = cmp.copy_window(base)
    assert len(nmi) == 1 and nmi[0][0] == "nmi" and 1 <= nmi[0][1] < base.cpus and lo <= nmi[0][2] <= hi
    assert sorted(c for _, c, _ in mce) == list(range(base.cpus)) and len({t for *_, t in mce}) == 1
    assert "--inject nmi:" in df.loc[("hlt", "stray NMI"), "command"]
    again = cmp.compare("workshop", ["hlt"], ["stray NMI"], [0])  # still stand-in: same draw
    assert again.loc[("hlt", "stray NMI"), "settings"] == df.loc[("hlt", "stray NMI"), "settings"]


def test_cli_compare(capsys: pytest.CaptureFixture) -> None:
    argv = ["compare", "--preset", "workshop", "--seeds", "0", "--fix", "mwait", "--fix", "init",
            "--hazard", "copy stores", "--hazard", "mailbox wakeup"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert "copy stores" in lines[1] and lines[2].startswith("mwait") and lines[3].startswith("init")
    assert "1/1 fail [21-100%]" in lines[2] or "0/1 fail [0-79%]" in lines[2]
    assert cli.main(argv + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["preset"] == "workshop" and doc["seeds"] == [0] and doc["hazards"] == ["copy stores", "mailbox wakeup"]
    assert len(doc["cells"]) == 4 and "wilson" in doc["interval"].lower()
    cell = doc["cells"][0]
    for key in ("fix", "hazard", "applies", "n", "failures", "ci_low", "ci_high", "worst", "worst_seed", "command",
                "wakeups", "awake_ns", "ipis", "safe_pages"):
        assert key in cell
    if "wakeup" in cmp.config_fields():
        na = next(c for c in doc["cells"] if c["fix"] == "init" and c["hazard"] == "mailbox wakeup")
        assert na["applies"] is False and na["reason"] and na["label"] == "n/a"


@pytest.mark.parametrize("argv, text", [
    (["compare", "--hazard", "nope"], "unknown hazard 'nope'"),
    (["compare", "--fix", "nope"], "unknown fix 'nope'"),
    (["compare", "--seeds", "9-1"], "malformed seeds"),
    (["compare", "--jobs", "0"], "--jobs must be 1 to 64"),
    (["compare", "--preset", "nope"], "unknown preset"),
    (["compare", "--bogus"], "unrecognized arguments"),
])
def test_cli_compare_bad_input(capsys: pytest.CaptureFixture, argv: list[str], text: str) -> None:
    with pytest.raises(SystemExit) as exc:
        code = cli.main(argv)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert text in err and len(err.strip().splitlines()) == 1


def test_unfinished_runs_are_counted_but_judge_nothing() -> None:
    """A run the step budget cuts short is no failure of the fix: the rate is over the judged
    runs, the label says how many were unfinished, and the reproducing command carries the
    budget."""
    probe = cmp.compare("workshop", ["hlt"], {"short": ("budget cut", lambda c: {})}, [0, 1])
    steps = 5  # far fewer than a workshop hlt resume needs (a few dozen: the copy runs in bulk)
    hz = {"budget": ("a step budget far too small", lambda c: {"step_budget": steps})}
    df = cmp.compare("workshop", ["hlt"], hz, [0, 1])
    row = df.loc[("hlt", "budget")]
    assert row["unfinished"] == 2 and row["judged"] == 0 and row["failures"] == 0
    assert row["label"] == "none judged (2 unfinished)"
    assert row["worst"] == "unfinished" and f"--step-budget {steps}" in row["command"]
    assert probe.loc[("hlt", "short"), "judged"] == 2
