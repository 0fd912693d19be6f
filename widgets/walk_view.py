"""The page walk of a virtual address on one CPU, level by level, as the tables in memory are
now (what a debugger would see; the TLB is not consulted).  Entries in frames the restore has
overwritten, or is about to, are marked with the entry before the copy and after it, and the
time the copy overwrote it; all of it asked of the model (``Resume.frame_before_copy``, the
``table_overwritten`` events of lab.watch), never snapshotted by the view."""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import ipywidgets as ipw
import numpy as np

from lab.hw.paging import LEVELS, Walk, decode, split
from lab.scenario import Resume

from ._common import MessageBox, check_int, guarded, parse_va


@dataclass(frozen=True)
class WalkRow:
    level: int
    table: int  # physical address of the table
    index: int
    entry: int
    decoded: str
    status: str  # restored / pending / direct / not in image / not RAM
    restore_role: str | None
    image_role: str | None
    mark: str  # "", "pending", "overwritten", "restored"
    old: int | None  # the entry before the copy (None: the frame is not in the copy's way)
    new: int | None  # the entry the copy writes (the image's) or wrote
    fault: bool
    overwritten_at: int | None = None  # when the copy overwrote it on a sleeping CPU's path (ns)
    overwritten_by: str | None = None
    changed: bool = False  # the entry differs from what the view showed before the last step


def _entry_in(content: Any, index: int) -> int | None:
    if content is None:
        return None
    arr = content.materialize() if hasattr(content, "materialize") else content
    return int(np.asarray(arr)[index])


