"""The physical memory as a grid of bins (lab.memmap), frame 0 at the top left, 32 bins a row
(the y axis names each row's first frame): each bin has the colour (Okabe-Ito) *and* the hatch
pattern of what the restore kernel keeps there, named in the legend, so it reads in grayscale;
a bar per bin for the copy's progress over its pblist frames; a star on the bins of frames the
copy overwrote under a sleeping CPU (lab.watch), an outline on the bins the last step changed.
Hover names a bin's frame range and roles; a tap on a bin shows its most interesting frame in
the page walk (through ``on_select``)."""
from __future__ import annotations

import html
from typing import Callable

import ipywidgets as ipw
import numpy as np
from bokeh.models import ColumnDataSource, FixedTicker, HoverTool, Legend, LegendItem, Range1d, TapTool
from bokeh.plotting import figure

from lab import memmap
from lab.scenario import Resume

from ._bokeh import BokehPane, batch
from ._common import OKABE_ITO as _O
from ._common import MessageBox, check_int, direct_va, guarded

COLUMNS = 32
#: bins: the documented range (16 bins show little; past 8192 a step's update is no longer cheap)
MIN_BINS, MAX_BINS = 16, 8192
#: what a bin is drawn as -> (colour, hatch pattern): no two share both
DISPLAY_STYLES = {
    "page tables": (_O["vermillion"], "x"),
    "monitored lines (idle stacks)": (_O["orange"], "o"),
    "zero page": (_O["reddish purple"], "+"),
    "kernel image": (_O["blue"], "|"),
    "image pages pending": (_O["yellow"], "/"),
    "image pages restored": (_O["bluish green"], "\\"),
    "safe pages": (_O["sky blue"], "-"),
    "image loaded in place": ("#B8E0D2", ":"),
    "other in use": (_O["grey"], ","),
    "free": ("#F4F4F4", " "),
    "not RAM": ("#FFFFFF", " "),
}
DISPLAY_COLORS = {k: v[0] for k, v in DISPLAY_STYLES.items()}
# string columns as numpy unicode arrays: Bokeh sends those as one plain list, which is much
# cheaper than encoding a Python list item by item (this keeps a step's update to a few ms)
_COLORS = np.array([DISPLAY_COLORS[d] for d in memmap.DISPLAY], dtype=str)
_LABELS = np.array(memmap.DISPLAY, dtype=str)
_HATCHES = np.array([DISPLAY_STYLES[d][1] for d in memmap.DISPLAY], dtype=str)


def _contents_text(counts: np.ndarray) -> str:
    parts = [f"{memmap.CATEGORIES[c]} {int(n)}" for c, n in enumerate(counts) if n]
    return ", ".join(parts)


