"""Issue 12: hypothesis over the CLI's argument grammar, in process (``lab.cli.main`` with a
generated argv).  Whatever the arguments: no traceback, exit 0 or 2 (1 only for a replay that
differs), one ``error:`` line on exit 2; and any value drawn from the bad pool gives exit 2.

Time is bounded by the grammar: runs use the workshop preset (a run is a few dozen steps) with
at most 8 CPUs and small RAM; `sweep` and `compare` always carry one bad value, so they must
stop before any work.  Examples are derandomized: the same argv lists in every CI run.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab import trace
from lab.scenario import Resume
from scenario_kit import main_in_process, saved_trace

FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NON_ASCII = ["٤", "４", "৫", "١٢", "𝟠"]  # Arabic-Indic, fullwidth, Bengali, mathematical digits
JUNK = ["", " ", "x", "-", "--", "1e3", "0x10", "4.0", "nan", "inf", "9" * 40, "\x00", "ß", "🙂"]

# option -> (good values, bad values) for `run` on the workshop preset
RUN_OPTIONS: dict[str, tuple[list[str], list[str]]] = {
    "--fix": (["mwait", "hlt", "init", "mwait-hlt", "zero-page"], ["nope", "HLT", "hlt ", *JUNK]),
    "--cpus": (["2", "4", "6", "8"], ["0", "1", "-4", "513", "100000000000000000000", *NON_ASCII, *JUNK]),
    "--threads-per-core": (["2"], ["0", "3", "-1", *NON_ASCII, *JUNK]),
    "--ram": (["256M", "384M", "512M", "268435456"], ["63M", "2T", "1.5G", "-256M", "256Q", "１G", *JUNK]),
    "--image": (["96M", "100M"], ["0", "-1", "1T", "96.5M", *JUNK]),
    "--seed": (["0", "1", "7", str((1 << 63) - 1)], ["-1", str(1 << 63), *NON_ASCII, *JUNK]),
    "--kernel-version": (["4.0", "4.7"], ["4.8", "v4.7", *JUNK]),
    "--inject": (["nmi:1@0", "smi:2@1000", "init:3@5000000"],
                 ["nmi:9@0", "nmi:1@-5", "nmi:1", "nmi@1:0", "irq:1@0", "nmi:١@0", *JUNK]),
    "--stray": (["nmi", "smi", "mce"], ["irq", "NMI", *JUNK]),
    "--wakeup": (["init-sipi"], ["mailboxx", *JUNK]),
    "--kernel-text-pages": (["1024", "2048"], ["0", "-1", "15", "200000", *NON_ASCII, *JUNK]),
    "--restore-initcalls": (["0", "64"], ["-1", "65537", *NON_ASCII, *JUNK]),
    "--image-initcalls": (["0", "96"], ["-3", "1000000000", *JUNK]),
    "--step-budget": (["50", "5000"], ["0", "-1", "1000000001", *NON_ASCII, *JUNK]),
}
FLAGS = ["--nosmt", "--json", "--clflush-triggers", "--no-clflush-triggers", "--play-dead-at-text-end",
         "--no-play-dead-at-text-end"]
BAD_TOKENS = ["--warp", "--cpus=", "--seeds", "-x", "--cpus=x", "--json=1"]  # bad wherever they stand


@st.composite
def run_argv(draw, tmp: Path) -> tuple[list[str], bool]:
    """A `run` command line and whether it holds a bad value."""
    argv, bad = ["run", "--preset", "workshop"], False
    for option in draw(st.lists(st.sampled_from(sorted(RUN_OPTIONS)), max_size=5, unique=True)):
        good, wrong = RUN_OPTIONS[option]
        is_bad = draw(st.booleans())
        value = draw(st.sampled_from(wrong if is_bad else good))
        bad |= is_bad
        argv += [f"{option}={value}"] if draw(st.booleans()) else [option, value]
    argv += draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
    if draw(st.booleans()):
        target = draw(st.sampled_from(["good", "", "/dev/null", "dir"]))
        bad |= target != "good"
        argv += ["--trace", {"good": str(tmp / "t.json"), "dir": str(tmp)}.get(target, target)]
    if draw(st.integers(0, 5)) == 0:
        argv.insert(draw(st.integers(1, len(argv))), draw(st.sampled_from(BAD_TOKENS)))
        bad = True
    return argv, bad


@st.composite
def campaign_argv(draw) -> list[str]:
    """`sweep` or `compare` with one bad value somewhere (so nothing may run)."""
    command = draw(st.sampled_from(["sweep", "compare"]))
    options = {"--preset": "workshop", "--seeds": draw(st.sampled_from(["0", "0-1", "1,3"])), "--jobs": "1",
               "--fix": draw(st.sampled_from(["hlt", "mwait"]))}
    wrong = {"--preset": ["nope", *JUNK], "--seeds": ["٣", "5-3", "-1", "1,,2", "0-x", *JUNK],
             "--jobs": ["0", "65", "-1", "٢", *JUNK], "--fix": ["nope", *JUNK]}
    spoiled = draw(st.sampled_from(sorted(wrong)))
    options[spoiled] = draw(st.sampled_from(wrong[spoiled]))
    argv = [command]
    for k in draw(st.permutations(sorted(options))):
        argv += [k, options[k]]
    return argv


def call(argv: list[str], capsys) -> tuple[int, str, str]:
    p = main_in_process(argv, capsys)  # argparse --help and usage errors leave through SystemExit
    return p.returncode, p.stdout, p.stderr


def check_outcome(argv: list[str], code: int, out: str, err: str, bad: bool) -> None:
    assert "Traceback" not in err and "Traceback" not in out, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and ": error: " in lines[0], (argv, err)
    else:
        assert out.strip(), argv
    if bad:
        assert code == 2, (argv, out[:200])


@FUZZ
@given(data=st.data())
def test_run_grammar(data, tmp_path: Path, capsys, bounded) -> None:
    bounded[0] = 0
    argv, bad = data.draw(run_argv(tmp_path), label="argv")
    code, out, err = call(argv, capsys)
    check_outcome(argv, code, out, err, bad)


@FUZZ
@given(argv=campaign_argv())
def test_sweep_and_compare_refuse_bad_input_before_any_work(argv: list[str], capsys, monkeypatch) -> None:
    def no_run(*args, **kwargs):
        raise AssertionError(f"a run started for {argv}")
    monkeypatch.setattr(Resume, "__init__", no_run)
    code, out, err = call(argv, capsys)
    check_outcome(argv, code, out, err, bad=True)


MAX_STEPS, MAX_RUNS = 2_000, 3


@pytest.fixture
def bounded(monkeypatch):
    """Every Resume the CLI makes: the workshop preset only, at most MAX_STEPS steps, at most
    MAX_RUNS per command (a ValueError past that, which the CLI reports as bad input)."""
    real = Resume.__init__
    made = [0]

    def small(self, config=None, **kwargs):
        made[0] += 1
        if made[0] > MAX_RUNS:
            raise ValueError("fuzz: too many runs for one example")
        if config is not None and config.preset != "workshop":
            raise ValueError("fuzz: only the workshop preset is simulated here")
        real(self, config, **kwargs)
        object.__setattr__(self.config, "step_budget", min(self.config.step_budget, MAX_STEPS))
    monkeypatch.setattr(Resume, "__init__", small)
    return made


@settings(FUZZ, max_examples=30)
@given(argv=st.lists(st.one_of(st.sampled_from(["run", "replay", "sweep", "compare", "presets", "fixes", "-h",
                                                "--preset", "workshop", "--cpus", "--seeds", "--fix", "--",
                                                "="]),
                               st.text(max_size=6)), max_size=5))
def test_arbitrary_tokens(argv: list[str], capsys, bounded) -> None:
    """Any short token list: parsing and checking never raise."""
    bounded[0] = 0
    code, out, err = call(argv, capsys)
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 1, 2), (argv, code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 or err.startswith("usage:"), (argv, err)


@pytest.fixture(scope="module")
def good_trace(tmp_path_factory) -> Path:
    return saved_trace(tmp_path_factory.mktemp("fuzz"), seed=2)


def test_good_values_run(capsys, tmp_path: Path) -> None:
    """The grammar's good pool is good: every good value at once still runs (so the fuzz
    reaches the simulation, not only the checks)."""
    argv = ["run", "--preset", "workshop", "--json", "--trace", str(tmp_path / "t.json")]
    for option, (good, _) in RUN_OPTIONS.items():
        argv += [option, good[0]]
    code, out, err = call(argv, capsys)
    assert code == 0, err
    assert trace.load(tmp_path / "t.json")["config"]["inject"] == [["nmi", 1, 0]]


def test_replay_paths(good_trace: Path, tmp_path: Path, capsys) -> None:
    for path, expected in ((good_trace, 0), (tmp_path / "missing.json", 2), (tmp_path, 2), ("", 2)):
        code, out, err = call(["replay", str(path)], capsys)
        assert code == expected, (path, err)
        assert "Traceback" not in err
        assert expected == 0 or len(err.strip().splitlines()) == 1, err
    assert "it is a directory" in call(["replay", str(tmp_path)], capsys)[2]
