"""One validation layer for a run's configuration, shared by ``Config`` (so by the API, the CLI,
trace replay and the widgets alike).

Each field has a spec: its type (numpy integers count as whole numbers, ``True``/``False`` do
not), its range and unit, and a sentence saying what is allowed.  ``check_fields`` turns the
values of a ``Config`` into plain Python values or raises ``ConfigError`` naming the field, the
bad value and what is allowed; ``check_combinations`` then refuses settings that make no sense
together (``nosmt`` without SMT siblings, holes over the kernel, more boot noise than RAM...).
The limits are listed in docs/limits.md.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from .hw.machine import MAX_CPUS, WAKEUPS
from .hw.memory import PAGE_SIZE, parse_size

if TYPE_CHECKING:  # pragma: no cover
    from .scenario import Config

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
MIN_RAM = 64 * MiB
MAX_RAM = 1 << 40  # 1 TiB: memory is sparse, but the loader's arrays grow with the image
# the image's frames are tracked one by one: a 32 GiB image takes about 1 GB of memory and half a
# minute to build (a 1 TiB machine needs an image of at least 16 GiB: its struct pages)
MAX_IMAGE = 32 * GiB
MAX_SEED = (1 << 63) - 1  # a seed fits a signed 64-bit integer (numpy, pandas, JSON readers)
MAX_TIME_NS = (1 << 63) - 1  # times (injections, run(until=...)) in signed 64-bit ns
MAX_STEP_BUDGET = 1_000_000_000
MAX_PAGE_COPY_NS = 1_000_000  # 1 ms per 4 KiB page
MAX_C6_EXIT_NS = 1_000_000_000  # 1 s
MAX_INITCALL_PAGES = 1 << 16  # pages allocated one by one before mark_rodata_ro (256 MiB)
MAX_NOISE_PAGES = MAX_RAM // PAGE_SIZE
# head_64.S maps the kernel image through level2_kernel_pgt: KERNEL_IMAGE_SIZE (512 MiB without
# KASLR, arch/x86/include/asm/page_64_types.h) from physical 0; the image must end inside it.
KERNEL_IMAGE_SIZE = 512 * MiB
KERNEL_PHYS_START = 16 * MiB  # CONFIG_PHYSICAL_START (BootParams.phys_base_pfn)
MIN_TEXT_PAGES = 16  # room for the modelled routines (about 8 KiB from _text + 4 KiB) and play_dead
MIN_DATA_PAGES = 16  # init_task's thread_info (4 pages from .data + 8) and the handlers' data
E820_MAX = 128  # arch/x86/include/uapi/asm/e820.h E820MAX: entries the kernel takes from the BIOS
MAX_INJECTIONS = 4096


class ConfigError(ValueError):
    """A setting that is not allowed: the message names it, its value and what is allowed."""


class ConfigTypeError(ConfigError, TypeError):
    """A setting of the wrong type (also a TypeError, for callers that expect one)."""


def is_whole(value: Any) -> bool:
    """int and numpy integers, never bool (nor numpy.bool_, which is not an Integral)."""
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def _is_flag(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _num(n: int) -> str:
    return f"{n:_}" if abs(n) >= 100_000 else str(n)


def whole(name: str, value: Any, lo: int, hi: int, allowed: str | None = None) -> int:
    """``value`` as a Python int in [lo, hi] (numpy integers accepted, bools and floats not)."""
    text = allowed or f"a whole number from {_num(lo)} to {_num(hi)}"
    if not is_whole(value):
        raise ConfigTypeError(f"{name} must be {text}, got {value!r}")
    if not lo <= int(value) <= hi:
        raise ConfigError(f"{name} must be {text}, got {value!r}")
    return int(value)


def flag(name: str, value: Any) -> bool:
    if not _is_flag(value):
        raise ConfigTypeError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def choice(name: str, value: Any, allowed: Iterable[str], what: str | None = None) -> str:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        what = what or f"{name} must be one of"
        raise (ConfigError if isinstance(value, str) else ConfigTypeError)(
            f"{what} {', '.join(allowed)}, got {value!r}" if what.endswith("one of")
            else f"{what} {value!r}; allowed: {', '.join(allowed)}")
    return value


def size(name: str, value: Any, lo: int, hi: int, multiple: int = 1) -> int:
    """A size in bytes: "256M", "8G", "2GiB" or a whole number (numpy integers accepted)."""
    try:
        n = parse_size(int(value) if is_whole(value) else value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if not lo <= n <= hi:
        raise ConfigError(f"{name} must be {_size_text(lo)} to {_size_text(hi)}, got {value!r} ({n} bytes)")
    if n % multiple:
        raise ConfigError(f"{name} must be a multiple of {_size_text(multiple)}, got {value!r} ({n} bytes)")
    return n


def _size_text(n: int) -> str:
    for unit, factor in (("T", 1 << 40), ("G", GiB), ("M", MiB), ("K", KiB)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n} bytes"


def real(name: str, value: Any, lo: float, hi: float) -> float:
    """A real number in [lo, hi) (ints and numpy floats accepted; NaN, inf and bools not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not lo <= value < hi:
        raise (ConfigError if isinstance(value, numbers.Real) and not isinstance(value, bool)
               else ConfigTypeError)(f"{name} must be in [{lo:g}, {hi:g}), got {value!r}")
    return float(value) if not isinstance(value, int) else value


@dataclass(frozen=True)
class Spec:
    """How one Config field is checked: ``check(name, value) -> the plain value``."""

    check: Callable[[str, Any], Any]
    allowed: str  # for docs/limits.md and the messages


def _whole(lo: int, hi: int, allowed: str | None = None) -> Spec:
    text = allowed or f"a whole number from {_num(lo)} to {_num(hi)}"
    return Spec(lambda n, v: whole(n, v, lo, hi, text), text)


def _optional_whole(lo: int, hi: int) -> Spec:
    text = f"a whole number from {_num(lo)} to {_num(hi)}, or None (seeded)"
    return Spec(lambda n, v: None if v is None else whole(n, v, lo, hi, text), text)


def _flag() -> Spec:
    return Spec(flag, "true or false")


def _strays(name: str, value: Any) -> tuple[str, ...]:
    from .scenario import STRAYS
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (tuple, list)):
        raise ConfigTypeError(f"{name} must be a kind or a list of kinds ({', '.join(STRAYS)}), got {value!r}")
    for kind in items:
        if not isinstance(kind, str) or kind not in STRAYS:
            raise ConfigError(f"stray {kind!r}: allowed kinds {', '.join(STRAYS)}")
    return tuple(items)


