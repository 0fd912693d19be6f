"""Every lesson in a real Chromium, through JupyterLab: Run All from a fresh kernel with no
widget error and no traceback, every code cell run, every exercise rendered; and, in
00-welcome, one exercise answered as a learner does (a wrong answer shows feedback and a hint,
the right one shows success).

One JupyterLab server serves all notebooks (the `lab_server` fixture of conftest.py); each
notebook gets a fresh page and its own kernel, shut down afterwards. A notebook that has a
browser test module of its own (`NOTEBOOK = "notebooks/..."` in another test_*.py here, e.g.
04-the-bug) is run there, with more checks, and not again here. Everything waits on conditions
in the page (jupyterlab_ui.py), never on a fixed delay.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NOTEBOOK = "notebooks/00-welcome.ipynb"  # what the lab_server fixture opens first

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def covered_elsewhere() -> set[str]:
    """Notebooks that another browser test module in this folder drives."""
    out = set()
    for path in HERE.glob("test_*.py"):
        if path.name == Path(__file__).name:
            continue
        match = re.search(r'^NOTEBOOK\s*=\s*"([^"]+)"', path.read_text(encoding="utf-8"), re.M)
        if match:
            out.add(Path(match.group(1)).name)
    return out


NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb") if p.name not in covered_elsewhere())


def exercise_cells(path: Path) -> int:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return sum("exercise" in c.get("metadata", {}).get("tags", []) for c in nb["cells"])


def shut_down_kernels(server) -> None:
    """Stop every kernel of the server (one per notebook opened), so they do not pile up."""
    base, token = server.base_url, server.token
    with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=10) as response:
        kernels = json.load(response)
    for kernel in kernels:
        request = urllib.request.Request(f"{base}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


@pytest.fixture
def ui(page, artifacts, lab_server):
    from jupyterlab_ui import NotebookUI

    yield NotebookUI(page, artifacts)
    shut_down_kernels(lab_server)


def open_and_run(ui, server, name: str) -> Path:
    """Open, Run All, then prove in the kernel that every code cell ran: a new cell (run after
    everything Run All queued) prints the kernel's execution count."""
    from jupyterlab_ui import code_cell_count

    path = REPO / "notebooks" / name
    total = code_cell_count(path)
    ui.open(f"{server.base_url}/lab/tree/notebooks/{name}?token={server.token}", name)
    ui.ensure_kernel()
    ui.run_all(total)
    assert ui.errors() == [], f"errors after Run All of {name}"
    out = ui.run_code_in_new_cell("print('RUN-ALL-DONE', get_ipython().execution_count)", "RUN-ALL-DONE")
    ran = int(out.split("RUN-ALL-DONE", 1)[1].split()[0]) - 1  # executions before this cell
    assert ran >= total, f"{name}: the kernel ran {ran} cells, the notebook has {total} code cells"
    return path


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_all_in_chromium(lab_server, page, ui, name):
    path = REPO / "notebooks" / name
    original = path.read_bytes()
    started = time.monotonic()
    open_and_run(ui, lab_server, name)
    shown = ui.panel.locator(".lab-exercise")
    if exercise_cells(path):
        assert shown.count() >= 3, f"{name}: {shown.count()} exercise widget(s) rendered, want at least 3"
        shown.first.scroll_into_view_if_needed()
        shown.first.get_by_role("button", name="Check", exact=True).wait_for(state="visible")
    js_errors = [line for line in page.console_lines if line.startswith(("[pageerror]", "[error]"))]
    assert js_errors == [], f"JavaScript errors in the page ({name}):\n" + "\n".join(js_errors)
    if name == ANSWERED:
        answer_an_exercise(ui)
    assert path.read_bytes() == original, f"{name} was modified while the test ran"
    print(f"\n{name}: {ui.timings} s; whole test {time.monotonic() - started:.1f} s")


ANSWERED = "00-welcome.ipynb"  # its first exercise is answered, after Run All (no second run)


def answer_an_exercise(ui) -> None:
    """00-welcome, exercise 0.1 (the PML4 index of the report's address) as a learner answers
    it: a wrong answer shows feedback and a hint, the right one success, then the solution."""
    from lab.hw import split
    from playwright.sync_api import expect

    ex = ui.panel.locator(".lab-exercise").first
    ex.scroll_into_view_if_needed()
    answer_box = ex.locator(".lab-exercise-input input")
    feedback = ex.locator(".lab-exercise-feedback")
    right = split(0xFFFF8800BA800010)[0]

    answer_box.fill(str(right + 1))
    ex.get_by_role("button", name="Check", exact=True).click()
    expect(feedback).to_have_class(re.compile(r"\blab-exercise-wrong\b"), timeout=60_000)
    expect(feedback).to_contain_text("too high")
    ex.get_by_role("button", name="Hint", exact=True).click()
    expect(ex.locator(".lab-exercise-hints")).to_contain_text("Hint 1 of", timeout=60_000)
    expect(ex.locator(".lab-exercise-hints")).not_to_contain_text("Hint 2 of")

    answer_box.fill(str(right))
    ex.get_by_role("button", name="Check", exact=True).click()
    expect(feedback).to_have_class(re.compile(r"\blab-exercise-correct\b"), timeout=60_000)
    expect(feedback).to_contain_text("Correct")
    ex.get_by_role("button", name="Show solution", exact=True).click()
    expect(ex.locator(".lab-exercise-solution")).to_contain_text(str(right), timeout=60_000)
    ui.screenshot("exercise-answered")
    assert ui.errors() == [], "errors after answering the exercise"
