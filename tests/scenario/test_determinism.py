"""A run depends on its configuration only: the same seed gives the same event stream (digest)
in this process and in fresh ones, a saved trace replays to the same digest, and a damaged
trace file is refused with a message that says what is wrong.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import trace
from lab.scenario import Resume

REPO = Path(__file__).resolve().parents[2]


def run_digest(**kw) -> str:
    r = Resume(preset="workshop", **kw)
    r.run()
    return trace.digest(r.events)


def cli_json(*args: str, hashseed: str = "0") -> dict:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    p = subprocess.run([sys.executable, "-m", "lab", *args], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def workshop3() -> Resume:
    r = Resume(preset="workshop", seed=3)
    r.run()
    return r


def test_two_processes_give_the_same_digest(workshop3: Resume) -> None:
    # different hash seeds: nothing may depend on set or dict ordering of str keys
    a = cli_json("run", "--preset", "workshop", "--seed", "3", "--json", hashseed="1")
    b = cli_json("run", "--preset", "workshop", "--seed", "3", "--json", hashseed="12345")
    assert len(a["digest"]) == 64 and int(a["digest"], 16) >= 0
    assert a["digest"] == b["digest"]
    assert a == b
    # and the same as in this process
    assert a["digest"] == trace.digest(workshop3.events)
    assert a["outcome"] == workshop3.outcome


def test_same_seed_same_digest_in_process(workshop3: Resume) -> None:
    assert run_digest(seed=3) == trace.digest(workshop3.events)
    again = Resume(preset="workshop", seed=3)
    again.run()
    assert [trace.event_json(e) for e in again.events] == [trace.event_json(e) for e in workshop3.events]


def test_digest_does_not_depend_on_stepping(workshop3: Resume) -> None:
    """Running in pieces (as the widgets do) produces the same events as one run()."""
    r = Resume(preset="workshop", seed=3)
    r.run(until="copy")
    while not r.finished:
        r.step()
    assert trace.digest(r.events) == trace.digest(workshop3.events)


def test_different_seeds_give_different_digests(workshop3: Resume) -> None:
    digests = {trace.digest(workshop3.events)} | {run_digest(seed=s) for s in (0, 1, 2, 4)}
    assert len(digests) == 5


def test_different_fix_gives_a_different_digest(workshop3: Resume) -> None:
    assert run_digest(seed=3, fix="hlt") != trace.digest(workshop3.events)


def test_digest_sees_every_event_field(workshop3: Resume) -> None:
    events = [trace.event_json(e) for e in workshop3.events]
    base = trace.digest(events)
    changed = json.loads(json.dumps(events))
    changed[len(changed) // 2]["t"] += 1
    assert trace.digest(changed) != base
    changed = json.loads(json.dumps(events))
    changed[-1]["data"]["x"] = 1
    assert trace.digest(changed) != base
    assert trace.digest(events[:-1]) != base


def test_trace_saved_and_replayed_matches(workshop3: Resume, tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    trace.save(workshop3, path)
    data = trace.load(path)
    assert data["format"] == trace.FORMAT
    assert data["digest"] == trace.digest(workshop3.events)
    assert data["outcome"] == workshop3.outcome
    assert len(data["events"]) == len(workshop3.events)
    r, same = trace.replay(data)
    assert same
    assert trace.digest(r.events) == data["digest"]
    assert r.outcome == workshop3.outcome


def test_trace_of_a_non_default_config_replays(tmp_path: Path) -> None:
    """The whole resolved config goes into the trace (holes, overrides), not just the preset."""
    r = Resume(preset="workshop", seed=5, fix="hlt", holes=((0x0400_0000, 0x0400_3000),), jitter=0.05)
    r.run()
    path = tmp_path / "odd.json"
    trace.save(r, path)
    again, same = trace.replay(trace.load(path))
    assert same
    assert again.config == r.config


def test_truncated_trace_is_refused(workshop3: Resume, tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    trace.save(workshop3, path)
    text = path.read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"not valid JSON \(truncated or malformed"):
        trace.load(cut)
    with pytest.raises(ValueError, match="cut.json"):
        trace.load(cut)


def test_tampered_trace_is_refused(workshop3: Resume, tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    trace.save(workshop3, path)
    data = json.loads(path.read_text())
    i = next(i for i, e in enumerate(data["events"]) if e["kind"] == "page_copied")
    data["events"][i]["data"]["pfn"] += 1
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="damaged or edited: events changed"):
        trace.load(bad)


def test_consistent_but_foreign_trace_does_not_match_on_replay(workshop3: Resume, tmp_path: Path) -> None:
    """Events changed and the digest recomputed: the file is well formed, but its config does
    not produce those events, and replay says so."""
    data = trace.export(workshop3)
    data["events"] = data["events"][:-1]
    trace.seal(data)
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(data))
    loaded = trace.load(path)
    _, same = trace.replay(loaded)
    assert not same


@pytest.mark.parametrize("content, message", [
    ('{"format": "something else"}', "is not a hibernation-lab-trace/2 trace"),
    ("[1, 2, 3]", "is not a hibernation-lab-trace/2 trace"),
    ('{"format": "hibernation-lab-trace/2", "config": {}, "events": {}, "digest": "x"}', "lacks a valid 'events'"),
    ('{"format": "hibernation-lab-trace/2", "events": [], "digest": "x"}', "lacks a valid 'config'"),
    ('{"format": "hibernation-lab-trace/1", "config": {}, "events": [], "digest": "x"}', "older format"),
])
def test_malformed_trace_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        trace.load(path)


def test_trace_with_bad_config_is_refused(tmp_path: Path) -> None:
    events: list = []
    for config, message in (({"cpus": 1}, "cpus must be 2 to 512"),
                            ({"warp_drive": True}, "unknown setting")):
        path = tmp_path / "cfg.json"
        path.write_text(json.dumps(trace.seal({"format": trace.FORMAT, "config": config, "events": events,
                                               "outcome": "resumed", "steps": 0, "summary": {}})))
        with pytest.raises(ValueError, match=message):
            trace.load(path)


def test_missing_trace_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read trace file"):
        trace.load(tmp_path / "nope.json")


def test_binary_trace_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ValueError, match="binary.json"):
        trace.load(path)
