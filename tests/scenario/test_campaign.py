"""Campaigns: the same records whatever runs them, and the sweep CLI."""
from __future__ import annotations

import math
import tracemalloc
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pandas as pd
import pytest

from lab import campaign, cli, runsfile
from lab.campaign import (MAX_CAMPAIGN_RUNS, RECORD_TYPES, parse_seeds, read_runs, run_campaign, stats,
                          sweep, tally, to_dataframe)
from lab.compare import wilson
from lab.scenario import Config


@pytest.fixture(scope="module")
def serial():
    return sweep(Config.from_preset("workshop"), ["mwait", "hlt"], range(4), progress=False)


def test_records_sorted_and_complete(serial):
    assert [(r["fix"], r["seed"]) for r in serial] == [(f, s) for f in ("hlt", "mwait") for s in range(4)]
    t = tally(serial)
    assert t["hlt"] == {"resumed": 4}
    assert sum(t["mwait"].values()) == 4 and set(t["mwait"]) <= {"resumed", "panic", "triple_fault"}
    # workshop seed 0 fails with mwait (a #PF on its mwait_ptr during the copy: oops, panic)
    seed0 = next(r for r in serial if (r["fix"], r["seed"]) == ("mwait", 0))
    assert seed0["outcome"] in ("panic", "triple_fault")


def test_executors_give_identical_records(serial):
    progress = []
    with ProcessPoolExecutor(2) as pool:
        assert sweep(Config.from_preset("workshop"), ["hlt", "mwait"], [3, 2, 1, 0], pool) == serial
    with ThreadPoolExecutor(2) as pool:
        got = sweep(Config.from_preset("workshop"), ["mwait", "hlt"], range(4), pool,
                    progress=lambda done, total: progress.append((done, total)))
    assert got == serial
    assert progress[-1] == (8, 8) and len(progress) == 8


def test_failing_records_name_the_fault(serial):
    failed = [r for r in serial if r["outcome"] != "resumed"]
    assert failed and all(r["fault_address"].startswith("0xffff8800") and r["store_wakeups"] >= 1 for r in failed)
    assert all(r["store_wakeups"] == 0 for r in serial if r["fix"] == "hlt")


@pytest.mark.parametrize("text,seeds", [("3", [3]), ("0-3", [0, 1, 2, 3]), ("1,4,9-10", [1, 4, 9, 10])])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "5-1", "-2", "1,,2"])
def test_parse_seeds_rejects(text):
    with pytest.raises(ValueError, match="allowed: N, A-B"):
        parse_seeds(text)


def test_sweep_cli(capsys):
    assert cli.main(["sweep", "--preset", "workshop", "--fix", "hlt", "--seeds", "0-2"]) == 0
    out = capsys.readouterr().out
    assert "hlt" in out and "resumed 3" in out


@pytest.mark.parametrize("argv,needle", [(["sweep", "--seeds", "x"], "malformed seeds"),
                                         (["sweep", "--fix", "nope"], "unknown fix"),
                                         (["sweep", "--jobs", "0"], "--jobs must be 1 to 64")])
