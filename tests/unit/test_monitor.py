"""The monitor unit (lab/hw/monitor.py) on its own, wired to memory as the machine wires it:
SDM vol. 2B MONITOR/MWAIT and FACTS 4 (any store by another agent to the armed line triggers
it, a store of the same value included; a remote CLFLUSH triggers it only with the option)."""
from __future__ import annotations

import numpy as np
import pytest

from lab.hw.memory import ZERO, PhysicalMemory
from lab.hw.monitor import MonitorUnit, check_line_size


@pytest.fixture
def unit() -> tuple[PhysicalMemory, MonitorUnit, list[tuple]]:
    mem = PhysicalMemory(16 << 20)
    mon = MonitorUnit()
    mem.observers.append(mon.observe)
    calls: list[tuple] = []
    mon.on_trigger = lambda *a: calls.append(a)
    return mem, mon, calls


def test_arm_covers_the_64_byte_line_holding_the_address(unit):
    _, mon, _ = unit
    assert mon.arm(1, 0x5038) == 0x5000
    assert mon.armed[1].line == 0x5000 and not mon.armed[1].triggered
    assert mon.is_armed_and_quiet(1) and not mon.is_armed_and_quiet(2)


def test_store_by_another_agent_anywhere_in_the_line_triggers(unit):
    mem, mon, calls = unit
    mon.arm(1, 0x5000)
    mem.write_u64(0x5038, 0, "cpu0")  # last qword of the line, same value as before
    assert calls == [(1, "cpu0", "store", 0x5000)]
    assert mon.armed[1].triggered and mon.armed[1].by == "store by cpu0"
    assert not mon.is_armed_and_quiet(1)


@pytest.mark.parametrize("paddr", [0x4FF8, 0x5040, 0x6000])
def test_store_outside_the_line_does_not_trigger(unit, paddr):
    mem, mon, calls = unit
    mon.arm(1, 0x5000)
    mem.write_u64(paddr, 1, "cpu0")
    assert calls == [] and mon.is_armed_and_quiet(1)


def test_own_store_triggers_without_a_wake_call(unit):
    mem, mon, calls = unit
    mon.arm(1, 0x5000)
    mem.write_u64(0x5008, 3, "cpu1")
    assert calls == []  # cannot wake a CPU that is executing
    assert not mon.is_armed_and_quiet(1)  # but the next MWAIT falls through
    assert mon.armed[1].by == "store by cpu1"


def test_page_store_and_range_fill_trigger_lines_they_cover(unit):
    mem, mon, calls = unit
    mon.arm(1, 0x5040)
    mon.arm(2, 0x9000)
    mem.write_page(5, ZERO, "loader")
    mem.fill_range(8, 4, "data", seed=0, agent="loader")
    assert calls == [(1, "loader", "store", 0x5040), (2, "loader", "store", 0x9000)]


def test_page_store_with_an_array_triggers(unit):
    mem, mon, calls = unit
    mon.arm(3, 0x7FC0)
    mem.write_page(7, np.ones(512, dtype=np.uint64), "cpu0")
    assert calls == [(3, "cpu0", "store", 0x7FC0)]


def test_triggered_line_is_reported_once_until_rearmed(unit):
    mem, mon, calls = unit
    mon.arm(1, 0x5000)
    mem.write_u64(0x5000, 1, "cpu0")
    mem.write_u64(0x5000, 2, "cpu0")
    assert len(calls) == 1
    mon.arm(1, 0x5000)  # re-arming clears the trigger
    assert mon.is_armed_and_quiet(1)
    mem.write_u64(0x5000, 3, "cpu0")
    assert len(calls) == 2


def test_several_cpus_on_one_line_are_all_triggered_in_cpu_order(unit):
    mem, mon, calls = unit
    for cpu in (3, 1, 2):
        mon.arm(cpu, 0x5000 + cpu * 8)
    mem.write_u64(0x5000, 0, "cpu0")
    assert [c[0] for c in calls] == [1, 2, 3]


@pytest.mark.parametrize("clflush_triggers", [True, False])
def test_remote_clflush_triggers_only_with_the_option(clflush_triggers):
    mem = PhysicalMemory(16 << 20)
    mon = MonitorUnit(clflush_triggers=clflush_triggers)
    mem.observers.append(mon.observe)
    calls: list[tuple] = []
    mon.on_trigger = lambda *a: calls.append(a)
    mon.arm(1, 0x5000)
    mem.clflush(0x5020, "cpu0")
    assert (calls == [(1, "cpu0", "clflush", 0x5000)]) is clflush_triggers
    assert mon.is_armed_and_quiet(1) is not clflush_triggers


def test_disarm_and_rearm_elsewhere(unit):
    mem, mon, calls = unit
    mon.arm(1, 0x5000)
    mon.arm(1, 0x8000)  # moves the monitor
    mem.write_u64(0x5000, 1, "cpu0")
    assert calls == []
    mon.disarm(1)
    mem.write_u64(0x8000, 1, "cpu0")
    assert calls == [] and 1 not in mon.armed
    mon.disarm(1)  # disarming twice is harmless


def test_line_size_sets_the_range():
    mem = PhysicalMemory(16 << 20)
    mon = MonitorUnit(line_size=128)
    mem.observers.append(mon.observe)
    assert mon.arm(1, 0x50F8) == 0x5080
    mem.write_u64(0x5080, 1, "cpu0")
    assert mon.armed[1].triggered


@pytest.mark.parametrize("bad", [0, 4, 48, 96, 8192, -64, "64", 64.0])
def test_line_size_must_be_a_power_of_two_in_range(bad):
    with pytest.raises(ValueError) as exc:
        MonitorUnit(line_size=bad)
    assert "monitor line size must be a power of two from 8 to 4096 bytes" in str(exc.value)
    assert repr(bad) in str(exc.value)


def test_check_line_size_accepts_powers_of_two():
    assert [check_line_size(n) for n in (8, 64, 4096)] == [8, 64, 4096]


@pytest.mark.parametrize("clflush_triggers", [True, False])
def test_own_clflush_sets_the_trigger_whatever_the_option(clflush_triggers):
    """Modelling choice (docs/fidelity.md): the CPU's own CLFLUSH of its line counts as its own
    access; Linux re-arms with MONITOR after its CLFLUSH, so nothing depends on it."""
    mem = PhysicalMemory(16 << 20)
    mon = MonitorUnit(clflush_triggers=clflush_triggers)
    mem.observers.append(mon.observe)
    calls: list[tuple] = []
    mon.on_trigger = lambda *a: calls.append(a)
    mon.arm(1, 0x5000)
    mem.clflush(0x5000, "cpu1")
    assert calls == [] and mon.armed[1].by == "clflush by cpu1"
