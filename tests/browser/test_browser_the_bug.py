"""notebooks/04-the-bug.ipynb in a real Chromium, through JupyterLab.

Starts JupyterLab (scripts/lab.py), opens the notebook, runs all cells,
starts the first lab (`lab`) over with "Reset" (the notebook's own cells have
already stepped it to the crash), makes the crash happen with "Step to next
fault" and checks what the page shows:
the faulting CPU's card with the oops at ffff8800ba800010, the page walk
with its failing entry marked, and no error anywhere. Then 20 fast clicks on
"Step" must all arrive, the kernel must have raised nothing, and the Bokeh
figures' data in the kernel must be what the model says.

It also measures the click-to-render latency of "Step" (printed, and written
to test-artifacts/browser-latency.json); benchmarks hold the target, the
test does not assert on time.

Screenshots go to test-artifacts/ (after load, after the fault, after the
clicks, and on failure), with the page's console and JupyterLab's log.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from kernel_checks import CHECK, CHECK_MARKER, HOOK, HOOK_MARKER

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = "notebooks/04-the-bug.ipynb"  # also read by the lab_server fixture
NOTEBOOK_FILE = REPO / NOTEBOOK

pytestmark = [
    pytest.mark.browser,
    # Server start, first load and Run All on a 2-core machine: more than
    # the 300 s `make test` gives one test by default.
    pytest.mark.timeout(600),
    pytest.mark.skipif(not NOTEBOOK_FILE.is_file(), reason=f"{NOTEBOOK} does not exist yet"),
]
FAULT_ADDRESS = "ffff8800ba800010"
FAST_CLICKS = 20
LATENCY_CLICKS = 10
LATENCY_TARGET_MS = 300  # printed next to the figure; never asserted here


@pytest.fixture
def notebook_ui(page, artifacts):
    from jupyterlab_ui import NotebookUI

    return NotebookUI(page, artifacts)


def test_the_bug_notebook_in_chromium(lab_server, page, notebook_ui, artifacts):
    # Imported here: where Playwright is missing, the fixtures skip (or fail on CI).
    from jupyterlab_ui import code_cell_count
    from playwright.sync_api import expect

    started = time.monotonic()
    original = NOTEBOOK_FILE.read_bytes()
    ui = notebook_ui

    # Load, pick the kernel, run everything.
    ui.open(lab_server.url, NOTEBOOK_FILE.name)
    ui.ensure_kernel()
    ui.run_all(code_cell_count(NOTEBOOK_FILE))
    root = ui.lab_root()
    root.wait_for(state="visible")
    ui.screenshot("1-loaded")
    assert ui.errors() == [], "errors after Run All"

    # Watch the kernel for exceptions in widget callbacks from here on.
    assert "ok" in ui.run_code_in_new_cell(HOOK, HOOK_MARKER)

    # The notebook's own cells step `lab` to the fault already: start it over
    # with Reset, so that the clicks below are what makes the crash happen.
    ui.wait_idle()
    ui.button(root, "Reset").click()
    expect(root.locator(".lab-cpu-faulted")).to_have_count(0, timeout=60_000)

    # Click-to-render latency of Step while the resume runs, one click at a time.
    ui.wait_idle()
    status_before = root.locator(".lab-status").first.inner_text()
    count = ui.step_count(root)
    live = ui.step_latencies(root, "Step", LATENCY_CLICKS)
    count += LATENCY_CLICKS
    ui.wait_step_count(root, count)

    # Make the crash happen.
    ui.wait_idle()
    ui.button(root, "Step to next fault").click()
    faulted = root.locator(".lab-cpu-faulted")
    faulted.first.wait_for(state="visible")
    faulted.first.scroll_into_view_if_needed()
    card_text = faulted.first.inner_text()
    assert FAULT_ADDRESS in card_text, f"the faulted CPU's card does not show {FAULT_ADDRESS}: {card_text!r}"
    assert faulted.first.locator("pre").count() >= 1, "the faulted card has no <pre> with the oops"
    walk_fault = root.locator(".lab-walk .lab-walk-fault")
    walk_fault.first.scroll_into_view_if_needed()
    walk_fault.first.wait_for(state="visible")
    ui.screenshot("2-fault")
    assert ui.errors() == [], "errors after Step to next fault"

    # 20 fast clicks on Step: every one must arrive and count.
    ui.wait_idle()
    count = ui.step_count(root)
    step = ui.button(root, "Step")
    step.scroll_into_view_if_needed()
    for _ in range(FAST_CLICKS):
        step.click()
    count += FAST_CLICKS
    ui.wait_step_count(root, count)
    ui.wait_idle()

    # The same latency once the run has ended (Step then only redraws).
    ended = ui.step_latencies(root, "Step", LATENCY_CLICKS)
    count += LATENCY_CLICKS
    ui.wait_step_count(root, count)
    ui.wait_idle()
    root.locator(".lab-step-count").first.scroll_into_view_if_needed()
    ui.screenshot("3-after-clicks")
    assert ui.errors() == [], "errors after the clicks on Step"
    status_after = root.locator(".lab-status").first.inner_text()

    # The kernel's side: no exception in any callback, figures match the model.
    output = ui.run_code_in_new_cell(CHECK, CHECK_MARKER)
    result = json.loads(output.split(CHECK_MARKER, 1)[1].strip().splitlines()[0])

    def summary(samples: list[dict]) -> dict:
        frame_ms = [s["frame_ms"] for s in samples]
        return {
            "median_click_to_render_ms": round(statistics.median(frame_ms), 1),
            "median_click_to_dom_ms": round(statistics.median(s["dom_ms"] for s in samples), 1),
            "max_click_to_render_ms": round(max(frame_ms), 1),
            "samples_ms": [round(x, 1) for x in frame_ms],
        }

    report = {
        "notebook": NOTEBOOK,
        "what": "Step button: click to changed .lab-step-count text, then to the next animation frame",
        "clicks": LATENCY_CLICKS,
        "target_ms": LATENCY_TARGET_MS,
        "running": {"status_before": status_before, **summary(live)},
        "ended": {"status_before": status_after, **summary(ended)},
        "phase_seconds": ui.timings,
        "kernel_dialog_answered": ui.kernel_dialog_answered,
        "test_seconds": round(time.monotonic() - started, 1),
        "kernel_check": result,
    }
    (artifacts / "browser-latency.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        f"\nStep click-to-render, median of {LATENCY_CLICKS} clicks (target {LATENCY_TARGET_MS} ms, "
        f"not asserted here): {report['running']['median_click_to_render_ms']} ms while running "
        f"(max {report['running']['max_click_to_render_ms']} ms), "
        f"{report['ended']['median_click_to_render_ms']} ms after the run ended; "
        f"phases {ui.timings} s; whole test {report['test_seconds']} s"
    )

    assert result["errors"] == [], f"the kernel raised during the clicks: {result['errors']}"
    assert result["mismatches"] == [], f"figures differ from the model: {result['mismatches']}"
    assert result["missing"] == [], f"the notebook lacks names the check expects: {result['missing']}"
    assert "t=" in status_after and result.get("phase", "") in status_after, (
        f".lab-status {status_after!r} does not show t= and the model's phase {result.get('phase')!r}")
    js_errors = [line for line in page.console_lines if line.startswith(("[pageerror]", "[error]"))]
    assert js_errors == [], "JavaScript errors in the page:\n" + "\n".join(js_errors)
    if result.get("step_requests") is not None:
        assert result["step_requests"] == count, (
            f"the kernel counted {result['step_requests']} steps asked for, the page {count}")

    # Autosave is off in the test's settings: the committed notebook is untouched.
    assert NOTEBOOK_FILE.read_bytes() == original, f"{NOTEBOOK} was modified while the test ran"
