"""scripts/lab.py (`make lab`): a Jupyter config file that turns the token, XSRF checks and the
Host check off cannot weaken the lab server; the launcher checks after start that requests
without the token are refused, and stops with a clear message when they are not.

The end-to-end test starts a real JupyterLab (tens of seconds on a busy machine); it waits on
conditions with deadlines, never on sleeps, and kills the launcher's process group at the end.
"""
from __future__ import annotations

import http.cookiejar
import http.server
import importlib.util
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOSTILE = """\
c.IdentityProvider.token = ""
c.ServerApp.token = ""
c.ServerApp.disable_check_xsrf = True
c.ServerApp.allow_remote_access = True
c.ServerApp.ip = "0.0.0.0"
c.ServerApp.allow_origin = "*"
c.PasswordIdentityProvider.password_required = False
"""

spec = importlib.util.spec_from_file_location("lab_launcher_test", REPO / "scripts" / "lab.py")
launcher = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = launcher  # dataclasses look the module up
spec.loader.exec_module(launcher)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status(method: str, url: str, headers: dict | None = None, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def read_until(proc: subprocess.Popen, pattern: str, timeout: float) -> str:
    """The launcher's output up to a line matching `pattern` (fails at the deadline or if the
    launcher exits first). Reads the pipe's bytes directly: a buffered readline could hold the
    line we wait for while select() sees nothing more to read."""
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(timeout=max(0.0, deadline - time.monotonic())):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
            text = seen.decode(errors="replace")
            if re.search(pattern, text):
                return text
    sel.close()
    pytest.fail(f"no line matching {pattern!r} (exit code {proc.poll()}); output:\n"
                f"{seen.decode(errors='replace')}")


def hostile_env(tmp_path: Path) -> dict:
    """HOME, JUPYTER_CONFIG_DIR and JUPYTER_CONFIG_PATH all hold the hostile config."""
    env = dict(os.environ)
    for name in ("JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE"):
        env.pop(name, None)
    home = tmp_path / "home"
    dirs = [home / ".jupyter", tmp_path / "config-dir", tmp_path / "config-path"]
    for d in dirs:
        d.mkdir(parents=True)
        (d / "jupyter_server_config.py").write_text(HOSTILE)
        (d / "jupyter_lab_config.py").write_text(HOSTILE)
    env.update(HOME=str(home), JUPYTER_CONFIG_DIR=str(dirs[1]), JUPYTER_CONFIG_PATH=str(dirs[2]),
               PYTHONUNBUFFERED="1")
    return env


def test_hostile_config_cannot_switch_off_auth(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "lab.py"), "--no-browser",
                             "--port", str(port), "--ready-timeout", "150"],
                            cwd=REPO, env=hostile_env(tmp_path), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out = read_until(proc, r"press Ctrl-C to stop", timeout=200)
        url = re.search(r"(http://127\.0\.0\.1:\d+/lab/tree/\S+\?token=(\w+))", out)
        assert url, out
        token = url.group(2)
        assert "bound to 127.0.0.1 only" in out
        base = f"http://127.0.0.1:{port}"
        # no token: refused
        assert status("POST", f"{base}/api/kernels", {"Content-Type": "application/json"}, b"{}") in (401, 403)
        assert status("GET", f"{base}/api/contents") in (401, 403)
        # a foreign Host header with the token: refused (allow_remote_access stays off)
        assert status("GET", f"{base}/api/contents", {"Authorization": f"token {token}",
                                                      "Host": "attacker.example"}) == 403
        # the token URL works, and so does the API with the token
        assert status("GET", url.group(1)) == 200
        # logged in by cookie, a POST without the XSRF token: refused (disable_check_xsrf stays off)
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        browser.open(url.group(1), timeout=10).read()
        assert any(c.name.startswith("username-") for c in jar), list(jar)
        post = urllib.request.Request(f"{base}/api/kernels", data=b"{}", method="POST",
                                      headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            browser.open(post, timeout=10)
        assert refused.value.code == 403
        assert "xsrf" in refused.value.read().decode(errors="replace").lower()  # refused for XSRF, not auth
        assert status("GET", f"{base}/api/contents", {"Authorization": f"token {token}"}) == 200
        # nothing else listens on the port from other addresses
        assert launcher.listening_addresses(proc.pid) <= {"127.0.0.1"}
        # stop it the way Ctrl-C does (the launcher turns SIGTERM into the same path)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        stop_launcher(proc)


def stop_launcher(proc: subprocess.Popen) -> None:
    """Stop the launcher and everything it started, whatever state the test left it in. The
    JupyterLab server runs in a session (process group) of its own, so a failed test must reach it
    too: SIGTERM first (the launcher then stops the server), then SIGKILL to every group."""
    import psutil

    try:
        groups = {proc.pid} | {os.getpgid(c.pid) for c in psutil.Process(proc.pid).children(recursive=True)}
    except (psutil.Error, ProcessLookupError):
        groups = {proc.pid}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait(timeout=30)
    proc.stdout.close()


class _Open(http.server.BaseHTTPRequestHandler):
    """A server that lets everything through (what a weakened Jupyter would do)."""

    def _ok(self) -> None:
        self.send_response(200)
        self.send_header("Set-Cookie", "username-127-0-0-1=x; Path=/")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_DELETE = _ok

    def log_message(self, *args) -> None:
        pass


def test_launcher_stops_a_server_that_lets_requests_through() -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Open)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    stand_in = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        server = launcher.LabServer(stand_in, httpd.server_address[1], "t0k3n", "x.ipynb", "/nonexistent")
        with pytest.raises(launcher.InsecureServer) as info:
            server.check_secure()
        message = str(info.value)
        assert "stopped" in message
        assert "POST /api/kernels without the token answered 200" in message
        assert "GET /api/contents without the token answered 200" in message
        assert "Host attacker.example answered 200" in message
        assert "XSRF checks are off" in message
    finally:
        httpd.shutdown()
        httpd.server_close()
        stand_in.stdin.close()
        stand_in.wait(timeout=30)


