"""One compact card per CPU (run state, as a word and a colour; wake-ups, split as
``Resume.wake_counts`` does; TLB) and a detail pane for the selected CPU: the code it runs with
the current instruction marked, CR3, the line it monitors; a CPU that oopsed shows the oops."""
from __future__ import annotations

import html

import ipywidgets as ipw

from lab.scenario import CpuView, Resume

from ._common import MessageBox, check_int, guarded, state_color, state_label


def _frame_role(resume: Resume, paddr: int | None) -> str:
    if paddr is None:
        return ""
    try:
        fv = resume.frame(paddr >> 12)
    except ValueError:
        return "not RAM"
    return fv.restore_role or fv.image_role or ""


def render_listing(listing: str, rip: int) -> str:
    if not listing:
        return f'<pre class="lab-listing">(no code the model knows at RIP {rip:#x})</pre>'
    out = []
    for line in listing.splitlines():
        esc = html.escape(line)
        out.append(f'<span class="lab-rip">{esc}</span>' if line.startswith("=>") else esc)
    return '<pre class="lab-listing">' + "\n".join(out) + "</pre>"


class CpuCard(ipw.VBox):
    """The compact card of CPU ``cpu`` (classes ``lab-cpu-card lab-cpu-<n>``, plus
    ``lab-cpu-faulted`` while it has an oops, ``lab-cpu-selected`` while the detail pane shows
    it, ``lab-changed`` when the last step changed it).  ``header`` and ``summary`` are on the
    card; ``detail`` goes in the detail pane: ``info_html``, ``oops_html`` (the oops in a
    ``<pre>``) and ``listing_html`` in one HTML widget, so that a step that moves the RIP sends
    the page one message (the note and the listing both change), not two."""

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self.view: CpuView | None = None
        self._detail_of: CpuView | None = None
        self._label = ""
        self.header = ipw.HTML()
        self.summary = ipw.HTML()
        self.info_html = self.oops_html = self.listing_html = ""
        self.detail = ipw.HTML()
        super().__init__([self.header, self.summary], layout=ipw.Layout(min_width="112px", overflow="hidden"))
        self.add_class("lab-cpu-card")
        self.add_class(f"lab-cpu-{cpu}")

    @property
    def state(self) -> str | None:
        return self.view.state if self.view else None

    @property
    def faulted(self) -> bool:
        return "lab-cpu-faulted" in self._dom_classes

    def update(self, v: CpuView, resume: Resume, detail: bool = True) -> bool:
        """Show ``v``; returns whether anything changed.  The detail pane's content is rendered
        only with ``detail`` (the selected card: the others are not on screen)."""
        w = resume.watching
        if v == self.view and (not detail or self._detail_of == v) and (w is None or w.waking(v.id) is None):
            return False
        label = state_label(v.state, v.cstate)
        w = resume.watching
        back_at = w.waking(v.id) if w is not None else None
        if back_at is not None and back_at > resume.now:
            label = "waking"  # woken, still leaving its C-state: it has not run again yet
        online = "online" if v.online else "offline"
        self.header.value = (f'<b>CPU {v.id}</b> <span class="lab-state lab-state-{html.escape(v.state)}" '
                             f'style="background:{state_color(label)}{";color:#fff" if label == "off" else ""}"'
                             f' title="{html.escape(label)}">{html.escape(label)}</span>')
        wk = resume.wake_counts(v.id)
        self.summary.value = (f'<span class="lab-note" title="{online}">'
                              f'wake-ups {wk["total"]} (sleep {wk["from_sleep"]}, SIPI {wk["sipi"]})</span>')
        changed = v != self.view or label != self._label
        self._label = label
        self.view = v
        self._oops(v)
        if not detail:
            return changed
        self._detail_of = v
        cr3 = f"{v.cr3:#x} ({html.escape(_frame_role(resume, v.cr3))})" if v.cr3 is not None else "none (paging off)"
        armed = (f"{v.armed_line:#x} ({html.escape(_frame_role(resume, v.armed_line))})"
                 if v.armed_line is not None else "none")
        self.info_html = (f'<span class="lab-note"><b>CPU {v.id}</b>, {html.escape(label)}, {online} in the '
                          f"{html.escape(resume.runtime.kernel.name)} kernel | CR3 {cr3}<br>"
                          f"monitor armed on {armed} | TLB entries {v.tlb_entries} | "
                          f"wake-ups {v.wakeups} | RIP {v.rip:#x}</span>")
        self.listing_html = render_listing(v.listing, v.rip)
        self.detail.value = self.info_html + self.oops_html + self.listing_html
        return changed

    def _oops(self, v: CpuView) -> None:
        if v.oops:
            self.oops_html = '<pre class="lab-oops-text">' + html.escape(v.oops) + "</pre>"
            self.add_class("lab-cpu-faulted")
        else:
            self.oops_html = ""
            self.remove_class("lab-cpu-faulted")


