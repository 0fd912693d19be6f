"""``python -m lab``: run a resume, list presets and fixes, replay a trace.

Exit status: 0 for every finished simulation whatever its outcome, 2 for bad input (and for a
trace that is damaged or edited, or that cannot be written), 1 when `replay` finds that an intact
trace no longer matches a re-run (the model changed), 130 on Ctrl-C.  Standard output closed by
the reader (`| head -1`) ends quietly with 0; a full one (/dev/full) is an error (2).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import sys
from typing import Sequence

from . import trace
from .fixes import FIXES
from .kernel.version import VERSIONS
from .scenario import CALIBRATION, PRESETS, Config, Resume


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m lab", description="The hibernation-resume lab: run the 2016 bug and its fixes.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="simulate one resume and print what happened")
    run.add_argument("--preset", default="default", help=f"one of: {', '.join(PRESETS)}")
    run.add_argument("--fix", default=None, help=f"one of: {', '.join(FIXES)} (default: the preset's, mwait)")
    run.add_argument("--cpus", type=int, default=None, help="number of CPUs (2 to 512)")
    run.add_argument("--threads-per-core", type=int, default=None, help="1 or 2 (SMT)")
    run.add_argument("--ram", default=None, help="RAM size, e.g. 256M, 8G")
    run.add_argument("--image", default=None, help="image size, e.g. 2G")
    run.add_argument("--seed", type=int, default=None, help="seed of the run's generator (>= 0)")
    run.add_argument("--kernel-version", default=None, help=f"one of: {', '.join(VERSIONS)} (thread_info layout, NX gap)")
    run.add_argument("--nosmt", action="store_true", default=None,
                     help="SMT siblings offline since boot (in mwait_play_dead)")
    run.add_argument("--inject", action="append", default=None, metavar="KIND:CPU@NS",
                     help="fault injection, e.g. nmi:1@30000000 (repeatable; kinds nmi, smi, mce, init)")
    run.add_argument("--choose", action="append", default=None, metavar="NAME#INDEX=VALUE",
                     help="set one choice (lab.choices), e.g. wake.exit#0=95000 (repeatable)")
    # hazard settings of `compare` (so every cell's reproducing command is a plain `run`)
    hz = run.add_argument_group("hazard settings (as `compare` writes them)")
    hz.add_argument("--stray", action="append", default=None, metavar="KIND",
                    help="a stray nmi, smi or mce at a seeded time during the copy (repeatable)")
    hz.add_argument("--wakeup", default=None, help="how the image kernel starts APs, e.g. mailbox")
    hz.add_argument("--clflush-triggers", action=argparse.BooleanOptionalAction, default=None,
                    help="a remote CLFLUSH of a monitored line triggers the monitor (default: on)")
    hz.add_argument("--play-dead-at-text-end", action=argparse.BooleanOptionalAction, default=None,
                    help="the play_dead routines in the last text page (text-mapping calibration)")
    hz.add_argument("--kernel-text-pages", type=int, default=None, help="pages of kernel text")
    hz.add_argument("--restore-initcalls", type=int, default=None, help="pages the restore kernel's initcalls take")
    hz.add_argument("--image-initcalls", type=int, default=None, help="pages the image kernel's initcalls take")
    run.add_argument("--step-budget", type=int, default=None, metavar="N",
                     help="stop the simulation after N steps (the preset's budget by default; a run "
                          "cut short ends 'unfinished', not with a verdict on the fix)")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--trace", default=None, help="write the trace (config and events) to FILE")
    sub.add_parser("presets", help="list the presets")
    sub.add_parser("fixes", help="list the fixes")
    sw = sub.add_parser("sweep", help="run many seeds and fixes, count the outcomes")
    sw.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESETS)} (default: default, or the "
                                                    "--resume file's)")
    sw.add_argument("--fix", action="append", default=None,
                    help="repeatable; a fix named twice runs once (default: every fix, or the --resume file's)")
    sw.add_argument("--seeds", default=None, help="e.g. 0-15 or 1,4,9-11 (default: 0-15, or the --resume file's)")
    sw.add_argument("--jobs", type=int, default=1, help="worker processes (1: run here)")
    sw.add_argument("--json", action="store_true", help="print the records as JSON lines")
    sw.add_argument("--out", default=None, metavar="FILE",
                    help="write the records to a new CSV file (first line: the configuration), in chunks")
    sw.add_argument("--resume", default=None, metavar="FILE",
                    help="complete an interrupted campaign file: same preset, fixes and seeds; done runs are skipped")
    _campaign_options(sw)
    rp = sub.add_parser("replay", help="run a trace's configuration again and compare digests")
    rp.add_argument("file")
    cmp = sub.add_parser("compare", help="every fix against every hazard over seeds: failure rates, costs, "
                                         "a reproducing command per cell")
    cmp.add_argument("--preset", default="workshop", help=f"one of: {', '.join(PRESETS)}")
    cmp.add_argument("--seeds", default="0-31", help="e.g. 0-31 or 1,4,9-11")
    cmp.add_argument("--fix", action="append", default=None, help="repeatable (default: every fix)")
    cmp.add_argument("--hazard", action="append", default=None,
                     help="repeatable (default: every hazard; python -m lab compare --list-hazards)")
    cmp.add_argument("--list-hazards", action="store_true", help="list the hazards and exit")
    cmp.add_argument("--jobs", type=int, default=1, help="worker processes (1: run here)")
    cmp.add_argument("--json", action="store_true", help="print one JSON document with every cell")
    _campaign_options(cmp)
    _explore_parser(sub)
    return p


def _campaign_options(p: argparse.ArgumentParser) -> None:
    """Options shared by sweep and compare: where the runs go, and the progress bar."""
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run on a dask.distributed cluster: a scheduler address (tcp://host:8786), or local:N to "
                        "start N worker processes here")
    p.add_argument("--quiet", action="store_true", help="no progress bar (it is shown on a terminal only)")


def _explore_parser(sub) -> None:  # noqa: ANN001 - the subparsers of build_parser
    ex = sub.add_parser("explore", help="every schedule of injected NMIs/SMIs/MCEs within bounds; the minimal "
                                        "counterexample of each failure, as a trace (docs/explorer.md)")
    ex.add_argument("--preset", default="workshop", help=f"one of: {', '.join(PRESETS)}")
    ex.add_argument("--fix", action="append", default=None, help="repeatable (default: every fix)")
    ex.add_argument("--seed", type=int, default=0, help="the default schedule's seed (>= 0)")
    ex.add_argument("--inject-window", action="append", required=True, metavar="KIND:CPU@START-END",
                    help="an injection slot, e.g. nmi:1@0-60ms, or nmi:1@copy (the copy of the default run); "
                         "repeatable")
    ex.add_argument("--resolution", default="0.1ms", help="grid of injection times, e.g. 0.1ms, 50us")
    ex.add_argument("--max-choices", type=int, default=1, help="choices away from the default (0 to the windows)")
    ex.add_argument("--vary", action="append", default=None, metavar="CHOICE",
                    help="also set this choice to an end of its domain, one more choice (wake.exit)")
    ex.add_argument("--vary-first", type=int, default=2, help="occurrences of --vary from the injection on (1 to 64)")
    ex.add_argument("--budget-s", type=float, default=None, help="stop after this many seconds (per fix)")
    ex.add_argument("--max-schedules", type=int, default=None, help="stop after this many runs (per fix)")
    ex.add_argument("--jobs", type=int, default=1, help="worker processes (1: run here)")
    ex.add_argument("--out", default=None, help="write the worst minimal counterexample's trace to FILE (one --fix)")
    ex.add_argument("--json", action="store_true", help="print one JSON object per fix")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _explore(args: argparse.Namespace) -> int:
    """``python -m lab explore``: lab.explore.explore per fix; prints the report (or JSON) and
    writes the worst minimal counterexample's trace to --out."""
    from .compare import severity
    from .explore import Bounds, Window, explore, explore_fixes, resolve_windows

    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; allowed: {', '.join(PRESETS)}")
    fixes = args.fix or list(FIXES)
    for f in fixes:
        if f not in FIXES:
            raise ValueError(f"unknown fix {f!r}; allowed: {', '.join(FIXES)}")
    if args.out is not None and len(fixes) != 1:
        raise ValueError(f"--out writes one trace: name exactly one --fix (got {len(fixes)})")
    if args.out is not None:
        trace.check_target(args.out)
    if not 1 <= args.jobs <= 64:
        raise ValueError(f"--jobs must be 1 to 64, got {args.jobs}")
    if args.budget_s is not None and not args.budget_s > 0:
        raise ValueError(f"--budget-s must be > 0 seconds, got {args.budget_s}")
    base = Config.from_preset(args.preset, seed=args.seed)
    # bad bounds: exit 2 before any run (a copy window's times are known after one run)
    Bounds([Window.parse(w.strip()[:-4] + "0-1ns") if w.strip().lower().endswith("@copy") else w
            for w in args.inject_window], resolution_ns=args.resolution, max_choices=args.max_choices,
           budget_s=args.budget_s, budget_schedules=args.max_schedules, vary=tuple(args.vary or ()),
           vary_first=args.vary_first)
    for w in args.inject_window:
        if (w.strip().lower().endswith("@copy") and Window.parse(w.strip()[:-4] + "0-1ns").cpu >= base.cpus) \
                or (not w.strip().lower().endswith("@copy") and Window.parse(w).cpu >= base.cpus):
            raise ValueError(f"--inject-window {w!r}: no such CPU; allowed: 0 to {base.cpus - 1}")
    kw = dict(max_choices=args.max_choices, budget_s=args.budget_s, budget_schedules=args.max_schedules,
              vary=tuple(args.vary or ()), vary_first=args.vary_first)
    pool_cm = _pool(args.jobs) if args.jobs > 1 else contextlib.nullcontext(None)
    with pool_cm as pool:
        if pool is not None and len(fixes) > 1:  # one fix per worker
            done = explore_fixes(base, fixes, args.inject_window, args.resolution, executor=pool, **kw)
        else:
            done = None
        for i, fix in enumerate(fixes):
            config = dataclasses.replace(base, fix=fix)
            if done is not None:
                res = done[i]
            else:
                bounds = Bounds(resolve_windows(config, args.inject_window), resolution_ns=args.resolution, **kw)
                res = explore(config, bounds=bounds, executor=pool, progress=not args.no_progress and not args.json)
            if args.json:
                print(json.dumps(res.to_json(), sort_keys=True))
            else:
                print(res.report())
            if args.out is not None and res.counterexamples:
                worst = min(res.counterexamples.values(), key=lambda ce: severity(ce.outcome))
                worst.save(args.out)
                if not args.json:
                    print(f"  trace of the {worst.outcome} counterexample written to {args.out}: "
                          f"python -m lab replay {args.out}, or widgets.ResumeLab.from_trace({args.out!r})")
    return 0


