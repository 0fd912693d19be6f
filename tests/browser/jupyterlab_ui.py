"""Driving JupyterLab 4 in Chromium with Playwright, for the browser test.

Everything here waits on a condition in the page (an element, a text, the
kernel's status), never on a fixed delay. The selectors are JupyterLab 4's
own class names (`.jp-NotebookPanel`, `.jp-Notebook-ExecutionIndicator`,
`.jp-InputPrompt`, ...) and the lab's widget contract (`.lab-root`,
`.lab-step-count`, ...).
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

from playwright.sync_api import Locator, Page

FIRST_LOAD_MS = 120_000  # the first page load compiles nothing, but a 2-core CI box is slow
KERNEL_MS = 120_000  # kernel start, and Run All of a notebook
WIDGET_MS = 60_000  # one widget round trip (click -> kernel -> rendered), with margin

# Texts that mean a widget or a cell failed. "Error displaying widget" and
# "Click to show javascript error." are ipywidgets' own error views.
ERROR_MARKERS = ("Error displaying widget", "Traceback", "Click to show javascript error")

NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"

# In the page: what the notebook's kernel is up to. 'dialog' when JupyterLab
# asks which kernel to use, 'idle' when a kernel is connected and idle,
# otherwise false (keep waiting).
_KERNEL_STATE_JS = """
(notebook) => {
  for (const d of document.querySelectorAll('.jp-Dialog')) {
    if (/select kernel/i.test(d.textContent)) return 'dialog';
  }
  const panel = document.querySelector(notebook);
  if (!panel) return false;
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const name = panel.querySelector('.jp-KernelName, [data-jp-item-name="kernelName"]');
  const nameText = name ? name.textContent.trim() : '';
  if (indicator && indicator.dataset.status === 'idle' && nameText && !/no kernel/i.test(nameText)) {
    return 'idle';
  }
  return false;
}
"""

# In the page: true when every code cell that has source has run (its prompt
# shows a number; for a cell whose input is collapsed, its output prompt, so
# such a cell must end in a value), none is queued or running ([*]) and the
# kernel is idle;
# 'error' as soon as any output shows one of ERROR_MARKERS (Run All stops at
# the first error, so waiting longer would only time out).
_RUN_DONE_JS = """
([notebook, expected, markers]) => {
  const panel = document.querySelector(notebook);
  if (!panel) return false;
  for (const out of panel.querySelectorAll('.jp-OutputArea-output')) {
    const text = out.textContent || '';
    if (markers.some((m) => text.includes(m))) return 'error';
  }
  const prompts = [...panel.querySelectorAll('.jp-CodeCell')].map((cell) => {
    const input = cell.querySelector('.jp-InputPrompt');
    const text = input ? input.textContent.trim() : '';
    if (text || !cell.querySelector('.jp-Placeholder-prompt')) return text;
    // A collapsed input (metadata jupyter.source_hidden) shows an empty
    // placeholder prompt; its output prompt carries the execution count.
    const out = cell.querySelector('.jp-OutputPrompt');
    return out ? out.textContent.trim() : '';
  });
  if (prompts.some((p) => p.includes('*'))) return false;
  const done = prompts.filter((p) => /\\[\\d+\\]/.test(p)).length;
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const idle = indicator && indicator.dataset.status === 'idle';
  return done >= expected && idle ? 'done' : false;
}
"""

# In the page: click `button` (an element handle) `n` times, each time
# waiting until the text of the `.lab-step-count` inside `root` changes, and
# return the milliseconds from each click to that change and to the next
# animation frame after it (when the browser paints the change).
_STEP_LATENCY_JS = """
async ([root, button, n, timeoutMs]) => {
  const countText = () => {
    const el = root.querySelector('.lab-step-count');
    return el ? el.textContent.trim() : null;
  };
  const samples = [];
  for (let i = 0; i < n; i++) {
    const before = countText();
    const sample = await new Promise((resolve, reject) => {
      let mutated = null;
      const timer = setTimeout(() => {
        observer.disconnect();
        reject(new Error(`.lab-step-count stayed ${JSON.stringify(before)} for ${timeoutMs} ms after click ${i + 1}`));
      }, timeoutMs);
      const observer = new MutationObserver(() => {
        if (mutated !== null || countText() === before) return;
        mutated = performance.now() - t0;
        observer.disconnect();
        clearTimeout(timer);
        requestAnimationFrame(() => resolve({dom_ms: mutated, frame_ms: performance.now() - t0, text: countText()}));
      });
      // The whole root: the count's node may be re-rendered, not just edited.
      observer.observe(root, {subtree: true, childList: true, characterData: true, attributes: true});
      const t0 = performance.now();
      button.click();
    });
    samples.push(sample);
  }
  return samples;
}
"""


def code_cell_count(path: Path) -> int:
    """Code cells with source in the .ipynb at `path` (the ones Run All numbers)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    count = 0
    for cell in nb.get("cells", []):
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        if cell.get("cell_type") == "code" and source.strip():
            count += 1
    return count


