"""Simulated time: one lane per CPU with its run states (from the state, wake, play_dead, panic
and triple_fault events, reconciled with the CPUs' states after every update), wake-ups, faults
and the tables overwritten under a sleeping CPU marked on its lane, phase changes as lines with
labels that do not overlap, and the copy's progress (pages copied) underneath.

Readable without colour: every state has a hatch pattern and a legend entry (Okabe-Ito colours),
wide segments carry the state's name, markers differ by shape.  The figures stretch to the
width they are given.  The view opens on the last wake-to-fault window (widened so that the
C-state exit shows), with the whole run one click away (``.zoom``).  A step that moves nothing by
a pixel sends nothing (the open segments end within 1/SUBPIXEL of the window before now).

Each CPU's current segment, growing with time, is drawn (with the phase lines and the markers
over it) on Bokeh's overlay layer, a canvas of its own; the segments that have ended are drawn
under it and change only when a CPU changes state or the window moves.  Most steps only extend
the current segments, and BokehJS then repaints the overlay alone (``Layer``).  The current
segments all end at now, so their right edge is one number on their quads (``open_right``), not
a column: such a step changes that number and no data (the kernel's cost of a step is what
keeps a Step click from the floor of a trivial button, docs/architecture.md)."""
from __future__ import annotations

from typing import Any, Callable

import ipywidgets as ipw
import numpy as np
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, FixedTicker, HoverTool, Range1d, Span
from bokeh.plotting import figure

from lab.scenario import Resume

from ._bokeh import BokehPane, batch
from ._common import OKABE_ITO, STATE_STYLES, MessageBox, legend_html, check_int, guarded, state_color, state_hatch, state_label

PROGRESS_EVERY = 64  # pages between two points of the progress line
ZOOMS = ("wake to fault", "whole run")
#: the wake-to-fault window is widened to at least this share of the run, so that the C-state
#: exit (100 us of a 50 ms run) is wider than a pixel
MIN_WINDOW_SHARE = 0.04
#: the whole run is drawn at least this wide (ms): the first steps of a run take a nanosecond
#: each, and a window of "now" would rescale the axis (a full redraw) on every one of them, by
#: a factor of two or more, with tick labels of 0.0000002 ms
MIN_WHOLE_RUN_MS = 0.001
LABEL_PX = 6.5  # width of a character of the phase labels (8pt), to keep them apart
PLOT_PX = 900  # the width assumed when placing labels (the figure stretches around it)
LABEL_OFFSET_PX = 8  # a state's name, right of its segment's start
#: the finest time step the lanes show: a window's width over this many device pixels (4000
#: CSS pixels, the widest figure, at a device pixel ratio of 2)
SUBPIXEL = 8000


