"""``BokehPane``: a jupyter_bokeh ``BokehModel`` whose document changes can be batched into one
message to the browser.

jupyter_bokeh sends every change of a Bokeh document (a ColumnDataSource's data, a range's
end) as its own PATCH-DOC message, three comm messages each, and BokehJS repaints the figure
for each of them as they arrive.  A view that changes three things in a step made the browser
paint three times: most of the difference between a Step click and a trivial button (issue 10).
Inside ``batch()`` the document is held (Bokeh's ``combine`` policy: a later change of the same
property replaces an earlier one) and the changes leave as one PATCH-DOC when the outermost
batch ends, so the browser applies them together and paints once."""
from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any, Iterator

from bokeh.protocol import Protocol
from jupyter_bokeh import BokehModel

if TYPE_CHECKING:  # pragma: no cover
    from bokeh.document.events import DocumentPatchedEvent


class BokehPane(BokehModel):
    """A BokehModel with ``batch()``; ``patches_sent`` counts the PATCH-DOC messages sent."""

    def __init__(self, model: Any, **kwargs: Any) -> None:
        self._held: list["DocumentPatchedEvent"] | None = None
        self._depth = 0
        self.patches_sent = 0
        super().__init__(model, **kwargs)

    def _document_patched(self, event: "DocumentPatchedEvent") -> None:
        if event.setter is self:
            return  # the browser's own change, echoed
        if self._held is not None:
            self._held.append(event)
            return
        self._send_patch([event])

    def _send_patch(self, events: list["DocumentPatchedEvent"]) -> None:
        """What BokehModel._document_patched sends, for a list of events."""
        msg = Protocol().create("PATCH-DOC", events)
        self.patches_sent += 1
        self.send({"msg": "patch", "payload": msg.header_json})
        self.send({"msg": "patch", "payload": msg.metadata_json})
        self.send({"msg": "patch", "payload": msg.content_json})
        for buffer in msg.buffers:
            self.send({"msg": "patch", "payload": json.dumps(buffer.ref)})
            self.send({"msg": "patch"}, [buffer.to_bytes()])

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Collect the document's changes and send them as one message at the end (nested
        batches send at the end of the outermost one)."""
        doc = self._document
        if doc is None:  # pragma: no cover - a BokehModel always has a document
            yield
            return
        self._depth += 1
        if self._depth == 1:
            self._held = []
            doc.hold("combine")
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                try:
                    doc.unhold()  # the held events come back through _document_patched
                finally:
                    events, self._held = self._held or [], None
                if events:
                    self._send_patch(events)


def batch(*panes: "BokehPane | None") -> contextlib.ExitStack:
    """One batch over several panes (None: not built yet, skipped)."""
    stack = contextlib.ExitStack()
    for p in panes:
        if p is not None:
            stack.enter_context(p.batch())
    return stack
