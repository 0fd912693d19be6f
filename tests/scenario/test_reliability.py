"""Issue 12, one test per reproduction: the CLI under Ctrl-C, a closed or full stdout and
non-ASCII digits; traces that were damaged or edited (exit 2, naming the part) against intact
traces the model no longer reproduces (exit 1, naming the first differing event); atomic trace
writes; FIFOs and devices refused without hanging; and a hypothesis fuzz test: every single-byte
change to a trace is detected.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab import trace
from scenario_kit import main_in_process, saved_trace

REPO = Path(__file__).resolve().parents[2]
PREFIX = "python -m lab: error: "
ENTRY = shutil.which("hibernation-lab", path=str(Path(sys.executable).parent))
ENTRY_POINTS = {"python -m lab": [sys.executable, "-m", "lab"]}
if ENTRY:
    ENTRY_POINTS["hibernation-lab"] = [ENTRY]


in_process = main_in_process  # lab.cli.main in this process


def one_line_error(p: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _sigint_as_on_a_terminal() -> None:
    # a shell's background job (``make test &``, nohup) starts with SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: give the child the disposition a terminal has
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def proc(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output="stdout" not in kw, text=True, timeout=120,
                          env={**os.environ, "PYTHONHASHSEED": "0"}, **{"preexec_fn": _sigint_as_on_a_terminal, **kw})


@pytest.fixture(scope="module")
def good_trace(tmp_path_factory) -> Path:
    return saved_trace(tmp_path_factory.mktemp("rel"), seed=4)


def edited(good: Path, tmp_path: Path, edit) -> Path:
    data = json.loads(good.read_text())
    edit(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    return path


# -- CLI: Ctrl-C, closed and full stdout ------------------------------------------------------

def test_ctrl_c_exits_130_with_one_line() -> None:
    """A real SIGINT in the middle of a run (sent by the run itself, so no timing guesswork)."""
    code = ("import os, signal, sys\n"
            "from lab import cli\n"
            "cli.Resume.run = lambda self, *a, **k: os.kill(os.getpid(), signal.SIGINT)\n"
            "sys.exit(cli.main(['run', '--preset', 'workshop']))\n")
    p = proc([sys.executable, "-c", code])
    assert one_line_error(p, 130, "interrupted") == "python -m lab: interrupted (Ctrl-C)"
    assert p.stdout == ""


def test_ctrl_c_in_a_parallel_sweep_exits_130_with_one_line() -> None:
    """Ctrl-C from a terminal reaches the whole process group, pool workers included: still one
    line and 130 (the workers leave it to the parent). The sweep sends it once work is queued."""
    code = ("import os, signal, sys\n"
            "from lab import campaign, cli\n"
            "real = campaign.run_campaign\n"
            "def run_campaign(base, fixes, seeds, executor=None, progress=None, **kw):\n"
            "    futures = [executor.submit(os.getpid) for _ in range(4)]\n"
            "    [f.result() for f in futures]\n"
            "    os.killpg(0, signal.SIGINT)\n"
            "    return real(base, fixes, seeds, executor, progress, **kw)\n"
            "campaign.run_campaign = run_campaign\n"
            "sys.exit(cli.main(['sweep', '--preset', 'workshop', '--seeds', '0-63', '--jobs', '2']))\n")
    p = proc([sys.executable, "-c", code], start_new_session=True)
    assert one_line_error(p, 130, "interrupted") == "python -m lab: interrupted (Ctrl-C)"


def test_ctrl_c_to_the_parent_alone_stops_busy_workers_at_once(tmp_path: Path) -> None:
    """`kill -INT` (or `timeout -s INT`) reaches the parent only, while both workers are in a
    long run: the parent stops them instead of waiting for their runs (which it would throw
    away), exits 130 with one line, and no worker is left behind."""
    pids = tmp_path / "pids"
    code = ("import os, signal, sys, threading, time\n"
            "from lab import campaign, cli\n"
            "def run_one(config):\n"
            f"    with open({str(pids)!r}, 'a') as f: f.write(f'{{os.getpid()}}\\n')\n"
            "    time.sleep(300)\n"
            "run_one.__module__, run_one.__qualname__ = 'lab.campaign', 'run_one'\n"
            "campaign.run_one = run_one\n"
            "def interrupt():\n"
            f"    while not os.path.exists({str(pids)!r}) or len(open({str(pids)!r}).read().split()) < 2:\n"
            "        time.sleep(0.05)\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "threading.Thread(target=interrupt, daemon=True).start()\n"
            "sys.exit(cli.main(['sweep', '--preset', 'workshop', '--fix', 'hlt', '--seeds', '0-63', '--jobs', '2',"
            " '--quiet']))\n")
    # the runs sleep 300 s: a parent that waited for them would hit this timeout
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONHASHSEED": "0"}, preexec_fn=_sigint_as_on_a_terminal)
    assert one_line_error(p, 130, "interrupted") == "python -m lab: interrupted (Ctrl-C)"
    workers = [int(x) for x in pids.read_text().split()]
    assert len(workers) == 2
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_closed_stdout_exits_quietly(entry: str) -> None:
    """`... | head -1` where the reader has already gone: no traceback, exit 0."""
    read, write = os.pipe()
    os.close(read)
    try:
        p = proc([*ENTRY_POINTS[entry], "fixes"], stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_stdout_closed_from_the_start_exits_quietly(entry: str) -> None:
    """`python -m lab fixes >&-`: no stdout at all (sys.stdout is None)."""
    p = proc([*ENTRY_POINTS[entry], "fixes"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
             preexec_fn=lambda: (_sigint_as_on_a_terminal(), os.close(1)))
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_full_stdout_exits_2_with_one_line(entry: str) -> None:
    with open("/dev/full", "w") as full:
        p = proc([*ENTRY_POINTS[entry], "fixes"], stdout=full, stderr=subprocess.PIPE)
    one_line_error(p, 2, "cannot write to standard output", "No space left on device")


def test_hibernation_lab_entry_point_is_installed() -> None:
    assert ENTRY, "the hibernation-lab entry point is missing from the environment"


# -- CLI: non-ASCII digits, duplicate --fix, empty --trace ------------------------------------

@pytest.mark.parametrize("args, option, value", [
    (["run", "--preset", "workshop", "--cpus", "٤"], "--cpus", "٤"),          # Arabic-Indic 4
    (["run", "--preset", "workshop", "--cpus", "４"], "--cpus", "４"),         # fullwidth 4
    (["run", "--preset", "workshop", "--seed", "৫"], "--seed", "৫"),          # Bengali 5
    (["run", "--preset", "workshop", "--seed=৫"], "--seed", "৫"),
    (["run", "--preset", "workshop", "--inject", "nmi:١@0"], "--inject", "nmi:١@0"),
    (["sweep", "--preset", "workshop", "--seeds", "٣"], "--seeds", "٣"),
    (["run", "--preset", "workshop", "--cpu", "٤"], "--cpus", "٤"),           # an abbreviation
])
def test_non_ascii_digits_are_refused(args: list[str], option: str, value: str, capsys) -> None:
    line = one_line_error(in_process(args, capsys), 2, option, repr(value), "allowed: the ASCII digits 0-9")
    assert line.startswith(PREFIX)


def test_duplicate_fix_in_sweep_runs_once(capsys) -> None:
    p = in_process(["sweep", "--preset", "workshop", "--seeds", "0", "--fix", "hlt", "--fix", "hlt",
                    "--fix", "init", "--json"], capsys)
    assert p.returncode == 0, p.stderr
    records = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["fix"] for r in records] == ["hlt", "init"]


@pytest.mark.parametrize("value", ["", " "])
def test_empty_trace_path_is_refused(value: str, capsys) -> None:
    one_line_error(in_process(["run", "--preset", "workshop", "--trace", value], capsys), 2,
                   "--trace", repr(value), "allowed: a path to a regular file")


# -- traces: special files --------------------------------------------------------------------

@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def test_trace_to_a_fifo_is_refused_without_hanging(fifo: Path) -> None:
    p = proc([sys.executable, "-m", "lab", "run", "--preset", "workshop", "--trace", str(fifo)])
    one_line_error(p, 2, "pipe", "named pipe (FIFO)", "allowed: a regular file")


def test_replay_of_a_fifo_is_refused_without_hanging(fifo: Path) -> None:
    p = proc([sys.executable, "-m", "lab", "replay", str(fifo)])
    one_line_error(p, 2, "pipe", "named pipe (FIFO)", "allowed: a regular file")


def test_a_campaign_resumed_from_a_fifo_is_refused_without_hanging(fifo: Path) -> None:
    p = proc([sys.executable, "-m", "lab", "sweep", "--preset", "workshop", "--fix", "hlt", "--seeds", "0-3",
              "--resume", str(fifo)])
    one_line_error(p, 2, "pipe", "named pipe (FIFO)", "allowed: a regular file")


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_campaign_resumed_from_a_device_is_refused(device: str, capsys) -> None:
    one_line_error(in_process(["sweep", "--preset", "workshop", "--fix", "hlt", "--seeds", "0-3", "--resume",
                               device], capsys), 2, device, "character device")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_replay_of_a_device_is_refused(device: str, capsys) -> None:
    if not Path(device).exists():
        pytest.skip(f"no {device}")
    one_line_error(in_process(["replay", device], capsys), 2, device, "character device")


@pytest.mark.parametrize("device", ["/dev/full", "/dev/null"])
def test_trace_to_a_device_is_refused(device: str, capsys) -> None:
    if not Path(device).exists():
        pytest.skip(f"no {device}")
    one_line_error(in_process(["run", "--preset", "workshop", "--trace", device], capsys), 2,
                   device, "character device")


# -- traces: atomic writes --------------------------------------------------------------------

def test_failed_write_keeps_the_previous_trace(good_trace: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    path = tmp_path / "run.json"
    shutil.copy(good_trace, path)
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(trace.os, "fsync", disk_full)
    p = in_process(["run", "--preset", "workshop", "--seed", "9", "--trace", str(path)], capsys)
    one_line_error(p, 2, "cannot write trace file", "run.json", "No space left on device",
                   "previous file there is unchanged")
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["run.json"]  # no temporary file left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_keeps_the_previous_trace(good_trace: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "run.json"
    shutil.copy(good_trace, path)
    before = path.read_bytes()
    folder.chmod(0o555)
    try:
        p = in_process(["run", "--preset", "workshop", "--seed", "9", "--trace", str(path)], capsys)
    finally:
        folder.chmod(0o755)
    one_line_error(p, 2, "cannot write trace file", "run.json")
    assert path.read_bytes() == before


def test_write_replaces_the_file_whole(good_trace: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "run.json"
    path.write_text("old content")
    p = in_process(["run", "--preset", "workshop", "--fix", "hlt", "--seed", "4", "--trace", str(path)], capsys)
    assert p.returncode == 0, p.stderr
    assert path.read_bytes() == good_trace.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["run.json"]


# -- traces: damaged or edited (exit 2, the part named) vs the model changed (exit 1) --------

EDITS = {
    "config": lambda d: d["config"].update(seed=d["config"]["seed"] + 1),
    "events": lambda d: d["events"][3].update(t=d["events"][3]["t"] + 1),
    "outcome": lambda d: d.update(outcome="panic"),
    "steps": lambda d: d.update(steps=d["steps"] + 1),
    "summary": lambda d: d["summary"].update(pages_copied=0),
    "events digest": lambda d: d.update(digest="0" * 64),
}
PART = {"steps": "outcome", "events digest": "events"}


@pytest.mark.parametrize("name", list(EDITS))
def test_edited_trace_exits_2_naming_the_part(name: str, good_trace: Path, tmp_path: Path, capsys) -> None:
    path = edited(good_trace, tmp_path, EDITS[name])
    one_line_error(in_process(["replay", str(path)], capsys), 2, "edited.json", "damaged or edited",
                   f"{PART.get(name, name)} changed")


def test_edited_format_version_exits_2(good_trace: Path, tmp_path: Path, capsys) -> None:
    path = edited(good_trace, tmp_path, lambda d: d.update(format="hibernation-lab-trace/3"))
    one_line_error(in_process(["replay", str(path)], capsys), 2, "version changed or unknown",
                   "'hibernation-lab-trace/3'")


def test_edited_digests_exit_2(good_trace: Path, tmp_path: Path, capsys) -> None:
    path = edited(good_trace, tmp_path, lambda d: d["parts"].update(config="0" * 64))
    one_line_error(in_process(["replay", str(path)], capsys), 2, "damaged or edited", "digests do not match")


def test_older_format_trace_exits_2_saying_so(good_trace: Path, tmp_path: Path, capsys) -> None:
    def to_v1(d):
        for key in ("parts", "trace_digest", "summary", "steps", "outcome"):
            del d[key]
        d["format"] = "hibernation-lab-trace/1"
    path = edited(good_trace, tmp_path, to_v1)
    one_line_error(in_process(["replay", str(path)], capsys), 2, "older format hibernation-lab-trace/1",
                   "allowed: hibernation-lab-trace/2")


def test_intact_trace_the_model_no_longer_reproduces_exits_1(good_trace: Path, tmp_path: Path, capsys) -> None:
    """Resealed after the edit: intact, so the difference is the model's, named by event."""
    def model_changed(d):
        d["events"][7]["cpu"] = 99
        trace.seal(d)
    path = edited(good_trace, tmp_path, model_changed)
    p = in_process(["replay", str(path)], capsys)
    assert p.returncode == 1, p.stderr
    assert "digest DIFFERS" in p.stdout
    assert "the trace is intact but the model now runs differently: event 7 differs" in p.stdout


