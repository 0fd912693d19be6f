"""Seeded campaigns: many resumes over fixes and seeds, on any concurrent.futures Executor.

Each run is independent and fully determined by its Config (one generator per run from its
seed), so the results do not depend on the executor, the number of workers or the order in
which runs finish.

* ``sweep`` returns every record (sorted by fix, then seed); ``run_campaign`` streams them
  (memory stays flat with the campaign's size), optionally into a campaign file
  (``lab.runsfile``: a CSV whose first line holds the configuration) that an interrupted
  campaign can be resumed from.
* ``stats`` gives per fix the outcome counts, the failure rate with its Wilson 95% interval
  (``lab.compare.wilson``, i.e. scipy's) and the mean number of resumes until the first failure.
* A campaign has at most ``MAX_CAMPAIGN_RUNS`` runs (fixes x seeds), checked before anything
  is built; seeds are kept as ranges (``Seeds``), never as a list, and runs are submitted a
  bounded number at a time.
"""
from __future__ import annotations

import bisect
import contextlib
import dataclasses
import json
import logging
import math
import os
import time
import warnings
from collections import Counter, deque
from concurrent.futures import Executor
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from . import runsfile
from . import validate
from .fixes import get_fix
from .scenario import OUTCOMES, Config, Resume
from .trace import digest

Progress = Callable[[int, int], None]  # (runs done, runs in all)

#: the largest campaign (fixes x seeds, or fixes x hazards x seeds for compare) the lab accepts:
#: at 0.1 s of CPU a run, 10 million runs are about 12 CPU-days (a large cluster's afternoon)
MAX_CAMPAIGN_RUNS = 10_000_000
from .validate import MAX_SEED  # noqa: E402 - the one seed bound (2**63 - 1)

#: the fields of run_one's record and their types (the columns of a campaign file)
RECORD_TYPES: dict[str, str] = {
    "preset": "str", "fix": "str", "seed": "int", "outcome": "str", "fault_cpu": "int", "fault_address": "str",
    "store_wakeups": "int", "pages_copied": "int", "time_ns": "int", "resume_ended_ns": "int",
    "wakeups": "int", "clflush_wakeups": "int", "wakeups_per_ms": "float", "awake_ns": "int", "ipis": "int",
    "safe_pages": "int",
    "sharing_cpus": "int", "digest": "str"}


def run_one(config: Config) -> dict[str, Any]:
    """One resume, reduced to a flat record (picklable, for process pools), with what the fix
    cost during the copy: wake-ups of the non-boot CPUs (and per ms of copy), their time awake,
    IPIs sent, safe pages used, CPUs sharing a monitored line."""
    r = Resume(config)
    r.run()
    faults = r.faults()
    first = faults[0] if faults else None
    return {"preset": config.preset, "fix": config.fix, "seed": config.seed, "outcome": r.outcome,
            "fault_cpu": first["cpu"] if first else None, "fault_address": first["address"] if first else None,
            "store_wakeups": sum(1 for e in r.events if e.kind == "wake" and "monitored line" in e.data["reason"]),
            "pages_copied": r.runtime.copied, "time_ns": r.now, "resume_ended_ns": r.resume_ended_ns,
            **r.copy_costs(), "digest": digest(r.events)}


# -- seeds and the size limit --------------------------------------------------------------------
class Seeds:
    """A sorted set of seeds held as merged ranges: sized, iterable in order, ``in`` and
    ``index`` in O(log ranges); ``0-100000000000000`` costs a few bytes, never a list."""

    __slots__ = ("ranges", "_starts", "_before")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:  # inclusive (lo, hi) pairs
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        self.ranges = tuple(merged)
        self._starts = [lo for lo, _ in merged]
        self._before, n = [], 0  # seeds in the ranges before each one
        for lo, hi in merged:
            self._before.append(n)
            n += hi - lo + 1

    @classmethod
    def of(cls, seeds: Iterable[int]) -> "Seeds":
        """``seeds`` as a Seeds (a range of step 1 stays two numbers; other iterables are read)."""
        if isinstance(seeds, Seeds):
            return seeds
        if isinstance(seeds, range) and seeds.step == 1:
            return cls([(seeds.start, seeds.stop - 1)] if len(seeds) else [])
        out = []
        for s in seeds:
            if int(s) != s or s < 0:
                raise ValueError(f"seeds: each a whole number >= 0, got {s!r}")
            out.append((int(s), int(s)))
        return cls(out)

    @property
    def count(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.ranges:
            yield from range(lo, hi + 1)

    def __contains__(self, seed: object) -> bool:
        if not isinstance(seed, int):
            return False
        i = bisect.bisect_right(self._starts, seed) - 1
        return i >= 0 and seed <= self.ranges[i][1]

    def index(self, seed: int) -> int:
        """Position of ``seed`` in the sorted seeds (ValueError if absent)."""
        if seed not in self:
            raise ValueError(f"seed {seed} is not in {self.text}")
        i = bisect.bisect_right(self._starts, seed) - 1
        return self._before[i] + seed - self.ranges[i][0]

    @property
    def text(self) -> str:
        """'0-999' or '1,4,9-11': the form parse_seeds reads."""
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Seeds):
            return self.ranges == other.ranges
        if isinstance(other, (list, tuple, range)):
            return len(other) == self.count and list(other) == list(self)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.ranges)

    def __repr__(self) -> str:
        return f"Seeds({self.text!r})"


