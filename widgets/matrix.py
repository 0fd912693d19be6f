"""The fixes-by-hazards matrix of ``lab.compare`` as a Bokeh heatmap: one cell per (fix,
hazard), coloured by the failure rate, with the counts and the Wilson 95% interval written in
the cell (readable without colour and in grayscale); the hover adds the outcome counts, the
costs, the worst outcome and the command that reproduces it.  A cell where the fix does not
apply is hatched, labelled "n/a" and says why in the hover.

    df = lab.compare.compare("workshop", seeds=range(8))
    MatrixView(df)                       # in a notebook (jupyter_bokeh, like the other views)
"""
from __future__ import annotations

import html
import math
from typing import Any

import ipywidgets as ipw
from bokeh.models import ColumnDataSource, FactorRange, HoverTool, LinearColorMapper, ColorBar
from bokeh.plotting import figure
from jupyter_bokeh import BokehModel

from lab.compare import matrix
from lab.scenario import OUTCOMES

from ._common import MessageBox, check_int, guarded

#: light to dark (0 % to 100 % failures): light cells take black text, dark ones white
PALETTE = ("#fff5eb", "#fee6ce", "#fdd0a2", "#fdae6b", "#fd8d3c", "#f16913", "#d94801", "#a63603", "#7f2704")
NA_COLOR = "#ffffff"
NA_HATCH = "/"
DARK_FROM = 0.55  # failure rate from which a cell's text is white

COLUMNS = ("fix", "hazard", "applies", "rate", "color", "text_color", "hatch", "counts", "interval", "ci",
           "outcomes", "worst", "command", "reason", "costs", "description")