def _per_cpu(counts: dict) -> str:
    """cpu0=.., cpu1=..; past 16 CPUs the spread instead (the JSON has every CPU)."""
    if len(counts) <= 16:
        return ", ".join(f"cpu{k}={v}" for k, v in counts.items())
    vals = sorted(counts.values())
    return (f"{len(vals)} CPUs, min {vals[0]}, median {vals[len(vals) // 2]}, max {vals[-1]} "
            "(--json lists each)")


def _summary_text(s: dict) -> str:
    lines = [f"preset {s['config']['preset']}, fix {s['fix']}, seed {s['seed']}: {s['outcome']}",
             f"  image load: {s['load']['direct']} pages in place, {s['load']['via_pbe']} via pbe "
             f"({s['load']['safe_pages']} safe pages)",
             f"  pages copied: {s['pages_copied']}, simulated time: {s['time_ns'] / 1e6:.3f} ms, steps: {s['steps']}",
             "  resume ended (verdict taken) at: "
             + ("not within the step budget" if s["outcome"] == "unfinished" else
                f"{s['resume_ended_ns'] / 1e6:.3f} ms" if s.get('resume_ended_ns') is not None else "never"),
             "  wake-ups per CPU: " + _per_cpu(s["wakeups"]),
             f"  during the copy: {s['costs']['wakeups']} wake-ups of parked CPUs, "
             f"{s['costs']['wakeups_per_ms']:.1f} per ms "
             f"({s['costs']['wakeups_per_ms'] / max(s['config']['cpus'] - 1, 1):.2f} per parked CPU per ms), "
             f"{s['costs']['awake_ns'] / 1e6:.3f} ms awake in all",
             f"  ping-pong: {s['costs']['clflush_wakeups']} of those wake-ups by another CPU's CLFLUSH of a shared "
             f"line; {s['costs']['sharing_cpus']} CPUs sharing a monitored line; {s['costs']['ipis']} IPIs sent"]
    for f in s["faults"]:
        during = f" while delivering {f['during']}" if f["during"] else ""
        walk = " -> ".join(f"L{w['level']}@{w['frame']}:{w['entry']}" for w in f["walk"])
        lines.append(f"  fault: cpu{f['cpu']} {f['vector']} at {f['address']} (error code {f['error_code']:#x}, "
                     f"rip {f['rip']}){during}" + (f"\n    walk: {walk}" if walk else ""))
    if s.get("stopped_by") == "step budget" and s["outcome"] == "unfinished":
        done = s["pages_copied"] / max(s["pages_to_copy"], 1)
        lines.append(f"  unfinished: the lab stopped at its step budget ({s['step_budget']:,} steps), "
                     f"{s['time_ns'] / 1e6:.3f} ms into the resume, {done:.0%} of the copy done; this is "
                     "no verdict on the fix (--step-budget N simulates further, at a cost that grows with N)")
    if s["oops"]:
        lines.append("  oops:\n" + "\n".join("    " + ln for ln in s["oops"].splitlines()))
    if s.get("mismatched_frames"):
        lines.append(f"  frames differing from the image: {s['mismatched_frames']}")
    return "\n".join(lines)


