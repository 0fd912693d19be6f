"""The machine model: knows nothing of Linux (FACTS sections 3 and 4 are its spec)."""
from .apic import IPI_KINDS, Apic
from .cpu import DEFAULT_CSTATES, VECTORS, CpuFault, Cpu, CState, RunState
from .isa import OPS, Instr, Placed, Program, I, mem
from .machine import MAX_CPUS, Machine, Timing
from .memory import PAGE_SIZE, ContentTag, PhysicalMemory, parse_size
from .monitor import MonitorUnit
from .paging import TLB, Entry, Fault, Walk, WalkStep, decode, is_canonical, make_entry, split, walk
from .sched import Event, Jitter, Scheduler

__all__ = [
    "IPI_KINDS", "Apic", "DEFAULT_CSTATES", "VECTORS", "CpuFault", "Cpu", "CState", "RunState",
    "OPS", "Instr", "Placed", "Program", "I", "mem", "MAX_CPUS", "Machine", "Timing", "PAGE_SIZE",
    "ContentTag", "PhysicalMemory", "parse_size", "MonitorUnit", "TLB", "Entry", "Fault", "Walk",
    "WalkStep", "decode", "is_canonical", "make_entry", "split", "walk", "Event", "Jitter",
    "Scheduler",
]