def parse_seeds(text: str) -> Seeds:
    """'0-15', '3', '1,4,9-11' -> Seeds (ranges, never a list).  Raises ValueError naming the
    allowed forms."""
    ranges = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            a, b = int(lo), int(hi) if hi else int(lo)
            digits = part.strip().replace("-", "")
            if a < 0 or b < a or b > MAX_SEED or not (digits.isascii() and digits.isdigit()):
                raise ValueError
            ranges.append((a, b))
    except ValueError:
        raise ValueError(f"malformed seeds {text!r}; allowed: N, A-B or a comma list of those, "
                         f"with 0 <= A <= B <= {MAX_SEED} (e.g. 0-15 or 1,4,9-11)") from None
    return Seeds(ranges)


def check_size(runs: int, what: str) -> None:
    """ValueError if a campaign of ``runs`` runs (``what``: e.g. '10 fixes x 1,000 seeds') is
    above ``MAX_CAMPAIGN_RUNS``."""
    if runs > MAX_CAMPAIGN_RUNS:
        raise ValueError(f"campaign too large: {what} = {runs:,} runs; allowed: at most {MAX_CAMPAIGN_RUNS:,} "
                         "(lab.campaign.MAX_CAMPAIGN_RUNS): fewer seeds or fixes, or several campaigns")


# -- statistics -----------------------------------------------------------------------------------
def resumes_to_failure(k: int, n: int, lo: float, hi: float) -> tuple[float, float, float]:
    """Mean number of resumes until the first failure, the failing one included, and its
    interval.  Each resume fails independently with probability p, so the count is geometric
    with mean 1/p; p -> 1/p is decreasing, so the interval is (1/hi, 1/lo) from the interval
    (lo, hi) of p, at the same confidence.  inf where the rate (or its lower bound) is 0."""
    if not n:
        return math.nan, math.nan, math.nan
    inv = lambda p: math.inf if p <= 0 else 1.0 / p  # noqa: E731
    return inv(k / n), inv(hi), inv(lo)


class Tally:
    """Outcomes counted per fix, one record at a time (what a streamed campaign keeps)."""

    def __init__(self, fixes: Iterable[str] = ()) -> None:
        self.counts: dict[str, Counter] = {f: Counter() for f in fixes}

    def add(self, rec: Mapping[str, Any]) -> None:
        self.counts.setdefault(rec["fix"], Counter())[rec["outcome"]] += 1

    def frame(self):  # noqa: ANN201 - a pandas DataFrame
        return stats(self)


def stats(records: Iterable[Mapping[str, Any]] | Tally):  # noqa: ANN201 - a pandas DataFrame
    """Per fix (the index): ``n`` runs, one count per outcome, ``judged`` (the runs not cut
    short by the step budget: "unfinished" is no verdict), ``failures`` (every judged outcome but
    resumed), ``failure_rate`` over the judged runs with its Wilson 95% interval ``ci_low``, ``ci_high``
    (``lab.compare.wilson``: scipy.stats.binomtest(k, n).proportion_ci(method="wilson")), and
    ``resumes_to_failure`` with ``resumes_low``, ``resumes_high``: how many resumes a stress
    test runs, on average, until its first failure (``resumes_to_failure``)."""
    import pandas as pd

    from .compare import wilson

    counts = records.counts if isinstance(records, Tally) else tally(records)
    rows = []
    for fix, c in counts.items():
        n = sum(c.values())
        judged = n - c.get("unfinished", 0)  # a run the step budget cut short judges nothing
        k = judged - c.get("resumed", 0)
        lo, hi = wilson(k, judged) if judged else (math.nan, math.nan)
        mean, rlo, rhi = resumes_to_failure(k, judged, lo, hi)
        rows.append({"fix": fix, "n": n, **{o: c.get(o, 0) for o in OUTCOMES},
                     **{o: v for o, v in sorted(c.items()) if o not in OUTCOMES}, "judged": judged, "failures": k,
                     "failure_rate": k / judged if judged else math.nan, "ci_low": lo, "ci_high": hi,
                     "resumes_to_failure": mean, "resumes_low": rlo, "resumes_high": rhi})
    cols = ["fix", "n", *OUTCOMES, "judged", "failures", "failure_rate", "ci_low", "ci_high", "resumes_to_failure",
            "resumes_low", "resumes_high"]
    df = pd.DataFrame.from_records(rows)
    df = df.reindex(columns=cols + [c for c in df.columns if c not in cols]).set_index("fix")
    df.attrs["interval"] = "Wilson 95% (scipy.stats.binomtest(k, n).proportion_ci(method='wilson'))"
    return df


