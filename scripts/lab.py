#!/usr/bin/env python3
"""Start JupyterLab on the lab's first notebook, safely.

    python scripts/lab.py [--port N] [--no-browser] [--notebook PATH]

What it always does:

* binds to 127.0.0.1 only, with token authentication (the token comes from
  JUPYTER_TOKEN if set, otherwise a fresh random one), XSRF checks and the Host
  check on, whatever a Jupyter config file says: these are passed on the command
  line (which beats every config file), and the token in a private config
  directory (JUPYTER_CONFIG_DIR, so ~/.jupyter is not read; not on the command
  line, where `ps` would show it);
* checks after start that requests without the token, without the XSRF token
  or with a foreign Host header are refused, that the server listens on
  127.0.0.1 only, and stops with a clear message otherwise;
* uses a fresh, temporary workspaces directory, so a layout JupyterLab
  remembered from an earlier session cannot hide the notebook;
* adds --allow-root only when running as root (effective uid 0);
* tunes the lab for clicks (a kernel websocket without Nagle's algorithm, the busy
  favicon off: ``tuned``, docs/architecture.md "Tuned for clicks");
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
import http.cookiejar
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


# Security settings, on the command line: Jupyter's precedence is command line over config
# files (and among config files, JUPYTER_CONFIG_DIR over the others), so a config file in the
# user's or the system's config path cannot weaken them.
SECURITY_OPTIONS = [
    f"--ServerApp.ip={HOST}",
    "--ServerApp.disable_check_xsrf=False",
    "--ServerApp.allow_remote_access=False",
    "--ServerApp.allow_origin=",
    "--ServerApp.allow_origin_pat=",
    "--ServerApp.identity_provider_class=jupyter_server.auth.identity.PasswordIdentityProvider",
]
# Environment variables that would put other config directories before ours.
ENV_DROP = ("JUPYTER_TOKEN_FILE", "JUPYTER_CONFIG_PATH", "JUPYTER_PREFER_ENV_PATH", "JUPYTER_NO_CONFIG")


#: JupyterLab plugins the lab turns off (a page config in the private config directory, read
#: as any labconfig/page_config.json is).  The busy favicon: on every busy and every idle
#: status JupyterLab takes the page's <link rel="icon"> out and puts it back, which costs the
#: page 2.5-3 ms per status message, two per click, on the path of every Step click.
DISABLED_PLUGINS = ("@jupyterlab/application-extension:faviconbusy",)


class InsecureServer(RuntimeError):
    """The server answered a request it must refuse (or listens beyond 127.0.0.1)."""


def lab_command(port: int, workspaces_dir: str, notebook: str, tuned: bool = True) -> list[str]:
    """The jupyter lab command line (the token is in the private config directory and the
    environment, not here, so it does not show in `ps`).  ``tuned`` False: jupyter_server's
    own kernel websocket, as a JupyterLab not started by this script has (the browser test
    compares the two)."""
    cmd = [
        sys.executable, "-m", "jupyterlab",
        *SECURITY_OPTIONS,
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
    if tuned:  # a click's reply leaves at once instead of waiting for a delayed ACK (widgets.kernel_socket)
        cmd.append("--ServerApp.kernel_websocket_connection_class=widgets.kernel_socket.NoDelayConnection")
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd


def write_private_config(token: str, tuned: bool = True) -> str:
    """A fresh config directory (mode 0700) holding the token, used as JUPYTER_CONFIG_DIR:
    the highest-priority config directory, so no other config file can set the token.
    ``tuned``: also the page config that turns DISABLED_PLUGINS off (merged with the user's own
    labconfig, which still applies)."""
    config_dir = tempfile.mkdtemp(prefix="hibernation-lab-jupyter-config-")
    path = Path(config_dir, "jupyter_server_config.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"IdentityProvider": {"token": token}}, f)
    if tuned:
        labconfig = Path(config_dir, "labconfig")
        labconfig.mkdir()
        page_config = {"disabledExtensions": {name: True for name in DISABLED_PLUGINS}}
        (labconfig / "page_config.json").write_text(json.dumps(page_config), encoding="utf-8")
    return config_dir


def child_env(token: str, config_dir: str, environ: dict | None = None) -> dict:
    """The server's environment: our config directory first and nothing before it; the user's
    JupyterLab settings (theme, shortcuts) still come from, and are saved to, the user's own
    config directory."""
    env = dict(os.environ if environ is None else environ)
    user_config = env.get("JUPYTER_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".jupyter")
    env.setdefault("JUPYTERLAB_SETTINGS_DIR", os.path.join(user_config, "lab", "user-settings"))
    env.update(JUPYTER_TOKEN=token, JUPYTER_CONFIG_DIR=config_dir)
    for name in ENV_DROP:
        env.pop(name, None)
    return env


def listening_addresses(pid: int) -> set[str]:
    """The local addresses process `pid` listens on over TCP (empty if this cannot be read)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the lab's environment
        return set()
    try:
        process = psutil.Process(pid)
        conns = getattr(process, "net_connections", None) or process.connections  # psutil < 6
        conns = conns(kind="inet")
    except (psutil.Error, OSError):
        return set()
    return {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}