def test_sweep_cli_bad_input(argv, needle, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.count("\n") == 1


# -- statistics -----------------------------------------------------------------------------------

def test_stats_rates_intervals_and_resumes_to_failure(serial):
    df = stats(serial)
    assert list(df.index) == ["hlt", "mwait"] and (df["n"] == 4).all()
    hlt, mwait = df.loc["hlt"], df.loc["mwait"]
    assert hlt["resumed"] == 4 and hlt["failures"] == 0 and hlt["failure_rate"] == 0
    assert (hlt["ci_low"], hlt["ci_high"]) == wilson(0, 4)
    assert math.isinf(hlt["resumes_to_failure"]) and math.isinf(hlt["resumes_high"])
    assert hlt["resumes_low"] == pytest.approx(1 / wilson(0, 4)[1])
    k = int(mwait["failures"])
    assert k >= 1 and mwait["failure_rate"] == k / 4
    assert mwait["resumes_to_failure"] == pytest.approx(4 / k)
    assert mwait["resumes_low"] == pytest.approx(1 / mwait["ci_high"])
    assert mwait["resumes_high"] == pytest.approx(1 / mwait["ci_low"])
    assert mwait["resumes_low"] <= mwait["resumes_to_failure"] <= mwait["resumes_high"]


def test_resumes_to_failure_is_the_geometric_mean():
    assert campaign.resumes_to_failure(1, 100, 0.002, 0.05) == (100.0, 20.0, 500.0)
    assert all(math.isnan(x) for x in campaign.resumes_to_failure(0, 0, math.nan, math.nan))


def test_records_dataframe_has_the_record_columns(serial):
    assert set(campaign.run_one(Config.from_preset("workshop", fix="hlt"))) == set(RECORD_TYPES)
    df = to_dataframe(serial)
    assert list(df.columns) == list(RECORD_TYPES) and len(df) == 8
    assert str(df["fault_cpu"].dtype) == "Int64" and df.loc[df["fix"] == "hlt", "fault_cpu"].isna().all()


# -- seeds and bounds -----------------------------------------------------------------------------

def test_seeds_are_ranges_not_lists():
    s = parse_seeds("0-100000000000000,5,200000000000000")
    assert s.ranges == ((0, 100000000000000), (200000000000000, 200000000000000))
    assert len(s) == 100000000000002 and 99999999999999 in s and 100000000000001 not in s
    assert s.index(200000000000000) == 100000000000001
    assert list(parse_seeds("9-10,1,3-4,2")) == [1, 2, 3, 4, 9, 10] and parse_seeds("3-4,1").text == "1,3-4"


def test_campaign_above_the_limit_is_refused_before_anything_runs(monkeypatch):
    monkeypatch.setattr(campaign, "run_one", lambda c: pytest.fail("nothing may run"))
    with pytest.raises(ValueError, match=f"allowed: at most {MAX_CAMPAIGN_RUNS:,}"):
        run_campaign(Config.from_preset("workshop"), ["mwait", "hlt"], parse_seeds(f"0-{MAX_CAMPAIGN_RUNS // 2}"))


@pytest.mark.parametrize("argv", [["sweep", "--seeds", "0-100000000000000"],
                                  ["compare", "--seeds", "0-100000000000000"]])
def test_cli_refuses_a_huge_campaign_at_once(argv, capsys):
    tracemalloc.start()
    try:
        assert cli.main(argv) == 2
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert "campaign too large" in err and "MAX_CAMPAIGN_RUNS" in err and err.count("\n") == 1
    assert peak < 50 << 20


def test_memory_stays_flat_with_campaign_size(monkeypatch):
    """A stand-in run (the real one takes 0.1 s): 20,000 runs through a thread pool keep no more
    than the bounded window of futures and the done counts."""
    fake = lambda c: {"preset": c.preset, "fix": c.fix, "seed": c.seed, "outcome": "resumed"}  # noqa: E731
    monkeypatch.setattr(campaign, "run_one", fake)
    base = Config.from_preset("workshop")
    peaks = []
    for n in (2_000, 20_000):
        with ThreadPoolExecutor(2) as pool:
            tracemalloc.start()
            t = run_campaign(base, ["hlt"], range(n), pool, progress=False)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert t.counts["hlt"]["resumed"] == n
        peaks.append(peak)
    assert peaks[1] < 2 * peaks[0] + (1 << 20), peaks


# -- campaign files: written in chunks, resumed after an interrupt ----------------------------------

class Interrupt:
    """A progress callback that presses Ctrl-C after ``after`` runs."""

    def __init__(self, after):
        self.after = after

    def __call__(self, done, total):
        if done >= self.after:
            raise KeyboardInterrupt


def _records(path):
    return list(runsfile.records(str(path)))


def test_interrupted_campaign_resumed_equals_uninterrupted(tmp_path, serial):
    base = Config.from_preset("workshop")
    whole, part = tmp_path / "whole.csv", tmp_path / "part.csv"
    run_campaign(base, ["mwait", "hlt"], range(4), out=str(whole), progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_campaign(base, ["mwait", "hlt"], range(4), out=str(part), progress=Interrupt(3), flush_records=2)
    kept = _records(part)
    assert len(kept) == 3  # the chunk flushed at 2 and the one pending at the interrupt
    seen = []
    t = run_campaign(base, ["mwait", "hlt"], range(4), out=str(part), resume=True, progress=False,
                     on_record=seen.append)
    assert len(seen) == 8 and sum(sum(c.values()) for c in t.counts.values()) == 8
    assert _records(part) == _records(whole)
    assert sorted(_records(part), key=lambda r: (r["fix"], r["seed"])) == serial
    df = read_runs(str(part))
    assert df.attrs["campaign"]["seeds"] == "0-3" and len(df) == 8
    pd.testing.assert_frame_equal(df, to_dataframe(_records(whole)))
    assert len(pd.read_csv(part, skiprows=1)) == 8  # plain pandas reads it too


def test_a_line_cut_short_is_dropped_and_run_again(tmp_path):
    base = Config.from_preset("workshop")
    path = tmp_path / "runs.csv"
    run_campaign(base, ["hlt"], range(3), out=str(path), progress=False)
    full = path.read_bytes()
    path.write_bytes(full[:-10])  # killed in the middle of the last record
    assert len(_records(path)) == 2
    run_campaign(base, ["hlt"], range(3), out=str(path), resume=True, progress=False)
    assert path.read_bytes() == full


def test_cli_out_then_resume(tmp_path, capsys):
    base = Config.from_preset("workshop")
    path = tmp_path / "runs.csv"
    with pytest.raises(KeyboardInterrupt):
        run_campaign(base, ["hlt", "mwait"], range(3), out=str(path), progress=Interrupt(4), flush_records=1)
    argv = ["sweep", "--preset", "workshop", "--fix", "hlt", "--fix", "mwait", "--seeds", "0-2"]
    assert cli.main(argv + ["--resume", str(path)]) == 0
    resumed = capsys.readouterr().out
    assert cli.main(argv + ["--out", str(tmp_path / "again.csv")]) == 0
    again = capsys.readouterr().out
    assert resumed.replace("runs.csv", "x") == again.replace("again.csv", "x")
    assert "fail" in resumed and "resumes" in resumed and "hlt" in resumed
    assert _records(path) == _records(tmp_path / "again.csv")


def test_cli_resume_alone_takes_the_campaign_from_its_file(tmp_path, capsys):
    """`sweep --resume FILE` with nothing else: preset, fixes and seeds come from the file."""
    base = Config.from_preset("workshop")
    path = tmp_path / "runs.csv"
    with pytest.raises(KeyboardInterrupt):
        run_campaign(base, ["hlt", "mwait"], range(3), out=str(path), progress=Interrupt(4), flush_records=1)
    assert len(_records(path)) < 6
    assert cli.main(["sweep", "--resume", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("preset workshop, seeds 0-2 (3 runs per fix)")
    assert cli.main(["sweep", "--preset", "workshop", "--fix", "hlt", "--fix", "mwait", "--seeds", "0-2",
                     "--out", str(tmp_path / "again.csv")]) == 0
    assert _records(path) == _records(tmp_path / "again.csv")


@pytest.mark.parametrize("argv,needle", [
    (["--seeds", "0-3"], "seeds 0-2 there, 0-3 here"),
    (["--seeds", "0-2", "--preset", "default"], "setting preset: 'workshop' there, 'default' here"),
    (["--seeds", "0-2", "--fix", "mwait"], "fixes hlt there, mwait here"),
])
def test_cli_resume_of_another_campaign_is_refused(tmp_path, argv, needle, capsys):
    path = tmp_path / "runs.csv"
    assert cli.main(["sweep", "--preset", "workshop", "--fix", "hlt", "--seeds", "0-2", "--out", str(path)]) == 0
    before = path.read_bytes()
    capsys.readouterr()
    full = ["sweep", "--preset", "workshop", "--fix", "hlt", *argv] if "--fix" not in argv else \
        ["sweep", "--preset", "workshop", *argv]
    if "--preset" in argv:
        full = ["sweep", "--fix", "hlt", *argv]
    assert cli.main(full + ["--resume", str(path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "different campaign" in err and err.count("\n") == 1
    assert path.read_bytes() == before


def test_cli_out_refuses_to_overwrite_and_resume_needs_a_campaign_file(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    path.write_text("a,b\n1,2\n")
    assert cli.main(["sweep", "--preset", "workshop", "--fix", "hlt", "--seeds", "0", "--out", str(path)]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli.main(["sweep", "--preset", "workshop", "--fix", "hlt", "--seeds", "0", "--resume", str(path)]) == 2
    assert "not a campaign file" in capsys.readouterr().err
    assert cli.main(["sweep", "--preset", "workshop", "--fix", "hlt", "--seeds", "0", "--resume",
                     str(tmp_path / "none.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert cli.main(["sweep", "--preset", "workshop", "--fix", "hlt", "--seeds", "0", "--out",
                     str(tmp_path / "no" / "such" / "dir.csv")]) == 2
    err = capsys.readouterr().err
    assert "cannot write campaign file" in err and err.count("\n") == 1


def test_progress_bar_on_a_terminal_only_and_never_when_quiet():
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    outs = {}
    for name, f, quiet in (("tty", Tty(), False), ("pipe", io.StringIO(), False), ("quiet", Tty(), True)):
        bar = campaign.ProgressBar(quiet=quiet, file=f, notebook=False, delay=0)
        for done in (1, 2, 3):
            bar(done, 3)
        outs[name] = f.getvalue()
    assert "runs:" in outs["tty"] and "/3" in outs["tty"] and outs["pipe"] == "" and outs["quiet"] == ""
