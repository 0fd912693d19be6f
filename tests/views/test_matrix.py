"""The matrix heatmap: its data source says what the matrix says (counts, intervals, colours by
failure rate, text that contrasts with its cell, n/a cells hatched and explained), no browser."""
from __future__ import annotations

import pandas as pd
import pytest
from bokeh.models import HoverTool
from jupyter_bokeh import BokehModel

from lab import compare as cmp
from widgets.matrix import DARK_FROM, NA_HATCH, PALETTE, MatrixView, _color, cell_data

HAZARDS = {"copy stores": cmp.HAZARDS["copy stores"],
           "3 CPUs with SMT": ("does not apply anywhere", lambda c: {"cpus": 3})}


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return cmp.compare("workshop", ["mwait", "hlt"], HAZARDS, [0, 1])


@pytest.fixture(scope="module")
def view(df: pd.DataFrame) -> MatrixView:
    return MatrixView(df)


def test_one_cell_per_fix_and_hazard(view: MatrixView, df: pd.DataFrame) -> None:
    d = view.cells.data
    assert len({len(v) for v in d.values()}) == 1
    assert list(zip(d["fix"], d["hazard"])) == [(f, h) for f in ("mwait", "hlt") for h in HAZARDS]
    assert list(view.figure.x_range.factors) == list(HAZARDS)
    assert list(view.figure.y_range.factors) == ["hlt", "mwait"]  # first fix on top
    assert isinstance(view.bokeh, BokehModel)


def test_counts_intervals_and_colours(view: MatrixView, df: pd.DataFrame) -> None:
    for fix in ("mwait", "hlt"):
        row, cell = df.loc[(fix, "copy stores")], view.cell(fix, "copy stores")
        k, n = int(row["failures"]), int(row["n"])
        assert cell["counts"] == f"{k}/{n}"
        assert cell["interval"] == f"[{row['ci_low'] * 100:.0f}-{row['ci_high'] * 100:.0f}%]"
        assert "Wilson 95%" in cell["ci"] and f"{row['ci_high'] * 100:.1f}%" in cell["ci"]
        assert cell["rate"] == k / n and cell["color"] in PALETTE and cell["hatch"] == " "
        assert cell["command"] == row["command"] and str(int(row["worst_seed"])) in cell["worst"]
    # darker for a higher failure rate, and text that stays readable on it
    rates = [view.cell(f, "copy stores")["rate"] for f in ("mwait", "hlt")]
    idx = [PALETTE.index(view.cell(f, "copy stores")["color"]) for f in ("mwait", "hlt")]
    assert (rates[0] - rates[1]) * (idx[0] - idx[1]) >= 0
    for c in ("mwait", "hlt"):
        cell = view.cell(c, "copy stores")
        assert cell["text_color"] == ("#ffffff" if cell["rate"] >= DARK_FROM else "#000000")
    assert PALETTE.index(_color(0.0)) == 0 and PALETTE.index(_color(1.0)) == len(PALETTE) - 1
    assert _color(DARK_FROM) in PALETTE[len(PALETTE) // 2:]  # white text only on the darker half


def test_na_cells_are_hatched_and_say_why(view: MatrixView) -> None:
    cell = view.cell("hlt", "3 CPUs with SMT")
    assert cell["counts"] == "n/a" and cell["hatch"] == NA_HATCH and not cell["applies"]
    assert "cpus 3" in cell["reason"]


def test_hover_and_text_alternative(view: MatrixView, df: pd.DataFrame) -> None:
    hover = view.figure.select_one(HoverTool)
    names = [name for name, _ in hover.tooltips]
    assert {"failure rate", "reproduce", "does not apply", "costs (means)"} <= set(names)
    html = view.table_html()
    assert html.count("<tr>") == 3 and "n/a" in html
    fresh = cell_data(df)
    assert fresh.keys() == view.cells.data.keys()
    assert all(list(fresh[k]) == list(view.cells.data[k]) for k in fresh if k != "rate")  # rate: NaN for n/a


def test_update_draws_another_result(df: pd.DataFrame) -> None:
    v = MatrixView(df)
    sub = df.loc[[("mwait", "copy stores")]].copy()
    sub.attrs.update(df.attrs, fixes=["mwait"], hazards=["copy stores"])
    v.update(sub)
    assert v.cells.data["fix"] == ["mwait"] and list(v.figure.y_range.factors) == ["mwait"]
    assert not v.message.error
    with pytest.raises(ValueError, match="no cell"):
        v.cell("hlt", "copy stores")