def _string_or_triples(name: str, value: Any, forms: str, what: str) -> tuple | list:
    """One entry (a string) or a list of at most MAX_INJECTIONS entries, for ``inject`` and
    ``schedule``; each entry is checked by the caller."""
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (tuple, list)):
        raise ConfigTypeError(f"{name} must be a list of {forms} triples, got {value!r}")
    if len(items) > MAX_INJECTIONS:
        raise ConfigError(f"{name} has {len(items)} {what}; allowed: at most {MAX_INJECTIONS}")
    return items


def _injections(name: str, value: Any) -> tuple[tuple[str, int, int], ...]:
    """One injection 'nmi:1@30000000' or ("nmi", 1, 30000000), or a list of them."""
    from .scenario import INJECTABLE, parse_injection
    out = []
    for item in _string_or_triples("inject", value, "KIND:CPU@TIME_NS strings or (kind, cpu, time)", "injections"):
        if isinstance(item, str):
            if not item.isascii():
                raise ConfigError(f"injection {item!r} is not written in ASCII; allowed: KIND:CPU@TIME_NS "
                                  "with the ASCII digits 0-9, e.g. nmi:1@30000000")
            item = parse_injection(item)
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ConfigError(f"injection {item!r}: allowed: KIND:CPU@TIME_NS or a (kind, cpu, time_ns) triple, "
                              "e.g. ('nmi', 1, 30000000)")
        kind, cpu, at = item
        if not isinstance(kind, str) or kind not in INJECTABLE or not is_whole(cpu) or not is_whole(at) \
                or not 0 <= at <= MAX_TIME_NS or cpu < 0:
            raise ConfigError(f"injection {tuple(item)!r}: allowed kinds {', '.join(INJECTABLE)}, "
                              f"a CPU 0 to the last CPU, a time 0 to 2**63 - 1 ns")
        out.append((kind, int(cpu), int(at)))
    return tuple(out)