class CpuCards(ipw.VBox):
    """The compact cards of all CPUs in one row, and a detail pane (``.detail``) for the
    selected CPU (``.selected``): its CR3, monitor, listing and oops."""

    def __init__(self, resume: Resume, selected: int | None = None) -> None:
        if not isinstance(resume, Resume):
            raise ValueError(f"resume must be a lab.scenario.Resume, got {type(resume).__name__}")
        self.message = MessageBox()
        self.grid = ipw.GridBox(layout=ipw.Layout(grid_template_columns="repeat(auto-fill, minmax(112px, 1fr))",
                                                  width="100%"))
        self.detail = ipw.VBox(layout=ipw.Layout(overflow="auto"))
        self.detail.add_class("lab-cpu-detail")
        self.pick = ipw.ToggleButtons(options=[(f"cpu{i}", i) for i in range(resume.config.cpus)], description="details",
                                      tooltips=[f"show CPU {i} in the detail pane" for i in range(resume.config.cpus)],
                                      style={"button_width": "56px"})
        self.pick.observe(lambda c: self.select(c["new"]), names="value")
        self.detail_box = ipw.VBox([self.pick, self.detail])
        self.cards: list[CpuCard] = []
        n = resume.config.cpus
        self.selected = (1 if n > 1 else 0) if selected is None else check_int("selected", selected, 0, n - 1)
        super().__init__([self.grid, self.message])
        self.add_class("lab-cpu-cards")
        self.bind(resume)

    def __getitem__(self, i: int) -> CpuCard:
        return self.cards[i]

    def __len__(self) -> int:
        return len(self.cards)

    @guarded("message")
    def bind(self, resume: Resume) -> None:
        self.resume = resume
        n = resume.config.cpus
        if len(self.cards) != n:
            self.cards = [CpuCard(i) for i in range(n)]
            self.grid.children = self.cards
            self.pick.options = [(f"cpu{i}", i) for i in range(n)]
            self.selected = min(self.selected, n - 1)
        for c in self.cards:
            c.view = None
        self.update(resume, highlight=False)  # a new run: no step has changed anything yet
        self.select(self.selected)

    @guarded("message")
    def select(self, cpu: int) -> None:
        """Show CPU ``cpu`` in the detail pane."""
        cpu = check_int("cpu", cpu, 0, len(self.cards) - 1)
        self.selected = cpu
        card = self.cards[cpu]
        if card.view is not None:
            card.update(card.view, self.resume)
        for c in self.cards:
            (c.add_class if c is card else c.remove_class)("lab-cpu-selected")
        self.detail.children = [card.detail]
        if self.pick.value != cpu:
            self.pick.value = cpu

    @guarded("message")
    def update(self, resume: Resume, highlight: bool = True) -> None:
        """Show the CPUs as they are; with ``highlight``, mark (``lab-changed``) the cards the
        last step changed."""
        for card in self.cards:
            changed = card.update(resume.cpu(card.cpu), resume, detail=card.cpu == self.selected)
            (card.add_class if changed and highlight else card.remove_class)("lab-changed")

    def check(self, resume: Resume) -> list[str]:
        bad = []
        for card in self.cards:
            v = resume.cpu(card.cpu)
            if card.state != v.state:
                bad.append(f"card {card.cpu}: state {card.state!r}, model {v.state!r}")
            if card.faulted != bool(v.oops):
                bad.append(f"card {card.cpu}: faulted {card.faulted}, model oops {bool(v.oops)}")
            if f"wake-ups {resume.wakeups()[card.cpu]} " not in card.summary.value:
                bad.append(f"card {card.cpu}: wake-ups differ from Resume.wakeups()")
        return bad
