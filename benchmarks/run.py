#!/usr/bin/env python3
"""Run the lab's benchmarks and print a table of figures.

    python benchmarks/run.py [-k SUBSTRING]

Finds every benchmarks/bench_*.py, calls each of its functions named bench_*
(no arguments), and prints one row per result. Exit status: 0 when every
benchmark met its target (or there are none), 1 when a target was missed,
2 when a benchmark raised or returned something malformed. The convention is
in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
# this checkout's lab/ and widgets/ first (an editable install may point at another checkout)
sys.path.insert(0, str(HERE.parent))


def discover(pattern: str | None):
    """Yield (qualified name, function) for every bench_* function."""
    for path in sorted(HERE.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        for name, fn in list(vars(module).items()):  # in definition order
            if name.startswith("bench_") and inspect.isfunction(fn) and fn.__module__ == module.__name__:
                qualname = f"{path.stem}.{name}"
                if pattern is None or pattern in qualname:
                    yield qualname, fn


def check(qualname: str, result: object) -> dict:
    """Validate one result dict and fill in name and ok."""
    if not isinstance(result, dict) or "median_us" not in result:
        raise TypeError(f"{qualname} must return a dict with 'median_us', got {result!r}")
    row = dict(result)
    row.setdefault("name", qualname)
    row.setdefault("target_us", None)
    row["median_us"] = float(row["median_us"])
    met = row["target_us"] is None or row["median_us"] <= float(row["target_us"])
    row["ok"] = bool(row.get("ok", True)) and met
    return row


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


def print_table(rows: list[dict]) -> None:
    core = ("name", "median_us", "target_us", "ok")
    table = [("benchmark", "median us", "target us", "status", "other figures")]
    for row in rows:
        extra = ", ".join(f"{k}={fmt(v)}" for k, v in row.items() if k not in core)
        table.append((row["name"], fmt(row["median_us"]), fmt(row["target_us"]),
                      "ok" if row["ok"] else "MISSED", extra))
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for n, line in enumerate(table):
        print("  ".join([line[0].ljust(widths[0])]
                        + [cell.rjust(w) for cell, w in zip(line[1:3], widths[1:3])]
                        + [line[3].ljust(widths[3]), line[4]]).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * len(line[4]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="pattern", help="run only benchmarks whose module.function contains this")
    args = parser.parse_args(argv)

    rows, broken = [], []
    for qualname, fn in discover(args.pattern):
        print(f"running {qualname} ...", file=sys.stderr, flush=True)
        try:
            rows.append(check(qualname, fn()))
        except Exception:
            traceback.print_exc()
            broken.append(qualname)

    if not rows and not broken:
        print("no benchmarks" + (f" matching {args.pattern!r}" if args.pattern else ""))
        return 0
    if rows:
        print_table(rows)
    missed = [row["name"] for row in rows if not row["ok"]]
    print(f"\n{len(rows) - len(missed)} met target, {len(missed)} missed, {len(broken)} broken")
    if broken:
        print("broken: " + ", ".join(broken))
        return 2
    if missed:
        print("missed: " + ", ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