def _schedule(name: str, value: Any) -> tuple[tuple[str, int, Any], ...]:
    """Explicit choices (lab.choices): 'wake.exit#0=95000' or ("wake.exit", 0, 95000), a value
    or lo / hi, or a list of them."""
    from .choices import check_choice, parse_choice
    out = []
    for item in _string_or_triples("schedule", value, "NAME#INDEX=VALUE strings or (name, index, value)", "choices"):
        if isinstance(item, str):
            item = parse_choice(item)
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ConfigError(f"schedule entry {item!r}: allowed (choice, occurrence, value), "
                              "e.g. ('wake.exit', 0, 90000) or 'wake.exit#0=hi'")
        choice_, index, v = item
        check_choice(choice_, index, v)
        out.append((choice_, int(index), v if isinstance(v, str) else int(v)))
    return tuple(out)


def _holes(name: str, value: Any) -> tuple[tuple[int, int], ...]:
    """Firmware-reserved ranges: a list of [start, end) byte pairs (page aligned, start < end)."""
    if not isinstance(value, (tuple, list)) or not all(isinstance(h, (tuple, list)) and len(h) == 2 for h in value):
        raise ConfigTypeError(f"holes must be a list of [start, end] pairs (page-aligned byte addresses), "
                              f"got {value!r}")
    if len(value) > E820_MAX:
        raise ConfigError(f"holes has {len(value)} ranges; allowed: at most {E820_MAX} (E820MAX)")
    out = []
    for lo, hi in value:
        if not is_whole(lo) or not is_whole(hi) or not 0 <= lo < hi <= MAX_TIME_NS \
                or lo % PAGE_SIZE or hi % PAGE_SIZE:
            raise ConfigError(f"hole {[lo, hi]!r}: allowed: [start, end) with 0 <= start < end, both whole "
                              "numbers of bytes and multiples of 4096")
        out.append((int(lo), int(hi)))
    return tuple(out)


def _optional_address(name: str, value: Any) -> int | None:
    if value is None:
        return None
    text = "None (3 GiB) or a multiple of 4096 above the kernel image and at most 4 GiB"
    whole(name, value, 0, 4 * GiB, text)
    if value % PAGE_SIZE:
        raise ConfigError(f"{name} must be {text}, got {value!r}")
    return int(value)


def _named(kind: str, names: Callable[[], Iterable[str]], what: str) -> Spec:
    return Spec(lambda n, v: choice(n, v, names(), what), f"one of the {kind}")


def _presets() -> Iterable[str]:
    from .scenario import PRESETS
    return PRESETS


def _fixes() -> Iterable[str]:
    from .fixes import FIXES
    return FIXES


def _versions() -> Iterable[str]:
    from .kernel.version import VERSIONS
    return VERSIONS


