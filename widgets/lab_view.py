"""``ResumeLab``: the stepper, the CPU cards, the page walk, the memory map and the timeline
of one resume, composed and kept in step, on one laptop screen (1280x720): the controls on
top, the compact CPU cards and a tabbed pane (the selected CPU's detail, the memory map, the
events, breakpoints, the copy's progress) on the left, the page walk on the right, the
timeline under them.  The run watches the tables under its sleeping CPUs (lab.watch); when a
step overwrites one, the walk and the detail pane turn to that CPU."""
from __future__ import annotations

import html
import json
from typing import Any

import ipywidgets as ipw

from lab.scenario import Resume

from ._bokeh import CAPABILITY_MSG, ONE_MESSAGE, ONE_MESSAGE_PREFIX
from ._common import CSS, direct_va
from .cpu_cards import CpuCards
from .memory_map import MemoryMapView
from ._common import check_int
from .memory_map import MAX_BINS, MIN_BINS
from .stepper import Stepper, watched_resume
from .timeline import TimelineView
from .walk_view import WalkView

_bokeh_loaded = False

#: Changes to BokehJS (3.9), applied once per page, each by name in ``window.__labBokehPatches``
#: (true, or why it could not be applied; the browser test asserts they all applied, so that an
#: upgrade of Bokeh that moves these internals is noticed):
#:
#: * "no echo": jupyter_bokeh 4.1's BokehView sends every change of its BokehJS document back to
#:   the kernel, the changes the kernel itself sent too (BokehJS marks those ``sync: false``, and
#:   the Bokeh server's client drops them; jupyter_bokeh does not): each Step's figure data came
#:   back, a second round trip and a deserialization in the kernel, and a late echo could put an
#:   older value back.  This drops the changes marked not to be synced, as the Bokeh server
#:   does; the learner's own changes (a tap, a zoom) still reach the kernel.
#: * "overlay glyphs clipped": glyphs on Bokeh's overlay layer are clipped to the plot's frame,
#:   as glyphs on the other layers are (BokehJS clips only annotations there).  The timeline
#:   draws each CPU's current segment on that layer (widgets.timeline.Layer); unclipped, they
#:   ran over the axis.
#: * "one-message patch": a PATCH-DOC that comes as one comm message (``widgets._bokeh``:
#:   the prefix, then header, metadata and content as a JSON list) is fed to BokehJS's
#:   ``Receiver`` as the three fragments jupyter_bokeh would have sent; every document, once
#:   it is rendered and its changes go to the kernel, tells the kernel so (a ``MessageSent``
#:   event), and only then does the kernel send them that way.
#: The others change no pixel; they cut what a repaint costs in the page (the timeline's frame
#: after a Step: 13 ms before them, 4-6 ms after, in Chromium traces; docs/architecture.md):
#: * "style read once per task": every visual reads its CSS variables (``--bk-line-color`` ...)
#:   with ``getComputedStyle`` on every paint, and the plot its font size; each read after a
#:   change to the page forces a style recalculation (1-2 ms each with JupyterLab's style
#:   sheets, five or six per repaint).  A value read once is kept until the task ends: nothing
#:   changes CSS variables in the middle of a paint.
#: * "unchanged style sheet": every renderer rewrites its position style sheet on every paint,
#:   the same text mostly, and the browser re-parses it and invalidates styles; an unchanged
#:   text is now left alone.
#: * "renderer positions written after the paint": every renderer writes its element's position
#:   (a glyph's: the box of its data on screen, which moves whenever the data or the range
#:   does) into a style sheet of its own on every paint, and the next text label the paint
#:   draws makes the browser recompute styles before it can set the canvas font (three times a
#:   repaint, 0.7-1.7 ms each, in a Chromium trace); these writes now wait until the paint's
#:   task is done (the same positions, in place before the browser draws the frame).
#: * "glyph elements placed once": a glyph renderer draws on the canvas; its own element (in
#:   the plot's underlays) holds nothing, yet BokehJS moved it over the box of its data on every
#:   paint, a new style sheet text whenever the data or the range moved: a style recalculation
#:   and a layout of the page in the frame after every Step that changed the timeline (2.6 and
#:   2.9 ms of the page's main thread per click in a Chromium trace, 0.9 and 1.4 after).  The
#:   element now keeps the place of the first paint that had a box.
#: * "hatch image reused": a glyph's hatch pattern image (a canvas) was drawn again, for each of
#:   its five glyph variants, whenever its data changed; it is kept while the pattern, colour,
#:   alpha, scale, weight and pixel ratio stay the same.
#: * "no invisible text outline": every text label was also stroked with its outline colour,
#:   transparent unless one is set; a transparent outline is no longer stroked.
#: * "glyph variants brought up to date when drawn": a renderer whose data changed updated five
#:   glyph views, its glyph and the decimated, selection, non-selection and muted variants that
#:   BokehJS 3.9 builds for every renderer, though it draws one only for a muted renderer, a
#:   selection, or while the user pans a renderer of more items than ``lod_threshold``.  Only
#:   the glyph (and a hover glyph) is now updated; the variants are brought up to date, and
#:   kept so, the first time a paint would draw one (that paint is skipped, the next draws it).
BOKEH_PATCHES_JS = r"""
(function labBokehPatches(tries) {
  const B = window.Bokeh;
  if (B === undefined || typeof B.require !== "function") {
    if (tries < 400) { setTimeout(() => labBokehPatches(tries + 1), 50); }
    return;
  }
  if (B.__labPatches !== undefined) { return; }
  const applied = {};
  B.__labPatches = window.__labBokehPatches = applied;
  const patch = (name, apply) => {
    try { apply(); applied[name] = true; } catch (error) { applied[name] = String(error); }
  };
  patch("no echo", () => {
    const doc = B.require("document").Document.prototype;
    const trigger = doc._trigger_on_change;
    doc._trigger_on_change = function (event) {
      if (event.sync === false) { return; }
      return trigger.call(this, event);
    };
  });
  let memo = null;  // owner -> key -> value, for the rest of the task
  const once = (owner, key, read) => {
    if (memo === null) { memo = new Map(); queueMicrotask(() => { memo = null; }); }
    let values = memo.get(owner);
    if (values === undefined) { values = new Map(); memo.set(owner, values); }
    let value = values.get(key);
    if (value === undefined) { value = read(); values.set(key, value); }
    return value;
  };
  patch("style read once per task", () => {
    const visual = B.require("core/visuals/visual").VisualProperties.prototype;
    const cssValue = visual._get_css_value;
    visual._get_css_value = function (name) {
      return once(this.obj.el, this.css_prefix + name, () => cssValue.call(this, name));
    };
    const plot = B.require("models/plots/plot_canvas").PlotView.prototype;
    const fontSize = Object.getOwnPropertyDescriptor(plot, "base_font_size").get;
    Object.defineProperty(plot, "base_font_size", {
      configurable: true,
      get() { return once(this.el, "font-size", () => fontSize.call(this)); },
    });
  });
  patch("unchanged style sheet", () => {
    const sheet = B.require("core/dom").InlineStyleSheet.prototype;
    const setText = sheet._update;
    sheet._update = function (css) {
      if (this.el.textContent !== css) { setText.call(this, css); }
    };
  });
  patch("renderer positions written after the paint", () => {
    const view = B.require("models/renderers/renderer").RendererView.prototype;
    const updatePosition = view.update_position;
    const pending = new Map();  // style sheet -> its text, written once the task is done
    const flush = () => {
      for (const [sheet, css] of pending) { sheet._update(css); }
      pending.clear();
    };
    view.update_position = function () {
      const sheet = this.position;
      let css = null;
      sheet._update = (text) => { css = text; };
      try { updatePosition.call(this); } finally { delete sheet._update; }
      if (css === null) { return; }
      if (pending.size === 0) { queueMicrotask(flush); }
      pending.set(sheet, css);
    };
  });
  patch("glyph elements placed once", () => {
    const view = B.require("models/renderers/glyph_renderer").GlyphRendererView.prototype;
    const place = view.update_position;  // RendererView's ("renderer positions written after the paint")
    view.update_position = function () {
      if (this.__labPlaced === true) { return; }
      const { bbox } = this;
      if (bbox != null && bbox.is_valid) { this.__labPlaced = true; }
      return place.call(this);
    };
  });
  patch("hatch image reused", () => {
    const hatch = B.require("core/visuals/hatch").HatchVector.prototype;
    const update = hatch.update;
    hatch.update = function () {
      const uniforms = [this.hatch_pattern, this.hatch_color, this.hatch_alpha, this.hatch_scale, this.hatch_weight];
      const key = uniforms.every((u) => u.is_Scalar())
        ? JSON.stringify([...uniforms.map((u) => u.value), window.devicePixelRatio]) : null;
      const last = this._hatch_image;
      if (key !== null && key === this.__labHatchKey && last !== undefined && last.is_scalar && last.value != null) {
        this._update_iteration++;
        this._hatch_image = new last.constructor(last.value, this.hatch_color.length);
        return;
      }
      update.call(this);
      this.__labHatchKey = key;
    };
  });
  patch("overlay glyphs clipped", () => {
    const view = B.require("models/renderers/glyph_renderer").GlyphRendererView.prototype;
    let owner = view;
    while (owner !== null && Object.getOwnPropertyDescriptor(owner, "needs_clip") === undefined) {
      owner = Object.getPrototypeOf(owner);
    }
    const base = Object.getOwnPropertyDescriptor(owner, "needs_clip").get;
    Object.defineProperty(view, "needs_clip", {
      configurable: true,
      get() { return this.model.level === "overlay" || base.call(this); },
    });
  });
  patch("no invisible text outline", () => {
    const box = B.require("core/graphics").TextBox.prototype;
    const paint = box.paint;
    const clear = /^(transparent|rgba?\(.*[\/,]\s*0(\.0*)?\s*\))$/;
    box.paint = function (ctx) {
      if (!clear.test(String(this.outline_color))) { return paint.call(this, ctx); }
      const own = Object.prototype.hasOwnProperty.call(ctx, "strokeText");
      const stroke = ctx.strokeText;
      ctx.strokeText = () => {};
      try {
        return paint.call(this, ctx);
      } finally {
        if (own) { ctx.strokeText = stroke; } else { delete ctx.strokeText; }
      }
    };
  });
  patch("glyph variants brought up to date when drawn", () => {
    const view = B.require("models/renderers/glyph_renderer").GlyphRendererView.prototype;
    const VARIANTS = ["decimated_glyph", "selection_glyph", "nonselection_glyph", "muted_glyph"];
    const idle = { async set_data() {}, set_visuals() {}, after_visuals() {}, async after_lazy_visuals() {}, map_data() {} };
    const variants = (renderer, live) => {  // live: their own methods again; else ones that do nothing
      for (const name of VARIANTS) {
        const glyph = renderer[name];
        if (glyph == null) { continue; }
        for (const method of Object.keys(idle)) {
          if (live) { delete glyph[method]; } else { glyph[method] = idle[method]; }
        }
      }
    };
    // what _paint would draw with a variant: a muted renderer, a selection, or decimation
    // while the user pans or zooms a renderer of more than lod_threshold items
    const drawsVariant = (renderer) => {
      const lod = renderer.plot_model.lod_threshold;
      const doc = renderer.model.document;
      return renderer.model.muted || !renderer.model.data_source.selected.is_empty()
        || (doc != null && doc.interactive_duration() > 0 && !renderer.has_webgl && lod != null
            && renderer.all_indices.count > lod);
    };
    // __labVariants: "built" (lazy_initialize's update, all of them), "stale" (the glyph only),
    // "updating", then "live": drawn once, every update brings them up to date from then on
    const setData = view.set_data;
    view.set_data = function (indices) {
      const state = this.__labVariants;
      if (state === undefined) {
        this.__labVariants = "built";
      } else if (state === "built" || state === "stale") {
        variants(this, false);
        this.__labVariants = "stale";
      }
      return setData.call(this, indices);
    };
    const paint = view._paint;
    view._paint = function (ctx) {
      if (this.__labVariants === "updating") { return; }  // the repaint after the update draws it
      if (this.__labVariants === "stale" && drawsVariant(this)) {
        this.__labVariants = "updating";
        variants(this, true);
        const done = () => { this.__labVariants = "live"; this.request_paint(); };
        setData.call(this).then(done, (error) => { done(); console.error(error); });
        return;
      }
      return paint.call(this, ctx);
    };
  });
  patch("one-message patch", () => {
    const receiver = B.require("protocol/receiver").Receiver.prototype;
    const consume = receiver.consume;
    receiver.consume = function (fragment) {
      if (typeof fragment === "string" && fragment.startsWith(ONE_PREFIX)) {
        for (const part of JSON.parse(fragment.slice(ONE_PREFIX.length))) { consume.call(this, part); }
        return;
      }
      return consume.call(this, fragment);
    };
    const docs = B.require("document");
    const { MessageSentEvent } = B.require("document/events");
    const told = new WeakSet();
    const tell = (doc) => {
      if (told.has(doc)) { return; }
      told.add(doc);
      doc._trigger_on_change(new MessageSentEvent(doc, CAPABILITY_MSG, ONE_MESSAGE));
    };
    // jupyter_bokeh's view listens to its document's changes (to send them to the kernel) right
    // after building it: tell each document once that listener is there
    const onChange = docs.Document.prototype.on_change;
    docs.Document.prototype.on_change = function (...args) {
      const result = onChange.apply(this, args);
      queueMicrotask(() => tell(this));
      return result;
    };
    for (const doc of docs.documents) { tell(doc); }
  });
})(0);
"""


