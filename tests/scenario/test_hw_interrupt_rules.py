"""The machine's interrupt rules seen through whole runs (lab/hw, SDM vol. 3A 6.7.1 and
6.15): two NMIs to one CPU never nest (issue 7: the workshop preset used to handle ~100k
NMIs), and a machine check to a CPU in wait-for-SIPI takes the machine down."""
from __future__ import annotations

import pytest

from lab.scenario import Config, Resume


def nmi_entries(r: Resume, cpu: int) -> int:
    return sum(1 for e in r.events if e.kind == "exception" and e.cpu == cpu and e.data["vector"] == "NMI")


@pytest.mark.parametrize("second_ns", [9_000, 101_400, 3_000_000])
def test_two_nmis_to_one_cpu_give_at_most_two_handler_entries(second_ns):
    """SDM 6.7.1: the second NMI is pending (or lost, if one is already pending) until the
    handler's IRET; it never interrupts the handler on the same IST stack."""
    r = Resume(Config.from_preset("workshop", inject=(("nmi", 1, 6_000), ("nmi", 1, second_ns))))
    r.run()
    assert 1 <= nmi_entries(r, 1) <= 2
    assert r.steps < 10_000  # no handler loop


def test_machine_check_in_wait_for_sipi_shuts_the_machine_down():
    """FACTS 7 / SDM 6.15: with the init fix the parked CPUs wait for SIPI with CR4.MCE=0; a
    machine check then shuts the machine down (the kexec commit's "broadcast MCE" case)."""
    r = Resume(Config.from_preset("workshop", fix="init", inject=(("mce", 1, 3_000_000),)))
    r.run()
    m = r.machine
    parked = [e for e in m.events if e.kind == "state" and e.cpu == 1 and e.data.get("state") == "wait-for-SIPI"]
    if not parked or parked[0].t > 3_000_000:
        pytest.skip("CPU 1 was not in wait-for-SIPI at 3 ms in this run")
    assert m.shutdown_cause == "machine check" and r.outcome == "shutdown"
    assert [e.data["cause"] for e in m.events if e.kind == "shutdown"] == ["machine check"]