def one_line(code: str) -> str:
    """`code` as a single line that runs it: typing several lines into
    CodeMirror would be re-indented by the editor."""
    blob = base64.b64encode(code.encode()).decode()
    return f"exec(__import__('base64').b64decode('{blob}').decode())"


class NotebookUI:
    """One notebook, open in JupyterLab, in one Playwright page."""

    def __init__(self, page: Page, artifacts: Path):
        self.page = page
        self.artifacts = artifacts
        self.timings: dict[str, float] = {}
        self.kernel_dialog_answered: bool | None = None

    # -- helpers -----------------------------------------------------------
    @property
    def panel(self) -> Locator:
        return self.page.locator(NOTEBOOK)

    def screenshot(self, name: str) -> Path:
        path = self.artifacts / f"browser-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def _timed(self, label: str, start: float) -> None:
        self.timings[label] = round(time.monotonic() - start, 2)

    # -- opening -----------------------------------------------------------
    def open(self, url: str, filename: str) -> None:
        """Load `url` (the notebook's lab/tree URL with its token) with a
        reset workspace, and wait until the notebook's cells are shown."""
        start = time.monotonic()
        sep = "&" if "?" in url else "?"
        self.page.goto(f"{url}{sep}reset", wait_until="domcontentloaded", timeout=FIRST_LOAD_MS)
        tab = self.page.locator(".jp-MainAreaWidget .lm-TabBar-tab, #jp-main-dock-panel .lm-TabBar-tab")
        tab.filter(has_text=filename).first.wait_for(state="visible", timeout=FIRST_LOAD_MS)
        self.panel.locator(".jp-Cell").first.wait_for(state="visible", timeout=FIRST_LOAD_MS)
        self._timed("open", start)

    def ensure_kernel(self) -> None:
        """Wait for the notebook's kernel to be idle, answering JupyterLab's
        "Select Kernel" dialog with its default (Python 3) if it asks."""
        start = time.monotonic()
        deadline = start + KERNEL_MS / 1000
        answered = False
        for _ in range(3):
            left_ms = max(1_000, int((deadline - time.monotonic()) * 1000))
            state = self.page.wait_for_function(_KERNEL_STATE_JS, arg=NOTEBOOK, timeout=left_ms,
                                                polling=100).json_value()
            if state == "idle":
                break
            dialog = self.page.locator(".jp-Dialog").filter(has_text=re.compile("select kernel", re.I))
            choice = dialog.locator("select")
            if choice.count():
                options = [o.strip() for o in choice.locator("option").all_inner_texts()]
                python = [o for o in options if o.startswith("Python 3")]
                if python:
                    choice.select_option(label=python[0])
            dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
            dialog.wait_for(state="detached", timeout=KERNEL_MS)
            answered = True
        else:
            raise AssertionError("JupyterLab kept asking which kernel to use")
        self.kernel_dialog_answered = answered
        self._timed("kernel", start)

    # -- running -----------------------------------------------------------
    def run_all(self, expected_cells: int) -> None:
        """Run > Run All Cells, then wait until all `expected_cells` code
        cells have run and the kernel is idle (or an error shows)."""
        start = time.monotonic()
        self.page.locator("#jp-MainMenu").get_by_role("menuitem", name="Run", exact=True).click()
        self.page.locator(".lm-Menu").get_by_role("menuitem", name="Run All Cells", exact=True).click()
        state = self.page.wait_for_function(
            _RUN_DONE_JS, arg=[NOTEBOOK, expected_cells, list(ERROR_MARKERS)],
            timeout=KERNEL_MS, polling=200,
        ).json_value()
        self._timed("run_all", start)
        if state == "error":
            raise AssertionError("Run All Cells showed an error:\n" + "\n---\n".join(self.errors()))

    def wait_idle(self, timeout_ms: int = KERNEL_MS) -> None:
        self.page.wait_for_function(
            """(nb) => { const i = document.querySelector(nb + ' .jp-Notebook-ExecutionIndicator');
                         return i && i.dataset.status === 'idle'; }""",
            arg=NOTEBOOK, timeout=timeout_ms, polling=100,
        )

    def errors(self) -> list[str]:
        """Texts of outputs that show an error, and of non-empty `.lab-error`
        elements (the widgets' own error display)."""
        return self.page.evaluate(
            """([nb, markers]) => {
                 const panel = document.querySelector(nb);
                 if (!panel) return ['no notebook panel'];
                 const found = [];
                 for (const out of panel.querySelectorAll('.jp-OutputArea-output')) {
                   const text = out.innerText || out.textContent || '';
                   for (const m of markers) {
                     const at = text.indexOf(m);
                     if (at < 0) continue;
                     // The text around the first marker: an output can hold a whole lab.
                     found.push(`${m}: ...${text.slice(Math.max(0, at - 300), at + 1500)}...`);
                   }
                 }
                 for (const el of panel.querySelectorAll('.lab-error')) {
                   const text = (el.textContent || '').trim();
                   if (text) found.push('.lab-error: ' + text.slice(0, 4000));
                 }
                 return found;
               }""",
            [NOTEBOOK, list(ERROR_MARKERS)],
        )

    def run_code_in_new_cell(self, code: str, marker: str, timeout_ms: int = WIDGET_MS) -> str:
        """Add a code cell at the end of the notebook, type `code` into it
        (as one line), run it with Shift+Enter, and return the text of its
        output once that contains `marker`."""
        cells = self.panel.locator(".jp-Notebook > .jp-Cell, .jp-WindowedPanel-viewport > .jp-Cell")
        before = cells.count()
        last = cells.nth(before - 1)
        last.scroll_into_view_if_needed()
        # Select the last cell in command mode (a click on its prompt does not
        # enter the editor), then B: insert a cell below and select it.
        last.locator(".jp-InputPrompt").first.click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("b")
        new = cells.nth(before)
        new.wait_for(state="attached", timeout=timeout_ms)
        editor = new.locator(".cm-content")
        editor.click()
        self.page.keyboard.insert_text(one_line(code))
        self.page.keyboard.press("Shift+Enter")
        output = new.locator(".jp-OutputArea-output").filter(has_text=marker)
        try:
            output.first.wait_for(state="attached", timeout=timeout_ms)
        except Exception:
            texts = new.locator(".jp-OutputArea-output").all_inner_texts()
            raise AssertionError(f"the check cell printed no {marker!r}; its output: {texts!r}") from None
        return output.first.inner_text()

    # -- the lab's widgets -------------------------------------------------
    def lab_root(self, index: int = 0) -> Locator:
        return self.panel.locator(".lab-root").nth(index)

    def button(self, root: Locator, name: str) -> Locator:
        return root.get_by_role("button", name=name, exact=True)

    def step_count(self, root: Locator) -> int:
        text = root.locator(".lab-step-count").first.inner_text()
        match = re.search(r"\d+", text)
        assert match, f".lab-step-count shows no number: {text!r}"
        return int(match.group())

    def wait_step_count(self, root: Locator, expected: int, timeout_ms: int = WIDGET_MS) -> None:
        handle = root.element_handle()
        self.page.wait_for_function(
            """([root, want]) => { const el = root.querySelector('.lab-step-count');
                                  const m = el && el.textContent.match(/\\d+/);
                                  return m && Number(m[0]) === want; }""",
            arg=[handle, expected], timeout=timeout_ms, polling="raf",
        )

    def step_latencies(self, root: Locator, name: str, n: int, timeout_ms: int = WIDGET_MS) -> list[dict]:
        """Click the button `name` in `root` n times, one after another,
        timing each from click to the changed `.lab-step-count` in the page."""
        button = self.button(root, name)
        button.scroll_into_view_if_needed()
        return self.page.evaluate(
            _STEP_LATENCY_JS,
            [root.element_handle(), button.element_handle(), n, timeout_ms],
        )
