"""One card per CPU: its run state, the code it runs with the current instruction marked, CR3,
the line it monitors, its TLB and wake-ups; a CPU that oopsed shows the oops."""
from __future__ import annotations

import html

import ipywidgets as ipw

from lab.scenario import CpuView, Resume

from ._common import MessageBox, guarded, state_color, state_label


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
    """The card of CPU ``cpu``: classes ``lab-cpu-card lab-cpu-<n>``, plus ``lab-cpu-faulted``
    while it has an oops (shown in a ``<pre>``)."""

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self.view: CpuView | None = None
        self.header = ipw.HTML()
        self.info = ipw.HTML()
        self.listing = ipw.HTML()
        self.oops = ipw.HTML()
        self.oops.add_class("lab-oops")
        super().__init__([self.header, self.info, self.listing, self.oops],
                         layout=ipw.Layout(min_width="420px", overflow="auto"))
        self.add_class("lab-cpu-card")
        self.add_class(f"lab-cpu-{cpu}")

    @property
    def state(self) -> str | None:
        return self.view.state if self.view else None

    @property
    def faulted(self) -> bool:
        return "lab-cpu-faulted" in self._dom_classes

    def update(self, v: CpuView, resume: Resume) -> None:
        if v == self.view:
            return
        label = state_label(v.state, v.cstate)
        online = "online" if v.online else "offline"
        self.header.value = (f'<b>CPU {v.id}</b> <span class="lab-state lab-state-{html.escape(v.state)}" '
                             f'style="background:{state_color(label)}">{html.escape(label)}</span> '
                             f'<span class="lab-note">{online} in the {html.escape(resume.runtime.kernel.name)} kernel'
                             f' | {html.escape(v.symbol)}</span>')
        cr3 = f"{v.cr3:#x} ({html.escape(_frame_role(resume, v.cr3))})" if v.cr3 is not None else "none (paging off)"
        armed = (f"{v.armed_line:#x} ({html.escape(_frame_role(resume, v.armed_line))})"
                 if v.armed_line is not None else "none")
        self.info.value = (f'<span class="lab-note">CR3 {cr3}<br>monitor armed on {armed}<br>'
                           f"TLB entries {v.tlb_entries} | wake-ups {v.wakeups} | RIP {v.rip:#x}</span>")
        self.listing.value = render_listing(v.listing, v.rip)
        if v.oops:
            self.oops.value = '<pre class="lab-oops-text">' + html.escape(v.oops) + "</pre>"
            self.add_class("lab-cpu-faulted")
        else:
            self.oops.value = ""
            self.remove_class("lab-cpu-faulted")
        self.view = v


class CpuCards(ipw.VBox):
    """All CPUs' cards, in a grid."""

    def __init__(self, resume: Resume) -> None:
        self.message = MessageBox()
        self.grid = ipw.GridBox(layout=ipw.Layout(grid_template_columns="repeat(auto-fill, minmax(440px, 1fr))",
                                                  width="100%"))
        self.cards: list[CpuCard] = []
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
        for c in self.cards:
            c.view = None
        self.update(resume)

    @guarded("message")
    def update(self, resume: Resume) -> None:
        for card in self.cards:
            card.update(resume.cpu(card.cpu), resume)

    def check(self, resume: Resume) -> list[str]:
        bad = []
        for card in self.cards:
            v = resume.cpu(card.cpu)
            if card.state != v.state:
                bad.append(f"card {card.cpu}: state {card.state!r}, model {v.state!r}")
            if card.faulted != bool(v.oops):
                bad.append(f"card {card.cpu}: faulted {card.faulted}, model oops {bool(v.oops)}")
        return bad
