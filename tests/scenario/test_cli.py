"""``python -m lab``: one JSON object per run, the lists of presets and fixes, exit 0 for every
finished simulation whatever its outcome, exit 2 with one line on stderr (the value and what is
allowed, no traceback) for bad input; the API raises ValueError with the same text.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from lab import trace
from lab.fixes import FIXES
from lab.scenario import OUTCOMES, PRESETS, Config, Resume
from scenario_kit import main_in_process

REPO = Path(__file__).resolve().parents[2]
HEX = re.compile(r"^0x[0-9a-f]+$")
PREFIX = "python -m lab: error: "
REQUIRED = {"config", "fix", "seed", "outcome", "faults", "oops", "wakeups", "pages_copied", "digest"}


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lab", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})


def finish(p: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = p.communicate(timeout=180)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def check_fault_shape(f: dict) -> None:
    assert isinstance(f["cpu"], int)
    assert isinstance(f["vector"], str) and f["vector"].startswith("#")
    assert isinstance(f["address"], str) and HEX.match(f["address"]), f["address"]
    assert isinstance(f["error_code"], int)
    assert isinstance(f["rip"], str) and HEX.match(f["rip"])
    assert isinstance(f["walk"], list)
    for step in f["walk"]:
        assert set(step) >= {"level", "frame", "entry"}
        assert isinstance(step["level"], int) and 0 <= step["level"] <= 3
        assert HEX.match(step["frame"]) and HEX.match(step["entry"])


def check_summary_shape(s: dict) -> None:
    assert REQUIRED <= set(s), REQUIRED - set(s)
    assert isinstance(s["config"], dict) and s["config"]["fix"] == s["fix"] and s["config"]["seed"] == s["seed"]
    assert isinstance(s["fix"], str) and s["fix"] in FIXES
    assert isinstance(s["seed"], int) and s["seed"] >= 0
    assert s["outcome"] in OUTCOMES
    assert isinstance(s["faults"], list)
    for f in s["faults"]:
        check_fault_shape(f)
    assert s["oops"] is None or isinstance(s["oops"], str)
    assert isinstance(s["wakeups"], dict)
    assert all(isinstance(k, str) and k.isdigit() and isinstance(v, int) for k, v in s["wakeups"].items())
    assert len(s["wakeups"]) == s["config"]["cpus"]
    assert isinstance(s["pages_copied"], int) and s["pages_copied"] >= 0
    assert isinstance(s["digest"], str) and re.fullmatch(r"[0-9a-f]{64}", s["digest"])


def parse_one_object(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line, got {len(lines)}"
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


# -- good input ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess]:
    """The report's run in a fresh process (end to end: a panic still exits 0)."""
    return {"report": finish(start("run", "--preset", "report-2016", "--json"))}


def test_run_json_is_one_object_with_the_documented_keys(runs, capsys) -> None:
    results = dict(runs)
    results["workshop"] = main_in_process(["run", "--preset", "workshop", "--json"], capsys)
    results["workshop-hlt"] = main_in_process(["run", "--preset", "workshop", "--fix", "hlt", "--seed", "2",
                                               "--json"], capsys)
    for name, p in results.items():
        assert p.returncode == 0, (name, p.stderr)
        assert p.stderr == ""
        check_summary_shape(parse_one_object(p.stdout))


def test_run_json_matches_the_api(capsys) -> None:
    s = parse_one_object(main_in_process(["run", "--preset", "workshop", "--fix", "hlt", "--seed", "2", "--json"],
                                         capsys).stdout)
    r = Resume(Config.from_preset("workshop", fix="hlt", seed=2))
    r.run()
    assert s["outcome"] == r.outcome == "resumed"
    assert s["digest"] == trace.digest(r.events)
    assert s["pages_copied"] == r.runtime.copied
    assert s["config"] == json.loads(json.dumps(r.config.to_dict()))
    assert s["faults"] == [] and s["oops"] is None


def test_report_panic_still_exits_0(runs) -> None:
    p = runs["report"]
    assert p.returncode == 0
    s = parse_one_object(p.stdout)
    assert s["fix"] == "mwait" and s["seed"] == 0 and s["config"]["preset"] == "report-2016"
    assert s["outcome"] == "panic"
    f = s["faults"][0]
    assert (f["cpu"], f["vector"], f["address"]) == (1, "#PF", "0xffff8800ba800010")
    assert f["walk"] and f["walk"][-1]["entry"] == "0x0"
    assert [w["level"] for w in f["walk"]] == [0, 1, 2, 3]  # the zero entry is the PTE
    assert "CR2: ffff8800ba800010" in s["oops"]