class Layer:
    """The lanes' segments of one kind, with their hatches and their names: ``.lanes`` (the
    quads), ``.hatches`` (pattern -> the quads that carry it), ``.text`` (the names of the
    segments wide enough), drawn on Bokeh's ``level`` ("overlay": a layer of its own canvas).
    With ``shared_right`` the quads have no right edge in their data: one value for all of them
    (``set_right``), the current segments' end, now."""

    COLUMNS = ("left", "right", "bottom", "top", "color", "hatch", "label", "cpu", "start", "end")
    SHARED_RIGHT = ("right", "end")  # the columns a layer of shared right edge does without

    def __init__(self, name: str, level: str, shared_right: bool = False) -> None:
        tag = "" if name == "ended" else f"-{name}"
        self.level = level
        self.shared_right = shared_right
        self.columns = tuple(k for k in self.COLUMNS if not (shared_right and k in self.SHARED_RIGHT))
        self.quads: list[Any] = []  # the renderers of the quads (lanes and hatches)
        self.lanes = ColumnDataSource(name=f"timeline-lanes{tag}", data={k: [] for k in self.columns})
        self.text = ColumnDataSource(name=f"timeline-lane-text{tag}", data=dict(x=[], y=[], text=[]))
        # the hatch of each state is drawn over the lanes by a renderer of its own pattern (states
        # that share a pattern share it): a pattern per quad (a column of patterns) made BokehJS
        # build a canvas for each quad, five times (its glyph variants), on every update
        self.hatch_columns = tuple(k for k in ("left", "right", "bottom", "top") if k in self.columns)
        self.hatches = {hatch: ColumnDataSource(name=f"timeline-hatch{tag}-{hatch}",
                                                data={k: [] for k in self.hatch_columns})
                        for hatch in dict.fromkeys(h for _c, h, _s in STATE_STYLES.values() if h.strip())}

    def draw(self, fig: Any, shown: dict[int, list[Any]]) -> Any:
        """Add the renderers to ``fig`` (each hidden until its source has data: ``shown``, id of
        a source -> its renderers); returns the lanes' renderer (for the hover tool)."""
        quads = dict(left="left", right=0.0 if self.shared_right else "right", bottom="bottom", top="top",
                     level=self.level, visible=False)
        r_lanes = fig.quad(fill_color="color", line_color="#000000", line_width=0.5, source=self.lanes, **quads)
        shown[id(self.lanes)] = [r_lanes]
        self.quads = [r_lanes]
        for hatch, src in self.hatches.items():
            shown[id(src)] = [fig.quad(fill_color=None, line_color=None, hatch_pattern=hatch, hatch_color="#000000",
                                       hatch_alpha=0.55, hatch_scale=8, source=src, **quads)]
            self.quads += shown[id(src)]
        # a name sits LABEL_OFFSET_PX right of its segment's start: an offset in pixels, so that
        # the names stay where they are (no change to send) when the window grows or shrinks
        shown[id(self.text)] = [fig.text(
            x="x", y="y", text="text", x_offset=LABEL_OFFSET_PX, text_font_size="8pt", text_align="left",
            text_baseline="middle", text_color="#000000", background_fill_color="#ffffff", background_fill_alpha=0.8, source=self.text,
            level=self.level, visible=False)]
        return r_lanes

    def send(self, rows: dict[str, list], text: dict[str, list],
             send_shown: Callable[[ColumnDataSource, dict], None]) -> None:
        """Give the sources these rows and names (``send_shown``: TimelineView._send_shown)."""
        send_shown(self.lanes, rows)
        for hatch, src in self.hatches.items():
            pick = [i for i, h in enumerate(rows["hatch"]) if h == hatch]
            send_shown(src, {k: [rows[k][i] for i in pick] for k in self.hatch_columns})
        send_shown(self.text, text)

    def set_right(self, x: float) -> None:
        """The right edge of every quad shown (``shared_right``); a hidden one gets it when it
        is shown (``send`` first, then this)."""
        for r in self.quads:
            if r.visible and r.glyph.right != x:
                r.glyph.right = x