def test_intact_trace_with_a_different_summary_exits_1(good_trace: Path, tmp_path: Path, capsys) -> None:
    def summary_changed(d):
        d["summary"]["pages_copied"] += 1
        trace.seal(d)
    p = in_process(["replay", str(edited(good_trace, tmp_path, summary_changed))], capsys)
    assert p.returncode == 1
    assert "summary differs in pages_copied" in p.stdout


@pytest.mark.parametrize("name, content, needle", [
    ("nested", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("holes", None, "holes must be a list of [start, end] pairs"),
])
def test_odd_trace_content_exits_2(name: str, content, needle: str, good_trace: Path, tmp_path: Path,
                                   capsys) -> None:
    if content is None:
        path = edited(good_trace, tmp_path, lambda d: (d["config"].update(holes=5), trace.seal(d)))
    else:
        path = tmp_path / f"{name}.json"
        path.write_text(content)
    one_line_error(in_process(["replay", str(path)], capsys), 2, needle)


def test_replay_api_refuses_a_dict_that_is_not_a_trace() -> None:
    with pytest.raises(ValueError, match=r"replay needs a trace .* got dict with keys \[\]"):
        trace.replay({})


# -- fuzz: every single-byte change is detected ------------------------------------------------

@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_every_single_byte_change_is_detected(data, good_trace: Path, tmp_path: Path, capsys) -> None:
    original = good_trace.read_bytes()
    i = data.draw(st.integers(0, len(original) - 1), label="offset")
    # mostly printable ASCII (digits, letters, quotes: the changes that still parse as JSON)
    byte = data.draw(st.one_of(st.integers(32, 126), st.integers(0, 255)).filter(lambda b: b != original[i]),
                     label="byte")
    mutated = original[:i] + bytes([byte]) + original[i + 1:]
    path = tmp_path / "fuzzed.json"
    path.write_bytes(mutated)
    try:
        same_content = json.loads(mutated) == json.loads(original)
    except ValueError:
        same_content = False
    if same_content:  # e.g. the final newline turned into a space: JSON whitespace, nothing changed
        assert trace.load(path)["trace_digest"] == json.loads(original)["trace_digest"]
        return
    p = in_process(["replay", str(path)], capsys)
    assert p.returncode == 2, (i, byte, p.stdout, p.stderr)
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    line = p.stderr.strip()
    assert "fuzzed.json" in line, line  # the message names the file
    if "damaged or edited:" in line:  # ... and the part that changed
        named = line.split("damaged or edited:", 1)[1]
        assert any(part in named for part in trace.PARTS) or "digests do not match" in named, line
