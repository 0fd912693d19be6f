"""notebooks/04-the-bug.ipynb used the natural way: click "Step to next" (and "Step to next
fault") first, then run the cell below; the cells must not raise (they used to:
``step_to("wake-up")`` returned None once the wake-up had passed).  The notebook's code cells
run here in order, in one namespace, with the clicks in between."""
from __future__ import annotations

import json
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "04-the-bug.ipynb"


WAKE_CELL, FAULT_CELL = 'if first("wake", lab.resume)', 'if first("fault", lab.resume)'


def run_with_clicks(clicks: list[tuple[str, str, int]]) -> dict:
    """Execute the notebook; before a cell whose source starts with ``prefix``, click the first
    lab's button ``button`` (``next_button``, ``fault_button``) ``times`` times, as a learner
    would."""
    ns: dict = {"__name__": "__lesson__"}
    clicked = set()
    for cell in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        for prefix, button, times in clicks:
            if src.startswith(prefix):
                clicked.add(prefix)
                for _ in range(times):
                    getattr(ns["lab"].stepper, button).click()
        exec(compile(src, str(NOTEBOOK), "exec"), ns)  # noqa: S102 - our own notebook
    assert clicked == {prefix for prefix, _, _ in clicks}, "a cell to click before is missing from the notebook"
    return ns


def test_the_cells_run_after_the_buttons():
    ns = run_with_clicks([(WAKE_CELL, "next_button", 2), (FAULT_CELL, "fault_button", 2)])
    lab = ns["lab"]
    assert ns["wake"].kind == "wake" and ns["fault"]["address"] == "0xffff8800ba800010"
    assert lab.resume.outcome == ns["ex_outcome"].expected()
    assert not lab.stepper.message.error


def test_the_cells_run_after_jumping_straight_to_the_fault():
    ns = run_with_clicks([(WAKE_CELL, "fault_button", 1)])
    assert ns["wake"].cpu == ns["fault"]["cpu"] and ns["wake"].t < int(ns["lab"].resume.now)