def test_security_options_are_on_the_command_line() -> None:
    cmd = launcher.lab_command(8888, "/tmp/ws", "notebooks/00-welcome.ipynb")
    for option in ("--ServerApp.ip=127.0.0.1", "--ServerApp.disable_check_xsrf=False",
                   "--ServerApp.allow_remote_access=False"):
        assert option in cmd
    assert not any("token" in part.lower() for part in cmd)  # the token never shows in `ps`
    # kernel websockets without Nagle's algorithm (widgets/kernel_socket.py)
    assert "--ServerApp.kernel_websocket_connection_class=widgets.kernel_socket.NoDelayConnection" in cmd
    assert ("--allow-root" in cmd) == (os.geteuid() == 0)


def test_a_config_that_outranks_ours_is_caught_after_start(tmp_path: Path, monkeypatch) -> None:
    """Were a config directory to outrank the launcher's private one (JUPYTER_CONFIG_PATH, which
    the launcher normally drops), its empty token would win: the check after start refuses to
    hand out the server, stops it, and says what answered. XSRF and the Host check still hold
    (the command line beats every file)."""
    hostile = tmp_path / "outranks"
    hostile.mkdir()
    (hostile / "jupyter_server_config.py").write_text(HOSTILE)
    monkeypatch.setattr(launcher, "ENV_DROP", ("JUPYTER_TOKEN_FILE",))
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(hostile))
    with (tmp_path / "server.log").open("w") as log:
        with pytest.raises(launcher.InsecureServer) as info:
            launcher.start_lab(port=free_port(), ready_timeout=150, log=log)
    message = str(info.value)
    assert "without the token answered 200" in message
    assert "XSRF" not in message and "attacker.example" not in message and "listens on" not in message


def test_server_environment_puts_our_config_dir_first() -> None:
    env = launcher.child_env("tok", "/private", {"JUPYTER_CONFIG_DIR": "/home/u/cfg", "JUPYTER_CONFIG_PATH": "/x",
                                                 "JUPYTER_PREFER_ENV_PATH": "1", "JUPYTER_TOKEN_FILE": "/t"})
    assert env["JUPYTER_CONFIG_DIR"] == "/private" and env["JUPYTER_TOKEN"] == "tok"
    assert not {"JUPYTER_CONFIG_PATH", "JUPYTER_PREFER_ENV_PATH", "JUPYTER_TOKEN_FILE"} & set(env)
    # the user's JupyterLab settings (theme, shortcuts) stay where they were
    assert env["JUPYTERLAB_SETTINGS_DIR"] == "/home/u/cfg/lab/user-settings"
    assert launcher.child_env("t", "/p", {"JUPYTERLAB_SETTINGS_DIR": "/s"})["JUPYTERLAB_SETTINGS_DIR"] == "/s"


def test_tuned_config_turns_the_busy_favicon_off(monkeypatch) -> None:
    """The private config directory holds a page config that JupyterLab reads (as it reads any
    labconfig/page_config.json on the config path) and that turns DISABLED_PLUGINS off; untuned
    (the browser test's stock server) it holds the token only.  Binder's postBuild writes the
    same page config."""
    from jupyterlab_server.config import get_static_page_config

    tuned = launcher.write_private_config("tok")
    stock = launcher.write_private_config("tok", tuned=False)
    try:
        assert "@jupyterlab/application-extension:faviconbusy" in launcher.DISABLED_PLUGINS
        for config_dir, want in ((tuned, set(launcher.DISABLED_PLUGINS)), (stock, set())):
            monkeypatch.setenv("JUPYTER_CONFIG_DIR", config_dir)
            for name in launcher.ENV_DROP:
                monkeypatch.delenv(name, raising=False)
            page = get_static_page_config(level="all")
            disabled = {k for k, v in page.get("disabledExtensions", {}).items() if v}
            assert want <= disabled, (config_dir, page)
            if not want:
                assert not set(launcher.DISABLED_PLUGINS) & disabled
        assert sorted(p.name for p in Path(stock).iterdir()) == ["jupyter_server_config.json"]
    finally:
        shutil.rmtree(tuned)
        shutil.rmtree(stock)
    post_build = (REPO / "binder" / "postBuild").read_text(encoding="utf-8")
    binder = json.loads(post_build.split("<<'PAGE'\n", 1)[1].split("\nPAGE", 1)[0])
    assert binder == {"disabledExtensions": {name: True for name in launcher.DISABLED_PLUGINS}}