def stats_text(df) -> str:  # noqa: ANN001
    """``stats`` as lines for a terminal: counts, failure rate [interval], resumes to failure."""
    out = []
    width = max([len(str(f)) for f in df.index] + [3])
    for fix, row in df.iterrows():
        counts = ", ".join(f"{o} {int(row[o])}" for o in df.columns[1:df.columns.get_loc("judged")] if row[o])
        rate = (f"fail {row['failure_rate'] * 100:.1f}% [{row['ci_low'] * 100:.1f}-{row['ci_high'] * 100:.1f}%]"
                if row["judged"] else "no runs judged" if row["n"] else "no runs")
        if not row["judged"]:
            first = ""
        elif row["failures"]:
            first = (f"first failure after {_num(row['resumes_to_failure'])} resumes on average "
                     f"[{_num(row['resumes_low'])}-{_num(row['resumes_high'])}]")
        else:
            first = f"no failure: first failure after more than {_num(row['resumes_low'])} resumes (95%)"
        out.append(f"  {fix:<{width}}  {counts:<28} {rate:<24} {first}".rstrip())
    return "\n".join(out)


def _num(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:,.1f}" if x < 10 else f"{x:,.0f}"


# -- running ---------------------------------------------------------------------------------------
def in_flight_for(executor: Executor | None) -> int:
    """How many runs to keep submitted at once: 4 per worker (a process pool's workers, or a
    dask cluster's threads), at least 8."""
    workers = getattr(executor, "_max_workers", None)
    client = getattr(executor, "_client", None)
    if client is not None:
        with contextlib.suppress(Exception):
            workers = sum(client.nthreads().values())
    return max(8, 4 * (workers or 4))


def run_lazily(fn: Callable[[Any], Any], items: Iterable[Any], executor: Executor | None = None,
               in_flight: int | None = None) -> Iterator[Any]:
    """``fn`` over ``items``, results in the order of ``items``.  On an executor at most
    ``in_flight`` runs are submitted and not yet taken, so memory does not grow with the number
    of items; what is still queued is cancelled if the caller stops early (Ctrl-C)."""
    if executor is None:
        for x in items:
            yield fn(x)
        return
    limit = max(1, in_flight or in_flight_for(executor))
    window: deque = deque()
    try:
        for x in items:
            window.append(executor.submit(fn, x))
            if len(window) >= limit:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        for f in window:
            f.cancel()


class ProgressBar:
    """A ``Progress`` callback that draws a tqdm bar: ``tqdm.auto`` (a widget in a notebook) or,
    with ``notebook=False``, plain tqdm on ``file`` (stderr).  It appears only once a campaign
    has taken a second (tqdm's ``delay``), never with ``quiet``, and, outside notebooks, only
    when ``file`` is a terminal (tqdm's ``disable=None``: silent in CI)."""

    def __init__(self, quiet: bool = False, file: Any = None, notebook: bool = True, desc: str = "runs",
                 delay: float = 1.0) -> None:
        self.quiet, self.file, self.notebook, self.desc, self.delay = quiet, file, notebook, desc, delay
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None or self.bar.total != total:
            self.close()
            if self.notebook:
                from tqdm.auto import tqdm
            else:
                from tqdm import tqdm
            self.bar = tqdm(total=total, initial=done, delay=self.delay, unit="run", desc=self.desc, file=self.file,
                            disable=None, leave=False, dynamic_ncols=True)
        else:
            self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _progress(progress: Progress | bool | None) -> Progress | None:
    """None: a ProgressBar (tqdm.auto); False: none; else the callback given."""
    if progress is None:
        return ProgressBar()
    return progress or None