def test_workshop_default_exits_0_whatever_the_outcome(capsys) -> None:
    p = main_in_process(["run", "--preset", "workshop", "--json"], capsys)
    s = parse_one_object(p.stdout)
    assert s["fix"] == "mwait" and s["seed"] == 0
    assert s["outcome"] in ("panic", "triple_fault")  # the preset's claim; exit 0 all the same
    assert p.returncode == 0


def test_text_output_names_the_run(capsys) -> None:
    p = main_in_process(["run", "--preset", "workshop", "--fix", "hlt", "--seed", "2"], capsys)
    assert p.returncode == 0
    assert p.stdout.splitlines()[0] == "preset workshop, fix hlt, seed 2: resumed"
    assert "pages copied:" in p.stdout


def test_presets_and_fixes_list_names_one_per_line(capsys) -> None:
    for cmd, names in (("presets", list(PRESETS)), ("fixes", list(FIXES))):
        p = main_in_process([cmd], capsys)
        assert p.returncode == 0 and p.stderr == ""
        lines = [ln for ln in p.stdout.strip().splitlines() if not ln.startswith(" ")]
        assert [ln.split()[0] for ln in lines] == names
        assert all(len(ln.split(None, 1)) == 2 for ln in lines)  # name, then a description
    # calibrated parameters are disclosed, indented under their preset
    out = main_in_process(["presets"], capsys).stdout
    block = out.split("report-2016", 1)[1]
    assert "calibrated: e820_end_below_4g=0xba9f7000" in block and "calibrated: kernel_version=4.0" in block


def test_trace_written_by_run_replays(tmp_path: Path, capsys) -> None:
    path = tmp_path / "t.json"
    p = main_in_process(["run", "--preset", "workshop", "--fix", "hlt", "--seed", "4", "--json", "--trace",
                         str(path)], capsys)
    assert p.returncode == 0, p.stderr
    s = parse_one_object(p.stdout)
    assert trace.load(path)["digest"] == s["digest"]
    rp = main_in_process(["replay", str(path)], capsys)
    assert rp.returncode == 0, rp.stderr
    assert "digest matches" in rp.stdout and "outcome resumed" in rp.stdout


def test_replay_of_a_foreign_trace_says_it_differs(tmp_path: Path, capsys) -> None:
    r = Resume(preset="workshop", fix="hlt", seed=4)
    r.run()
    data = trace.export(r)
    data["events"] = data["events"][1:]
    trace.seal(data)  # well formed and intact, but not what this config produces
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(data))
    p = main_in_process(["replay", str(path)], capsys)
    assert p.returncode == 1
    assert "DIFFERS" in p.stdout and "Traceback" not in p.stderr
    assert "model now runs differently: event 0 differs" in p.stdout


# -- bad input -------------------------------------------------------------------------------

def api_error(fn: Callable[[], object]) -> str:
    with pytest.raises(ValueError) as info:
        fn()
    return str(info.value)


# (cli args, substrings the message must hold, the same check through the API or None)
BAD = {
    "unknown preset": (["run", "--preset", "nope"], ["'nope'", "allowed: default, workshop, report-2016"],
                       lambda: Config.from_preset("nope")),
    "unknown fix": (["run", "--preset", "workshop", "--fix", "nope"], ["'nope'", "allowed: mwait, zero-page-shared"],
                    lambda: Config.from_preset("workshop", fix="nope")),
    "1 cpu": (["run", "--preset", "workshop", "--cpus", "1"], ["got 1", "2 to 512"],
              lambda: Config.from_preset("workshop", cpus=1)),
    "514 cpus": (["run", "--preset", "workshop", "--cpus", "514"], ["got 514", "2 to 512"],
                 lambda: Config.from_preset("workshop", cpus=514)),
    "init on mailbox": (["run", "--preset", "workshop", "--fix", "init", "--wakeup", "mailbox"],
                        ["'init' is not available", "mailbox"],
                        lambda: Config.from_preset("workshop", fix="init", wakeup="mailbox")),
    "unknown stray": (["run", "--preset", "workshop", "--stray", "irq"], ["'irq'", "nmi, smi, mce"],
                      lambda: Config.from_preset("workshop", stray=("irq",))),
    "bad size": (["run", "--preset", "workshop", "--ram", "8XB"], ["'8XB'", "allowed", "256M"],
                 lambda: Config.from_preset("workshop", ram="8XB")),
    "negative seed": (["run", "--preset", "workshop", "--seed", "-1"], ["-1", ">= 0"],
                      lambda: Config.from_preset("workshop", seed=-1)),
    "image > ram": (["run", "--preset", "workshop", "--image", "512M"], ["536870912", "larger than ram"],
                    lambda: Config.from_preset("workshop", image="512M")),
    "ram too small": (["run", "--preset", "workshop", "--ram", "112M"], ["ram too small", "112 MiB", "96 MiB"],
                      lambda: Config.from_preset("workshop", ram="112M")),
    "not an int": (["run", "--preset", "workshop", "--cpus", "abc"], ["--cpus", "'abc'"], None),
    "unknown option": (["run", "--preset", "workshop", "--warp"], ["--warp"], None),
}


