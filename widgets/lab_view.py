"""``ResumeLab``: the stepper, the CPU cards, the page walk, the memory map and the timeline
of one resume, composed and kept in step."""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as ipw

from lab.scenario import Resume

from ._common import CSS, direct_va
from .cpu_cards import CpuCards
from .memory_map import MemoryMapView
from .stepper import Stepper
from .timeline import TimelineView
from .walk_view import WalkView

_bokeh_loaded = False


def setup(force: bool = True) -> bool:
    """Load BokehJS into the notebook page, inline (no CDN: workshop rooms and CI are offline).
    Does nothing outside a Jupyter kernel.  Returns True when it published the scripts."""
    global _bokeh_loaded
    if _bokeh_loaded and not force:
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    ip = get_ipython()
    if ip is None or getattr(ip, "kernel", None) is None:
        return False
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    output_notebook(INLINE, hide_banner=True)
    _bokeh_loaded = True
    return True


class ResumeLab(ipw.VBox):
    """``ResumeLab(preset="report-2016", fix="mwait", seed=0, **config)``: every view of one
    resume.  The keyword arguments go to ``lab.scenario.Resume``; Reset builds it again."""

    def __init__(self, preset: str = "report-2016", fix: str = "mwait", seed: int = 0, *,
                 bins: int = 1024, follow_faults: bool = True, **kwargs: Any) -> None:
        setup(force=False)
        self.kwargs = dict(preset=preset, fix=fix, seed=seed, **kwargs)
        self.stepper = Stepper(factory=lambda: Resume(**self.kwargs))
        r = self.stepper.resume
        self.cards = CpuCards(r)
        self.walk = WalkView(r)
        self.memmap = MemoryMapView(r, bins=bins, on_select=self._show_frame)
        self.timeline = TimelineView(r)
        self.follow_faults = follow_faults
        self._cursor = len(r.events)
        self.title = ipw.HTML()
        self._title(r)
        self.stepper.listeners.append(self._on_step)
        lower = ipw.HBox([ipw.VBox([ipw.HTML("<b>Page walk</b>"), self.walk],
                                   layout=ipw.Layout(flex="1 1 520px", min_width="480px")),
                          ipw.VBox([self.memmap], layout=ipw.Layout(flex="1 1 640px"))],
                         layout=ipw.Layout(flex_flow="row wrap", width="100%"))
        super().__init__([ipw.HTML(CSS), self.title, self.stepper, self.cards, lower, self.timeline])
        self.add_class("lab-root")

    @property
    def resume(self) -> Resume:
        return self.stepper.resume

    def _title(self, r: Resume) -> None:
        c = r.config
        self.title.value = (f"<h3 style='margin:4px 0'>Resume from hibernation: preset <code>{html.escape(c.preset)}"
                            f"</code>, fix <code>{html.escape(c.fix)}</code>, seed {c.seed}</h3>"
                            f"<span class='lab-note'>{html.escape(r.fix.title)} | {c.cpus} CPUs, "
                            f"{r.machine.memory.nr_frames} frames, {len(r.loaded.pblist)} pages to copy</span>")

    def _on_step(self, r: Resume, reset: bool) -> None:
        if reset:
            self._title(r)
            self._cursor = len(r.events)
            for view in (self.cards, self.walk, self.memmap, self.timeline):
                view.bind(r)
            return
        fault = None
        if self.follow_faults:
            evs = r.events
            for i in range(self._cursor, len(evs)):
                if evs[i].kind == "fault":
                    fault = evs[i]
                    break
        self._cursor = len(r.events)
        self.cards.update(r)
        if fault is not None:
            self.walk.show(cpu=fault.cpu, va=fault.data["address"])
        else:
            self.walk.update(r)
        self.memmap.update(r)
        self.timeline.update(r)

    def _show_frame(self, pfn: int) -> None:
        self.walk.show(va=direct_va(pfn))

    def check(self) -> list[str]:
        """Mismatches between what the views show and what the model says (empty: all agree)."""
        r = self.resume
        bad: list[str] = []
        for name, view in (("cards", self.cards), ("walk", self.walk), ("memmap", self.memmap),
                           ("timeline", self.timeline)):
            try:
                bad += view.check(r)
            except Exception as exc:  # noqa: BLE001
                bad.append(f"{name}.check raised {exc!r}")
        if r.phase not in self.stepper.status.value:
            bad.append(f"stepper status does not show the phase {r.phase!r}")
        return bad
