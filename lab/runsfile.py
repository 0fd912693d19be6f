"""A campaign's records on disk: one CSV file whose first line is a comment holding, as JSON, the
configuration that produced them.

    # lab-campaign {"format": "lab-campaign/1", "config": {...}, "fixes": [...], "seeds": "0-999", ...}
    preset,fix,seed,outcome,...
    default,mwait,0,panic,...

The file is created atomically (header and column names written to a temporary file, then
renamed) and records are appended in chunks, each one ``write()`` followed by ``fsync``, so an
interrupted campaign keeps every chunk it flushed.  A last line cut short (the process killed
in the middle of a write) is ignored when read and cut off before a resume appends again.
``pandas.read_csv(path, skiprows=1)`` reads the records too; ``read_header`` the configuration.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from typing import Any, Iterable, Iterator, Mapping

from .trace import file_kind

MAGIC = "# lab-campaign "
FORMAT = "lab-campaign/1"
_TYPES = {"int": int, "float": float, "str": str, "bool": lambda v: v == "True"}


def create(path: str, header: Mapping[str, Any]) -> None:
    """Write ``header`` (JSON-ready, with ``columns``: [name, int|float|str|bool] pairs) and the
    column names to ``path``, atomically (a temporary file in the same folder, then a rename)."""
    columns = [name for name, _ in header["columns"]]
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".campaign-", suffix=".csv", dir=folder)
    except OSError as exc:
        raise ValueError(f"cannot write campaign file {path!r}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(MAGIC + json.dumps(dict(header), sort_keys=True) + "\n")
            csv.writer(f, lineterminator="\n").writerow(columns)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ValueError(f"cannot write campaign file {path!r}: {exc.strerror or exc}") from None
        raise


def append(path: str, columns: Iterable[str], records: Iterable[Mapping[str, Any]]) -> int:
    """Append ``records`` (None -> empty cell, floats written with repr so they read back exactly)
    in one write, then fsync.  Returns how many were written."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    n = 0
    cols = list(columns)
    for rec in records:
        w.writerow(["" if rec.get(c) is None else repr(rec[c]) if isinstance(rec[c], float) else rec[c]
                    for c in cols])
        n += 1
    if n:
        data = buf.getvalue().encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ValueError(f"cannot append to campaign file {path!r}: {exc.strerror or exc}") from None
    return n


def read_header(path: str) -> dict[str, Any]:
    """The configuration line of a campaign file.  ValueError (naming the file) if it is not one
    (a FIFO, device or directory is refused before it is opened: reading a FIFO would wait)."""
    try:
        kind = file_kind(os.stat(path).st_mode)
    except OSError as exc:
        raise ValueError(f"cannot read campaign file {path!r}: {exc.strerror or exc}") from None
    if kind:
        raise ValueError(f"cannot read campaign file {path!r}: it is {kind}; allowed: a regular file written by "
                         "--out")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            first = f.readline()
    except OSError as exc:
        raise ValueError(f"cannot read campaign file {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        first = ""
    if not first.startswith(MAGIC):
        raise ValueError(f"{path!r} is not a campaign file: its first line should start with {MAGIC.strip()!r}")
    try:
        header = json.loads(first[len(MAGIC):])
    except json.JSONDecodeError:
        raise ValueError(f"{path!r}: the configuration line is damaged (not JSON)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("columns"), list) \
            or not all(isinstance(c, list) and len(c) == 2 and c[1] in _TYPES for c in header["columns"]):
        raise ValueError(f"{path!r}: the configuration line is not {FORMAT}")
    return header


def records(path: str, header: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """The records of a campaign file, typed as the header says (an empty cell is None), one at
    a time (memory stays flat).  A last line without its newline (cut short) is skipped."""
    header = read_header(path) if header is None else header
    types = {name: _TYPES[t] for name, t in header["columns"]}
    with open(path, encoding="utf-8", newline="") as f:
        f.readline()
        names = next(csv.reader([f.readline()]), [])
        if names != list(types):
            raise ValueError(f"{path!r}: the column names do not match the configuration line")
        for line in f:
            if not line.endswith("\n"):
                break  # cut short by an interrupted write
            row = next(csv.reader([line]))
            if len(row) != len(names):
                raise ValueError(f"{path!r}: damaged record {line.strip()[:60]!r} "
                                 f"({len(row)} fields, {len(names)} expected)")
            try:
                yield {n: None if v == "" else types[n](v) for n, v in zip(names, row)}
            except ValueError:
                raise ValueError(f"{path!r}: damaged record {line.strip()[:60]!r}") from None


def cut_partial_line(path: str) -> None:
    """Drop a last line that lacks its newline (written only in part when the campaign was killed)."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos = size
        while pos > 0:
            step = min(4096, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            i = chunk.rfind(b"\n")
            if i >= 0:
                f.truncate(pos - step + i + 1)
                return
            pos -= step
        f.truncate(0)