def campaign_header(base: Config, fixes: Sequence[str], seeds: Seeds) -> dict[str, Any]:
    """What a campaign file records about the campaign: every setting of ``base`` but fix and
    seed, the fixes and the seeds (and the record columns)."""
    config = {f.name: getattr(base, f.name) for f in dataclasses.fields(Config) if f.name not in ("fix", "seed")}
    return {"format": runsfile.FORMAT, "command": "sweep", "config": json.loads(json.dumps(config)),
            "fixes": list(fixes), "seeds": seeds.text, "runs": len(fixes) * seeds.count, "columns": [[k, v] for k, v in RECORD_TYPES.items()]}


def _check_same(path: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    what = None
    if old.get("command") != new["command"]:
        what = f"command {old.get('command')!r} there, {new['command']!r} here"
    elif old.get("config") != new["config"]:
        keys = ["preset", *sorted(set(old.get("config") or {}) | set(new["config"]))]
        k = next(k for k in keys if (old.get("config") or {}).get(k) != new["config"].get(k))
        what = f"setting {k}: {(old.get('config') or {}).get(k)!r} there, {new['config'].get(k)!r} here"
    elif old.get("fixes") != new["fixes"]:
        what = f"fixes {','.join(old.get('fixes') or [])} there, {','.join(new['fixes'])} here"
    elif old.get("seeds") != new["seeds"]:
        what = f"seeds {old.get('seeds')} there, {new['seeds']} here"
    elif old.get("columns") != new["columns"]:
        what = "its columns differ from this lab's records"
    if what:
        raise ValueError(f"--resume {path}: the file holds a different campaign ({what}); allowed: the same preset, "
                         "fixes and seeds it was started with, or a new --out file")


def run_campaign(base: Config, fixes: Sequence[str], seeds: Iterable[int], executor: Executor | None = None,
                 progress: Progress | bool | None = None, *, out: str | None = None, resume: bool = False,
                 on_record: Callable[[dict[str, Any]], None] | None = None, in_flight: int | None = None,
                 flush_seconds: float = 1.0, flush_records: int = 1000) -> Tally:
    """Run ``base`` with every fix and seed (fix by fix, seeds in order) and return the Tally,
    holding no record longer than needed: each goes to ``on_record`` and, with ``out``, to a
    campaign file (``lab.runsfile``), appended in chunks (every ``flush_seconds`` or
    ``flush_records``, and whatever is pending when the campaign stops, Ctrl-C included).

    ``out`` must not exist unless ``resume``; with ``resume`` it must hold this very campaign
    (ValueError naming the difference otherwise): its records are counted (and passed to
    ``on_record``), the (fix, seed) pairs it has are skipped and the rest appended.
    ``progress``: None draws a tqdm.auto bar after a second, False nothing, else it is called
    with (done, total).  Raises ValueError before anything runs for an unknown fix, a fix the
    configuration cannot take, or more than MAX_CAMPAIGN_RUNS runs."""
    fixes = validate.fix_names(fixes)  # one name is one fix; each once
    seeds = Seeds.of(seeds)
    total = len(fixes) * seeds.count
    check_size(total, f"{len(fixes)} fixes x {seeds.count:,} seeds")
    for f in fixes:
        get_fix(f)
        if seeds.count:
            dataclasses.replace(base, fix=f, seed=next(iter(seeds)))  # Config refuses a fix it cannot take
    header = campaign_header(base, fixes, seeds)
    tally_ = Tally(fixes)
    done = bytearray(total) if resume else b""
    ndone = 0
    if resume and out is None:
        raise ValueError("resume needs the campaign file (out)")
    if out is not None:
        if resume:
            old = runsfile.read_header(out)
            _check_same(out, old, header)
            runsfile.cut_partial_line(out)
            for rec in runsfile.records(out, old):
                try:
                    i = fixes.index(rec["fix"]) * seeds.count + seeds.index(rec["seed"])
                except ValueError:
                    raise ValueError(f"--resume {out}: record ({rec['fix']}, {rec['seed']}) is not part of this "
                                     "campaign (the file was edited?)") from None
                if done[i]:
                    raise ValueError(f"--resume {out}: record ({rec['fix']}, {rec['seed']}) appears twice")
                done[i] = 1
                ndone += 1
                tally_.add(rec)
                if on_record:
                    on_record(rec)
        elif os.path.lexists(out):
            raise ValueError(f"--out {out}: the file exists; allowed: a new file, or --resume {out} to complete it")
        else:
            runsfile.create(out, header)
    progress = _progress(progress)
    configs = (dataclasses.replace(base, fix=f, seed=s) for i, f in enumerate(fixes)
               for j, s in enumerate(seeds) if not (resume and done[i * seeds.count + j]))
    buffer: list[dict[str, Any]] = []
    flushed = time.monotonic()
    try:
        if progress and ndone:
            progress(ndone, total)
        for rec in run_lazily(run_one, configs, executor, in_flight):
            ndone += 1
            tally_.add(rec)
            if on_record:
                on_record(rec)
            if out is not None:
                buffer.append(rec)
                if len(buffer) >= flush_records or time.monotonic() - flushed >= flush_seconds:
                    runsfile.append(out, RECORD_TYPES, buffer)
                    buffer.clear()
                    flushed = time.monotonic()
            if progress:
                progress(ndone, total)
    finally:
        if out is not None and buffer:
            runsfile.append(out, RECORD_TYPES, buffer)
        if isinstance(progress, ProgressBar):
            progress.close()
    return tally_


def sweep(base: Config, fixes: Sequence[str], seeds: Iterable[int], executor: Executor | None = None,
          progress: Progress | bool | None = None, in_flight: int | None = None) -> list[dict[str, Any]]:
    """Run ``base`` with every fix and seed and return every record, sorted by (fix, seed).
    ``executor`` (e.g. a ProcessPoolExecutor, or a dask.distributed client's ``get_executor()``,
    see ``dask_executor``) runs them, a bounded number at a time; None runs them here, in order.
    ``progress`` as for ``run_campaign`` (None: a tqdm.auto bar once it takes a second)."""
    records: list[dict[str, Any]] = []
    run_campaign(base, fixes, seeds, executor, progress, on_record=records.append, in_flight=in_flight)
    return sorted(records, key=lambda rec: (rec["fix"], rec["seed"]))


def tally(records: Iterable[Mapping[str, Any]]) -> dict[str, Counter]:
    """Outcomes counted per fix."""
    out = Tally()
    for rec in records:
        out.add(rec)
    return out.counts


def to_dataframe(records: Iterable[Mapping[str, Any]]):  # noqa: ANN201 - a pandas DataFrame
    """The records as a pandas DataFrame, one row per run, the columns of ``RECORD_TYPES``
    (nullable integers where a field can be None)."""
    import pandas as pd

    df = pd.DataFrame.from_records(list(records), columns=list(RECORD_TYPES))
    for name, kind in RECORD_TYPES.items():
        if kind == "int":
            df[name] = df[name].astype("Int64")
    return df


def read_runs(path: str):  # noqa: ANN201 - a pandas DataFrame
    """A campaign file's records as a DataFrame (``to_dataframe``), its configuration line in
    ``df.attrs["campaign"]``."""
    header = runsfile.read_header(path)
    df = to_dataframe(runsfile.records(path, header))
    df.attrs["campaign"] = header
    return df


# -- dask ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def dask_executor(spec: str) -> Iterator[Executor]:
    """A concurrent.futures Executor on a dask.distributed cluster: ``local:N`` starts a
    LocalCluster of N worker processes (one thread each) here and stops it afterwards; anything
    else is the address of a running scheduler (``tcp://host:8786``), whose workers must be able
    to import this lab.  ValueError (naming --dask) for a bad spec or an unreachable scheduler."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("--dask needs dask.distributed; allowed: install it with pip install 'dask[distributed]'") from None
    cluster = None
    if spec.startswith("local:"):
        n = spec[len("local:"):]
        if not (n.isascii() and n.isdigit() and 1 <= int(n) <= 64):
            raise ValueError(f"--dask {spec!r}: allowed: local:N with N from 1 to 64, or a scheduler address")
        with warnings.catch_warnings():  # "port 8787 in use" of the scheduler's (dashboard-less) HTTP server
            warnings.simplefilter("ignore", UserWarning)
            cluster = LocalCluster(n_workers=int(n), processes=True, threads_per_worker=1, dashboard_address=None,
                                   silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        if not spec.strip() or any(ch.isspace() for ch in spec):
            raise ValueError(f"--dask {spec!r}: allowed: local:N or a scheduler address such as tcp://10.0.0.5:8786")
        try:
            client = Client(spec, timeout="5s")
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise ValueError(f"--dask {spec!r}: cannot reach a dask scheduler there ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); allowed: local:N or the address "
                             "of a running scheduler such as tcp://10.0.0.5:8786") from None
    try:
        yield client.get_executor()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
