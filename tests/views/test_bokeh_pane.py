"""widgets._bokeh.BokehPane: a figure's changes leave as one PATCH-DOC per batch, in three comm
messages (header, metadata, content) as jupyter_bokeh sends them, or in one once the page has
said it takes that; what the one message carries is the same three fragments."""
from __future__ import annotations

import json

import numpy as np
import pytest
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

from widgets._bokeh import CAPABILITY_MSG, ONE_MESSAGE, ONE_MESSAGE_PREFIX, BokehPane


@pytest.fixture
def pane(monkeypatch: pytest.MonkeyPatch) -> BokehPane:
    src = ColumnDataSource(name="s", data=dict(x=[0.0, 1.0], y=[0.0, 1.0]))
    fig = figure(width=300, height=200)
    fig.line("x", "y", source=src)
    p = BokehPane(fig)
    p.sent = []  # (content, buffers) of every comm message the pane sends
    monkeypatch.setattr(p, "send", lambda content, buffers=None: p.sent.append((content, buffers)))
    p.src, p.fig = src, fig
    return p


def say(pane: BokehPane, msg_type: str = CAPABILITY_MSG, data: str = ONE_MESSAGE) -> None:
    """What the page's "one-message patch" sends: a Bokeh MessageSent event, as jupyter_bokeh's
    view forwards a document change to the kernel."""
    pane._sync_model(pane, {"event": "jsevent", "kind": "MessageSent", "msg_type": msg_type, "msg_data": data}, [])


def fragments(sent: list) -> list[str]:
    """The Bokeh fragments in the pane's messages, one-message patches unpacked."""
    out = []
    for content, _buffers in sent:
        payload = content.get("payload")
        if isinstance(payload, str) and payload.startswith(ONE_MESSAGE_PREFIX):
            out += json.loads(payload[len(ONE_MESSAGE_PREFIX):])
        else:
            out.append(payload)
    return out


def patch_events(frags: list[str]) -> list[dict]:
    header, _metadata, content = (json.loads(f) for f in frags[:3])
    assert header["msgtype"] == "PATCH-DOC"
    return content["events"]


def test_until_the_page_says_so_a_patch_is_three_messages(pane: BokehPane) -> None:
    assert pane.one_message is False
    with pane.batch():
        pane.src.data = dict(x=[0.0, 2.0], y=[1.0, 3.0])
        pane.fig.x_range.end = 5.0
    assert len(pane.sent) == 3 and pane.comm_messages == 3 and pane.patches_sent == 1
    assert all(c == {"msg": "patch", "payload": c["payload"]} and not c["payload"].startswith(ONE_MESSAGE_PREFIX)
               for c, _ in pane.sent)
    kinds = sorted(e["kind"] for e in patch_events(fragments(pane.sent)))
    assert kinds == ["ColumnDataChanged", "ModelChanged"]


def test_once_the_page_says_so_a_patch_is_one_message_with_the_same_fragments(pane: BokehPane) -> None:
    with pane.batch():
        pane.src.data = dict(x=[0.0, 2.0], y=[1.0, 3.0])
    three = patch_events(fragments(pane.sent))
    say(pane)
    assert pane.one_message is True
    pane.sent.clear()
    with pane.batch():
        pane.src.data = dict(x=[0.0, 4.0], y=[1.0, 5.0])
    assert len(pane.sent) == 1 and pane.sent[0][1] is None
    one = patch_events(fragments(pane.sent))
    assert [e["kind"] for e in one] == [e["kind"] for e in three] == ["ColumnDataChanged"]
    assert "5.0" in json.dumps(one[0]) and "5.0" not in json.dumps(three[0])  # the new data, not the old
    assert pane.comm_messages == 4 and pane.patches_sent == 2


def test_a_patch_with_binary_buffers_keeps_the_fragments_apart(pane: BokehPane) -> None:
    """A numpy column goes as a binary buffer, which the one-message form does not carry."""
    say(pane)
    pane.src.data = dict(x=np.arange(4, dtype=np.float64), y=np.zeros(4))
    assert len(pane.sent) > 3
    assert not any(str(c.get("payload", "")).startswith(ONE_MESSAGE_PREFIX) for c, _ in pane.sent)
    assert any(b for _, b in pane.sent), "no binary buffer was sent"


def test_other_page_messages_are_left_to_jupyter_bokeh(pane: BokehPane) -> None:
    """Another capability changes nothing; a change the page makes (a zoom) still reaches the
    kernel's figure."""
    say(pane, data="something else")
    assert pane.one_message is False
    rng = pane.fig.x_range
    pane._sync_model(pane, {"event": "jsevent", "kind": "ModelChanged", "model": {"id": rng.id},
                            "attr": "end", "new": 42.0}, [])
    assert rng.end == 42.0
    assert pane.sent == [], "the page's own change was sent back to it"


def test_the_patch_message_is_the_one_bokeh_makes(pane: BokehPane) -> None:
    """widgets._bokeh.patch_message keeps the models' references from one message to the next;
    its content is what Bokeh's own PATCH-DOC has for the same events: a changed value, new
    data, a new model (sent whole, once: then a reference), binary buffers."""
    from bokeh.models import FixedTicker
    from bokeh.protocol import Protocol

    from widgets._bokeh import patch_message

    doc = pane._document
    refs: dict = {}
    held: list = []
    pane._send_patch = held.extend  # the pane's events, kept here instead of sent

    def both() -> tuple[dict, dict, list, list]:
        events = list(held)
        held.clear()
        new = set(doc.models._new_models)
        mine = patch_message(events, refs)
        left = set(doc.models._new_models)
        doc.models._new_models = new
        theirs = Protocol().create("PATCH-DOC", events)
        assert set(doc.models._new_models) == left, "the models still new differ"
        def content(msg) -> dict:  # a buffer's id is new in every message: numbered instead
            text = msg.content_json
            for i, b in enumerate(msg.buffers):
                text = text.replace(str(b.id), f"buffer-{i}")
            return json.loads(text)

        return (content(mine), content(theirs), [b.to_bytes() for b in mine.buffers],
                [b.to_bytes() for b in theirs.buffers])

    pane.fig.x_range.end = 7.5
    mine, theirs, _, _ = both()
    assert mine == theirs and mine["events"][0]["new"] == 7.5
    pane.src.data = dict(x=[0.0, 2.0], y=[1.0, 3.0])
    mine, theirs, _, _ = both()
    assert mine == theirs and mine["events"][0]["kind"] == "ColumnDataChanged"
    pane.fig.xaxis.ticker = FixedTicker(ticks=[0, 1])
    mine, theirs, _, _ = both()
    assert mine == theirs and "FixedTicker" in json.dumps(mine)
    pane.src.data = dict(x=np.arange(3, dtype=np.float64), y=np.ones(3))
    mine, theirs, bufs, their_bufs = both()
    assert mine == theirs and bufs == their_bufs and len(bufs) >= 1
    with pytest.raises(ValueError, match="at least one event"):
        patch_message([], refs)
