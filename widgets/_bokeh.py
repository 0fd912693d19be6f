"""``BokehPane``: a jupyter_bokeh ``BokehModel`` whose document changes can be batched into one
message to the browser.

jupyter_bokeh sends every change of a Bokeh document (a ColumnDataSource's data, a range's
end) as its own PATCH-DOC message, three comm messages each, and BokehJS repaints the figure
for each of them as they arrive.  A view that changes three things in a step made the browser
paint three times: most of the difference between a Step click and a trivial button (issue 10).
Inside ``batch()`` the document is held (Bokeh's ``combine`` policy: a later change of the same
property replaces an earlier one) and the changes leave as one PATCH-DOC when the outermost
batch ends, so the browser applies them together and paints once.

A PATCH-DOC without binary buffers (every one the lab's views send) goes as **one** comm message
instead of three once the page has said it can take that (``ONE_MESSAGE``): the lab's changes to
BokehJS (``widgets.lab_view.BOKEH_PATCHES_JS``, "one-message patch") feed BokehJS's ``Receiver``
the three fragments of such a message one after the other, and tell the kernel so with a Bokeh
``MessageSent`` event when a document is rendered.  A page without those changes never says it,
and keeps getting three messages.  Each message is a websocket frame, a pass through
JupyterLab's kernel message queue and a chance for a frame to be drawn before the click's reply
is complete: three to one took the lab's-server Step/trivial ratio from 1.26-1.61 to about 1.0
in half of the sessions measured (docs/architecture.md)."""
from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any, Iterator

from bokeh.core.serialization import Serializer
from bokeh.protocol.messages.patch_doc import PatchJson, patch_doc
from jupyter_bokeh import BokehModel

#: the Bokeh ``MessageSent`` type by which a page says it takes ``ONE_MESSAGE`` patches
CAPABILITY_MSG = "lab_capability"
#: that capability (the event's data), and the prefix of a one-message patch: the three
#: fragments (header, metadata, content) follow as a JSON list
ONE_MESSAGE = "one-message patch"
ONE_MESSAGE_PREFIX = "lab-one-message-patch:"

if TYPE_CHECKING:  # pragma: no cover
    from bokeh.core.serialization import Ref
    from bokeh.document.events import DocumentPatchedEvent
    from bokeh.model import Model


class _KnownRefs(Serializer):
    """Bokeh's ``Serializer`` given the references of the document's synced models as a ready
    map: ``Serializer(references=...)`` asks each model for its ``.ref``, 0.6 us a model, 0.12 ms
    of the 0.14 ms of a two-value PATCH-DOC of the timeline (196 models)."""

    def __init__(self, references: dict[int, "Ref"]) -> None:
        super().__init__()
        self._references = references


def patch_message(events: list["DocumentPatchedEvent"], refs: dict["Model", "Ref"]) -> patch_doc:
    """The PATCH-DOC message of ``events``, as ``bokeh.protocol.messages.patch_doc.create``
    makes it (the same content: tests/views/test_bokeh_pane.py), with the models' references
    kept in ``refs`` (model -> its ref; a model's ref is its id, which never changes) from one
    message to the next."""
    if not events:
        raise ValueError("PATCH-DOC message requires at least one event")
    docs = {event.document for event in events}
    if len(docs) != 1:
        raise ValueError("PATCH-DOC message configured with events for more than one document")
    [doc] = docs
    synced = doc.models.synced_references
    if len(refs) > 2 * len(synced) + 64:  # models replaced over time: forget the old ones
        refs.clear()
    known = {}
    for model in synced:
        ref = refs.get(model)
        if ref is None:
            ref = refs[model] = model.ref
        known[id(model)] = ref
    serializer = _KnownRefs(known)
    content = PatchJson(events=serializer.encode(events))
    doc.models.flush_synced(lambda model: not serializer.has_ref(model))
    msg = patch_doc(patch_doc.create_header(), {}, content)
    msg.add_buffers(*serializer.buffers)
    return msg


class BokehPane(BokehModel):
    """A BokehModel with ``batch()``; ``patches_sent`` counts the PATCH-DOC messages sent,
    ``comm_messages`` the comm messages they took; ``one_message`` is True once the page has
    said it takes a PATCH-DOC as one message."""

    def __init__(self, model: Any, **kwargs: Any) -> None:
        self._held: list["DocumentPatchedEvent"] | None = None
        self._depth = 0
        self.patches_sent = 0
        self.comm_messages = 0
        self.one_message = False
        self._refs: dict[Any, Any] = {}  # model -> its Bokeh ref, for patch_message
        super().__init__(model, **kwargs)

    def _sync_model(self, model: Any, content: dict[str, Any], buffers: list[Any]) -> None:
        """The page's capability (a ``MessageSent`` event of ``CAPABILITY_MSG``), else what
        BokehModel does with a change from the page."""
        if (content.get("event") == "jsevent" and content.get("kind") == "MessageSent"
                and content.get("msg_type") == CAPABILITY_MSG):
            if content.get("msg_data") == ONE_MESSAGE:
                self.one_message = True
            return
        super()._sync_model(model, content, buffers)

    def _document_patched(self, event: "DocumentPatchedEvent") -> None:
        if event.setter is self:
            return  # the browser's own change, echoed
        if self._held is not None:
            self._held.append(event)
            return
        self._send_patch([event])

    def _send_patch(self, events: list["DocumentPatchedEvent"]) -> None:
        """What BokehModel._document_patched sends, for a list of events: as one message when
        the page takes that and there are no binary buffers."""
        msg = patch_message(events, self._refs)
        self.patches_sent += 1
        if self.one_message and not msg.buffers:
            fragments = [msg.header_json, msg.metadata_json, msg.content_json]
            self._send_fragment(ONE_MESSAGE_PREFIX + json.dumps(fragments))
            return
        for fragment in (msg.header_json, msg.metadata_json, msg.content_json):
            self._send_fragment(fragment)
        for buffer in msg.buffers:
            self._send_fragment(json.dumps(buffer.ref))
            self._send_fragment(None, [buffer.to_bytes()])

    def _send_fragment(self, payload: str | None, buffers: list[bytes] | None = None) -> None:
        self.comm_messages += 1
        self.send({"msg": "patch"} if payload is None else {"msg": "patch", "payload": payload}, buffers)

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
