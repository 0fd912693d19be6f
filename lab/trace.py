"""Traces: the resolved configuration and the event stream of a run, as JSON, with a digest.

Replaying a trace rebuilds the run from its configuration (same seed, same generator) and
compares digests: the model is deterministic, so they match byte for byte in any process.

A trace (format ``hibernation-lab-trace/2``) holds the format version, the resolved config, every
event (and their digest, the ``digest`` that ``run --json`` prints), the outcome and step count,
and the run's summary; ``parts`` has one SHA-256 per part and ``trace_digest`` one over them all.
``load`` refuses a trace whose digests do not match its content (damaged or edited), naming the
part that changed.  The digests catch damage and careless edits, not forgery: anyone can
recompute them.  Older traces (``hibernation-lab-trace/1``, digest over the events only) are
refused with a message saying so.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .hw.sched import Event

if TYPE_CHECKING:  # pragma: no cover
    from .scenario import Config, Resume

FORMAT = "hibernation-lab-trace/2"
OLD_FORMATS = ("hibernation-lab-trace/1",)
# The parts of a trace, each with its own digest, in the order a change is reported.
PARTS = ("version", "config", "events", "outcome", "summary")
KEYS = frozenset({"format", "config", "outcome", "steps", "summary", "events", "digest", "parts",
                  "trace_digest"})


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def event_json(ev: Event) -> dict[str, Any]:
    return {"t": ev.t, "kind": ev.kind, "cpu": ev.cpu, "data": _plain(ev.data)}


def digest(events: Iterable[Event | dict[str, Any]]) -> str:
    """SHA-256 over the canonical JSON of every event, one per line (the run's behaviour; what
    ``run --json`` prints as ``digest``)."""
    h = hashlib.sha256()
    for ev in events:
        obj = event_json(ev) if isinstance(ev, Event) else ev
        h.update(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def _part_value(data: dict[str, Any], part: str) -> Any:
    if part == "version":
        return data["format"]
    if part == "events":
        return {"events": data["events"], "digest": data["digest"]}
    if part == "outcome":
        return {"outcome": data["outcome"], "steps": data["steps"]}
    return data[part]


def part_digests(data: dict[str, Any]) -> dict[str, str]:
    """One SHA-256 per part (version, config, events, outcome, summary) of a trace."""
    return {part: hashlib.sha256(part.encode() + b"\n" + _canonical(_part_value(data, part))).hexdigest()
            for part in PARTS}


def trace_digest(parts: dict[str, str]) -> str:
    """The digest of the whole trace: SHA-256 over its part digests (so over every part)."""
    return hashlib.sha256(b"hibernation-lab-trace\n" + _canonical(parts)).hexdigest()


def seal(data: dict[str, Any]) -> dict[str, Any]:
    """Set a trace's digests from its content (``digest``, ``parts``, ``trace_digest``); returns it.
    Used by export; tests use it to build well-formed traces of runs that never happened."""
    data["format"] = data.get("format", FORMAT)
    data["digest"] = digest(data["events"])
    data["parts"] = part_digests(data)
    data["trace_digest"] = trace_digest(data["parts"])
    return data


def export(resume: "Resume") -> dict[str, Any]:
    events = [event_json(e) for e in resume.events]
    return seal({"format": FORMAT, "config": _plain(resume.config.to_dict()), "outcome": resume.outcome,
                 "steps": resume.steps, "summary": _plain(resume.summary()), "events": events})


def file_kind(mode: int) -> str | None:
    """What a non-regular file is, or None for a regular file."""
    for test, name in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def check_target(path: str | os.PathLike) -> Path:
    """Where a trace may be written: a non-empty path that is missing or a regular file (never a
    FIFO, device or directory: writing there hangs or destroys something).  ValueError if not."""
    text = os.fspath(path)
    if not text:
        raise ValueError("trace file path is empty; allowed: a path to a regular file, e.g. run.json")
    try:
        st = os.stat(text)
    except FileNotFoundError:
        return Path(text)
    except OSError as exc:
        raise ValueError(f"cannot write trace file {text!r}: {exc.strerror or exc}") from None
    kind = file_kind(st.st_mode)
    if kind:
        raise ValueError(f"cannot write trace file {text!r}: it is {kind}; allowed: a regular file "
                         "(missing or to be replaced)")
    return Path(text)


def save(resume: "Resume", path: str | os.PathLike) -> None:
    """Write the trace atomically: to a temporary file in the same folder, then renamed over
    ``path``.  A failed write (disk full, read-only folder) leaves the previous file as it was and
    raises ValueError saying why."""
    write_atomic(check_target(path), json.dumps(export(resume), separators=(",", ":")) + "\n")


def write_atomic(path: Path, text: str) -> None:
    target = Path(os.path.realpath(path))  # a symlink: replace what it points to, keep the link
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise ValueError(f"cannot write trace file {str(path)!r}: {exc.strerror or exc} "
                         "(any previous file there is unchanged)") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def config_from(data: dict[str, Any]) -> "Config":
    """The Config a trace's ``config`` holds, checked by lab.validate like any other (JSON lists
    become tuples there); ValueError names the setting, its value and what is allowed."""
    from .scenario import Config
    fields = {f.name for f in dataclasses.fields(Config)}
    if not isinstance(data, dict):
        raise ValueError("trace config must be a JSON object")
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"trace config has unknown setting(s) {', '.join(unknown)}")
    try:
        return Config(**data)
    except ValueError as exc:  # ConfigError, ConfigTypeError
        raise ValueError(f"trace config is not valid: {exc}") from None
    except (TypeError, AttributeError, KeyError, IndexError, OverflowError) as exc:  # pragma: no cover
        raise ValueError(f"trace config is not valid: {exc}") from None


MAX_BYTES = 1 << 30  # a trace larger than 1 GiB is not one this lab wrote


def _read(path: str | os.PathLike) -> str:
    name = os.fspath(path)
    if not name:
        raise ValueError("trace file path is empty; allowed: a path to a trace file, e.g. run.json")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; we refuse it below anyway.
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ValueError(f"cannot read trace file {name!r}: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    kind = file_kind(st.st_mode)
    if kind:  # before fdopen, which raises IsADirectoryError for a directory
        os.close(fd)
        raise ValueError(f"cannot read trace file {name!r}: it is {kind}; allowed: a regular file "
                         f"holding a {FORMAT} JSON trace")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > MAX_BYTES:
            raise ValueError(f"trace file {name!r} is {st.st_size} bytes; allowed: at most {MAX_BYTES}")
        try:
            raw = f.read(MAX_BYTES + 1)
        except OSError as exc:
            raise ValueError(f"cannot read trace file {name!r}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"trace file {name!r} is not text (not UTF-8); allowed: a {FORMAT} JSON trace") from None


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a trace file; ValueError says what is wrong with it (which part changed,
    for a trace whose digests do not match its content)."""
    name = os.fspath(path)
    text = _read(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"trace file {name!r} is not valid JSON (truncated or malformed at "
                         f"line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ValueError(f"trace file {name!r} is nested too deeply to be a {FORMAT} trace") from None
    if isinstance(data, dict) and data.get("format") in OLD_FORMATS:
        raise ValueError(f"trace file {name!r} is in the older format {data['format']} (its digest covers "
                         f"the events only); allowed: {FORMAT}; write it again with "
                         "`python -m lab run ... --trace FILE` (its config is in the file)")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise ValueError(f"trace file {name!r} is not a {FORMAT} trace (version changed or unknown"
                         + (f": format {found!r})" if isinstance(found, str) else ")"))
    for key, kind in (("config", dict), ("events", list), ("digest", str), ("outcome", str), ("steps", int),
                      ("summary", dict), ("parts", dict), ("trace_digest", str)):
        if not isinstance(data.get(key), kind) or (kind is int and isinstance(data.get(key), bool)):
            raise ValueError(f"trace file {name!r} lacks a valid {key!r}")
    extra = sorted(set(data) - KEYS)
    if extra:
        raise ValueError(f"trace file {name!r} has unexpected key(s) {', '.join(map(repr, extra))}; "
                         f"allowed: {', '.join(sorted(KEYS))}")
    try:
        parts = part_digests(data)
    except (ValueError, TypeError, RecursionError):
        raise ValueError(f"trace file {name!r} is damaged: its content cannot be digested") from None
    if trace_digest(data["parts"]) != data["trace_digest"]:
        raise ValueError(f"trace file {name!r} is damaged or edited: its digests do not match "
                         "(trace_digest or parts changed)")
    changed = [p for p in PARTS if data["parts"].get(p) != parts[p]]
    if data["digest"] != digest(data["events"]) and "events" not in changed:
        changed.append("events")
    if changed or set(data["parts"]) != set(PARTS):
        raise ValueError(f"trace file {name!r} is damaged or edited: {', '.join(changed) or 'parts'} "
                         "changed since it was written (does not match the trace digest)")
    try:
        config_from(data["config"])
    except ValueError as exc:
        raise ValueError(f"trace file {name!r}: {exc}") from None
    return data


def first_difference(data: dict[str, Any], again: dict[str, Any]) -> str | None:
    """How a re-run (``again``, an export) differs from a stored trace: the first differing event,
    else the outcome or summary; None if they agree."""
    old, new = data["events"], again["events"]
    for i, (a, b) in enumerate(zip(old, new)):
        if a != b:
            return (f"event {i} differs: stored {json.dumps(a, sort_keys=True)}, "
                    f"now {json.dumps(b, sort_keys=True)}")
    if len(old) != len(new):
        i = min(len(old), len(new))
        longer, which = (old, "stored") if len(old) > len(new) else (new, "now")
        return (f"event {i} differs: {len(old)} events stored, {len(new)} now; first extra ({which}): "
                f"{json.dumps(longer[i], sort_keys=True)}")
    for key in ("outcome", "steps"):
        if data[key] != again[key]:
            return f"{key} differs: stored {data[key]!r}, now {again[key]!r}"
    if _canonical(data["summary"]) != _canonical(again["summary"]):
        keys = sorted(k for k in set(data["summary"]) | set(again["summary"])
                      if data["summary"].get(k) != again["summary"].get(k))
        return f"summary differs in {', '.join(keys)}"
    return None


def replay(data: dict[str, Any]) -> tuple["Resume", bool]:
    """Run the trace's configuration again; returns the new run and whether it matches the trace
    (every event, the outcome, the step count and the summary)."""
    from .scenario import Resume
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict) or not isinstance(data.get("digest"), str):
        raise ValueError(f"replay needs a trace as trace.load returns it (a dict with 'config' and 'digest'), "
                         f"got {type(data).__name__}" + (f" with keys {sorted(map(str, data))}" if isinstance(data, dict) else ""))
    r = Resume(config_from(data["config"]))
    r.run()
    same = digest(r.events) == data["digest"]
    if same and all(k in data for k in ("outcome", "steps", "summary")):
        same = first_difference(data, export(r)) is None
    return r, same