@pytest.fixture(scope="module")
def trace_files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("traces")
    good = Resume(preset="workshop", fix="hlt", seed=4)
    good.run()
    text = json.dumps(trace.export(good))
    (d / "truncated.json").write_text(text[: len(text) // 3])
    (d / "malformed.json").write_text("{this is not json")
    (d / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    tampered = json.loads(text)
    tampered["events"][5]["t"] += 1
    (d / "tampered.json").write_text(json.dumps(tampered))
    return d


TRACE_CASES = {
    "truncated trace": ("truncated.json", ["truncated.json", "not valid JSON"]),
    "malformed trace": ("malformed.json", ["malformed.json", "not valid JSON"]),
    "binary trace": ("binary.json", ["binary.json"]),
    "tampered trace": ("tampered.json", ["tampered.json", "damaged"]),
    "missing trace": ("missing.json", ["missing.json", "cannot read"]),
}


def check_bad(p: subprocess.CompletedProcess, needles: list[str]) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_exits_2_with_one_line(name: str, capsys) -> None:
    args, needles, _ = BAD[name]
    check_bad(main_in_process(args, capsys), needles)


@pytest.mark.parametrize("name", list(TRACE_CASES))
def test_bad_trace_exits_2_with_one_line(name: str, trace_files: Path, capsys) -> None:
    file, needles = TRACE_CASES[name]
    check_bad(main_in_process(["replay", str(trace_files / file)], capsys), needles)


@pytest.mark.parametrize("name", [n for n, case in BAD.items() if case[2] is not None])
def test_api_raises_the_cli_message(name: str, capsys) -> None:
    args, _, api = BAD[name]
    p = main_in_process(args, capsys)
    assert p.stderr.strip() == PREFIX + api_error(api)


def test_bad_input_in_a_fresh_process(trace_files: Path) -> None:
    """End to end, in real processes: exit 2, one line, no traceback."""
    procs = [(start(*BAD["unknown preset"][0]), BAD["unknown preset"][1]),
             (start(*BAD["not an int"][0]), BAD["not an int"][1]),
             (start("replay", str(trace_files / "binary.json")), TRACE_CASES["binary trace"][1])]
    for p, needles in procs:
        check_bad(finish(p), needles)


def test_config_constructor_raises_like_from_preset() -> None:
    assert api_error(lambda: Config(preset="nope")) == api_error(lambda: Config.from_preset("nope"))
    assert api_error(lambda: Config(cpus=65)) == api_error(lambda: Config.from_preset("default", cpus=65))
    assert "seed must be >= 0" in api_error(lambda: Config(seed=-3))
    assert "unknown setting(s) warp" in api_error(lambda: Config.from_preset("default", warp=9))


def test_resume_raises_the_same_value_error() -> None:
    assert api_error(lambda: Resume(preset="workshop", cpus=1)) == api_error(lambda: Config.from_preset("workshop", cpus=1))


def test_unwritable_trace_path_exits_2(tmp_path: Path, capsys) -> None:
    target = tmp_path / "no-such-dir" / "t.json"
    p = main_in_process(["run", "--preset", "workshop", "--fix", "hlt", "--trace", str(target)], capsys)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert "cannot write trace file" in p.stderr and "t.json" in p.stderr


def test_step_budget_option_ends_a_run_unfinished_and_says_so() -> None:
    p = finish(start("run", "--preset", "workshop", "--fix", "hlt", "--step-budget", "5"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].endswith(": unfinished")
    assert "the lab stopped at its step budget (5 steps)" in p.stdout and "no verdict on the fix" in p.stdout
    j = json.loads(finish(start("run", "--preset", "workshop", "--step-budget", "5", "--json")).stdout)
    assert j["outcome"] == "unfinished" and j["stopped_by"] == "step budget" and j["steps"] == 5
    bad = finish(start("run", "--preset", "workshop", "--step-budget", "0"))
    assert bad.returncode == 2 and bad.stderr.startswith(PREFIX) and "step_budget" in bad.stderr