def _ignore_sigint() -> None:  # in pool workers: Ctrl-C is the parent's to handle, once
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _pool(jobs: int):
    """A process pool whose workers ignore Ctrl-C.  On the way out after Ctrl-C (or an error)
    work not yet started is cancelled and the workers are stopped at once: their runs in
    progress would be thrown away anyway, and waiting for them made Ctrl-C take as long as the
    slowest run (seconds for a ping-pong fix), once for good (the workers were left waiting)."""
    from concurrent.futures import ProcessPoolExecutor
    pool = ProcessPoolExecutor(jobs, initializer=_ignore_sigint)
    try:
        yield pool
    except BaseException:
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True, cancel_futures=True)


def _stop_pool(pool) -> None:  # noqa: ANN001 - a ProcessPoolExecutor
    """Cancel what has not started and end the workers now (terminate_workers from Python 3.14,
    the same by hand before)."""
    stop = getattr(pool, "terminate_workers", None)
    if stop is not None:  # pragma: no cover - Python 3.14+
        stop()
        return
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for w in workers:
        if w.is_alive():
            w.terminate()
    for w in workers:
        w.join(5)


@contextlib.contextmanager
def _executor(args: argparse.Namespace):
    """None (run here), a process pool (--jobs N) or a dask cluster's executor (--dask)."""
    if not 1 <= args.jobs <= 64:
        raise ValueError(f"--jobs must be 1 to 64, got {args.jobs}")
    if args.dask is not None and args.jobs != 1:
        raise ValueError(f"--dask {args.dask} and --jobs {args.jobs}: allowed: one of the two")
    if args.dask is not None:
        from .campaign import dask_executor
        with dask_executor(args.dask) as ex:
            yield ex
    elif args.jobs == 1:
        yield None
    else:
        with _pool(args.jobs) as pool:
            yield pool


