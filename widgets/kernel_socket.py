"""``NoDelayConnection``: jupyter_server's kernel websocket with Nagle's algorithm off.

A click's reply is several small websocket frames (the kernel's busy status, one per changed
widget, idle).  jupyter_server leaves Nagle's algorithm on, so after the first frame the rest
wait for the browser's ACK, which Linux delays by up to 40 ms: every click paid that, more or
less of it by the luck of TCP's delayed-ACK heuristics.  Tornado's ``set_nodelay`` documents
exactly this case.  ``scripts/lab.py`` and Binder select it with
``--ServerApp.kernel_websocket_connection_class=widgets.kernel_socket.NoDelayConnection``."""
from __future__ import annotations

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection


class NoDelayConnection(ZMQChannelsWebsocketConnection):
    """The default kernel websocket connection, with TCP_NODELAY set when it opens."""

    def connect(self):  # noqa: ANN201 - as the base class
        handler = self.websocket_handler
        if getattr(handler, "ws_connection", None) is not None:  # None: the browser has gone already
            handler.set_nodelay(True)
        return super().connect()