#: every Config field and how it is checked (docs/limits.md lists the same)
FIELDS: dict[str, Spec] = {
    "preset": _named("presets", _presets, "unknown preset"),
    "fix": _named("fixes", _fixes, "unknown fix"),
    "cpus": _whole(2, MAX_CPUS, f"2 to {MAX_CPUS} (a boot CPU and at least one other)"),
    "threads_per_core": _whole(1, 2, "1 or 2"),
    "ram": Spec(lambda n, v: size(n, v, MIN_RAM, MAX_RAM, 2 * MiB), "64M to 1T, whole 2 MiB"),
    "image": Spec(lambda n, v: size(n, v, PAGE_SIZE, MAX_IMAGE, PAGE_SIZE), "4K to 32G, whole 4 KiB pages"),
    "seed": _whole(0, MAX_SEED, ">= 0 and at most 2**63 - 1"),
    "pci_hole": _flag(),
    "e820_end_below_4g": Spec(_optional_address, "None or a page-aligned address, at most 4 GiB"),
    "holes": Spec(_holes, f"at most {E820_MAX} page-aligned [start, end) pairs"),
    "gbpages": _flag(),
    "debug_pagealloc": _flag(),
    "line_size": _whole(8, 4096, "a power of two from 8 to 4096"),
    "clflush_triggers": _flag(),
    "deep_cstate_loses_tlb": _flag(),
    "c6_exit_ns": _whole(0, MAX_C6_EXIT_NS, f"a whole number of ns from 0 to {_num(MAX_C6_EXIT_NS)} (1 s)"),
    "page_copy_ns": _whole(1, MAX_PAGE_COPY_NS, f"a whole number of ns from 1 to {_num(MAX_PAGE_COPY_NS)} (1 ms)"),
    "jitter": Spec(lambda n, v: real(n, v, 0, 1), "in [0, 1)"),
    "kernel_text_pages": _whole(MIN_TEXT_PAGES, KERNEL_IMAGE_SIZE // PAGE_SIZE),
    "kernel_data_pages": _whole(MIN_DATA_PAGES, KERNEL_IMAGE_SIZE // PAGE_SIZE),
    "kernel_bss_pages": _whole(1, KERNEL_IMAGE_SIZE // PAGE_SIZE),
    "early_noise_pages": _whole(0, MAX_NOISE_PAGES),
    "late_noise_pages": _whole(0, MAX_NOISE_PAGES),
    "image_early_noise": _optional_whole(0, MAX_NOISE_PAGES),
    "restore_early_noise": _optional_whole(0, MAX_NOISE_PAGES),
    "late_noise_exact": _optional_whole(0, MAX_NOISE_PAGES),
    "image_initcalls": _optional_whole(0, MAX_INITCALL_PAGES),
    "restore_initcalls": _optional_whole(0, MAX_INITCALL_PAGES),
    "restore_in_use": Spec(lambda n, v: size(n, v, 1, MAX_RAM), "a size"),
    "same_build": _flag(),
    "step_budget": _whole(1, MAX_STEP_BUDGET),
    "kernel_version": _named("kernel versions", _versions, "unknown kernel version"),
    "play_dead_at_text_end": _flag(),
    "stray": Spec(_strays, "a list of nmi, smi, mce"),
    "wakeup": Spec(lambda n, v: choice(n, v, WAKEUPS), f"one of {', '.join(WAKEUPS)}"),
    "nosmt": _flag(),
    "inject": Spec(_injections, f"at most {MAX_INJECTIONS} KIND:CPU@TIME_NS"),
    "schedule": Spec(_schedule, f"at most {MAX_INJECTIONS} NAME#INDEX=VALUE (lab.choices; VALUE a number, lo or hi)"),
}


def check_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Every field checked on its own; returns the plain values (ints for numpy ints, tuples for
    lists, bytes for sizes).  ConfigError names the first bad field."""
    out = {}
    for name, spec in FIELDS.items():
        out[name] = spec.check(name, values[name])
    if out["line_size"] & (out["line_size"] - 1):
        raise ConfigError(f"line_size must be a power of two from 8 to 4096, got {values['line_size']!r}")
    return out


def _noise_pages(mean: int, exact: int | None) -> int:
    """The most pages a boot's noise can take (lab.kernel.layout.boot_noise: up to 1.5x mean)."""
    return exact if exact is not None else mean * 3 // 2


def check_combinations(c: "Config") -> None:
    """Settings that make no sense together; ``c`` has passed ``check_fields``."""
    from .fixes import get_fix
    from .kernel.instance import BootParams
    from .kernel.layout import KernelImage

    if c.cpus % c.threads_per_core:
        raise ConfigError(f"cpus {c.cpus} is not a whole number of cores of {c.threads_per_core} "
                          f"threads; allowed: an even number of CPUs (or threads_per_core=1)")
    if c.nosmt and c.threads_per_core == 1:
        raise ConfigError("nosmt with threads_per_core=1: there are no SMT siblings to keep offline; "
                          "allowed: nosmt with threads_per_core=2, or threads_per_core=1 without nosmt")
    if c.image > c.ram:
        raise ConfigError(f"image ({c.image} bytes) is larger than ram ({c.ram} bytes)")
    image = KernelImage(KERNEL_PHYS_START // PAGE_SIZE, c.kernel_text_pages, c.kernel_data_pages,
                        c.kernel_bss_pages)
    kernel_end = image.frames.stop * PAGE_SIZE
    if kernel_end > KERNEL_IMAGE_SIZE:
        raise ConfigError(
            f"kernel_text_pages + kernel_data_pages + kernel_bss_pages ({c.kernel_text_pages} + "
            f"{c.kernel_data_pages} + {c.kernel_bss_pages}): the kernel image would end at {kernel_end:#x}; "
            f"allowed: it ends inside the {KERNEL_IMAGE_SIZE >> 20} MiB head_64.S maps (KERNEL_IMAGE_SIZE)")
    kernel = (c.kernel_text_pages + c.kernel_data_pages + c.kernel_bss_pages) * PAGE_SIZE
    noise = max(_noise_pages(c.early_noise_pages, e) + _noise_pages(c.late_noise_pages, c.late_noise_exact)
                + (i if i is not None else BootParams().initcall_pages * 3 // 2) for e, i in ((c.image_early_noise, c.image_initcalls),
                                                            (c.restore_early_noise, c.restore_initcalls)))
    need = kernel + c.ram // 64 + c.restore_in_use + 4 * MiB + noise * PAGE_SIZE
    if c.image + need > c.ram:
        raise ConfigError(
            f"ram too small: the image ({c.image >> 20} MiB) plus the restore kernel "
            f"(about {need >> 20} MiB with its boot allocations) need more than {c.ram >> 20} MiB; "
            "use a larger ram or a smaller image")
    if c.image < kernel + c.ram // 64 + 8 * MiB:
        raise ConfigError(
            f"image too small: it holds at least the kernel and its boot allocations "
            f"(about {(kernel + c.ram // 64 + 8 * MiB) >> 20} MiB), got {c.image >> 20} MiB")
    if c.e820_end_below_4g is not None and c.e820_end_below_4g < kernel_end + 16 * MiB:
        raise ConfigError(f"e820_end_below_4g {c.e820_end_below_4g:#x} leaves no room above the kernel image "
                          f"(which ends at {kernel_end:#x}); allowed: a multiple of 4096 from "
                          f"{kernel_end + 16 * MiB:#x} to 4 GiB")
    for lo, hi in c.holes:
        if lo < 1 * MiB or hi > c.phys_size:
            raise ConfigError(f"hole [{lo:#x}, {hi:#x}) is outside RAM; allowed: inside [0x100000, "
                              f"{c.phys_size:#x}) (from 1 MiB to the top of the physical address space)")
        if lo < kernel_end and hi > KERNEL_PHYS_START:
            raise ConfigError(f"hole [{lo:#x}, {hi:#x}) covers the kernel image [{KERNEL_PHYS_START:#x}, "
                              f"{kernel_end:#x}); allowed: holes outside it")
    e820 = c.e820()
    if len(e820) > E820_MAX:
        raise ConfigError(f"holes: the memory map has {len(e820)} entries; allowed: at most {E820_MAX} (E820MAX)")
    usable = sum(e.end - e.start for e in e820 if e.usable)
    if c.holes and c.image + need > usable:
        raise ConfigError(f"holes leave {usable >> 20} MiB of usable RAM; the image ({c.image >> 20} MiB) and the "
                          f"restore kernel (about {need >> 20} MiB) need more; allowed: smaller holes")
    for kind, cpu, at in c.inject:
        if cpu >= c.cpus:
            raise ConfigError(f"injection {(kind, cpu, at)!r}: allowed a CPU 0 to {c.cpus - 1}")
    why = get_fix(c.fix).unavailable(c)
    if why:
        raise ConfigError(f"fix {c.fix!r} is not available here: {why}")


def check_until(until: Any, phases: Iterable[str], kinds: Iterable[str]) -> Any:
    """``Resume.run(until=...)``: None, a phase, an event kind, or a time in ns (numpy integers
    accepted, as a Python int).  Anything else (a misspelt name, a float, a bool) is refused."""
    phases, kinds = tuple(phases), tuple(kinds)
    allowed = (f"None (the end), a phase ({', '.join(phases)}), an event kind ({', '.join(sorted(kinds))}) "
               "or a time in ns (a whole number >= 0)")
    if until is None:
        return None
    if isinstance(until, str):
        if until in phases or until in kinds:
            return until
        raise ConfigError(f"until {until!r} is not a phase or an event kind; allowed: {allowed}")
    if is_whole(until):
        if not 0 <= until <= MAX_TIME_NS:
            raise ConfigError(f"until time must be >= 0 ns (and below 2**63), got {until!r}")
        return int(until)
    raise ConfigTypeError(f"until must be {allowed}; got {until!r} ({type(until).__name__})")


def fix_names(fixes: Any) -> list[str]:
    """The fixes of a sweep as a list of known names, each once, in the order given.  One name
    given as a str is one fix (as compare's ``fixes`` and Config's ``stray`` and ``inject`` take
    it), never its letters."""
    from .fixes import FIXES
    if isinstance(fixes, str):
        fixes = [fixes]
    try:
        names = list(fixes)
    except TypeError:
        raise ConfigTypeError(f"fixes must be a fix name or a list of them ({', '.join(FIXES)}), "
                              f"got {fixes!r}") from None
    for f in names:
        choice("fix", f, FIXES, "unknown fix")
    if not names:
        raise ConfigError(f"fixes is empty; allowed: one or more of {', '.join(FIXES)}")
    return list(dict.fromkeys(names))