def _sweep(args: argparse.Namespace) -> int:
    from . import campaign

    if not 1 <= args.jobs <= 64:
        raise ValueError(f"--jobs must be 1 to 64, got {args.jobs}")
    if args.out is not None and args.resume is not None and args.out != args.resume:
        raise ValueError(f"--out {args.out} and --resume {args.resume}: allowed: one file (--resume alone appends to it)")
    for opt, path in (("--out", args.out), ("--resume", args.resume)):
        if path is not None and not path.strip():
            raise ValueError(f"{opt} {path!r} is empty; allowed: a path to a CSV file, e.g. runs.csv")
    if args.resume is not None:  # what the command line leaves out, the campaign file says
        from .runsfile import read_header
        header = read_header(args.resume)
        stored = header.get("config") if isinstance(header.get("config"), dict) else {}
        args.preset = args.preset or stored.get("preset")
        args.fix = args.fix or header.get("fixes")
        args.seeds = args.seeds or header.get("seeds")
    args.preset, args.seeds = args.preset or "default", args.seeds or "0-15"
    base = Config.from_preset(args.preset)
    seeds = campaign.parse_seeds(args.seeds)
    fixes = args.fix or list(FIXES)
    campaign.check_size(len(fixes) * seeds.count, f"{len(fixes)} fixes x {seeds.count:,} seeds")
    show = (lambda rec: print(json.dumps(rec, sort_keys=True))) if args.json else None
    bar = campaign.ProgressBar(quiet=args.quiet, file=sys.stderr, notebook=False)
    with _executor(args) as ex:
        counts = campaign.run_campaign(base, fixes, seeds, ex, bar, out=args.resume or args.out,
                                       resume=args.resume is not None, on_record=show)
    if args.json:
        return 0
    print(f"preset {args.preset}, seeds {seeds.text} ({seeds.count:,} runs per fix); failure rate with its Wilson 95% "
          "interval; resumes until the first failure = 1 / rate")
    print(campaign.stats_text(campaign.stats(counts)))
    if args.out or args.resume:
        print(f"records: {args.resume or args.out} (pandas: lab.campaign.read_runs)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from . import compare as cmp
    from .campaign import parse_seeds

    if args.list_hazards:
        for name, (text, _) in cmp.HAZARDS.items():
            print(f"{name:<22} {text}")
        return 0
    if not 1 <= args.jobs <= 64:
        raise ValueError(f"--jobs must be 1 to 64, got {args.jobs}")
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; allowed: {', '.join(PRESETS)}")
    seeds = parse_seeds(args.seeds)
    for f in args.fix or ():
        if f not in FIXES:
            raise ValueError(f"unknown fix {f!r}; allowed: {', '.join(FIXES)}")
    for h in args.hazard or ():
        if h not in cmp.HAZARDS:
            raise ValueError(f"unknown hazard {h!r}; allowed: {', '.join(cmp.HAZARDS)}")
    from .campaign import ProgressBar, check_size
    n_fixes = len(args.fix) if args.fix else len(FIXES)
    n_hazards = len(set(args.hazard)) if args.hazard else len(cmp.HAZARDS)
    check_size(n_fixes * n_hazards * seeds.count, f"{n_fixes} fixes x {n_hazards} hazards x {seeds.count:,} seeds")
    bar = ProgressBar(quiet=args.quiet, file=sys.stderr, notebook=False)
    with _executor(args) as ex:
        df = cmp.compare(args.preset, args.fix, args.hazard, seeds, executor=ex, progress=bar)
    print(json.dumps(cmp.to_json(df), sort_keys=True) if args.json else cmp.to_text(df))
    return 0


# Options whose value must be written with ASCII digits (int() would take '٤' or '４'); every
# option declared with type=int is added by _int_options.
_DIGIT_OPTIONS = {"--inject", "--seeds"}


def _int_options(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every option string (of the parser and its subcommands) -> its canonical name, for options
    taking a number."""
    found: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.update(_int_options(sub))
        elif action.option_strings and (action.type is int or set(action.option_strings) & _DIGIT_OPTIONS):
            for opt in action.option_strings:
                found[opt] = max(action.option_strings, key=len)
    return found


def _all_options(parser: argparse.ArgumentParser) -> set[str]:
    opts: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                opts |= _all_options(sub)
        opts.update(action.option_strings)
    return opts


def check_ascii_numbers(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Refuse a number written with non-ASCII digits (e.g. --cpus ٤, --seed ৫, --inject nmi:١@0,
    --seeds ٣): Python's int() would accept them.  ValueError names the option and the value."""
    numeric = _int_options(parser)
    every = _all_options(parser)
    argv = list(argv)
    for i, token in enumerate(argv):
        if token == "--":
            break
        if not token.startswith("--"):
            continue
        name, eq, value = token.partition("=")
        if name not in numeric:  # an abbreviation argparse would accept (--cpu for --cpus)?
            matches = {o for o in every if o.startswith(name)}
            if not matches or not matches <= set(numeric):
                continue
            name = min(matches)
        if not eq:
            if i + 1 >= len(argv):
                continue
            value = argv[i + 1]
        if not value.isascii():
            option = numeric[name]
            form = {"--inject": " in KIND:CPU@NS, e.g. nmi:1@30000000",
                    "--seeds": " in N, A-B or a comma list, e.g. 0-15"}.get(option, "")
            raise ValueError(f"{option} {value!r} is not written in ASCII; allowed: the ASCII digits 0-9{form}")


def check_args(args: argparse.Namespace) -> None:
    """Checks after parsing, before any work: a fix named twice to sweep or compare runs once (the
    first place it was named); --trace must name a file that can be replaced, never '' or a FIFO
    or device (refused at once, not after the run)."""
    if getattr(args, "fix", None) and isinstance(args.fix, list):
        args.fix = list(dict.fromkeys(args.fix))
    path = getattr(args, "trace", None)
    if path is not None:
        if not path.strip():
            raise ValueError(f"--trace {path!r} is empty; allowed: a path to a regular file, e.g. run.json")
        trace.check_target(path)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line, for `python -m lab` and the `hibernation-lab` entry point alike: Ctrl-C
    exits 130 with one line, a closed stdout exits quietly, a full one exits 2 with one line."""
    if sys.stdout is None:  # started with stdout closed (`>&-`): what would be printed is dropped
        sys.stdout = open(os.devnull, "w")
    try:
        try:
            code = _main(argv)
            sys.stdout.flush()  # a closed or full stdout surfaces here, not at interpreter exit
            return code
        except KeyboardInterrupt:
            _say("python -m lab: interrupted (Ctrl-C)")
            return 130
    except BrokenPipeError:  # e.g. `python -m lab fixes | head -1`: the reader left, nothing to report
        _silence_stdout()
        return 0
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EBADF):
            raise
        _silence_stdout()
        _say(f"python -m lab: error: cannot write to standard output: {exc.strerror or exc}")
        return 2


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. under a test's capture)
        pass


def _main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        check_ascii_numbers(parser, argv)
        args = parser.parse_args(argv)
        check_args(args)
    except ValueError as exc:
        print(f"python -m lab: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "presets":
            for name, (text, _) in PRESETS.items():
                print(f"{name:<12} {text}")
                for param, why in CALIBRATION.get(name, ()):
                    print(f"{'':<14}calibrated: {param}: {why}" if param != "seed" else f"{'':<14}{param}: {why}")
            return 0
        if args.command == "fixes":
            for name, fix in FIXES.items():
                print(f"{name:<12} {fix.title}")
            return 0
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "compare":
            return _compare(args)
        if args.command == "explore":
            return _explore(args)
        if args.command == "replay":
            data = trace.load(args.file)
            r, same = trace.replay(data)
            print(f"replayed {args.file}: outcome {r.outcome}, digest {'matches' if same else 'DIFFERS'}")
            if not same:
                why = trace.first_difference(data, trace.export(r)) or "the events digest differs"
                print(f"  the trace is intact but the model now runs differently: {why}")
            return 0 if same else 1
        hazard = {k: v for k, v in dict(stray=tuple(args.stray) if args.stray else None, wakeup=args.wakeup,
                                        clflush_triggers=args.clflush_triggers,
                                        play_dead_at_text_end=args.play_dead_at_text_end,
                                        kernel_text_pages=args.kernel_text_pages,
                                        restore_initcalls=args.restore_initcalls,
                                        image_initcalls=args.image_initcalls).items() if v is not None}
        config = Config.from_preset(args.preset, fix=args.fix, cpus=args.cpus,
                                    threads_per_core=args.threads_per_core, nosmt=args.nosmt,
                                    kernel_version=args.kernel_version, ram=args.ram, image=args.image,
                                    seed=args.seed, inject=tuple(args.inject) if args.inject else None,
                                    schedule=tuple(args.choose) if args.choose else None,
                                    step_budget=args.step_budget, **hazard)
        r = Resume(config)
        r.run()
        s = r.summary()
        s["digest"] = trace.digest(r.events)
        if args.trace is not None:
            trace.save(r, args.trace)  # atomic; ValueError (exit 2) if it cannot be written
        print(json.dumps(s, sort_keys=True) if args.json else _summary_text(s))
        return 0
    except ValueError as exc:
        print(f"python -m lab: error: {exc}", file=sys.stderr)
        return 2