def patches_js() -> str:
    """BOKEH_PATCHES_JS with the names it shares with widgets._bokeh."""
    names = {"ONE_PREFIX": ONE_MESSAGE_PREFIX, "CAPABILITY_MSG": CAPABILITY_MSG, "ONE_MESSAGE": ONE_MESSAGE}
    consts = "".join(f"const {k} = {json.dumps(v)};\n" for k, v in names.items())
    return "(function () {\n" + consts + BOKEH_PATCHES_JS + "})();\n"  # a scope of its own: run again, no clash


def setup(force: bool = True) -> bool:
    """Load BokehJS into the notebook page, inline (no CDN: workshop rooms and CI are offline).
    Does nothing outside a Jupyter kernel.  Returns True when it published the scripts."""
    global _bokeh_loaded
    if _bokeh_loaded and not force:
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    ip = get_ipython()
    if ip is None or getattr(ip, "kernel", None) is None:
        return False
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    from bokeh.io import notebook as bokeh_notebook

    output_notebook(INLINE, hide_banner=True)
    bokeh_notebook.publish_display_data({"application/javascript": patches_js()})
    _bokeh_loaded = True
    return True


class ResumeLab(ipw.VBox):
    """``ResumeLab(preset="report-2016", fix="mwait", seed=0, **config)``: every view of one
    resume.  The keyword arguments go to ``lab.scenario.Resume``; Reset builds it again.
    ``bins``: memory-map bins, 16 to 8192; ``follow_faults``: turn the walk to a fault."""

    def __init__(self, preset: str = "report-2016", fix: str = "mwait", seed: int = 0, *,
                 bins: int = 1024, follow_faults: bool = True, **kwargs: Any) -> None:
        check_int("bins", bins, MIN_BINS, MAX_BINS)
        if not isinstance(follow_faults, bool):
            raise ValueError(f"follow_faults must be True or False, got {follow_faults!r}")
        setup(force=False)
        self.kwargs = dict(preset=preset, fix=fix, seed=seed, **kwargs)
        self.stepper = Stepper(factory=lambda: watched_resume(self.kwargs))
        r = self.stepper.resume
        self.cards = CpuCards(r)
        self.walk = WalkView(r)
        self.memmap = MemoryMapView(r, bins=bins, on_select=self._show_frame)
        self.timeline = TimelineView(r, progress_inline=False)
        self.follow_faults = follow_faults
        self.title = ipw.HTML()
        self._title(r)
        self.stepper.listeners.append(self._on_step)
        self.tabs = ipw.Tab([self.cards.detail_box, self.memmap, self.stepper.events_html, self.stepper.breakpoints_box,
                             self.timeline.progress_bokeh], layout=ipw.Layout(height="205px", overflow="auto"))
        for i, name in enumerate(("CPU detail", "Memory map", "Events", "Breakpoints", "Copy progress")):
            self.tabs.set_title(i, name)
        self.tabs.observe(lambda _c: self._sync_hidden(), names="selected_index")
        self._sync_hidden()
        left = ipw.VBox([self.cards, self.tabs], layout=ipw.Layout(flex="1 1 46%", min_width="430px"))
        right = ipw.VBox([self.walk], layout=ipw.Layout(flex="1 1 54%", min_width="480px", overflow="auto"))
        right.add_class("lab-walk-pane")
        middle = ipw.HBox([left, right], layout=ipw.Layout(width="100%", flex_flow="row wrap"))
        super().__init__([ipw.HTML(CSS), self.title, self.stepper, middle, self.timeline],
                         layout=ipw.Layout(width="100%"))
        self.add_class("lab-root")

    @classmethod
    def from_trace(cls, trace: Any, *, at_failure: bool = True, **kwargs: Any) -> "ResumeLab":
        """Open a trace (a path, or a dict as ``lab.trace.load`` returns it, e.g. the ``trace``
        of a ``lab.explore`` counterexample) in the lab: its configuration, stepped to the step
        at which the verdict was taken (``at_failure=False``: at step 0).  ``kwargs`` as for
        ``ResumeLab`` (bins, follow_faults)."""
        import dataclasses

        from lab import trace as lab_trace
        from lab.scenario import Config

        data = trace if isinstance(trace, dict) else lab_trace.load(trace)
        if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
            raise ValueError("from_trace needs a trace file path or a trace dict with a 'config' (lab.trace.load)")
        config = lab_trace.config_from(data["config"])
        settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(Config)
                    if f.name not in ("preset", "fix", "seed")}
        lab = cls(preset=config.preset, fix=config.fix, seed=config.seed, **kwargs, **settings)
        if at_failure:
            probe = Resume(config)
            while probe.outcome is None:
                probe.step()
            lab.stepper.go_to(probe.steps)
        return lab

    @property
    def resume(self) -> Resume:
        return self.stepper.resume

    def _title(self, r: Resume) -> None:
        c = r.config
        self.title.value = (f"<b>Resume from hibernation</b>: preset <code>{html.escape(c.preset)}</code>, fix "
                            f"<code>{html.escape(c.fix)}</code>, seed {c.seed} "
                            f"<span class='lab-note'>| {html.escape(r.fix.title)} | {c.cpus} CPUs, "
                            f"{r.machine.memory.nr_frames} frames, {len(r.loaded.pblist)} pages to copy</span>")

    def _on_step(self, r: Resume, reset: bool) -> None:
        if reset:
            self._title(r)
            self.cards.bind(r)
            self.walk.bind(r, keep=True)
            self.memmap.bind(r)
            self.timeline.bind(r)
            return
        self.cards.update(r)
        focus = self._focus(self.stepper.changed)
        if focus is not None:
            self.walk.show(cpu=focus[0], va=focus[1])
            self.cards.select(focus[0])
        else:
            self.walk.update(r)
        self.memmap.update(r)
        self.timeline.update(r)

    def _focus(self, events: list) -> tuple[int, int] | None:
        """(cpu, va) the walk should turn to after a step: a fault (when following faults),
        else the first table overwritten under a sleeping CPU (its monitored line's walk
        first: the one the wake-up runs)."""
        over = [e for e in events if e.kind == "table_overwritten"]
        for e in events:
            if e.kind == "fault" and self.follow_faults:
                return e.cpu, e.data["address"]
        if not over:
            return None
        first = [e for e in over if e.cpu == over[0].cpu]
        e = next((e for e in first if e.data["why"] == "monitored line"), first[0])
        return e.cpu, e.data["va"]

    def _show_frame(self, pfn: int) -> None:
        self.walk.show(va=direct_va(pfn))

    def _sync_hidden(self) -> None:
        """The memory map and the copy's progress are drawn only while their tab is shown (a
        hidden Bokeh figure would still be redrawn by the browser on every step)."""
        shown = self.tabs.selected_index
        self.memmap.live = shown == 1
        self.timeline.progress_live = shown == 4
        self.stepper.events_live = shown == 2
        if shown == 2:
            self.stepper.render_events()
        if shown == 1:
            self.memmap.update(self.resume)
        if shown == 4:
            self.timeline.send_progress()

    def check(self) -> list[str]:
        """Mismatches between what the views show and what the model says (empty: all agree);
        the views in hidden tabs are brought up to date first."""
        r = self.resume
        live = self.memmap.live, self.timeline.progress_live
        self.memmap.live = self.timeline.progress_live = True
        self.memmap.update(r)
        self.timeline.send_progress()
        self.memmap.live, self.timeline.progress_live = live
        bad: list[str] = []
        for name, view in (("cards", self.cards), ("walk", self.walk), ("memmap", self.memmap),
                           ("timeline", self.timeline)):
            try:
                bad += view.check(r)
            except Exception as exc:  # noqa: BLE001
                bad.append(f"{name}.check raised {exc!r}")
        if r.phase not in self.stepper.status.value:
            bad.append(f"stepper status does not show the phase {r.phase!r}")
        return bad
