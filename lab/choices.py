"""The choice points: every nondeterministic choice a run makes, named in one place.

A run is a sequence of choices; a seed is one way to make them.  The model draws each value
from the run's one seeded ``numpy.random.Generator`` exactly as before, then asks the run's
``Chooser`` for the value to use, by name, with the seeded draw as the default and the
domain the value may take.  ``SeededChooser`` keeps every default (a run is what its seed
says, draw for draw: the event digests of every preset, seed and fix are unchanged);
``ScheduledChooser`` replaces chosen occurrences with explicit values (a number, or ``lo`` /
``hi``: an end of the domain, e.g. the fastest wake-up), and because the seeded
value is still drawn, every other choice keeps its seeded value (one deviation is one).

``CHOICES`` lists every choice point: where it is made, its domain, how the seed makes it, and
how ``lab.explore`` treats it (docs/explorer.md).  A choice is addressed as ``(name, index)``:
the ``index``-th time the run asks for ``name`` (0 first).  ``Config.schedule`` holds explicit
values as ``(name, index, value)`` triples, so a schedule is a configuration: a trace of it
replays like any other.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from .hw.sched import Jitter


@dataclass(frozen=True)
class ChoicePoint:
    """One nondeterministic choice: ``where`` it is made (file and function), its ``domain``,
    how the seed makes it (``draw``), and how the explorer treats it (``explored``).
    ``schedulable``: whether ``Config.schedule`` / ``ScheduledChooser`` can set it."""

    name: str
    where: str
    domain: str
    draw: str
    explored: str
    schedulable: bool = False


CHOICES: dict[str, ChoicePoint] = {c.name: c for c in (
    ChoicePoint("boot.seed", "lab/kernel/instance.py Kernel.__init__",
                "1 to 2**31 - 1, once per boot (image kernel, then restore kernel)",
                "rng.integers(1, 1 << 31)",
                "held at the seed's value: it gives each boot's data pages their bytes (vary the seed)"),
    ChoicePoint("boot.noise", "lab/kernel/layout.py boot_noise (from Kernel._boot)",
                "mean/2 to 3*mean/2 pages, for the early reservations, the late ones and the initcalls of "
                "each boot (unless the Config gives them exactly)",
                "rng.integers(mean // 2, mean * 3 // 2 + 1)",
                "held: boot-to-boot layout differences are a seed's, not a schedule's (vary the seed, or set "
                "image_early_noise/restore_early_noise/... in the Config)"),
    ChoicePoint("boot.in_use", "lab/kernel/instance.py Kernel._fill_in_use",
                "extents of the memory in use: length (geometric), position, kind (data or sparse)",
                "rng.geometric, rng.integers(0, total), rng.integers(0, 4)",
                "held (vary the seed)"),
    ChoicePoint("wake.exit", "lab/hw/cpu.py Cpu.wake -> Machine.jitter.scale (lab.choices.ChoiceJitter)",
                "the C-state's (or HLT's) exit latency x (1 +/- jitter), in ns, one per wake-up",
                "Jitter.unit(): rng.uniform(-1, 1) in blocks of 1024",
                "held unless Bounds.vary names it: then the first occurrences after an injection are set to "
                "the ends of the domain", schedulable=True),
    ChoicePoint("copy.page", "lab/kernel/restore.py Runtime._copy_times -> Machine.jitter.scale_many",
                "page_copy_ns x (1 +/- jitter), in ns, one per page of the copy (index = position in pblist)",
                "rng.uniform(-1, 1, pages), drawn once when the copy starts",
                "held (settable through Config.schedule)", schedulable=True),
    ChoicePoint("stray.time", "lab/kernel/restore.py Runtime._schedule_strays",
                "0 to the copy's length - 1 ns after the copy starts, one per Config.stray entry",
                "rng.integers(0, window)",
                "held; the explorer's injection windows cover the same ground exhaustively", schedulable=True),
    ChoicePoint("stray.cpu", "lab/kernel/restore.py Runtime._schedule_strays",
                "a parked CPU, 1 to cpus - 1 (not drawn for a broadcast MCE)",
                "rng.integers(1, cpus)",
                "held; the explorer's injection windows name their CPUs", schedulable=True),
    ChoicePoint("compare.stray", "lab/compare.py stray() (the stand-in for Config.stray)",
                "a time in the copy and a parked CPU, per (seed, kind)",
                "its own generator, default_rng([seed, 0x57A7, kind]); used only when Config has no stray field",
                "not explored: inactive while Config.stray exists (then stray.time / stray.cpu)"),
    ChoicePoint("inject", "lab/scenario.py Resume.__init__ (Config.inject)",
                "kind (nmi, smi, mce, init), CPU, time in ns: a platform event",
                "not drawn: none unless the Config names them",
                "explored: each Bounds window adds one injection at every time of its grid"),
    ChoicePoint("monitor.wake_order", "lab/hw/monitor.py MonitorUnit.observe",
                "the order in which the CPUs armed on one line are triggered by one store",
                "not drawn: CPU order, always (the model's convention)",
                "not explored: fixed by the model"),
    ChoicePoint("sched.ties", "lab/hw/sched.py Scheduler",
                "which of the actors due at the same ns runs first",
                "not drawn: the one scheduled first",
                "not explored: fixed by the model"),
    ChoicePoint("page.bytes", "lab/hw/memory.py content tags",
                "the bytes of a data page",
                "derived: SeedSequence([kind, boot.seed, index]), no draw from the run's generator",
                "follows boot.seed"),
)}

#: the choices ``Config.schedule`` can set
SCHEDULABLE = tuple(name for name, c in CHOICES.items() if c.schedulable)
#: symbolic values: the lower and the upper end of the choice's domain where it is made
ENDS = ("lo", "hi")


class Chooser:
    """What the model asks for each choice: ``choose(name, default, lo, hi)`` returns the value
    to use for the next occurrence of ``name`` (``default`` is the seeded draw, ``lo``/``hi`` the
    inclusive domain).  ``counts[name]`` is how many times ``name`` was asked;
    ``deviations`` lists ``(name, index, default, value)`` of every value that was not the
    default."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.deviations: list[tuple[str, int, int, int]] = []

    def value(self, name: str, index: int, default: int, lo: int, hi: int) -> int:  # noqa: ARG002
        return default

    def choose(self, name: str, default: int, lo: int, hi: int) -> int:
        i = self.counts[name]
        self.counts[name] = i + 1
        v = self.value(name, i, default, lo, hi)
        if v != default:
            self.deviations.append((name, i, default, v))
        return v

    def choose_many(self, name: str, defaults: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """``len(defaults)`` occurrences of ``name`` at once (e.g. every page of the copy)."""
        first = self.counts[name]
        self.counts[name] = first + len(defaults)
        return defaults


class SeededChooser(Chooser):
    """Every choice as the seed makes it (today's draws, exactly)."""


class ScheduledChooser(Chooser):
    """Explicit values for some occurrences, ``{(name, index): value}`` or ``(name, index,
    value)`` triples; every other occurrence keeps its seeded value.  A value outside the
    choice's domain is a ValueError naming it (never clamped)."""

    def __init__(self, values: Mapping[tuple[str, int], int] | Iterable[tuple[str, int, int]]) -> None:
        super().__init__()
        items = values.items() if isinstance(values, Mapping) else (((n, i), v) for n, i, v in values)
        self.values: dict[tuple[str, int], int] = {}
        for (name, index), v in items:
            check_choice(name, index, v)
            self.values[(name, index)] = v if v in ENDS else int(v)

    def value(self, name: str, index: int, default: int, lo: int, hi: int) -> int:
        v = self.values.get((name, index))
        if v is None:
            return default
        if v in ENDS:
            return lo if v == "lo" else hi
        if not lo <= v <= hi:
            raise ValueError(f"schedule: {name}#{index} = {v} is outside its domain {lo} to {hi}")
        return v

    def choose_many(self, name: str, defaults: np.ndarray, lo: int, hi: int) -> np.ndarray:
        first = self.counts[name]
        out = super().choose_many(name, defaults, lo, hi)
        mine = [(i, v) for (n, i), v in self.values.items() if n == name and first <= i < first + len(defaults)]
        if mine:
            out = out.copy()
            for i, v in mine:
                out[i - first] = self.value(name, i, int(defaults[i - first]), lo, hi)
                if out[i - first] != defaults[i - first]:
                    self.deviations.append((name, i, int(defaults[i - first]), int(out[i - first])))
        return out


def check_choice(name: Any, index: Any, value: Any) -> None:
    """A ``(name, index, value)`` of ``Config.schedule``: ValueError saying what is allowed."""
    if name not in SCHEDULABLE:
        raise ValueError(f"schedule: choice {name!r} cannot be scheduled; allowed: {', '.join(SCHEDULABLE)}")
    for what, v in (("index", index), ("value", value)):
        if what == "value" and v in ENDS:
            continue
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            raise ValueError(f"schedule: {name} {what} must be a whole number >= 0"
                             + (" (or lo / hi: an end of the domain)" if what == "value" else "") + f", got {v!r}")


def parse_choice(text: str) -> tuple[str, int, int]:
    """'wake.exit#3=90000' -> ("wake.exit", 3, 90000); 'wake.exit#3=hi' -> ("wake.exit", 3, "hi")."""
    try:
        left, value = text.split("=", 1)
        name, index = left.split("#", 1)
        value = value.strip()
        if not (value in ENDS or (value.isascii() and value.isdigit())) or not index.strip().isascii():
            raise ValueError
        out = (name.strip(), int(index), value if value in ENDS else int(value))
    except ValueError:
        raise ValueError(f"malformed choice {text!r}; allowed: NAME#INDEX=VALUE with NAME one of "
                         f"{', '.join(SCHEDULABLE)} and VALUE a number or lo / hi (an end of the domain), "
                         "e.g. wake.exit#0=90000") from None
    check_choice(*out)
    return out


def chooser_for(schedule: Iterable[tuple[str, int, int]]) -> Chooser:
    """The chooser of a run: seeded, or scheduled where ``Config.schedule`` says so."""
    schedule = tuple(schedule)
    return ScheduledChooser(schedule) if schedule else SeededChooser()


class ChoiceJitter(Jitter):
    """``Jitter`` whose every duration is a choice: ``scale`` (one wake-up's exit latency,
    ``wake.exit``) and ``scale_many`` (the copy's page times, ``copy.page``) draw as before, then
    ask the chooser.  Seeded, it returns exactly what ``Jitter`` returns."""

    def __init__(self, rng: np.random.Generator, spread: float, chooser: Chooser) -> None:
        super().__init__(rng, spread)
        self.chooser = chooser

    def _domain(self, ns: int) -> tuple[int, int]:
        return max(1, int(round(ns * (1.0 - self.spread)))) if ns else 0, int(round(ns * (1.0 + self.spread)))

    def scale(self, ns: int, choice: str = "wake.exit") -> int:
        lo, hi = self._domain(ns)
        return self.chooser.choose(choice, super().scale(ns), lo, hi)

    def scale_many(self, ns: int, n: int, choice: str = "copy.page") -> np.ndarray:
        lo, hi = self._domain(ns)
        return self.chooser.choose_many(choice, super().scale_many(ns, n), lo, hi)
