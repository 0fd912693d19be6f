"""Simulated time: one lane per CPU with its run states (from the state, wake, play_dead, panic
and triple_fault events, reconciled with the CPUs' states after every update), wake-ups and
faults marked, phase changes as lines, and the copy's progress (pages copied) underneath."""
from __future__ import annotations

from typing import Any

import ipywidgets as ipw
import numpy as np
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DataRange1d, FixedTicker, HoverTool, Range1d, Span
from bokeh.plotting import figure
from jupyter_bokeh import BokehModel

from lab.scenario import Resume

from ._common import MessageBox, guarded, state_color, state_label

PROGRESS_EVERY = 64  # pages between two points of the progress line


class TimelineView(ipw.VBox):
    """``.lanes`` (segments), ``.wakes``, ``.faults``, ``.phases`` and ``.progress`` are its
    ColumnDataSources; ``.segments[cpu]`` the lanes as [start_ns, end_ns or None, label]."""

    def __init__(self, resume: Resume, width: int = 980) -> None:
        self.lanes = ColumnDataSource(name="timeline-lanes", data=dict(
            left=[], right=[], bottom=[], top=[], color=[], label=[], cpu=[], start=[], end=[]))
        self.wakes = ColumnDataSource(name="timeline-wakes", data=dict(x=[], y=[], text=[]))
        self.faults = ColumnDataSource(name="timeline-faults", data=dict(x=[], y=[], text=[]))
        self.phases = ColumnDataSource(name="timeline-phases", data=dict(x=[], y0=[], y1=[], ty=[], name=[]))
        self.progress = ColumnDataSource(name="timeline-progress", data=dict(t=[], copied=[]))
        n = resume.config.cpus
        # explicit ranges: auto ranges over zero-width data (everything at t=0) make BokehJS
        # warn "could not set initial ranges"
        lanes = figure(width=width, height=60 + 34 * n, tools="xpan,xwheel_zoom,box_zoom,reset",
                       toolbar_location="above", title="CPU run states over simulated time",
                       x_axis_label="t (ms)", x_range=DataRange1d(start=0, min_interval=0.01),
                       y_range=Range1d(n - 0.5, -0.5))
        lanes.ygrid.visible = False
        r_lanes = lanes.quad(left="left", right="right", bottom="bottom", top="top", fill_color="color",
                             line_color=None, source=self.lanes)
        lanes.segment(x0="x", x1="x", y0="y0", y1="y1", line_color="#555555", line_dash="dashed",
                      source=self.phases)
        lanes.text(x="x", y="ty", text="name", text_font_size="8pt", angle=0, x_offset=2,
                   text_color="#555555", source=self.phases)
        r_wakes = lanes.scatter(x="x", y="y", marker="triangle", size=11, fill_color="#fdd835",
                                line_color="#000000", source=self.wakes)
        r_faults = lanes.scatter(x="x", y="y", marker="x", size=16, line_width=3, line_color="#c62828",
                                 source=self.faults)
        lanes.add_tools(HoverTool(renderers=[r_lanes], tooltips=[("cpu", "@cpu"), ("state", "@label"),
                                                                  ("from", "@start ms"), ("to", "@end ms")]))
        lanes.add_tools(HoverTool(renderers=[r_wakes, r_faults], tooltips=[("", "@text")]))
        prog = figure(width=width, height=170, tools="", toolbar_location=None, x_range=lanes.x_range,
                      title="the copy: pages written back to their frames", x_axis_label="t (ms)",
                      y_axis_label="pages copied", y_range=Range1d(0, 1))
        prog.line(x="t", y="copied", line_width=2, color="#2e7d32", source=self.progress)
        self.total_line = Span(location=0, dimension="width", line_color="#999999", line_dash="dotted")
        prog.add_layout(self.total_line)
        self.lanes_figure, self.progress_figure = lanes, prog
        self.message = MessageBox()
        self.bind(resume)
        # after the first update: the widget's render bundle is what a new view draws, and
        # patches sent before any view exists are lost
        self.bokeh = BokehModel(column(lanes, prog))
        super().__init__([self.bokeh, self.message])
        self.add_class("lab-timeline")

    # -- model side ---------------------------------------------------------------------------
    @guarded("message")
    def bind(self, resume: Resume) -> None:
        self.resume = resume
        n = resume.config.cpus
        self.segments: dict[int, list[list[Any]]] = {}
        for i in range(n):
            v = resume.cpu(i)
            self.segments[i] = [[resume.now, None, state_label(v.state, v.cstate)]]
        self._cursor = len(resume.events)
        self._wakes: list[tuple[int, int, str]] = []
        self._faults: list[tuple[int, int, str]] = []
        self._phases: list[tuple[int, str]] = [(resume.now, resume.phase)]
        self._points: list[tuple[int, int]] = [(resume.now, resume.runtime.copied)]
        self._pages = resume.runtime.copied
        self._drawn: tuple | None = None
        ticks = list(range(n))
        self.lanes_figure.yaxis.ticker = FixedTicker(ticks=ticks)
        self.lanes_figure.yaxis.major_label_overrides = {i: f"cpu{i}" for i in ticks}
        self.total_line.location = len(resume.loaded.pblist)
        self.progress_figure.y_range.end = max(1, len(resume.loaded.pblist)) * 1.05
        self.lanes_figure.y_range.start, self.lanes_figure.y_range.end = n - 0.5, -0.5
        self.update(resume)

    def _transition(self, cpu: int, t: int, label: str) -> None:
        segs = self.segments[cpu]
        # drop what was planned after t (a wake's "running" that never came), close the rest
        while len(segs) > 1 and segs[-1][0] > t:
            segs.pop()
        last = segs[-1]
        if last[2] == label and (last[1] is None or last[1] >= t):
            last[1] = None
            return
        if last[1] is None or last[1] > t:
            last[1] = max(last[0], t)
        segs.append([t, None, label])

    def _ingest(self, resume: Resume) -> None:
        evs = resume.events
        new = evs[self._cursor:]
        self._cursor = len(evs)
        last_t: dict[int, int] = {}
        for e in new:
            k = e.kind
            if k == "page_copied":
                self._pages += 1
                if self._pages - self._points[-1][1] >= PROGRESS_EVERY:
                    self._points.append((e.t, self._pages))
                continue
            if k == "exec":
                continue
            if e.cpu is not None:
                last_t[e.cpu] = e.t
            d = e.data
            if k == "state" and e.cpu is not None:
                self._transition(e.cpu, e.t, state_label(d["state"], d.get("cstate")))
            elif k == "wake" and e.cpu is not None:
                self._transition(e.cpu, e.t, "waking")
                at = int(d.get("resumes_at", e.t))
                self.segments[e.cpu][-1][1] = at
                self.segments[e.cpu].append([at, None, "running"])
                self._wakes.append((e.t, e.cpu, f"cpu{e.cpu} wakes: {d.get('reason', '')}"))
            elif k == "play_dead" and e.cpu is not None:
                self._transition(e.cpu, e.t, "running")
            elif k == "fault" and e.cpu is not None:
                self._faults.append((e.t, e.cpu, f"cpu{e.cpu} {d['vector']} at {d['address']:#x}"
                                     + (f" while delivering {d['during']}" if d.get("during") else "")))
            elif k == "triple_fault":
                for c in self.segments:
                    self._transition(c, e.t, "off")
                self._faults.append((e.t, e.cpu if e.cpu is not None else 0, f"triple fault: {d.get('why', '')}"))
            elif k == "panic":
                for c, segs in self.segments.items():
                    if segs[-1][2] != "off":
                        self._transition(c, e.t, "hlt")
            elif k == "phase":
                self._phases.append((e.t, d["phase"]))
        if resume.runtime.copied != self._points[-1][1]:
            self._points.append((resume.now, resume.runtime.copied))
        # reconcile with the CPUs as they are now (transitions no event announced)
        for c, segs in self.segments.items():
            v = resume.cpu(c)
            label = state_label(v.state, v.cstate)
            cur = segs[-1][2]
            if cur != label and not (label == "running" and cur in ("running", "waking")):
                self._transition(c, last_t.get(c, resume.now), label)

    @guarded("message")
    def update(self, resume: Resume) -> None:
        self.resume = resume
        self._ingest(resume)
        now = resume.now
        key = (now, len(self._wakes), len(self._faults), len(self._phases), len(self._points),
               sum(len(s) for s in self.segments.values()))
        if key == self._drawn:
            return
        self._drawn = key
        rows: dict[str, list] = {k: [] for k in ("left", "right", "bottom", "top", "color", "label", "cpu",
                                                 "start", "end")}
        for c, segs in self.segments.items():
            for start, end, label in segs:
                if start > now:
                    continue
                stop = now if end is None else min(end, now)
                rows["left"].append(start / 1e6)
                rows["right"].append(max(stop, start) / 1e6)
                rows["bottom"].append(c - 0.35)
                rows["top"].append(c + 0.35)
                rows["color"].append(state_color(label))
                rows["label"].append(label)
                rows["cpu"].append(c)
                rows["start"].append(round(start / 1e6, 6))
                rows["end"].append(round(stop / 1e6, 6))
        self.lanes.data = rows
        self.wakes.data = dict(x=[t / 1e6 for t, _, _ in self._wakes], y=[c for _, c, _ in self._wakes],
                               text=[s for _, _, s in self._wakes])
        self.faults.data = dict(x=[t / 1e6 for t, _, _ in self._faults], y=[c for _, c, _ in self._faults],
                                text=[s for _, _, s in self._faults])
        n = len(self.segments)
        self.phases.data = dict(x=[t / 1e6 for t, _ in self._phases], y0=[-0.5] * len(self._phases),
                                y1=[n - 0.5] * len(self._phases),
                                ty=[-0.45 + 0.3 * (i % 2) for i in range(len(self._phases))],
                                name=[p for _, p in self._phases])
        pts = np.asarray(self._points, dtype=np.float64).reshape(-1, 2)
        self.progress.data = dict(t=pts[:, 0] / 1e6, copied=pts[:, 1])

    def current_labels(self) -> dict[int, str]:
        return {c: segs[-1][2] for c, segs in self.segments.items()}

    def check(self, resume: Resume) -> list[str]:
        bad = []
        for c, label in self.current_labels().items():
            v = resume.cpu(c)
            want = state_label(v.state, v.cstate)
            if label != want and not (want == "running" and label == "waking"):
                bad.append(f"timeline lane {c}: {label!r}, model {want!r}")
        copied = self.progress.data["copied"]
        if len(copied) and int(copied[-1]) != resume.runtime.copied:
            bad.append(f"timeline progress ends at {int(copied[-1])}, model copied {resume.runtime.copied}")
        return bad
