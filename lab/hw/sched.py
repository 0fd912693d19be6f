"""Discrete-event time: integer nanoseconds, flat events, seeded jitter.

Nothing here reads the wall clock or global random state: one ``numpy.random.Generator`` is
passed in and all jitter is drawn from it in blocks, so a run's trace depends only on its seed.
"""
from __future__ import annotations

import heapq
from typing import Any, NamedTuple

import numpy as np


class Event(NamedTuple):
    """One thing that happened: time (ns), kind, CPU (or None for another agent), fields."""

    t: int
    kind: str
    cpu: int | None
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "kind": self.kind, "cpu": self.cpu, **self.data}


class Jitter:
    """Multiplicative timing jitter: ``scale(ns)`` returns ns * (1 + spread * u), u uniform in
    [-1, 1), drawn from the run's generator in blocks of 1024 (order-deterministic)."""

    BLOCK = 1024

    def __init__(self, rng: np.random.Generator, spread: float = 0.1) -> None:
        if not 0 <= spread < 1:
            raise ValueError(f"jitter spread must be in [0, 1), got {spread}")
        self.rng = rng
        self.spread = spread
        self._block = np.empty(0)
        self._i = 0

    def unit(self) -> float:
        if self._i >= len(self._block):
            self._block = self.rng.uniform(-1.0, 1.0, self.BLOCK)
            self._i = 0
        u = float(self._block[self._i])
        self._i += 1
        return u

    def scale_many(self, ns: int, n: int) -> np.ndarray:
        """``n`` jittered durations at once (int64), drawn straight from the generator."""
        if self.spread == 0 or ns == 0:
            return np.full(n, ns, dtype=np.int64)
        u = self.rng.uniform(-1.0, 1.0, n)
        return np.maximum(1, np.rint(ns * (1.0 + self.spread * u))).astype(np.int64)

    def scale(self, ns: int) -> int:
        if self.spread == 0 or ns == 0:
            return ns
        return max(1, int(round(ns * (1.0 + self.spread * self.unit()))))


class Scheduler:
    """Which actor runs next: a heap of (time, sequence, actor id).  Ties go to the actor
    scheduled first, so the order is deterministic."""

    def __init__(self) -> None:
        self.now = 0
        self._heap: list[tuple[int, int, int]] = []
        self._seq = 0
        self._when: dict[int, int] = {}

    def schedule(self, actor: int, at: int) -> None:
        if at < self.now:
            raise ValueError(f"cannot schedule actor {actor} in the past ({at} < {self.now})")
        self._seq += 1
        self._when[actor] = self._seq
        heapq.heappush(self._heap, (at, self._seq, actor))

    def advance(self, at: int) -> None:
        """Move the clock forward for the running actor's own work (e.g. the pages of one REP
        MOVS), allowed only up to the next scheduled event so no one's turn is skipped."""
        nxt = self.next_time()
        if at < self.now or (nxt is not None and at > nxt):
            raise ValueError(f"cannot advance the clock to {at}: now {self.now}, next event {nxt}")
        self.now = at

    def cancel(self, actor: int) -> None:
        self._when.pop(actor, None)

    def is_scheduled(self, actor: int) -> bool:
        return actor in self._when

    def next_time(self) -> int | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def _drop_stale(self) -> None:
        while self._heap and self._when.get(self._heap[0][2]) != self._heap[0][1]:
            heapq.heappop(self._heap)

    def pop(self) -> tuple[int, int] | None:
        """(time, actor) of the next event, advancing ``now``; None when nothing is scheduled."""
        self._drop_stale()
        if not self._heap:
            return None
        at, _, actor = heapq.heappop(self._heap)
        del self._when[actor]
        self.now = at
        return at, actor