class WalkView(ipw.VBox):
    """Pick a CPU and a virtual address (hex; default the CPU's mwait_ptr); the table has one
    ``<tr class="lab-walk-row">`` per level read, the failing one also ``lab-walk-fault``."""

    def __init__(self, resume: Resume, cpu: int | None = None) -> None:
        if not isinstance(resume, Resume):
            raise ValueError(f"resume must be a lab.scenario.Resume, got {type(resume).__name__}")
        n = resume.config.cpus
        if cpu is not None:
            check_int("cpu", cpu, 0, n - 1)
        self.cpu_select = ipw.Dropdown(options=[(f"cpu{i}", i) for i in range(n)], description="CPU",
                                       layout=ipw.Layout(width="150px"))
        self.address = ipw.Text(description="VA", continuous_update=False, layout=ipw.Layout(width="260px"),
                                placeholder="hex, e.g. 0xffff8800ba800010")
        self.walk_button = ipw.Button(description="Walk", tooltip="walk the address on the chosen CPU", layout=ipw.Layout(width="auto"))
        self.mwait_button = ipw.Button(description="mwait_ptr", tooltip="the CPU's monitored address",
                                       layout=ipw.Layout(width="auto"))
        self.title = ipw.HTML()
        self.table = ipw.HTML()
        self.table.add_class("lab-walk")
        self.message = MessageBox()
        super().__init__([ipw.HBox([self.cpu_select, self.address, self.walk_button, self.mwait_button]),
                          self.title, self.table, self.message])
        self.add_class("lab-walk-view")
        self.rows: list[WalkRow] = []
        self.walk: Walk | None = None
        self.info: str = ""
        self._shown: dict[tuple[int, int, int], int] = {}  # (cpu, va, level) -> entry shown
        self._inputs_drawn: tuple[Any, ...] | None = None  # what the rows shown were made of
        self._quiet = False
        self.cpu_select.observe(self._on_cpu, names="value")
        self.address.observe(self._on_address, names="value")
        self.walk_button.on_click(lambda _b: self._on_walk_click())
        self.mwait_button.on_click(lambda _b: self.show(va=self.resume.mwait_ptr(self.cpu)))
        self.bind(resume, cpu)

    # -- state --------------------------------------------------------------------------------
    @guarded("message")
    def bind(self, resume: Resume, cpu: int | None = None, keep: bool = False) -> None:
        """Show ``resume``: ``cpu``'s monitored address, or (``keep``) the same CPU and address
        as before (after Step back, the same walk one step earlier)."""
        self.resume = resume
        n = resume.config.cpus
        if len(self.cpu_select.options) != n:
            self._quiet = True
            try:
                self.cpu_select.options = [(f"cpu{i}", i) for i in range(n)]
            finally:
                self._quiet = False
        if keep and getattr(self, "cpu", n) < n:
            self.update(resume)
            return
        cpu = (1 if n > 1 else 0) if cpu is None else cpu
        self.cpu = cpu
        self.va = resume.mwait_ptr(cpu)
        self._set_widgets()
        self.message.clear()
        self.update(resume)

    @guarded("message")
    def show(self, cpu: int | None = None, va: int | str | None = None) -> None:
        """Walk ``va`` (an int or hex text) on ``cpu``.  Bad input shows an error (class
        lab-error) and changes nothing."""
        r = self.resume
        new_cpu = self.cpu if cpu is None else cpu
        if isinstance(new_cpu, bool) or not isinstance(new_cpu, (int, np.integer)) \
                or not 0 <= int(new_cpu) < r.config.cpus:
            raise ValueError(f"there is no CPU {new_cpu!r}; allowed: 0 to {r.config.cpus - 1}")
        new_va = self.va if va is None else parse_va(va)
        self.cpu, self.va = int(new_cpu), new_va
        self.message.clear()
        self._set_widgets()
        self.update(r)

    # -- widget handlers ----------------------------------------------------------------------
    def _set_widgets(self) -> None:
        self._quiet = True
        try:
            self.cpu_select.value = self.cpu
            self.address.value = f"{self.va:#x}"
        finally:
            self._quiet = False

    def _on_cpu(self, change: dict) -> None:
        if not self._quiet:
            self._select_cpu(change["new"])

    def _on_address(self, change: dict) -> None:
        if not self._quiet:
            self.show(va=change["new"])

    def _on_walk_click(self) -> None:
        self.show(cpu=self.cpu_select.value, va=self.address.value)

    @guarded("message")
    def _select_cpu(self, cpu: int) -> None:
        """A CPU picked from the list: walk its own monitored address."""
        self.show(cpu=cpu, va=self.resume.mwait_ptr(int(cpu)))

    # -- rendering ----------------------------------------------------------------------------
    def compute(self, resume: Resume, w: Walk) -> list[WalkRow]:
        """The rows of walk ``w`` (``_inputs`` walked it)."""
        overwrites = {(e.data["pfn"], e.data["index"]): e for e in resume.overwrites()}
        rows = []
        phys_bits = resume.machine.memory.phys_bits
        for i, s in enumerate(w.steps):
            pfn = s.table >> 12
            try:
                fv = resume.frame(pfn)
                status, rrole, irole = fv.status, fv.restore_role, fv.image_role
            except ValueError:
                status, rrole, irole = "not RAM", None, None
            old = new = None
            mark = ""
            if status in ("pending", "restored"):
                before = resume.frame_before_copy(pfn)
                old = int(before[s.index]) if before is not None else None
            if status == "pending":
                mark = "pending"
                new = _entry_in(resume.image.content(pfn), s.index)
            elif status == "restored":
                new = s.entry
                mark = "overwritten" if rrole != irole or (old is not None and old != new) else "restored"
            ev = overwrites.get((pfn, s.index))
            if ev is not None and ev.t <= resume.now:
                mark, old, new = "overwritten", ev.data["old"], s.entry
            failing = w.fault is not None and w.fault.vector == "#PF" and i == len(w.steps) - 1
            key = (self.cpu, self.va, s.level)
            changed = key in self._shown and self._shown[key] != s.entry
            rows.append(WalkRow(s.level, s.table, s.index, s.entry, str(decode(s.entry, s.level, phys_bits)),
                                status, rrole, irole, mark, old, new, failing,
                                ev.t if ev is not None else None, ev.data["by"] if ev is not None else None,
                                changed))
        self._shown = {(self.cpu, self.va, r.level): r.entry for r in rows}
        return rows

    def _inputs(self, resume: Resume) -> tuple[Walk | str, tuple[Any, ...]]:
        """The walk now (or why there is none: paging off, wait-for-SIPI, reset), and
        everything the rows are made of besides the model's own static tables (roles, the
        image's content): that walk (its entries), the copy's progress (a frame's status:
        pending or restored), the phase and whether the copy began (the entry before the
        copy), the overwrites recorded so far.  Equal inputs, equal rows."""
        try:
            w: Walk | str = resume.walk(self.cpu, self.va)
        except ValueError as exc:
            w = str(exc)
        watch = resume.watching
        return w, (resume, self.cpu, self.va, w, resume.runtime.copied, resume.phase,
                   None if watch is None else (watch.copy_started, len(watch.overwrites)))

    @guarded("message")
    def update(self, resume: Resume) -> None:
        """Redraw the walk; a step that changed none of its inputs (``_inputs``: most steps)
        costs one walk, not the rows' lookups and HTML (and sends nothing).  The rows a step
        changed are highlighted until the next step, so a redraw follows one that had any."""
        self.resume = resume
        walked, inputs = self._inputs(resume)
        if inputs == self._inputs_drawn and not any(r.changed for r in self.rows):
            return
        self._inputs_drawn = inputs
        if isinstance(walked, str):  # paging off: what resume.walk said
            w, rows, info = None, [], walked
        else:
            w, rows, info = walked, self.compute(resume, walked), ""
        self.walk, self.rows, self.info = w, rows, info
        self.title.value = (f"<b>cpu{self.cpu}</b> walks <code>{self.va:#x}</code> "
                            f'<span class="lab-note">(indices {" / ".join(map(str, split(self.va)[:4]))}, '
                            f"offset {split(self.va)[4]:#x}) through the tables in memory now</span>")
        self.table.value = self.render(w, rows, info)

    def render(self, w: Walk | None, rows: list[WalkRow], info: str) -> str:
        if w is None:
            return f'<table><tr><td class="lab-note">{html.escape(info)}</td></tr></table>'
        head = ("<tr><th>level</th><th>table frame</th><th>index</th><th>entry now</th>"
                "<th>the copy: before -> after</th></tr>")
        body = []
        for row in rows:
            cls = "lab-walk-row" + (f" lab-walk-{row.mark}" if row.mark else "") + (
                " lab-walk-fault" if row.fault else "") + (" lab-changed" if row.changed else "")
            role = row.restore_role or "-"
            if row.image_role and row.image_role != row.restore_role:
                role += f" / image: {row.image_role}"
            body.append(
                f'<tr class="{cls}"><td>{LEVELS[row.level]}</td>'
                f"<td>{row.table >> 12:#x}<br><small>{html.escape(role)}</small></td>"
                f"<td>{row.index}</td><td title=\"{html.escape(row.decoded)}\">{row.entry:#018x}<br>"
                f"<small>{html.escape(row.decoded.split(' -> ')[-1])}</small></td>"
                f"<td>{html.escape(self._restore_text(row))}</td></tr>")
        last = rows[-1].level if rows else -1
        for level in range(last + 1, 4):
            why = "not reached: the walk stopped above" if w.fault is not None else \
                "none: a large page ends the walk above"
            body.append(f'<tr class="lab-walk-unreached"><td>{LEVELS[level]}</td><td colspan="4">{why}</td></tr>')
        if w.fault is not None:
            foot = f"<b>{html.escape(w.fault.describe())}</b>"
        else:
            size = {1 << 12: "4 KiB", 1 << 21: "2 MiB", 1 << 30: "1 GiB"}.get(w.page_size, f"{w.page_size} B")
            pa = w.paddr or 0
            foot = f"-> physical {pa:#x} (frame {pa >> 12:#x}, {size} page)"
            try:
                fv = self.resume.frame(pa >> 12)
                foot += f", {fv.restore_role or 'no named role'}; {fv.status}"
            except ValueError:
                foot += ", not RAM"
        return (f"<table>{head}{''.join(body)}<tr><td colspan='5'>{foot}</td></tr></table>")

    @staticmethod
    def _restore_text(row: WalkRow) -> str:
        """Short: the frame's roles are in the table-frame column already."""
        old = f"{row.old:#x}" if row.old is not None else "not recorded (the watch began after the copy)"
        if row.overwritten_at is not None:
            return (f"OVERWRITTEN at t={row.overwritten_at / 1e6:.6f} ms by {row.overwritten_by} under a sleeping "
                    f"CPU: before {old} -> after {row.entry:#x}")
        if row.status == "pending":
            new = f"{row.new:#x}" if row.new is not None else "?"
            return f"will be overwritten by the copy with {new}"
        if row.status == "restored":
            what = "OVERWRITTEN by the copy" if row.mark == "overwritten" else "restored, the image's own table"
            return f"{what}: before {old} -> after {row.entry:#x}"
        if row.status == "direct":
            return "image page loaded in place (not touched by the copy)"
        return row.status

    def check(self, resume: Resume) -> list[str]:
        try:
            w = resume.walk(self.cpu, self.va)
        except ValueError:
            return [] if not self.rows else ["walk rows shown for a CPU with paging off"]
        want = [(s.level, s.table, s.index, s.entry) for s in w.steps]
        got = [(r.level, r.table, r.index, r.entry) for r in self.rows]
        return [] if want == got else [f"walk rows {got} differ from the model's {want}"]