@dataclass
class LabServer:
    process: subprocess.Popen
    port: int
    token: str
    notebook: str
    workspaces_dir: str
    config_dir: str | None = None
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

    def request(self, method: str, path: str, *, token: bool = False, headers: dict | None = None,
                opener=None, body: bytes | None = None) -> int:
        """The HTTP status of one request (with the token in a header if `token`)."""
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"token {self.token}"
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(f"{self.base_url}{path}", data=body, method=method, headers=headers)
        try:
            with (opener or urllib.request.build_opener()).open(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def check_secure(self) -> None:
        """Raise InsecureServer unless the server refuses what it must refuse:
        no token (POST /api/kernels, GET /api/contents), a foreign Host header, a
        cookie-authenticated POST without its XSRF token; and listens on 127.0.0.1 only."""
        problems = []
        status = self.request("GET", "/api/contents")
        if status not in (401, 403):
            problems.append(f"GET /api/contents without the token answered {status}")
        status = self.request("POST", "/api/kernels", body=b"{}")
        if status not in (401, 403):
            problems.append(f"POST /api/kernels without the token answered {status}")
        status = self.request("GET", "/api/contents", token=True, headers={"Host": "attacker.example:80"})
        if status not in (401, 403):
            problems.append(f"a request with the token but Host attacker.example answered {status} "
                            "(the Host check is off: allow_remote_access)")
        # Log in with the token (cookie), then a state-changing request without the XSRF token:
        # refused with XSRF checks on, 404 (no such kernel: nothing happens) with them off.
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        self.request("GET", f"/lab?token={self.token}", opener=opener)
        if not any(c.name.startswith("username-") for c in jar):
            problems.append("logging in with the token set no session cookie")
        else:
            status = self.request("DELETE", "/api/kernels/00000000-0000-0000-0000-000000000000", opener=opener)
            if status not in (401, 403):
                problems.append(f"a cookie-authenticated DELETE without the XSRF token answered {status} "
                                "(XSRF checks are off)")
        addresses = listening_addresses(self.process.pid)
        if addresses and addresses != {HOST}:
            problems.append(f"it listens on {', '.join(sorted(addresses))}, not only {HOST}")
        if problems:
            raise InsecureServer("the server is not safe to use, so it was stopped: " + "; ".join(problems)
                                 + " (check the Jupyter config files listed by `jupyter --paths`)")

    def bound_to_host_only(self) -> bool:
        """True when the server is known to listen on 127.0.0.1 and nowhere else."""
        return listening_addresses(self.process.pid) == {HOST}

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
        if self.config_dir:
            shutil.rmtree(self.config_dir, ignore_errors=True)

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
    tuned: bool = True,
) -> LabServer:
    """Start JupyterLab and return once it answers /api/status and has refused the requests it
    must refuse (InsecureServer, after stopping it, if it did not).

    port: None picks 8888 or the next free one. token: None takes
    JUPYTER_TOKEN or makes a random one. log: a file to send the server's
    output to (None: this process's stdout/stderr). tuned: as for lab_command.
    """
    token = token or os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    port = port or free_port()
    workspaces_dir = tempfile.mkdtemp(prefix="hibernation-lab-workspaces-")
    config_dir = write_private_config(token, tuned)
    env = child_env(token, config_dir)
    process = subprocess.Popen(
        lab_command(port, workspaces_dir, notebook, tuned),
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        start_new_session=True,  # Ctrl-C reaches only us; we stop the server
    )
    server = LabServer(process, port, token, notebook, workspaces_dir, config_dir)
    try:
        server.wait_ready(ready_timeout)
        server.check_secure()
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
    except (RuntimeError, TimeoutError) as error:  # InsecureServer is a RuntimeError
        print(f"error: {error}", file=sys.stderr)
        return 1

    where = ("bound to 127.0.0.1 only" if server.bound_to_host_only()
             else f"asked to bind to {HOST} only (could not confirm)")
    print(
        "\n"
        "  The lab is running. Open this URL in your browser:\n\n"
        f"    {server.url}\n\n"
        f"  token: {server.token}\n"
        f"  ({where}; press Ctrl-C to stop)\n",
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
