"""Traces: the resolved configuration and the event stream of a run, as JSON, with a digest.

Replaying a trace rebuilds the run from its configuration (same seed, same generator) and
compares digests: the model is deterministic, so they match byte for byte in any process.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .hw.sched import Event

if TYPE_CHECKING:  # pragma: no cover
    from .scenario import Config, Resume

FORMAT = "hibernation-lab-trace/1"


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def event_json(ev: Event) -> dict[str, Any]:
    return {"t": ev.t, "kind": ev.kind, "cpu": ev.cpu, "data": _plain(ev.data)}


def digest(events: Iterable[Event | dict[str, Any]]) -> str:
    """SHA-256 over the canonical JSON of every event, one per line."""
    h = hashlib.sha256()
    for ev in events:
        obj = event_json(ev) if isinstance(ev, Event) else ev
        h.update(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def export(resume: "Resume") -> dict[str, Any]:
    events = [event_json(e) for e in resume.events]
    return {"format": FORMAT, "config": _plain(resume.config.to_dict()), "outcome": resume.outcome,
            "steps": resume.steps, "events": events, "digest": digest(events)}


def save(resume: "Resume", path: str | Path) -> None:
    Path(path).write_text(json.dumps(export(resume), separators=(",", ":")) + "\n")


def config_from(data: dict[str, Any]) -> "Config":
    from .scenario import Config
    fields = {f.name for f in dataclasses.fields(Config)}
    if not isinstance(data, dict):
        raise ValueError("trace config must be a JSON object")
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"trace config has unknown setting(s) {', '.join(unknown)}")
    values = dict(data)
    if values.get("holes") is not None:
        values["holes"] = tuple(tuple(h) for h in values["holes"])
    return Config(**values)


def load(path: str | Path) -> dict[str, Any]:
    """Read and check a trace file; ValueError says what is wrong with it."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read trace file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"trace file {str(path)!r} is not text (not UTF-8); allowed: a {FORMAT} JSON trace") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"trace file {str(path)!r} is not valid JSON (truncated or malformed at "
                         f"line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"trace file {str(path)!r} is not a {FORMAT} trace")
    for key, kind in (("config", dict), ("events", list), ("digest", str)):
        if not isinstance(data.get(key), kind):
            raise ValueError(f"trace file {str(path)!r} lacks a valid {key!r}")
    if digest(data["events"]) != data["digest"]:
        raise ValueError(f"trace file {str(path)!r} is damaged: its events do not match its digest")
    config_from(data["config"])
    return data


def replay(data: dict[str, Any]) -> tuple["Resume", bool]:
    """Run the trace's configuration again; returns the new run and whether the digests match."""
    from .scenario import Resume
    r = Resume(config_from(data["config"]))
    r.run()
    return r, digest(r.events) == data["digest"]
