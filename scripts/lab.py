#!/usr/bin/env python3
"""Start JupyterLab on the lab's first notebook, safely.

    python scripts/lab.py [--port N] [--no-browser] [--notebook PATH]

What it always does:

* binds to 127.0.0.1 only, with token authentication (the token comes from
  JUPYTER_TOKEN if set, otherwise a fresh random one) and XSRF checks left on;
* uses a fresh, temporary workspaces directory, so a layout JupyterLab
  remembered from an earlier session cannot hide the notebook;
* adds --allow-root only when running as root (effective uid 0);
* waits until the server answers, then prints the URL with the token.

The browser test reuses it, loaded by path under another name (``import lab`` would shadow
the ``lab`` package for everything else in the process):

    spec = importlib.util.spec_from_file_location("lab_launcher", REPO / "scripts" / "lab.py")
    lab_launcher = importlib.util.module_from_spec(spec); spec.loader.exec_module(lab_launcher)
    with lab_launcher.start_lab(log=open(path, "w")) as server:
        page.goto(server.url)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import webbrowser
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_NOTEBOOK = "notebooks/00-welcome.ipynb"
DEFAULT_PORT = 8888
HOST = "127.0.0.1"


def free_port(start: int = DEFAULT_PORT, tries: int = 50) -> int:
    """The first port from `start` on that nothing listens on at HOST."""
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}..{start + tries - 1}")


def lab_command(port: int, workspaces_dir: str, notebook: str) -> list[str]:
    """The jupyter lab command line (the token is passed in the environment,
    not here, so it does not show in `ps`)."""
    cmd = [
        sys.executable, "-m", "jupyterlab",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",  # we picked the port; never drift off it
        f"--ServerApp.root_dir={REPO}",
        "--ServerApp.open_browser=False",  # we open it ourselves once it is up
        f"--LabApp.default_url=/lab/tree/{notebook}",
        f"--LabApp.workspaces_dir={workspaces_dir}",
        # The machine may have no network: don't fetch news or update checks.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd


@dataclass
class LabServer:
    process: subprocess.Popen
    port: int
    token: str
    notebook: str
    workspaces_dir: str
    base_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The notebook's URL, token included."""
        return f"{self.base_url}/lab/tree/{self.notebook}?token={self.token}"

    def ready(self) -> bool:
        request = urllib.request.Request(
            f"{self.base_url}/api/status",
            headers={"Authorization": f"token {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                json.load(response)
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with code {self.process.returncode} before it was ready"
                )
            if self.ready():
                return
            time.sleep(0.25)
        raise TimeoutError(f"jupyter lab did not answer on {self.base_url} within {timeout:.0f} s")

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workspaces_dir, ignore_errors=True)

    def __enter__(self) -> "LabServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_lab(
    port: int | None = None,
    token: str | None = None,
    notebook: str = DEFAULT_NOTEBOOK,
    ready_timeout: float = 90,
    log=None,
) -> LabServer:
    """Start JupyterLab and return once it answers /api/status.

    port: None picks 8888 or the next free one. token: None takes
    JUPYTER_TOKEN or makes a random one. log: a file to send the server's
    output to (None: this process's stdout/stderr).
    """
    token = token or os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    port = port or free_port()
    workspaces_dir = tempfile.mkdtemp(prefix="hibernation-lab-workspaces-")
    env = dict(os.environ, JUPYTER_TOKEN=token)
    env.pop("JUPYTER_TOKEN_FILE", None)
    process = subprocess.Popen(
        lab_command(port, workspaces_dir, notebook),
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        start_new_session=True,  # Ctrl-C reaches only us; we stop the server
    )
    server = LabServer(process, port, token, notebook, workspaces_dir)
    try:
        server.wait_ready(ready_timeout)
    except BaseException:
        server.stop()
        raise
    return server


def has_display() -> bool:
    """False on a Linux box with no screen, where webbrowser would fall back
    to a text browser that takes over the terminal."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=None,
                        help=f"port on {HOST} (default: {DEFAULT_PORT} or the next free one)")
    parser.add_argument("--no-browser", action="store_true",
                        help="only print the URL; don't try to open a browser")
    parser.add_argument("--notebook", default=DEFAULT_NOTEBOOK,
                        help=f"notebook to open, relative to the repo (default: {DEFAULT_NOTEBOOK})")
    parser.add_argument("--ready-timeout", type=float, default=90,
                        help="seconds to wait for the server to answer (default: 90)")
    args = parser.parse_args(argv)

    if not (REPO / args.notebook).is_file():
        print(f"warning: {args.notebook} does not exist (yet); JupyterLab will start anyway",
              file=sys.stderr)

    try:
        server = start_lab(args.port, notebook=args.notebook, ready_timeout=args.ready_timeout)
    except (RuntimeError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    print(
        "\n"
        "  The lab is running. Open this URL in your browser:\n\n"
        f"    {server.url}\n\n"
        f"  token: {server.token}\n"
        "  (bound to 127.0.0.1 only; press Ctrl-C to stop)\n",
        flush=True,
    )
    if not args.no_browser and has_display():
        webbrowser.open(server.url)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return server.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
