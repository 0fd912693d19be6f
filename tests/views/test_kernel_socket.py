"""The lab's Jupyter server turns Nagle's algorithm off on kernel websockets (widgets.kernel_socket):
the launcher and Binder select the connection class, and the class sets TCP_NODELAY before the
connection goes live."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from unittest import mock

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler

from widgets.kernel_socket import NoDelayConnection

REPO = Path(__file__).resolve().parents[2]


def test_nodelay_is_set_before_the_connection_goes_live() -> None:
    order: list[str] = []
    handler = mock.Mock(spec=KernelWebsocketHandler)
    handler.set_nodelay.side_effect = lambda on: order.append(f"nodelay {on}")
    handler.ws_connection = object()
    with mock.patch.object(ZMQChannelsWebsocketConnection, "connect", lambda self: order.append("connect")):
        NoDelayConnection(websocket_handler=handler, parent=None).connect()
        assert order == ["nodelay True", "connect"]
        # a browser that went away before the connection opened: connected as before, no flag
        order.clear()
        handler.ws_connection = None
        NoDelayConnection(websocket_handler=handler, parent=None).connect()
        assert order == ["connect"]


def test_binder_selects_it() -> None:
    """(scripts/lab.py selects it on the command line: tests/scenario/test_launcher.py)"""
    post_build = (REPO / "binder" / "postBuild").read_text(encoding="utf-8")
    config = json.loads(post_build.split("<<'JSON'\n", 1)[1].split("\nJSON", 1)[0])
    assert config == {"ServerApp": {"kernel_websocket_connection_class": "widgets.kernel_socket.NoDelayConnection"}}
    subprocess.run(["bash", "-n", str(REPO / "binder" / "postBuild")], check=True)
