"""A resume scenario: validated configuration, named presets, and the ``Resume`` session the
CLI, the widgets and the notebooks drive step by step.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .choices import chooser_for
from .fixes import get_fix
from .hw.cpu import CState, RunState
from .hw.machine import Machine, Timing
from .hw.memory import PAGE_SIZE, PhysicalMemory
from .hw.paging import Walk, walk
from .hw.sched import Event
from .kernel.hibernate import Image, load_image, snapshot, verify
from .kernel.hotplug import HotplugTiming, park_idle
from .kernel.instance import BootParams, Kernel
from .kernel.layout import e820_for, punch_holes
from .kernel.restore import RestoreTiming, Runtime
from . import validate

if TYPE_CHECKING:  # pragma: no cover
    from .watch import Watch

INJECTABLE = ("nmi", "smi", "mce", "init")
STRAYS = ("nmi", "smi", "mce")


def parse_injection(text: str) -> tuple[str, int, int]:
    """'nmi:1@30000000' -> ("nmi", 1, 30000000): an NMI to CPU 1 at t = 30 ms."""
    try:
        kind, rest = text.split(":", 1)
        cpu, at = rest.split("@", 1)
        return kind.strip().lower(), int(cpu), int(at)
    except ValueError:
        raise ValueError(f"malformed injection {text!r}; allowed: KIND:CPU@TIME_NS with KIND one of "
                         f"{', '.join(INJECTABLE)}, e.g. nmi:1@30000000") from None


PHASES = ("boot", "load-image", "disable-nonboot", "copy", "image-kernel", "online", "resumed")
#: "timeout": the machine has nothing left to do and the resume never ended (a hang);
#: "unfinished": the lab stopped at its step budget before the resume ended (not a verdict on
#: the fix: the simulation was cut short; ``--step-budget`` lets it go on)
OUTCOMES = ("resumed", "panic", "triple_fault", "shutdown", "corrupted", "timeout", "unfinished")
GiB, MiB = 1 << 30, 1 << 20
MAX_RAM = validate.MAX_RAM  # 1 TiB: memory is sparse, but the loader's arrays grow with the image
#: every kind of event a run emits (``run(until=KIND)``); tests/scenario/test_validate.py checks the
#: list against the ``emit("...")`` calls in lab/
EVENT_KINDS = ("cpu_dead", "cpu_online", "cpu_up_failed", "exception", "exec", "fault", "image_loaded",
               "inject", "ipi", "kick_failed", "mce_logged", "monitor", "monitor_trigger", "mwait_fallthrough",
               "nmi_handled", "oops", "page_copied", "pages_copied", "panic", "phase", "play_dead", "shutdown",
               "smm", "state", "table_overwritten", "triple_fault", "verdict", "wake", "walk")


def check_setting_names(settings: dict[str, Any]) -> None:
    """Keyword settings must name Config fields; ConfigTypeError lists the allowed ones."""
    fields = {f.name for f in dataclasses.fields(Config)}
    bad = sorted(map(str, set(settings) - fields))
    if bad:
        raise validate.ConfigTypeError(f"unknown setting(s) {', '.join(bad)}; allowed: {', '.join(sorted(fields))}")


@dataclass(frozen=True)
class Config:
    """Everything a run depends on.  Sizes accept "256M", "8G" or a byte count; whole numbers
    may be numpy integers.  ``preset`` is a label: ``Config.from_preset(name, ...)`` applies the
    preset's values (``Config(preset=name)`` alone keeps the defaults).  Limits: docs/limits.md."""

    preset: str = "default"
    fix: str = "mwait"
    cpus: int = 8
    threads_per_core: int = 2
    ram: int | str = 8 * GiB
    image: int | str = 2 * GiB
    seed: int = 0
    pci_hole: bool = True  # RAM above 3 GiB is moved above 4 GiB (the PCI window)
    e820_end_below_4g: int | None = None  # end of usable RAM below the hole (None: 3 GiB)
    holes: tuple[tuple[int, int], ...] = ()  # extra firmware-reserved ranges (ACPI, ...)
    gbpages: bool = False
    debug_pagealloc: bool = False  # CONFIG_DEBUG_PAGEALLOC: the direct map in 4 KiB pages
    line_size: int = 64
    clflush_triggers: bool = True
    deep_cstate_loses_tlb: bool = True
    c6_exit_ns: int = 100_000
    page_copy_ns: int = 1_000
    jitter: float = 0.1
    kernel_text_pages: int = 2048
    kernel_data_pages: int = 512
    kernel_bss_pages: int = 512
    early_noise_pages: int = 1024
    late_noise_pages: int = 64
    image_early_noise: int | None = None  # exact early reservations of each boot (None: seeded)
    restore_early_noise: int | None = None
    late_noise_exact: int | None = None
    image_initcalls: int | None = None  # exact pages each boot's initcalls allocate (None: seeded)
    restore_initcalls: int | None = None
    restore_in_use: int | str = 16 * MiB
    same_build: bool = True
    step_budget: int = 2_000_000
    kernel_version: str = "4.7"  # lab.kernel.version: thread_info layout, mark_rodata_ro's NX gap
    play_dead_at_text_end: bool = False  # calibration: the play_dead routines in the last text page
    stray: tuple[str, ...] = ()  # nmi|smi|mce at a seeded random time during the copy (mce: broadcast)
    wakeup: str = "init-sipi"  # how the platform starts CPUs: INIT/SIPI, or an ACPI wakeup mailbox
    nosmt: bool = False  # SMT siblings offlined at boot (into the kernel's default mwait_play_dead)
    inject: tuple[tuple[str, int, int], ...] = ()  # (nmi|smi|mce|init, cpu, time in ns): fault injection
    schedule: tuple[tuple[str, int, int], ...] = ()  # (choice, occurrence, value): lab.choices, explicit values

    def __post_init__(self) -> None:
        """Every field checked by lab.validate (types, ranges, units), then the combinations;
        numpy integers become ints, lists tuples, sizes bytes.  ConfigError (a ValueError) names
        the field, the bad value and what is allowed."""
        values = validate.check_fields({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        for name, value in values.items():
            object.__setattr__(self, name, value)
        validate.check_combinations(self)

    @classmethod
    def from_preset(cls, preset: str = "default", **overrides: Any) -> "Config":
        """The preset's values with ``overrides`` on top (None: the preset's value)."""
        validate.FIELDS["preset"].check("preset", preset)
        check_setting_names(overrides)
        values = {**PRESETS[preset][1], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(preset=preset, **values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # derived
    @property
    def low_end(self) -> int:
        """Where usable RAM below 4 GiB ends."""
        if self.e820_end_below_4g is not None:
            return self.e820_end_below_4g
        return 3 * GiB if self.pci_hole and self.ram > 3 * GiB else min(self.ram, 4 * GiB)

    @property
    def phys_size(self) -> int:
        """Top of the physical address space: RAM past ``low_end`` moves above 4 GiB on a
        machine with more than 3 GiB; on a smaller one the tail is firmware-reserved."""
        if self.ram <= self.low_end or self.ram < 3 * GiB:
            return self.ram
        return 4 * GiB + self.ram - self.low_end

    def e820(self):  # noqa: ANN201
        if self.ram <= self.low_end:
            base = e820_for(self.phys_size, (self.low_end, self.phys_size) if self.low_end < self.phys_size else None)
        else:
            base = e820_for(self.phys_size, (self.low_end, min(4 * GiB, self.phys_size)))
        return punch_holes(base, self.holes)

    def cstates(self) -> tuple[CState, ...]:
        return (CState("C1", 0x00, 2_000, False), CState("C3", 0x10, 60_000, False),
                CState("C6", 0x20, self.c6_exit_ns, self.deep_cstate_loses_tlb))


PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("8 CPUs (4 cores x 2 threads), 8 GiB, a 2 GiB image", {}),
    "workshop": ("4 CPUs, 256 MiB, a 96 MiB image, debug_pagealloc (4 KiB direct map): every frame fits "
                 "on screen and mwait fails at seed 0",
                 dict(cpus=4, threads_per_core=2, ram=256 * MiB, image=96 * MiB, kernel_text_pages=1024,
                      kernel_data_pages=256, kernel_bss_pages=256, early_noise_pages=512, late_noise_pages=16,
                      restore_in_use=8 * MiB, debug_pagealloc=True)),
    "report-2016": ("the report's machine as calibrated: 4 CPUs, usable RAM ending at 0xba9f7000 with nothing "
                    "above 4 GiB, an ACPI hole, a 1 GiB image, a v4.0 thread_info (flags at 0x10); with mwait "
                    "CPU 1 faults at 0xffff8800ba800010 on a zero PTE",
                    dict(cpus=4, threads_per_core=2, ram=2986 * MiB, image=1 * GiB, e820_end_below_4g=0xBA9F7000,
                         holes=((0xB7D9E000, 0xB7F9F000),), restore_early_noise=300, image_early_noise=700,
                         late_noise_exact=199, restore_in_use=256 * MiB, kernel_version="4.0")),
    "text-mapping": ("4 CPUs, 1 GiB, v4.7: mark_rodata_ro() splits the last 2 MiB text page into a PT made at "
                     "run time, and play_dead's code sits in it; a woken CPU fetches through whatever the copy "
                     "left there (mwait-hlt fails, hlt resumes)",
                     dict(cpus=4, threads_per_core=2, ram=1 * GiB, image=384 * MiB, kernel_text_pages=700,
                          kernel_data_pages=256, kernel_bss_pages=256, restore_early_noise=300,
                          image_early_noise=700, restore_in_use=32 * MiB, play_dead_at_text_end=True,
                          restore_initcalls=64, image_initcalls=96,
                          kernel_version="4.7")),
    "server": ("2 sockets x 48 cores x 2 threads = 192 CPUs, 256 GiB, a 5 GiB image (4 GiB of it struct pages), 0.4 us per 4 KiB copy: "
               "more CPUs than the zero page has lines (64)",
               dict(cpus=192, threads_per_core=2, ram=256 * GiB, image=5 * GiB, restore_in_use=512 * MiB,
                    page_copy_ns=400,
                    # every fix but the zero-page ones ends in under 10,000 steps here; a
                    # zero-page ping-pong of 192 CPUs needs about 10 M (a wake-up per CPU per
                    # C6 exit latency for 0.5 s of copy), hours and GiB of events: the lab stops
                    # it after 300,000 steps (about 30 ms of it) and says so (outcome unfinished)
                    step_budget=300_000)),
}


#: preset parameters chosen to reproduce a reported detail, and what varies with the seed;
#: `python -m lab presets` prints them and docs/fidelity.md explains them
CALIBRATION: dict[str, tuple[tuple[str, str], ...]] = {
    "report-2016": (
        ("e820_end_below_4g=0xba9f7000, ram=2986M",
         "usable RAM ends at 0xba9f7000 with nothing above 4 GiB, so [0xba800000, 0xba9f7000) is mapped with "
         "4 KiB pages in a PT, and the first 2 MiB step of memory_map_top_down puts the 2-3 GiB PD in brk"),
        ("holes=((0xb7d9e000, 0xb7f9f000),)",
         "an ACPI-style hole with unaligned edges: two more brk PTs, so the brk buffer is used up and the "
         "0xba800000 PT comes from memblock (kernel_physical_mapping_init, not brk)"),
        ("restore_early_noise=300, image_early_noise=700",
         "the two boots' early reservations differ, so the restore kernel's PT frame holds image data"),
        ("late_noise_exact=199",
         "leaves 4 free frames at 0xba800000: CPU 1's idle stack (thread_info) lands exactly there"),
        ("kernel_version=4.0",
         "thread_info->flags at 0x10 (with exec_domain, before v4.1), as the report's address ends in 0x10"),
        ("seed", "varies: jitter of the copy and of wake-ups, the bytes of image data (whether the PTE read is 0)"),
    ),
    "text-mapping": (
        ("kernel_text_pages=700",
         "the text ends 0x2bc pages into the kernel, inside a 2 MiB page, which mark_rodata_ro() splits"),
        ("play_dead_at_text_end=True",
         "the play_dead routines are placed in the last text page, i.e. in the split page (in a real kernel "
         "their place is set by the link order)"),
        ("restore_initcalls=64, image_initcalls=96",
         "the image kernel's initcalls took more pages, so the restore kernel's split PT sits in a frame the "
         "image kernel used for other data: the copy overwrites it early"),
        ("seed", "varies: memory in use, jitter, the bytes of image data read as PTEs"),
    ),
    "workshop": (
        ("debug_pagealloc=True", "a 4 KiB direct map, so the bug shows at seed 0 on a small machine"),
        ("seed", "varies: both boots' early reservations, memory in use, timing jitter"),
    ),
}


@dataclass(frozen=True)
class CpuView:
    id: int
    state: str
    cstate: str | None
    rip: int
    symbol: str
    listing: str
    cr3: int | None
    armed_line: int | None
    tlb_entries: int
    wakeups: int
    online: bool
    oops: str | None


@dataclass(frozen=True)
class FrameView:
    pfn: int
    restore_role: str | None
    image_role: str | None
    in_image: bool
    status: str  # "restored", "pending", "direct" (loaded in place), "not in image"


class Resume:
    """One resume from hibernation, built from a Config and run step by step.

    ``step()`` runs one instruction on the CPU whose turn it is and returns its events;
    ``run(until=...)`` runs to an event kind, a time (ns), a phase or the end."""

    def __init__(self, config: Config | None = None, **kwargs: Any) -> None:
        if config is None:
            config = Config.from_preset(kwargs.pop("preset", "default"), **kwargs)
        elif not isinstance(config, Config):
            hint = (f"Resume(preset={config!r}) or Resume(Config.from_preset({config!r}))"
                    if isinstance(config, str) else "Resume(preset=NAME, ...) or Resume(Config.from_preset(NAME, ...))")
            raise validate.ConfigTypeError(f"Resume takes a Config or keyword settings, got {config!r} "
                                           f"({type(config).__name__}); use {hint}")
        elif "preset" in kwargs:
            raise validate.ConfigError(
                f"Resume(config, preset={kwargs['preset']!r}): a Config already holds its settings (preset "
                f"{config.preset!r}), so the label would be wrong; allowed: Resume(preset={kwargs['preset']!r}, ...) "
                f"or Resume(Config.from_preset({kwargs['preset']!r}, ...))")
        elif kwargs:
            check_setting_names(kwargs)
            config = dataclasses.replace(config, **kwargs)
        self.config = c = config
        rng = np.random.default_rng(c.seed)
        self.rng = rng
        e820 = c.e820()
        base = dict(nr_cpus=c.cpus, text_pages=c.kernel_text_pages, data_pages=c.kernel_data_pages,
                    bss_pages=c.kernel_bss_pages, gbpages=c.gbpages, debug_pagealloc=c.debug_pagealloc, early_noise_pages=c.early_noise_pages,
                    late_noise_pages=c.late_noise_pages, late_noise_exact=c.late_noise_exact,
                    version=c.kernel_version, play_dead_at_text_end=c.play_dead_at_text_end)
        # the image kernel: booted, ran, and wrote the snapshot
        image_mem = PhysicalMemory(c.phys_size)
        self.image_kernel = Kernel("image", image_mem, e820,
                                   BootParams(build_id=1, total_in_use_pages=c.image // PAGE_SIZE,
                                              early_noise_exact=c.image_early_noise,
                                              initcall_exact=c.image_initcalls, **base), rng)
        self.image: Image = snapshot(image_mem, self.image_kernel.layout.memblock.intervals())
        self.image.restore_cr3 = self.image_kernel.cr3
        # the restore kernel: a fresh boot on the machine
        self.machine = m = Machine(c.cpus, c.phys_size, rng, line_size=c.line_size,
                                   clflush_triggers=c.clflush_triggers, cstates=c.cstates(),
                                   timing=Timing(), jitter=c.jitter, wakeup=c.wakeup,
                                   chooser=chooser_for(c.schedule))
        restore_build = 1 if c.same_build else 2
        self.restore_kernel = Kernel("restore", m.memory, e820,
                                     BootParams(build_id=restore_build, extra_in_use_pages=c.restore_in_use // PAGE_SIZE,
                                                early_noise_exact=c.restore_early_noise,
                                                initcall_exact=c.restore_initcalls, **base), rng)
        self.restore_kernel.register_code(m)
        if not c.same_build:
            self.image_kernel.register_code(m)
        m.emit("phase", None, phase="boot")
        self.loaded = load_image(m.memory, self.image, self.restore_kernel.layout)
        m.emit("phase", None, phase="load-image")
        m.emit("image_loaded", None, pages=self.image.nr_pages, pblist=len(self.loaded.pblist),
               **self.loaded.counts())
        self.fix = get_fix(c.fix)
        self.restore_kernel.online = set(range(c.cpus))
        siblings = [i for i in range(1, c.cpus) if c.nosmt and i % c.threads_per_core]
        self.restore_kernel.online -= set(siblings)
        self.runtime = rt = Runtime(m, self.restore_kernel, self.image_kernel, self.image, self.loaded, self.fix,
                                    HotplugTiming(), RestoreTiming(page_copy_ns=c.page_copy_ns))
        rt.phase = "load-image"
        rt.strays = c.stray
        for cpu in m.cpus[1:]:
            park_idle(rt, cpu)
        for i in siblings:  # nosmt: offline since boot, in native_play_dead's default, mwait
            self.restore_kernel.enter(m.cpus[i], "mwait_play_dead")
            m.emit("play_dead", i, program="mwait_play_dead", why="nosmt: offline since boot")
            m.start(i)
        self.restore_kernel.enter(m.cpus[0], "resume_target_kernel")
        m.start(0)
        for kind, cpu, at in c.inject:
            m.at(at, lambda kind=kind, cpu=cpu: (m.emit("inject", cpu, ipi=kind),
                                                 m.apic.send(cpu, kind, src="platform")))
        self.steps = 0
        self._verified: list[int] | None = None
        self._verdict: str | None = None
        self.resume_ended_ns: int | None = None  # when the verdict was taken

    # -- running -----------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.steps >= self.config.step_budget or self._stopped()

    def step(self) -> list[Event]:
        if self.finished:
            return []
        self.steps += 1
        out = self.machine.step()
        self._decide()
        return out

    def run(self, until: str | int | None = None) -> list[Event]:
        """Run until an event of kind ``until``, the phase named ``until``, the simulated time
        ``until`` (ns), or the end (None).  Returns the events produced."""
        until = validate.check_until(until, PHASES, EVENT_KINDS)
        m = self.machine
        first = len(m.events)
        by_time = isinstance(until, int) and not isinstance(until, bool)
        phase = until if isinstance(until, str) and until in PHASES else None
        kind = until if isinstance(until, str) and phase is None else None
        budget = self.config.step_budget
        while self.steps < budget and not self._stopped():
            if by_time:
                nxt = m.sched.next_time()
                if nxt is None or nxt > until:  # type: ignore[operator]
                    break
            mark = len(m.events)
            self.steps += 1
            m.step()
            self._decide()
            if phase is not None and self.runtime.phase == phase:
                break
            if kind is not None and any(e.kind == kind for e in m.events[mark:]):
                break
        return m.events[first:]

    @property
    def stopped_by(self) -> str | None:
        """Why the run stopped: "step budget" (the lab's, ``Config.step_budget``), "shutdown",
        "panic", "idle" (nothing scheduled) or None while it goes on."""
        m = self.machine
        if m.shutdown is not None:
            return "shutdown"
        if self.runtime.kernel.panicked is not None or self.restore_kernel.panicked is not None:
            return "panic"
        if m.idle():
            return "idle"
        if self.steps >= self.config.step_budget:
            return "step budget"
        return None

    def _stopped(self) -> bool:
        m = self.machine
        return (m.shutdown is not None or self.runtime.kernel.panicked is not None
                or self.restore_kernel.panicked is not None or m.idle())

    @property
    def phase(self) -> str:
        return self.runtime.phase

    @property
    def events(self) -> list[Event]:
        return self.machine.events

    @property
    def now(self) -> int:
        return self.machine.sched.now

    # -- outcome -----------------------------------------------------------------------------
    @property
    def oopses(self):  # noqa: ANN201
        return self.restore_kernel.oopses + self.image_kernel.oopses

    @property
    def outcome(self) -> str | None:
        """The verdict: None while the resume goes on.  It is taken once, when the resume
        ends: the image kernel has every CPU online (then ``verify()`` compares memory with
        the image: resumed or corrupted), a CPU died (panic), the machine shut down
        (triple_fault; ``shutdown`` for a machine check with CR4.MCE=0 or MCIP set), the machine
        ran out of things to do with the resume not over (timeout: a hang), or the lab ran out
        of its step budget first (unfinished: no verdict on the fix).  What
        happens after that is still simulated and shown, but cannot change it."""
        if self._verdict is None and self.finished:
            self._decide(final=True)
        return self._verdict

    def _decide(self, final: bool = False) -> None:
        if self._verdict is not None:
            return
        m, rt = self.machine, self.runtime
        if m.shutdown is not None:  # a triple fault, or a machine check the CPU could not take
            verdict = "triple_fault" if m.shutdown_cause in (None, "triple fault") else "shutdown"
        elif self.oopses:
            verdict = "panic"
        elif rt.done and self.image_kernel.online == set(range(self.config.cpus)):
            verdict = "corrupted" if self.mismatched_frames() else "resumed"
        elif final:
            verdict = "unfinished" if self.stopped_by == "step budget" else "timeout"
        else:
            return
        self._verdict = verdict
        self.resume_ended_ns = m.sched.now
        m.emit("verdict", None, outcome=verdict)

    def mismatched_frames(self) -> list[int]:
        """Frames whose content differs from the image (checked once, when the resume ends),
        besides those the image kernel wrote itself after taking over."""
        if self._verified is None:
            own = self.runtime.own_writes  # Runtime._note_own_write
            self._verified = [p for p in verify(self.machine.memory, self.image) if p not in own]
        return self._verified

    def faults(self) -> list[dict[str, Any]]:
        """Every exception a CPU took, with the walk that failed."""
        out = []
        walks: dict[int, Any] = {}
        for e in self.machine.events:
            if e.kind == "walk" and e.data.get("fault"):
                walks[e.cpu] = e.data["steps"]
            if e.kind == "fault":
                out.append({"cpu": e.cpu, "vector": e.data["vector"], "address": f"{e.data['address']:#x}",
                            "error_code": e.data["error_code"], "rip": f"{e.data['rip']:#x}",
                            "during": e.data.get("during"),
                            "walk": [{"level": lvl, "frame": f"{tbl:#x}", "entry": f"{ent:#x}"}
                                     for lvl, tbl, _, ent in walks.pop(e.cpu, [])]})
        return out

    def wakeups(self) -> dict[int, int]:
        return {c.id: c.wakeups for c in self.machine.cpus}

    # -- state accessors ---------------------------------------------------------------------
    def _cpu_index(self, i: int) -> int:
        if not validate.is_whole(i) or not 0 <= i < len(self.machine.cpus):
            raise ValueError(f"no CPU {i!r}; allowed: 0 to {len(self.machine.cpus) - 1}")
        return int(i)

    def run_state(self, i: int) -> tuple[str, str | None]:
        """CPU ``i``'s run state and C-state, as ``cpu(i).state`` and ``.cstate`` have them,
        without the rest of the view (its listing, its symbol)."""
        c = self.machine.cpus[self._cpu_index(i)]
        return str(c.state), c.cstate.name if c.cstate and c.state == RunState.MWAIT else None

    def cpu(self, i: int) -> CpuView:
        i = self._cpu_index(i)
        c = self.machine.cpus[i]
        k = self.runtime.kernel
        placed = next((p for p in k.placed.values() if p.base <= c.rip < p.base + p.size), None)
        armed = self.machine.monitor.armed.get(i)
        oops = next((o.text for o in self.oopses if o.cpu == i), None)
        return CpuView(i, *self.run_state(i),
                       c.rip, k.symbolize(c.rip), placed.listing(c.rip) if placed else "", c.cr3,
                       armed.line if armed else None, len(c.tlb), c.wakeups, i in k.online, oops)

    def frame(self, pfn: int) -> FrameView:
        if not validate.is_whole(pfn) or not 0 <= pfn < self.machine.memory.nr_frames:
            raise ValueError(f"no frame {pfn!r}; allowed: 0 to {self.machine.memory.nr_frames - 1:#x}")
        pfn = int(pfn)
        in_image = self.image.content(pfn) is not None
        idx = self.loaded.pblist.index_of(pfn)
        if idx is not None:
            done = self.runtime.copied > idx
            status = "restored" if done else "pending"
        else:
            status = "direct" if in_image else "not in image"
        return FrameView(pfn, self.restore_kernel.layout.roles.get(pfn), self.image_kernel.layout.roles.get(pfn),
                         in_image, status)

    def frame_content(self, pfn: int) -> np.ndarray:
        self.frame(pfn)
        return self.machine.memory.read_page(pfn)

    def walk(self, cpu: int, va: int) -> Walk:
        """Walk ``va`` through CPU ``cpu``'s current tables, now, without touching A bits or
        the TLB (what a debugger would do)."""
        c = self.machine.cpus[self._cpu_index(cpu)]
        if c.cr3 is None:
            raise ValueError(f"CPU {cpu} has paging off (state {c.state})")
        return walk(self.machine.memory, c.cr3, va, set_accessed=False)

    def mwait_ptr(self, cpu: int) -> int:
        """The monitored address of ``cpu`` in the restore kernel: &thread_info->flags."""
        self.cpu(cpu)
        return self.restore_kernel.layout.mwait_ptr(cpu)

    def copy_costs(self) -> dict[str, Any]:
        """The non-boot CPUs during the copy (from the copy phase to the image kernel, or to the
        end): wake-ups (those by another CPU's CLFLUSH of a shared line: the ping-pong), wake-ups
        per ms, ns spent running; IPIs and safe pages of the whole run."""
        start = end = None
        for e in self.events:
            if e.kind == "phase" and e.data["phase"] == "copy":
                start = e.t
            elif e.kind == "phase" and e.data["phase"] == "image-kernel" and start is not None:
                end = e.t
                break
        if start is None:  # the copy has not begun: nothing to count yet
            start, end = self.now, self.now - 1
        end = self.now if end is None else end
        wakes = pings = 0
        awake = 0
        running_since: dict[int, int] = {}
        for e in self.events:
            if e.cpu is None or e.cpu == 0:
                continue
            if e.kind == "wake":  # leaving the C-state counts as awake
                wakes += start <= e.t <= end
                pings += start <= e.t <= end and e.data["reason"].startswith("clflush")
                running_since.setdefault(e.cpu, e.t)
            elif e.kind == "state":
                if e.data.get("state") == "running":
                    running_since.setdefault(e.cpu, e.t)
                elif e.cpu in running_since:
                    t0 = running_since.pop(e.cpu)
                    awake += max(0, min(e.t, end) - max(t0, start))
        for t0 in running_since.values():
            awake += max(0, end - max(t0, start))
        span_ms = (end - start) / 1e6
        return {"wakeups": wakes, "clflush_wakeups": pings, "wakeups_per_ms": round(wakes / span_ms, 3) if span_ms > 0 else 0.0,
                "awake_ns": awake,
                "ipis": self.machine.apic.sent, "safe_pages": len(self.loaded.safe.taken),
                "sharing_cpus": self.runtime.sharing_cpus}

    def summary(self) -> dict[str, Any]:
        faults = self.faults()
        return {"config": self.config.to_dict(), "fix": self.config.fix, "seed": self.config.seed,
                "outcome": self.outcome, "faults": faults,
                "oops": self.oopses[0].text if self.oopses else None,
                "wakeups": {str(k): v for k, v in self.wakeups().items()},
                "pages_copied": self.runtime.copied, "time_ns": self.now, "steps": self.steps,
                "resume_ended_ns": self.resume_ended_ns, "stopped_by": self.stopped_by,
                "step_budget": self.config.step_budget, "pages_to_copy": len(self.loaded.pblist),
                "load": self.loaded.counts(), "costs": self.copy_costs(),
                "mismatched_frames": len(self.mismatched_frames()) if self.outcome in ("resumed", "corrupted") else None}

    # -- the tables under the sleeping CPUs (lab.watch); views ask these, never snapshot ------
    def watch(self) -> "Watch":
        """Start watching the tables the sleeping CPUs' next walks read (idempotent; ResumeLab
        does it at once).  From then on the run also emits ``table_overwritten`` events."""
        from .watch import Watch

        w = getattr(self, "_watch", None)
        if w is None:
            w = self._watch = Watch(self.machine)
        return w

    @property
    def watching(self) -> "Watch | None":
        return getattr(self, "_watch", None)

    def frame_before_copy(self, pfn: int) -> np.ndarray | None:
        """Frame ``pfn``'s 512 qwords as they were when the copy began: its content now while
        the copy has not begun, None if nothing recorded it (no watch when it began)."""
        self.frame(pfn)
        w = self.watching
        if w is not None and w.copy_started is not None:
            return w.before_copy(pfn)
        if self.phase in PHASES[:PHASES.index("copy")]:
            return self.frame_content(pfn)
        return None

    def frame_at(self, pfn: int, t: int) -> np.ndarray | None:
        """Frame ``pfn`` at time ``t`` (ns), from what the watch recorded; None if not recorded."""
        self.frame(pfn)
        w = self.watching
        if t >= self.now:
            return self.frame_content(pfn)
        return None if w is None else w.content_at(pfn, t)

    def overwrites(self) -> list[Event]:
        """The ``table_overwritten`` events so far (empty unless watching)."""
        w = self.watching
        return list(w.overwrites) if w is not None else []

    def wake_counts(self, cpu: int) -> dict[str, int]:
        """``cpu``'s wake-ups as ``wakeups()`` counts them, split into wakes from MWAIT/HLT
        (``wake`` events) and starts by SIPI (the rest).  Counts the events incrementally."""
        total = self.cpu(cpu).wakeups
        seen = getattr(self, "_wake_seen", None)
        if seen is None:
            seen = self._wake_seen = [0, {}]
        evs = self.machine.events
        for e in evs[seen[0]:]:
            if e.kind == "wake":
                seen[1][e.cpu] = seen[1].get(e.cpu, 0) + 1
        seen[0] = len(evs)
        sleep = seen[1].get(cpu, 0)
        return {"total": total, "from_sleep": sleep, "sipi": total - sleep}