class TimelineView(ipw.VBox):
    """``.lanes`` (the segments that have ended), ``.open_lanes`` (each CPU's current one, on
    the overlay layer), ``.wakes``, ``.faults``, ``.phases`` and ``.progress`` are its
    ColumnDataSources (``.rows()``: both lanes as one table); ``.segments[cpu]`` the lanes as
    [start_ns, end_ns or None, label]."""

    def __init__(self, resume: Resume, width: int | None = None, zoom: str = "wake to fault",
                 progress_inline: bool = True) -> None:
        """``width`` None stretches to the width available (else 400 to 4000 px); the copy's
        progress is drawn under the lanes, or (``progress_inline`` False) only in
        ``.progress_bokeh`` for the caller to place."""
        if not isinstance(progress_inline, bool):
            raise ValueError(f"progress_inline must be True or False, got {progress_inline!r}")
        if not isinstance(resume, Resume):
            raise ValueError(f"resume must be a lab.scenario.Resume, got {type(resume).__name__}")
        if width is not None:
            check_int("width", width, 400, 4000)
        if zoom not in ZOOMS:
            raise ValueError(f"zoom must be one of {', '.join(ZOOMS)}, got {zoom!r}")
        # a step mostly only extends each CPU's current segment: those are drawn by renderers of
        # their own on Bokeh's overlay layer, over the ended ones, so that such a step repaints
        # only that layer (a few quads), not the whole figure
        self.layers = {"ended": Layer("ended", "glyph"), "open": Layer("open", "overlay", shared_right=True)}
        self.open_right = 0.0  # the current segments' right edge (ms): now, as last drawn
        self.lanes, self.lane_text = self.layers["ended"].lanes, self.layers["ended"].text
        self.open_lanes, self.open_text = self.layers["open"].lanes, self.layers["open"].text
        self.wakes = ColumnDataSource(name="timeline-wakes", data=dict(x=[], y=[], text=[]))
        self.faults = ColumnDataSource(name="timeline-faults", data=dict(x=[], y=[], text=[]))
        self.overwrites = ColumnDataSource(name="timeline-overwrites", data=dict(x=[], y=[], text=[]))
        self.phases = ColumnDataSource(name="timeline-phases", data=dict(x=[], y0=[], y1=[], ty=[], name=[]))
        self.progress = ColumnDataSource(name="timeline-progress", data=dict(t=[], copied=[]))
        n = resume.config.cpus
        size = dict(sizing_mode="stretch_width") if width is None else dict(width=width)
        # explicit ranges: auto ranges over zero-width data (everything at t=0) make BokehJS
        # warn "could not set initial ranges"
        lanes = figure(height=56 + 26 * n, tools="xpan,xwheel_zoom,box_zoom,reset", toolbar_location="right",
                       x_axis_label="t (ms): CPU run states over simulated time",
                       x_range=Range1d(0, 1), y_range=Range1d(n - 0.5, -2.2), min_border_right=10, **size)
        lanes.ygrid.visible = False
        self._shown: dict[int, list[Any]] = {}  # id(source) -> its renderers, drawn only while it has data
        r_lanes = [layer.draw(lanes, self._shown) for layer in self.layers.values()]
        # phase lines and markers go over the current segments: on the overlay layer too (a few items)
        over = dict(level="overlay", visible=False)
        r_phase = lanes.segment(x0="x", x1="x", y0="y0", y1="y1", line_color="#555555", line_dash="dashed",
                                source=self.phases, **over)
        r_phase_text = lanes.text(x="x", y="ty", text="name", text_font_size="8pt", x_offset=2,
                                  text_baseline="middle", text_color="#333333", source=self.phases, **over)
        r_wakes = lanes.scatter(x="x", y="y", marker="triangle", size=12, fill_color=OKABE_ITO["yellow"],
                                line_color="#000000", source=self.wakes, **over)
        r_over = lanes.scatter(x="x", y="y", marker="diamond", size=14, fill_color=OKABE_ITO["orange"],
                               line_color="#000000", line_width=1.5, source=self.overwrites, **over)
        r_faults = lanes.scatter(x="x", y="y", marker="x", size=16, line_width=3, line_color=OKABE_ITO["vermillion"],
                                 source=self.faults, **over)
        # a renderer without data is hidden: BokehJS still worked out its visuals (CSS lookups
        # included) on every repaint, and a Step repaints the figure
        for src, *rends in ((self.phases, r_phase, r_phase_text), (self.wakes, r_wakes),
                            (self.overwrites, r_over), (self.faults, r_faults)):
            self._shown[id(src)] = rends
        # the ended segments end at their "end"; the current ones (the open layer) at now
        tips = [("cpu", "@cpu"), ("state", "@label"), ("from", "@start ms")]
        lanes.add_tools(HoverTool(renderers=r_lanes[:1], tooltips=tips + [("to", "@end ms")]))
        lanes.add_tools(HoverTool(renderers=r_lanes[1:], tooltips=tips + [("to", "now, still in it")]))
        lanes.add_tools(HoverTool(renderers=[r_wakes, r_faults, r_over], tooltips=[("", "@text")]))
        # the legend is HTML next to the zoom buttons, drawn once: in the canvas, BokehJS measured
        # its twelve labels again on every repaint, i.e. on every Step (widgets._common.legend_html)
        self.legend = ipw.HTML(legend_html(
            [(label, color, hatch) for label, (color, hatch, _short) in STATE_STYLES.items() if label != "mwait"],
            [("wake-up", "\u25B2", OKABE_ITO["yellow"]), ("table overwritten", "\u25C6", OKABE_ITO["orange"]),
             ("fault", "\u2716", OKABE_ITO["vermillion"])]))
        self.legend.add_class("lab-legend")
        prog = figure(height=150, tools="", toolbar_location=None, x_range=Range1d(0, 1),
                      title="the copy: pages written back to their frames", x_axis_label="t (ms)",
                      y_axis_label="pages", y_range=Range1d(0, 1), **size)
        prog.line(x="t", y="copied", line_width=2, color=OKABE_ITO["bluish green"], source=self.progress)
        self.total_line = Span(location=0, dimension="width", line_color="#999999", line_dash="dotted")
        prog.add_layout(self.total_line)
        self.lanes_figure, self.progress_figure = lanes, prog
        self.message = MessageBox()
        self.zoom = ipw.ToggleButtons(options=list(ZOOMS), value=zoom,
                                      tooltips=["the last wake-up to the fault after it, widened", "from t = 0 to now"],
                                      style={"button_width": "110px"})
        self.zoom.observe(lambda _c: self._zoom_changed(), names="value")
        self._range_key: tuple | None = None
        self.progress_live = True  # False: the progress figure is hidden; send_progress() when shown
        self.bind(resume)
        # after the first update: the widget's render bundle is what a new view draws, and
        # patches sent before any view exists are lost
        stretch = "stretch_width" if width is None else None
        self.progress_bokeh = BokehPane(column(prog, sizing_mode=stretch), layout=ipw.Layout(width="100%"))
        self.bokeh = BokehPane(column(lanes, sizing_mode=stretch), layout=ipw.Layout(width="100%"))
        parts = [ipw.HBox([self.zoom, self.legend], layout=ipw.Layout(flex_flow="row wrap", align_items="center")),
                 self.bokeh] + ([self.progress_bokeh] if progress_inline else []) + [self.message]
        super().__init__(parts, layout=ipw.Layout(width="100%"))
        self.add_class("lab-timeline")

    # -- model side ---------------------------------------------------------------------------
    @guarded("message")
    def bind(self, resume: Resume) -> None:
        self.resume = resume
        n = resume.config.cpus
        # the lanes are rebuilt from all events, from the states at step 0 (the same in every
        # run of a configuration: kept from the first bind, or the states now if bound later)
        if resume.steps == 0 or getattr(self, "_initial_config", None) != resume.config:
            self._initial = [state_label(*resume.run_state(i)) for i in range(n)]
            self._initial_config = resume.config
        self.segments: dict[int, list[list[Any]]] = {i: [[0, None, self._initial[i]]] for i in range(n)}
        self._cursor = 0
        self._wakes: list[tuple[int, int, str]] = []
        self._faults: list[tuple[int, int, str]] = []
        self._overwrites: list[tuple[int, int, str]] = []
        self._phases: list[tuple[int, str]] = []
        self._points: list[tuple[int, int]] = [(0, 0)]
        self._pages = 0
        self._drawn: tuple | None = None
        self._shape: tuple | None = None  # what _draw drew last (_update)
        self._range_key = None
        if getattr(self, "_axes_for", None) != (n, len(resume.loaded.pblist)):
            # set once per machine: every Bokeh change is a message to the browser
            self._axes_for = (n, len(resume.loaded.pblist))
            ticks = list(range(n))
            self.lanes_figure.yaxis.ticker = FixedTicker(ticks=ticks)
            self.lanes_figure.yaxis.major_label_overrides = {i: f"cpu{i}" for i in ticks}
            self.total_line.location = len(resume.loaded.pblist)
            self.progress_figure.y_range.end = max(1, len(resume.loaded.pblist)) * 1.05
            self.lanes_figure.y_range.start, self.lanes_figure.y_range.end = n - 0.5, -2.2
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
            if k in ("page_copied", "pages_copied"):  # one page, or a streamed run of them
                self._pages += e.data.get("count", 1)
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
            elif k == "table_overwritten" and e.cpu is not None:
                self._overwrites.append((e.t, e.cpu, f"cpu{e.cpu} asleep: {('PML4', 'PDPT', 'PD', 'PT')[d['level']]} "
                                         f"entry in frame {d['pfn']:#x} overwritten by {d['by']}: "
                                         f"{d['old']:#x} -> {d['new']:#x}"))
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
            label = state_label(*resume.run_state(c))
            cur = segs[-1][2]
            if cur != label and not (label == "running" and cur in ("running", "waking")):
                self._transition(c, last_t.get(c, resume.now), label)

    @guarded("message")
    def update(self, resume: Resume) -> None:
        # one message to the browser for all of the step's changes (one repaint): widgets._bokeh
        with batch(getattr(self, "bokeh", None), getattr(self, "progress_bokeh", None)):
            self._update(resume)

    def _update(self, resume: Resume) -> None:
        self.resume = resume
        self._ingest(resume)
        now = resume.now
        lo, hi = self._apply_zoom()
        # redrawn only when something would move by a pixel: a step that advances time by less
        # than SUBPIXEL of the window changes no pixel, and a change sent is a message, a patch
        # and a repaint in the browser (the open segments then end up to that much before now)
        quantum = (hi - lo) * 1e6 / SUBPIXEL
        key = (lo, hi, int(now // quantum) if quantum > 0 else now, len(self._wakes), len(self._faults),
               len(self._overwrites), len(self._phases), len(self._points), sum(len(s) for s in self.segments.values()))
        if key == self._drawn:
            return
        self._drawn = key
        min_w = 0.08 * (hi - lo)
        # what is drawn, but for the current segments' right edge: each segment begun, whether
        # it is current (ends at now) and whether it is wide enough for its name
        drawn = []
        for c, segs in self.segments.items():
            for start, end, label in segs:
                if start > now:
                    continue
                current = end is None or end > now
                stop = now if current else end
                a, b = max(start / 1e6, lo), min(stop / 1e6, hi)
                drawn.append((c, start, end, label, current, b - a >= min_w))
        shape = (lo, hi, len(self._wakes), len(self._faults), len(self._overwrites), len(self._phases), drawn)
        if shape != self._shape:  # else only now moved: the right edge alone (most steps)
            self._shape = shape
            self._draw(drawn, lo, hi)
        self.open_right = now / 1e6
        self.layers["open"].set_right(self.open_right)
        if self.progress_live:
            self.send_progress()

    def _draw(self, drawn: list[tuple], lo: float, hi: float) -> None:
        """Give the sources the segments ``drawn`` (``_update``), the markers and the phases."""
        parts = {name: ({k: [] for k in layer.columns}, {"x": [], "y": [], "text": []})
                 for name, layer in self.layers.items()}
        for c, start, end, label, current, named in drawn:
            rows, text = parts["open" if current else "ended"]
            rows["left"].append(start / 1e6)
            if not current:  # a current segment ends at now: the open layer's shared right edge
                rows["right"].append(end / 1e6)
                rows["end"].append(round(end / 1e6, 6))
            rows["bottom"].append(c - 0.35)
            rows["top"].append(c + 0.35)
            rows["color"].append(state_color(label))
            rows["hatch"].append(state_hatch(label))
            rows["label"].append(label)
            rows["cpu"].append(c)
            rows["start"].append(round(start / 1e6, 6))
            if named:  # at the segment's left (or the window's): a fixed place, sent once
                text["x"].append(max(start / 1e6, lo))
                text["y"].append(c)
                text["text"].append(label)
        for name, layer in self.layers.items():
            layer.send(*parts[name], self._send_shown)
        for src, items in ((self.wakes, self._wakes), (self.faults, self._faults), (self.overwrites, self._overwrites)):
            self._send_shown(src, dict(x=[t / 1e6 for t, _, _ in items], y=[c for _, c, _ in items],
                                 text=[s for _, _, s in items]))
        n = len(self.segments)
        self._send_shown(self.phases, dict(x=[t / 1e6 for t, _ in self._phases], y0=[-0.5] * len(self._phases),
                               y1=[n - 0.5] * len(self._phases),
                               ty=[-0.8 - 0.55 * r for r in label_rows(self._phases, lo, hi)],
                               name=[p for _, p in self._phases]))

    def _send_shown(self, src: ColumnDataSource, data: dict[str, list]) -> None:
        """``send``, then show the source's renderers only while it has data."""
        send(src, data)
        shown = bool(next(iter(data.values()), []))
        for r in self._shown[id(src)]:
            if r.visible != shown:
                r.visible = shown

    def send_progress(self) -> None:
        """Draw the copy's progress (ResumeLab calls it only while its tab is shown)."""
        pts = np.asarray(self._points, dtype=np.float64).reshape(-1, 2)
        with batch(getattr(self, "progress_bokeh", None)):
            send(self.progress, dict(t=(pts[:, 0] / 1e6).tolist(), copied=pts[:, 1].tolist()))
            self.progress_figure.x_range.end = max(self.resume.now, 1) / 1e6 * 1.02

    def window(self) -> tuple[float, float]:
        """The x range (ms) the zoom asks for: the whole run (MIN_WHOLE_RUN_MS at least), or the
        last wake-up to the first fault after it (or to now), widened to MIN_WINDOW_SHARE of the
        run at least."""
        now = max(self.resume.now, 1) / 1e6
        whole = (0.0, max(MIN_WHOLE_RUN_MS, nice_ceil(now * 1.02)))
        if self.zoom.value == "whole run" or not self._wakes:
            return whole
        fault_t = [t for t, _, _ in self._faults]
        wake_t = [t for t, _, _ in self._wakes if not fault_t or t <= fault_t[0]] or [self._wakes[-1][0]]
        start = wake_t[-1] / 1e6
        end = next((t / 1e6 for t in fault_t if t >= wake_t[-1]), None)
        end = nice_ceil(now) if end is None else end
        width = max(end - start, MIN_WINDOW_SHARE * now)
        pad = 0.35 * width
        hi = min(whole[1], end + pad)
        return max(0.0, hi - width - 2 * pad), hi

    def _zoom_changed(self) -> None:
        with batch(self.bokeh):
            self._apply_zoom(force=True)

    def _apply_zoom(self, force: bool = False) -> tuple[float, float]:
        lo, hi = self.window()
        key = (self.zoom.value, round(lo, 6), round(hi, 6))
        if force or key != self._range_key:
            self._range_key = key
            self.lanes_figure.x_range.start, self.lanes_figure.x_range.end = lo, hi
        if force:
            self._drawn = self._shape = None
            self.update(self.resume)
        return lo, hi

    def rows(self) -> dict[str, list]:
        """Every segment drawn (both layers) as one table, in order of CPU and start; a current
        segment ends at ``open_right``."""
        right = {"right": self.open_right, "end": round(self.open_right, 6)}
        parts = []
        for layer in self.layers.values():
            d = layer.lanes.data
            n = len(d["left"])
            parts.append({k: list(d[k]) if k in d else [right[k]] * n for k in Layer.COLUMNS})
        order = sorted((d["cpu"][i], d["start"][i], j, i) for j, d in enumerate(parts) for i in range(len(d["cpu"])))
        return {k: [parts[j][k][i] for _c, _s, j, i in order] for k in Layer.COLUMNS}

    def current_labels(self) -> dict[int, str]:
        return {c: segs[-1][2] for c, segs in self.segments.items()}

    def check(self, resume: Resume) -> list[str]:
        """Mismatches with the model (the progress is brought up to date first if hidden)."""
        self.send_progress()
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


def label_rows(phases: list[tuple[int, str]], lo: float, hi: float, px: int = PLOT_PX) -> list[int]:
    """A row for each phase label (time in ns, name) so that labels in one row do not overlap
    when ``lo``..``hi`` ms is drawn ``px`` wide: each goes into the first row whose last label
    ends left of it."""
    scale = (hi - lo) / px if hi > lo else 1.0
    ends: list[float] = []
    out = []
    for t, name in phases:
        x = t / 1e6
        w = (len(name) * LABEL_PX + 6) * scale
        row = next((i for i, end in enumerate(ends) if end <= x), len(ends))
        if row == len(ends):
            ends.append(x + w)
        else:
            ends[row] = x + w
        out.append(row)
    return out


def send(src: ColumnDataSource, data: dict[str, list]) -> None:
    """Give ``src`` ``data`` only when it differs (every change is a message to the browser).
    Whole data, never a patch: these sources change length, and BokehJS echoes a patch back,
    which fails in the kernel once the data it patched has been replaced by shorter data."""
    old = src.data
    if set(old) == set(data) and all(list(old[k]) == list(v) for k, v in data.items()):
        return
    src.data = data



def nice_ceil(x: float) -> float:
    """``x`` rounded up to two significant digits: the time axis's end moves in steps of a
    few percent, not on every step (each change is a message to the browser)."""
    if x <= 0:
        return 1.0
    step = 10 ** (np.floor(np.log10(x)) - 1)
    return float(np.ceil(x / step) * step)
