"""What differs between the kernel versions the model can boot, in one table.

Sources: arch/x86/include/asm/thread_info.h (struct thread_info: ``task``, ``exec_domain``
(removed in v4.1 by "exec_domain: remove exec_domain from thread_info"), ``flags``, ...),
arch/x86/mm/init_64.c mark_rodata_ro() (commit ab76f7b4ab23 "x86/mm: Set NX on gap between
__ex_table and rodata", v4.6: NX from PFN_ALIGN(__stop___ex_table) to the 2 MiB-rounded end of
the image, which splits the 2 MiB text page around the gap).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelVersion:
    name: str
    uname: str  # as the oops prints it ("Not tainted 4.7.0 #1")
    ti_flags: int  # offsetof(struct thread_info, flags): what mwait_play_dead monitors
    nx_gap: bool  # mark_rodata_ro() sets NX on the gap after __ex_table (ab76f7b4ab23)


VERSIONS: dict[str, KernelVersion] = {
    # task, exec_domain, flags: the monitored word at 0x10, as the report's address shows
    "4.0": KernelVersion("4.0", "4.0.0", 0x10, False),
    # task, flags: at 0x8; the NX gap splits the last 2 MiB text page at run time
    "4.7": KernelVersion("4.7", "4.7.0", 0x08, True),
}


def get_version(name: str) -> KernelVersion:
    try:
        return VERSIONS[name]
    except KeyError:
        raise ValueError(f"unknown kernel version {name!r}; allowed: {', '.join(VERSIONS)}") from None