class MemoryMapView(ipw.VBox):
    """``bins`` bins (default 1024) of equal frame counts; ``.map`` is the lab.memmap
    aggregation it draws, ``.cells`` and ``.progress`` its ColumnDataSources."""

    def __init__(self, resume: Resume, bins: int = 1024,
                 on_select: Callable[[int], None] | None = None, width: int = 560) -> None:
        if not isinstance(resume, Resume):
            raise ValueError(f"resume must be a lab.scenario.Resume, got {type(resume).__name__}")
        self.bins = check_int("bins", bins, MIN_BINS, MAX_BINS)
        check_int("width", width, 300, 4000)
        if on_select is not None and not callable(on_select):
            raise ValueError(f"on_select must be callable, got {on_select!r}")
        self.on_select = on_select
        self.map: memmap.MemoryMap | None = None
        self.selected_pfn: int | None = None
        self.cells = ColumnDataSource(name="memmap-cells", data=self._empty_cells())
        self.progress = ColumnDataSource(name="memmap-progress",
                                         data=dict(left=[], right=[], bottom=[], top=[]))
        self.marks = ColumnDataSource(name="memmap-marks", data=dict(x=[], y=[], text=[]))
        self.changed = ColumnDataSource(name="memmap-changed", data=dict(left=[], right=[], bottom=[], top=[]))
        fig = figure(width=width, height=width * 3 // 5, tools="tap,box_zoom,reset", toolbar_location="above",
                     x_range=Range1d(-0.2, COLUMNS + 0.2), y_range=Range1d(-33, 1), match_aspect=False,
                     title="physical memory: frame 0 top left, 32 bins a row", min_border_left=4)
        fig.xaxis.visible = False
        fig.yaxis.axis_label = "first frame of the row"
        fig.yaxis.major_label_text_font_size = "8pt"
        fig.grid.visible = False
        fig.outline_line_color = None
        cells = fig.quad(left="left", right="right", bottom="bottom", top="top", fill_color="color",
                         hatch_pattern="hatch", hatch_color="#000000", hatch_alpha=0.6, hatch_scale=5,
                         line_color="#bbbbbb", line_width=0.5, source=self.cells,
                         selection_line_color="#000000", selection_line_width=2,
                         nonselection_fill_alpha=1.0, nonselection_line_alpha=1.0)
        fig.quad(left="left", right="right", bottom="bottom", top="top", fill_color="#000000",
                 line_color=None, source=self.progress)
        fig.quad(left="left", right="right", bottom="bottom", top="top", fill_color=None,
                 line_color=_O["vermillion"], line_width=2, line_dash="dashed", source=self.changed)
        r_marks = fig.scatter(x="x", y="y", marker="star", size=15, fill_color="#ffffff", line_color="#000000",
                              line_width=2, source=self.marks)
        fig.add_tools(HoverTool(renderers=[cells], tooltips=[
            ("frames", "@range"), ("shown as", "@label"), ("roles", "@roles"), ("copy", "@copy"),
            ("contents", "@contents")]))
        fig.add_tools(HoverTool(renderers=[r_marks], tooltips=[("", "@text")]))
        items = []
        for name, (color, hatch) in DISPLAY_STYLES.items():
            g = fig.quad(left=[0], right=[0], bottom=[0], top=[0], fill_color=color, hatch_pattern=hatch,
                         hatch_color="#000000", hatch_alpha=0.6, hatch_scale=5, line_color="#888888", visible=False)
            items.append(LegendItem(label=name, renderers=[g]))
        items.append(LegendItem(label="overwritten under a sleeping CPU", renderers=[r_marks]))
        fig.add_layout(Legend(items=items, label_text_font_size="8pt", glyph_width=14, glyph_height=12, spacing=1,
                              padding=2, margin=2), "right")
        tap = fig.select_one(TapTool)
        tap.renderers = [cells]
        self.figure = fig
        self.cells.selected.on_change("indices", self._on_tap)
        self.header = ipw.HTML()
        self.info = ipw.HTML()
        self.info.add_class("lab-memmap-info")
        self.message = MessageBox()
        self._split: tuple[np.ndarray, np.ndarray] | None = None
        self.live = True  # False while hidden: update() only remembers the resume
        self.bokeh: BokehPane | None = None
        self.bind(resume)
        # after the first update: the widget's render bundle is what a new view draws, and
        # patches sent before any view exists are lost
        self.bokeh = BokehPane(fig)
        super().__init__([self.header, self.bokeh, self.info, self.message])
        self.add_class("lab-memmap")

    @staticmethod
    def _empty_cells() -> dict:
        return dict(left=[], right=[], bottom=[], top=[], color=[], hatch=[], label=[], range=[], roles=[],
                    copy=[], contents=[], pending=[], restored=[], bin=[])

    # -- model side ---------------------------------------------------------------------------
    @guarded("message")
    def bind(self, resume: Resume) -> None:
        old = getattr(self, "resume", None)
        if self.map is not None and old is not None and old.config == resume.config:
            self.map.source = resume.loaded.pblist  # a replay of the same run: same frames, same pblist
        else:
            self.map = None
        self.resume = resume
        self._split = None
        self.selected_pfn = None
        self.info.value = ""
        self.update(resume)

    @guarded("message")
    def update(self, resume: Resume) -> None:
        with batch(self.bokeh):  # one message to the browser (widgets._bokeh)
            self._update(resume)

    def _update(self, resume: Resume) -> None:
        self.resume = resume
        if not self.live and self.map is not None:
            return  # hidden (ResumeLab's tab): brought up to date when shown
        old = self.map
        mm = self.map = memmap.refresh(resume, old, self.bins)
        rebuilt = mm is not old
        if rebuilt:
            self._static(mm)
        pending, restored = mm.split(resume.runtime.copied)
        self._mark(resume, mm)
        if not rebuilt and self._split is not None and np.array_equal(restored, self._split[1]):
            self.changed.data = dict(left=[], right=[], bottom=[], top=[])
            self._header(resume)
            return
        moved = np.flatnonzero(restored != self._split[1]) if self._split is not None and not rebuilt else None
        g = self._geometry
        self.changed.data = {k: g[k][moved if moved is not None else []] for k in ("left", "right", "bottom", "top")}
        self._split = (pending, restored)
        disp = mm.display(pending, restored)
        has = mm.pblist_total > 0
        frac = np.where(has, restored / np.maximum(mm.pblist_total, 1), 0.0)
        idx = np.flatnonzero(has)
        # whole data, never a Bokeh patch: BokehJS echoes patches back to the kernel, and a
        # late echo would put an older value back into the kernel's copy of the source
        copy = self._copy_text.astype(object)
        for b in idx.tolist():
            copy[b] = f"{pending[b]} pending, {restored[b]} restored"
        data = dict(g)
        data.update(color=_COLORS[disp], hatch=_HATCHES[disp], label=_LABELS[disp], range=self._range_text,
                    roles=self._roles_text, copy=copy.astype(str), contents=self._contents,
                    pending=pending, restored=restored, bin=np.arange(mm.nbins))
        self.cells.data = data
        self.progress.data = dict(left=g["left"][idx], right=g["left"][idx] + 0.9 * frac[idx],
                                  bottom=g["bottom"][idx], top=g["bottom"][idx] + 0.25)
        self._header(resume)

    def _static(self, mm: memmap.MemoryMap) -> None:
        b = np.arange(mm.nbins)
        col, row = b % COLUMNS, b // COLUMNS
        self._geometry = dict(left=col.astype(float) + 0.05, right=col + 0.95, top=-row.astype(float) - 0.05,
                              bottom=-row - 0.95)
        starts, stops = mm.starts, mm.stops
        self._range_text = np.array([f"{s:#x}-{e - 1:#x} ({e - s} frames, {s * 4096 >> 20}-{e * 4096 >> 20} MiB)"
                                     for s, e in zip(starts.tolist(), stops.tolist())], dtype=str)
        self._roles_text = np.array([mm.describe_roles(i) if mm.roles[i] else "-" for i in range(mm.nbins)],
                                    dtype=str)
        self._contents = np.array([_contents_text(mm.counts[i]) for i in range(mm.nbins)], dtype=str)
        self._copy_text = np.full(mm.nbins, "nothing to copy", dtype=object)
        rows = -(-mm.nbins // COLUMNS)
        self.figure.y_range.start = -rows - 0.2
        self.figure.y_range.end = 0.2
        every = max(1, rows // 8)
        ticks = list(range(0, rows, every))
        self.figure.yaxis.ticker = FixedTicker(ticks=[-r - 0.5 for r in ticks])
        self.figure.yaxis.major_label_overrides = {-r - 0.5: f"{r * COLUMNS * mm.frames_per_bin:#x}" for r in ticks}

    def _mark(self, resume: Resume, mm: memmap.MemoryMap) -> None:
        """A star on the bin of each frame the copy overwrote under a sleeping CPU."""
        seen: dict[int, str] = {}
        for e in resume.overwrites():
            seen[e.data["pfn"]] = (f"frame {e.data['pfn']:#x}: cpu{e.cpu}'s table, overwritten at "
                                   f"t={e.t / 1e6:.6f} ms")
        if len(seen) == len(self.marks.data["x"]):
            return
        bins = [mm.bin_of(p) for p in seen]
        self.marks.data = dict(x=[b % COLUMNS + 0.5 for b in bins], y=[-(b // COLUMNS) - 0.5 for b in bins],
                               text=list(seen.values()))

    def _header(self, resume: Resume) -> None:
        mm = self.map
        copied, total = resume.runtime.copied, len(resume.loaded.pblist)
        pct = 100 * copied / total if total else 100
        self.header.value = (f"<b>Physical memory</b> <span class='lab-note'>{mm.nr_frames} frames in "
                             f"{mm.nbins} bins of {mm.frames_per_bin} | copy: {copied} of {total} pblist "
                             f"pages ({pct:.1f}%), in descending frame order | the black bar in a bin: "
                             "its share of pblist frames already restored; a star: a table overwritten "
                             "under a sleeping CPU</span>")

    # -- selection ----------------------------------------------------------------------------
    def _on_tap(self, attr: str, old: list[int], new: list[int]) -> None:
        if new:
            self.select_bin(int(new[0]))

    @guarded("message")
    def select_bin(self, b: int) -> int:
        """Show bin ``b``; returns the frame shown in the page walk (via on_select)."""
        mm = self.map
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 0 <= b < mm.nbins:
            raise ValueError(f"there is no bin {b!r}; allowed: 0 to {mm.nbins - 1}")
        pfn = int(mm.interesting[b])
        self.selected_pfn = pfn
        fv = self.resume.frame(pfn)
        self.info.value = (f"<b>bin {b}</b>: frames {html.escape(self._range_text[b])}<br>"
                           f"roles: {html.escape(self._roles_text[b])}<br>contents: {html.escape(self._contents[b])}"
                           f"<br>shown in the page walk: frame {pfn:#x} ({html.escape(fv.restore_role or 'no role')},"
                           f" {fv.status}) at <code>{direct_va(pfn):#x}</code>")
        self.message.clear()
        if self.on_select is not None:
            self.on_select(pfn)
        return pfn

    def check(self, resume: Resume) -> list[str]:
        """Mismatches with the model (the map is brought up to date first if hidden)."""
        live, self.live = self.live, True
        self.update(resume)
        self.live = live
        bad = []
        mm = memmap.refresh(resume, self.map, self.bins)
        d = self.cells.data
        if len(d["pending"]) != mm.nbins:
            bad.append(f"memmap: {len(d['pending'])} cells, {mm.nbins} bins")
        pending, restored = mm.split(resume.runtime.copied)
        if int(np.sum(d["pending"])) != int(pending.sum()) or int(np.sum(d["restored"])) != int(restored.sum()):
            bad.append(f"memmap: pending/restored {int(np.sum(d['pending']))}/{int(np.sum(d['restored']))}, "
                       f"model {int(pending.sum())}/{int(restored.sum())}")
        if int(np.sum(d["restored"])) != resume.runtime.copied:
            bad.append(f"memmap: {int(np.sum(d['restored']))} restored, model copied {resume.runtime.copied}")
        return bad
