"""Fixtures for the browser test: JupyterLab (scripts/lab.py) and Chromium.

* `lab_server`: JupyterLab on 127.0.0.1, a free port, a random token, a
  fresh workspace (scripts/lab.py) and a fresh user-settings directory with
  autosave off, so running the notebook in the browser never writes it
  back into the repository. Its log goes to test-artifacts/.
  `stock_lab_server`: the same untuned (jupyter_server's own kernel websocket,
  the busy favicon on).
* `chromium`: the system Chromium (/usr/bin/chromium) through Playwright.
  Where there is none (or Playwright is missing) the test is skipped, and the
  reason says why; but with CI set, a missing browser fails the test.
* `page`: a new page; its console goes to test-artifacts/, and a screenshot
  is taken there when the test fails.

Both processes are stopped by finalizers, whether the test passed or not.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # we may be root (CI containers); the sandbox refuses root
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # The machine has no network: without these Chromium keeps opening
    # connections of its own, which get refused many at a time.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# User settings for the test's JupyterLab, in a temporary directory, so the
# user's own settings cannot change what the test sees and nothing is saved.
LAB_SETTINGS = {
    # Running the notebook must not write outputs into the committed file.
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    # No news or update toasts over the page (and no requests for them).
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False,
    },
}


def ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def no_browser_reason() -> str | None:
    """Why there is no browser to drive here, or None when there is one."""
    reasons = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        reasons.append(f"the playwright package is not importable ({error}; it is in the [test] extra)")
    if not os.access(CHROMIUM, os.X_OK):
        reasons.append(f"{CHROMIUM} is missing (as root, `make test` installs it; "
                       "otherwise: sudo apt-get install chromium)")
    return "; ".join(reasons) or None


def load_launcher():
    """scripts/lab.py, imported under another name: importing it as `lab`
    would shadow the `lab` package for every other test in the session."""
    name = "hibernation_lab_launcher"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "lab.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("browser-*"):  # what is there is from this run only
        old.unlink()
    return ARTIFACTS


@pytest.fixture(scope="session")
def chromium(artifacts):
    reason = no_browser_reason()
    if reason:
        if ci():
            pytest.fail(f"CI is set, and there is no browser for the browser test: {reason}")
        pytest.skip(f"no browser to drive: {reason}")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        # Playwright gives each launch a new, empty --user-data-dir.
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=60_000,
        )
    except BaseException:
        playwright.stop()
        raise
    yield browser
    try:
        browser.close()
    finally:
        playwright.stop()


def _lab_server(artifacts: Path, notebook: str, tuned: bool, log_name: str):
    """JupyterLab via the launcher, with the test's settings; yields it, stops it."""
    launcher = load_launcher()
    settings = Path(tempfile.mkdtemp(prefix="hibernation-lab-settings-"))
    for rel, values in LAB_SETTINGS.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    log = open(artifacts / log_name, "w", encoding="utf-8")
    saved = {k: os.environ.get(k) for k in ("JUPYTERLAB_SETTINGS_DIR", "PYTHONPATH")}
    os.environ["JUPYTERLAB_SETTINGS_DIR"] = str(settings)  # start_lab passes our environment on
    # the kernel runs in notebooks/: without this, `import widgets` finds whatever checkout the
    # environment was installed from (an editable install of another worktree), not this one
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else []))
    try:
        server = launcher.start_lab(notebook=notebook, ready_timeout=120, log=log, tuned=tuned)
    except BaseException:
        log.close()
        shutil.rmtree(settings, ignore_errors=True)
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            log.close()
            shutil.rmtree(settings, ignore_errors=True)


@pytest.fixture(scope="module")
def lab_server(artifacts, request):
    """A JupyterLab server for this module's notebook (the module sets
    NOTEBOOK to a path relative to the repository), as `make lab` starts it."""
    notebook = getattr(request.module, "NOTEBOOK", "notebooks/00-welcome.ipynb")
    yield from _lab_server(artifacts, notebook, True, "browser-jupyterlab.log")


@pytest.fixture
def stock_lab_server(artifacts, request):
    """The same, untuned: jupyter_server's own kernel websocket (Nagle's algorithm on) and the
    busy favicon on, as a JupyterLab that `make lab` did not start has (scripts/lab.py)."""
    notebook = getattr(request.module, "NOTEBOOK", "notebooks/00-welcome.ipynb")
    yield from _lab_server(artifacts, notebook, False, "browser-jupyterlab-stock.log")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def page(chromium, artifacts, request):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"[{msg.type}] {msg.text}"))
    page.on("pageerror", lambda error: console.append(f"[pageerror] {error}"))
    page.console_lines = console  # "[type] text" lines, for the test's own checks
    yield page
    try:
        failed = any(getattr(request.node, f"rep_{when}", None) is not None
                     and getattr(request.node, f"rep_{when}").failed for when in ("setup", "call"))
        if failed:
            try:
                page.screenshot(path=str(artifacts / f"browser-failure-{request.node.name}.png"),
                                full_page=True, timeout=15_000)
            except Exception as error:  # a dead page must not hide the real failure
                print(f"(no failure screenshot: {error})")
        (artifacts / f"browser-console-{request.node.name}.log").write_text(
            "\n".join(console) + "\n", encoding="utf-8")
    finally:
        context.close()
