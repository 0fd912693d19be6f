"""The address-monitoring hardware behind MONITOR/MWAIT, one armed range per CPU.

Source: SDM vol. 2B MONITOR and MWAIT; vol. 3A 8.10.4 "Using MONITOR/MWAIT in idle loops":
the range is a line of the size CPUID leaf 5 reports (64 bytes on the report's machines);
any store to it by another agent triggers the monitor, a store of the value already there
included.  Whether another CPU's CLFLUSH of the line triggers it is implementation specific:
``clflush_triggers`` (on by default, as argued in the 2016 thread: one implementation of
CLFLUSH is a read-invalidate snoop).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .memory import PAGE_SHIFT


@dataclass
class Armed:
    line: int  # physical address of the first byte of the armed line
    triggered: bool = False
    by: str | None = None  # agent and kind that triggered it


def check_line_size(line_size: int) -> int:
    if not isinstance(line_size, int) or line_size < 8 or line_size > 4096 or line_size & (line_size - 1):
        raise ValueError(
            f"monitor line size must be a power of two from 8 to 4096 bytes, got {line_size!r}"
        )
    return line_size


class MonitorUnit:
    """Armed lines of every CPU; ``on_trigger(cpu, agent, kind, line)`` is called when another
    agent's store or snoop hits a CPU's armed line."""

    def __init__(self, line_size: int = 64, clflush_triggers: bool = True) -> None:
        self.line_size = check_line_size(line_size)
        self.clflush_triggers = clflush_triggers
        self.armed: dict[int, Armed] = {}
        self._pages: dict[int, set[int]] = {}  # pfn -> cpus with an armed line in it
        self._lines: dict[int, set[int]] = {}  # line address -> cpus armed on it
        self.on_trigger: Callable[[int, str, str, int], None] | None = None

    def line_of(self, paddr: int) -> int:
        return paddr & ~(self.line_size - 1)

    def arm(self, cpu: int, paddr: int) -> int:
        """MONITOR: arm ``cpu``'s range at the line holding ``paddr`` (re-arming clears a
        trigger).  Returns the line address."""
        self.disarm(cpu)
        line = self.line_of(paddr)
        self.armed[cpu] = Armed(line)
        self._pages.setdefault(line >> PAGE_SHIFT, set()).add(cpu)
        self._lines.setdefault(line, set()).add(cpu)
        return line

    def disarm(self, cpu: int) -> None:
        old = self.armed.pop(cpu, None)
        if old is not None:
            cpus = self._pages.get(old.line >> PAGE_SHIFT)
            if cpus is not None:
                cpus.discard(cpu)
                if not cpus:
                    del self._pages[old.line >> PAGE_SHIFT]
            sharers = self._lines.get(old.line)
            if sharers is not None:
                sharers.discard(cpu)
                if not sharers:
                    del self._lines[old.line]

    def pages(self) -> list[int]:
        """Frames holding an armed line (a store there may wake someone)."""
        return list(self._pages)

    def is_armed_and_quiet(self, cpu: int) -> bool:
        """What MWAIT checks: armed and not yet triggered."""
        a = self.armed.get(cpu)
        return a is not None and not a.triggered

    def observe(self, paddr: int, nbytes: int, agent: str, kind: str) -> None:
        """Memory's store/snoop observer."""
        if kind == "clflush" and not self.clflush_triggers:
            own_only = True
        else:
            own_only = False
        size = self.line_size
        if nbytes <= size:  # a qword store or a CLFLUSH: only that line's (or two lines') sharers
            lines = {self.line_of(paddr), self.line_of(paddr + nbytes - 1)}
            cpus = sorted(c for ln in lines for c in self._lines.get(ln, ()))
        else:  # a page or more: the CPUs armed in the pages it covers
            first, last = paddr >> PAGE_SHIFT, (paddr + nbytes - 1) >> PAGE_SHIFT
            if last - first > len(self._pages):
                pages = [p for p in self._pages if first <= p <= last]
            else:
                pages = [p for p in range(first, last + 1) if p in self._pages]
            cpus = sorted(c for p in pages for c in self._pages[p])
        for cpu in cpus:  # CPU order, as documented
            a = self.armed[cpu]
            if a.triggered or not (paddr < a.line + self.line_size and a.line < paddr + nbytes):
                continue
            own = agent == f"cpu{cpu}"
            if own_only and not own:
                continue
            # the CPU's own store also sets the trigger (MWAIT then falls through), but it
            # cannot wake a CPU that is executing; a remote store wakes a sleeping one.
            a.triggered = True
            a.by = f"{kind} by {agent}"
            if not own and self.on_trigger is not None:
                self.on_trigger(cpu, agent, kind, a.line)