def _fmt_cost(name: str, v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return f"{name} {v:,.1f}" if isinstance(v, float) and v != int(v) else f"{name} {int(v):,}"


def _color(rate: float) -> str:
    i = min(len(PALETTE) - 1, int(rate * len(PALETTE)))
    return PALETTE[i]


def cell_data(df) -> dict[str, list[Any]]:  # noqa: ANN001 - the DataFrame of lab.compare.compare
    """The heatmap's columns, one entry per (fix, hazard) in the order compared: what the view
    draws and what its hover shows (tested without a browser)."""
    fixes = list(matrix(df).index)
    hazards = list(matrix(df).columns)
    out: dict[str, list[Any]] = {k: [] for k in COLUMNS}
    outcomes = [c for c in OUTCOMES if c in df.columns]
    for fix in fixes:
        for hz in hazards:
            row = df.loc[(fix, hz)]
            applies = bool(row["applies"])
            out["fix"].append(fix)
            out["hazard"].append(hz)
            out["applies"].append(applies)
            out["description"].append(str(row.get("description", "")))
            if applies:
                k, n = int(row["failures"]), int(row.get("judged", row["n"]))  # unfinished runs judge nothing
                lo, hi = float(row["ci_low"]), float(row["ci_high"])
                rate = k / n if n else 0.0
                out["rate"].append(rate)
                out["color"].append(_color(rate))
                out["text_color"].append("#ffffff" if rate >= DARK_FROM else "#000000")
                out["hatch"].append(" ")
                out["counts"].append(f"{k}/{n}")
                out["interval"].append(f"[{lo * 100:.0f}-{hi * 100:.0f}%]")
                out["ci"].append(f"{rate * 100:.1f}% (Wilson 95%: {lo * 100:.1f}-{hi * 100:.1f}%)")
                out["outcomes"].append(", ".join(f"{o} {int(row[o])}" for o in outcomes if int(row[o])))
                out["worst"].append(f"{row['worst']} (seed {int(row['worst_seed'])})")
                out["command"].append(str(row["command"]))
                out["reason"].append("")
                costs = [_fmt_cost(c.replace("_", " "), row.get(c)) for c in
                         ("wakeups", "wakeups_per_ms", "awake_ns", "ipis", "safe_pages", "sharing_cpus")]
                out["costs"].append(", ".join(c for c in costs if c) or "-")
            else:
                out["rate"].append(float("nan"))
                out["color"].append(NA_COLOR)
                out["text_color"].append("#000000")
                out["hatch"].append(NA_HATCH)
                out["counts"].append("n/a")
                out["interval"].append("does not apply")
                out["ci"].append("-")
                out["outcomes"].append("-")
                out["worst"].append("-")
                out["command"].append("-")
                out["reason"].append(str(row["reason"]))
                out["costs"].append("-")
    return out


class MatrixView(ipw.VBox):
    """The heatmap of ``df`` (``lab.compare.compare``'s result).  ``.cells`` is its
    ColumnDataSource (see ``cell_data``), ``.figure`` the Bokeh figure; ``update(df)`` draws
    another result."""

    def __init__(self, df, width: int | None = None, cell_width: int = 104, cell_height: int = 44) -> None:  # noqa: ANN001
        if width is not None:
            check_int("width", width, 200, 4000)
        check_int("cell_width", cell_width, 40, 400)
        check_int("cell_height", cell_height, 20, 200)
        if not hasattr(df, "columns") or "applies" not in df.columns:
            raise ValueError(f"df must be the DataFrame of lab.compare.compare (with an 'applies' column), "
                             f"got {type(df).__name__}")
        self.cells = ColumnDataSource(name="matrix-cells", data={k: [] for k in COLUMNS})
        self.message = MessageBox()
        self.df = df
        data = cell_data(df)
        fixes = list(dict.fromkeys(data["fix"]))
        hazards = list(dict.fromkeys(data["hazard"]))
        width = width or 150 + cell_width * len(hazards)
        fig = figure(width=width, height=110 + cell_height * len(fixes), tools="", toolbar_location=None,
                     x_range=FactorRange(*hazards), y_range=FactorRange(*reversed(fixes)), x_axis_location="above",
                     title=self._title(df))
        fig.grid.visible = False
        fig.axis.axis_line_color = None
        fig.axis.major_tick_line_color = None
        fig.xaxis.major_label_orientation = 0.45
        fig.xaxis.major_label_text_font_size = "9pt"
        fig.yaxis.major_label_text_font_size = "10pt"
        rects = fig.rect(x="hazard", y="fix", width=0.96, height=0.92, fill_color="color", line_color="#999999",
                         hatch_pattern="hatch", hatch_color="#9e9e9e", hatch_alpha=0.6, source=self.cells)
        fig.text(x="hazard", y="fix", text="counts", text_color="text_color", text_align="center",
                 text_baseline="bottom", text_font_size="10pt", text_font_style="bold", source=self.cells)
        fig.text(x="hazard", y="fix", text="interval", text_color="text_color", text_align="center",
                 text_baseline="top", text_font_size="8pt", source=self.cells)
        fig.add_tools(HoverTool(renderers=[rects], tooltips=[
            ("fix", "@fix"), ("hazard", "@hazard"), ("failures", "@counts"), ("failure rate", "@ci"),
            ("outcomes", "@outcomes"), ("worst", "@worst"), ("reproduce", "@command"), ("costs (means)", "@costs"),
            ("does not apply", "@reason"), ("hazard is", "@description")]))
        mapper = LinearColorMapper(palette=list(PALETTE), low=0, high=1)
        fig.add_layout(ColorBar(color_mapper=mapper, title="failure rate", width=10, location=(0, 0)), "right")
        self.figure = fig
        self.update(df)
        self.bokeh = BokehModel(fig)
        self.legend = ipw.HTML("<span class='lab-note'>Each cell: failures/runs and the Wilson 95% interval of the "
                               "failure rate; darker = fails more often; hatched <b>n/a</b>: the fix cannot run "
                               "there (hover for why). Hover a cell for the outcomes, the costs and the command "
                               "that reproduces its worst run.</span>")
        super().__init__([self.bokeh, self.legend, self.message])
        self.add_class("lab-matrix")

    @staticmethod
    def _title(df) -> str:  # noqa: ANN001
        seeds = df.attrs.get("seeds", [])
        return f"fixes x hazards on preset {df.attrs.get('preset', '?')}, {len(seeds)} seeds per cell"

    @guarded("message")
    def update(self, df) -> None:  # noqa: ANN001
        self.df = df
        data = cell_data(df)
        self.figure.x_range.factors = list(dict.fromkeys(data["hazard"]))
        self.figure.y_range.factors = list(reversed(list(dict.fromkeys(data["fix"]))))
        self.figure.title.text = self._title(df)
        self.cells.data = data

    def cell(self, fix: str, hazard: str) -> dict[str, Any]:
        """What the view shows for one cell."""
        d = self.cells.data
        for i, (f, h) in enumerate(zip(d["fix"], d["hazard"])):
            if f == fix and h == hazard:
                return {k: d[k][i] for k in d}
        raise ValueError(f"no cell ({fix!r}, {hazard!r}); fixes: {', '.join(dict.fromkeys(d['fix']))}; "
                         f"hazards: {', '.join(dict.fromkeys(d['hazard']))}")

    def table_html(self) -> str:
        """The matrix as an HTML table (a text alternative to the heatmap)."""
        m = matrix(self.df)
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in m.columns)
        rows = "".join(f"<tr><th>{html.escape(str(f))}</th>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r)
                       + "</tr>" for f, r in m.iterrows())
        return f"<table><tr><th>fix</th>{head}</tr>{rows}</table>"
