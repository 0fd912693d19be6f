"""The stepper: step the resume one scheduler step at a time, back one step, to step N, to the
next event of a kind or to a breakpoint, or let it run (Run drives a hidden ipywidgets Play, a
few steps per tick, so the kernel stays free), and read the step, time, phase, outcome and the
last events in plain words.  Going back replays the run (widgets.history)."""
from __future__ import annotations

import html
import time
from typing import Any, Callable

import ipywidgets as ipw

from lab.hw.sched import Event
from lab.memmap import is_page_table_role
from lab.scenario import Resume

from ._common import MessageBox, check_int, describe_event, fmt_ns, guarded
from .history import BREAK_KINDS, Breakpoint, Replay

Listener = Callable[[Resume, bool], None]


def _is_page_table_copy(e: Event) -> bool:
    return e.kind == "page_copied" and is_page_table_role(e.data.get("role"))


#: "Step to next" targets: label -> (what the message calls it, predicate on one event)
TARGETS: dict[str, tuple[str, Callable[[Event], bool]]] = {
    "sleeping CPU's table overwritten": ("a sleeping CPU's table overwritten",
                                         lambda e: e.kind == "table_overwritten"),
    "wake-up": ("a wake-up", lambda e: e.kind == "wake"),
    "fault": ("a fault", lambda e: e.kind == "fault"),
    "page-table frame overwritten": ("a copy onto a page-table frame", _is_page_table_copy),
    "monitored line stored to": ("a store to a monitored line", lambda e: e.kind == "monitor_trigger"),
    "phase change": ("a phase change", lambda e: e.kind == "phase"),
}

#: after a fault, step on (at most this many steps) until the fault has run its course: an
#: oops or a triple fault, so the card shows the oops the fault led to
SETTLE_KINDS = {"fault": ("oops", "triple_fault")}
SETTLE_STEPS = 200
EVENTS_SHOWN = 8
#: a "Step to next" click gives up after this long (a run that neither ends nor gets there)
WALL_LIMIT_S = 30.0
TICK_BUDGET_S = 0.08


def watched_resume(config_or_kwargs: Any) -> Resume:
    """A Resume that watches the tables under its sleeping CPUs from the start (lab.watch)."""
    r = Resume(config_or_kwargs) if not isinstance(config_or_kwargs, dict) else Resume(**config_or_kwargs)
    r.watch()
    return r


class Stepper(ipw.VBox):
    """Buttons and status for one ``Resume``.  ``listeners`` are called as
    ``fn(resume, reset)`` after every action (reset True when the resume object was replaced:
    Reset, Step back, Go to step)."""

    def __init__(self, resume: Resume | None = None, *, factory: Callable[[], Resume] | None = None,
                 background: bool = True, **kwargs: Any) -> None:
        if resume is not None and kwargs:
            raise ValueError(f"give a resume or Resume settings, not both (got {', '.join(kwargs)})")
        if not isinstance(background, bool):
            raise ValueError(f"background must be True or False, got {background!r}")
        if factory is not None and not callable(factory):
            raise ValueError(f"factory must be a callable that returns a Resume, got {factory!r}")
        if resume is None:
            resume = factory() if factory is not None else watched_resume(kwargs)
        if not isinstance(resume, Resume):
            raise ValueError(f"resume must be a lab.scenario.Resume, got {type(resume).__name__}")
        if factory is None:
            config = resume.config
            factory = lambda: watched_resume(config)  # noqa: E731
        self.resume = resume
        self._factory = factory
        self.replay = Replay(factory, background=background)
        self.listeners: list[Listener] = []
        self.requests = 0  # actions handled (clicks), also when they change nothing
        self.last_target_event: Event | None = None
        self.breakpoints: list[Breakpoint] = []
        self.changed: list[Event] = []  # the events of the last action (what the views highlight)

        def button(text: str, tip: str, **kw: Any) -> ipw.Button:
            b = ipw.Button(description=text, tooltip=tip, layout=ipw.Layout(width="auto"), **kw)
            return b

        # no icons: an icon font glyph would become part of the buttons' accessible names
        self.back_button = button("Step back", "undo the last step (replays the run to the step before)")
        self.step_button = button("Step", "run one scheduler step")
        self.next_button = button("Step to next", "step until the event chosen on the right")
        self.target = ipw.Dropdown(options=list(TARGETS), value="sleeping CPU's table overwritten",
                                   description="", layout=ipw.Layout(width="230px"))
        self.target.tooltip = "Step to next: which event"
        self.fault_button = button("Step to next fault", "step until a CPU faults (or the run ends)")
        self.run_button = ipw.ToggleButton(description="Run", tooltip="run a few steps per tick; click again to pause",
                                           layout=ipw.Layout(width="auto"))
        # the Play widget only ticks; Run is its one visible control
        self.play = ipw.Play(value=0, min=0, max=10**9, step=1, interval=100, show_repeat=False,
                             layout=ipw.Layout(display="none"))
        self.speed = ipw.IntSlider(value=10, min=1, max=200, description="steps/tick",
                                   continuous_update=False, layout=ipw.Layout(width="240px"))
        self.goto = ipw.BoundedIntText(value=0, min=0, max=resume.config.step_budget, description="step",
                                       layout=ipw.Layout(width="130px"))
        self.goto.tooltip = "step number to go to"
        self.goto_button = button("Go", "go to the step number on the left (back or forward)")
        self.reset_button = button("Reset", "build the same run again and start over")

        # the step counter and the status are one widget (one message a step): classes
        # lab-step-count and lab-status, the text starts with "step N"
        self.status = ipw.HTML()
        self.status.add_class("lab-status")
        self.status.add_class("lab-step-count")
        self.count = self.status
        self.events_live = True  # False while the events are not on screen (ResumeLab's tab)
        self.message = MessageBox()
        self.events_html = ipw.HTML()
        self.events_html.add_class("lab-events")
        self.break_kind = ipw.Dropdown(options=list(BREAK_KINDS), description="stop when",
                                       layout=ipw.Layout(width="260px"))
        self.break_value = ipw.Text(description="which", placeholder="frame 0x.., address 0xffff.., cpu 1",
                                    layout=ipw.Layout(width="300px"))
        self.break_add = button("Add breakpoint", "stop when this happens")
        self.break_list = ipw.Select(options=[], description="breakpoints", rows=3, layout=ipw.Layout(width="420px"))
        self.break_remove = button("Remove breakpoint", "remove the breakpoint selected in the list")
        self.breakpoints_box = ipw.VBox([ipw.HBox([self.break_kind, self.break_value, self.break_add]),
                                         ipw.HBox([self.break_list, self.break_remove])])
        self.breakpoints_box.add_class("lab-breakpoints")

        self.back_button.on_click(lambda _b: self.step_back())
        self.step_button.on_click(lambda _b: self.step())
        self.next_button.on_click(lambda _b: self.step_to(self.target.value))
        self.fault_button.on_click(lambda _b: self.step_to("fault"))
        self.reset_button.on_click(lambda _b: self.reset())
        self.goto_button.on_click(lambda _b: self.go_to(self.goto.value))
        self.break_add.on_click(lambda _b: self.add_breakpoint(self.break_kind.value, self.break_value.value))
        self.break_remove.on_click(lambda _b: self.remove_breakpoint(self.break_list.index))
        ipw.link((self.run_button, "value"), (self.play, "playing"))
        self.run_button.observe(self._on_run_toggled, names="value")
        self.play.observe(self._on_tick, names="value")

        row = ipw.HBox([self.back_button, self.step_button, self.next_button, self.target, self.fault_button,
                        self.run_button, self.play, self.goto, self.goto_button, self.reset_button],
                       layout=ipw.Layout(flex_flow="row wrap"))
        super().__init__([row, self.status, self.message])
        self.add_class("lab-stepper")
        self._render()
        self.replay.prepare()

    # -- actions (what the buttons call; tests call them too) ---------------------------------
    def _one(self) -> tuple[list[Event], str | None]:
        """One model step and the breakpoint it hit, if any."""
        evs = self.resume.step()
        return evs, self._break_hit(evs)

    def _break_hit(self, evs: list[Event]) -> str | None:
        hit = None
        for bp in self.breakpoints:
            text = bp.take_hit(evs)
            hit = hit or text
        return hit

    @guarded("message")
    def step(self, n: int = 1) -> list[Event]:
        """Run ``n`` scheduler steps (fewer if the run ends or a breakpoint hits)."""
        r = self.resume
        self.requests += 1
        out: list[Event] = []
        if r.finished:
            self.message.show(f"The run has ended ({r.outcome}); Step does nothing. Step back, or Reset.")
        else:
            hit = None
            for _ in range(n):
                if r.finished:
                    break
                evs, hit = self._one()
                out.extend(evs)
                if hit:
                    break
            self.message.show(f"Breakpoint: {hit}." if hit else self._ended_text() if r.finished else "")
        self.changed = out
        self._after()
        return out

    @guarded("message")
    def step_to(self, target: str) -> Event | None:
        """Step until an event of ``target`` (a key of TARGETS) happens, or a breakpoint hits;
        stop at the end of the run if it never does, and say so.  Returns the event found."""
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}")
        name, pred = TARGETS[target]
        r = self.resume
        self.requests += 1
        if r.finished:
            self.message.show(f"The run has ended ({r.outcome}); there is no next {target}. Step back, or Reset.")
            self._after()
            return None
        found: Event | None = None
        hit = None
        steps = 0
        first = len(r.events)
        deadline = time.perf_counter() + WALL_LIMIT_S
        while not r.finished:
            evs, hit = self._one()
            steps += 1
            found = next((e for e in evs if pred(e)), None)
            if found is not None or hit or (steps % 256 == 0 and time.perf_counter() > deadline):
                break
        settled = ""
        if found is not None and target in SETTLE_KINDS:
            kinds = SETTLE_KINDS[target]
            more = 0
            end = next((e for e in r.events[-64:] if e.kind in kinds and e.t >= found.t), None)
            while end is None and not r.finished and more < SETTLE_STEPS:
                evs = r.step()
                more += 1
                end = next((e for e in evs if e.kind in kinds), None)
            steps += more
            if end is not None:
                settled = f" It led to: {describe_event(end, r)}"
        self.last_target_event = found
        self.changed = r.events[first:]
        if found is not None:
            self.message.show(f"Stopped at {name} after {steps} step(s): {describe_event(found, r)}.{settled}")
        elif hit:
            self.message.show(f"Breakpoint after {steps} step(s): {hit}.")
        elif r.finished:
            self.message.show(f"The run ended ({r.outcome}) at t={fmt_ns(r.now)} after {steps} step(s) "
                              f"without {name}.")
        else:
            self.message.show(f"No {target} after {steps} steps ({WALL_LIMIT_S:.0f} s); click again to go on.")
        self._after()
        return found

    @guarded("message")
    def tick(self) -> int:
        """One tick of Run: up to ``speed`` steps, within a time budget so ticks never pile up."""
        r = self.resume
        if r.finished:
            self.pause()
            return 0
        n = 0
        first = len(r.events)
        hit = None
        deadline = time.perf_counter() + TICK_BUDGET_S
        while n < self.speed.value and not r.finished:
            _, hit = self._one()
            n += 1
            if hit or time.perf_counter() > deadline:
                break
        self.requests += 1
        self.changed = r.events[first:]
        if hit:
            self.message.show(f"Breakpoint: {hit}.")
            self.pause()
        elif r.finished:
            self.message.show(self._ended_text())
            self.pause()
        self._after()
        return n

    def pause(self) -> None:
        self.run_button.value = False  # linked to play.playing

    @guarded("message")
    def go_to(self, n: int) -> None:
        """Go to step ``n``: forward by stepping, back by replaying the run (widgets.history)."""
        r = self.resume
        n = check_int("step", n, 0, r.config.step_budget)
        self.pause()
        self.requests += 1
        if n >= r.steps:
            first = len(r.events)
            hit = None
            while r.steps < n and not r.finished and not hit:
                _, hit = self._one()
            self.changed = r.events[first:]
            self.message.show(f"Breakpoint: {hit}." if hit else
                              f"At step {r.steps}." + (" " + self._ended_text() if r.finished else ""))
            self._after()
            return
        new = self.replay.at_step(n)
        self._swap(new)
        self.changed = []
        self.goto.value = min(new.steps, self.goto.max)
        self.message.show(f"Back at step {new.steps} (the run replayed from the start: it is deterministic).")
        self._after(reset=True)

    def step_back(self) -> None:
        """Undo the last step (Step back)."""
        r = self.resume
        if r.steps == 0:
            self.requests += 1
            self.message.show("At step 0: there is no step to undo.")
            self._after()
            return
        self.go_to(r.steps - 1)

    @guarded("message")
    def reset(self) -> None:
        """Build the same resume again (same configuration and seed) and start over."""
        self.pause()
        self.requests += 1
        self._swap(self.replay.take(0))
        self.replay.prepare()
        self.last_target_event = None
        self.changed = []
        self.message.show(f"Reset: preset {self.resume.config.preset}, fix {self.resume.config.fix}, "
                          f"seed {self.resume.config.seed}.")
        self._after(reset=True)

    def _swap(self, new: Resume) -> None:
        for bp in self.breakpoints:
            bp.detach(self.resume)
            bp.hits.clear()
            bp.attach(new)
        self.resume = new

    # -- breakpoints --------------------------------------------------------------------------
    @guarded("message")
    def add_breakpoint(self, kind: str, value: str | int) -> Breakpoint:
        """Stop when ``kind`` (one of BREAK_KINDS) happens to ``value`` (a frame, an address or
        a CPU).  Bad input shows an error and adds nothing."""
        bp = Breakpoint.parse(kind, value, self.resume)
        bp.attach(self.resume)
        self.breakpoints.append(bp)
        self.break_list.options = [b.label() for b in self.breakpoints]
        self.message.show(f"Breakpoint added: {bp.label()}.")
        return bp

    @guarded("message")
    def remove_breakpoint(self, index: int | None) -> None:
        if index is None or not 0 <= index < len(self.breakpoints):
            raise ValueError("select a breakpoint in the list first")
        bp = self.breakpoints.pop(index)
        bp.detach(self.resume)
        self.break_list.options = [b.label() for b in self.breakpoints]
        self.message.show(f"Breakpoint removed: {bp.label()}.")

    # -- widgets' handlers --------------------------------------------------------------------
    @guarded("message")
    def _on_run_toggled(self, change: dict) -> None:
        if change["new"] and self.resume.finished:
            self.message.show(f"The run has ended ({self.resume.outcome}); Step back, or Reset.")
            self.run_button.value = False

    def _on_tick(self, change: dict) -> None:
        if self.run_button.value:
            self.tick()

    # -- rendering ----------------------------------------------------------------------------
    def _ended_text(self) -> str:
        r = self.resume
        return f"The run has ended at t={fmt_ns(r.now)}: {r.outcome}."

    def _after(self, reset: bool = False) -> None:
        self._render()
        for fn in list(self.listeners):
            try:
                fn(self.resume, reset)
            except Exception as exc:  # noqa: BLE001 - a view's bug must not stop the others
                self.message.show_error(f"a view failed to update: {type(exc).__name__}: {exc}")
        self.replay.follow(self.resume.steps)  # after the views: the page is updated first

    def status_text(self) -> str:
        r = self.resume
        outcome = r.outcome or "still running"
        return (f"t={fmt_ns(r.now)} | phase: {r.phase} | outcome: {outcome} | "
                f"pages copied {r.runtime.copied} of {len(r.loaded.pblist)}")

    def last_events(self, n: int = EVENTS_SHOWN) -> list[Event]:
        """The last ``n`` events other than instruction executions, oldest first."""
        out: list[Event] = []
        evs = self.resume.events
        i = len(evs) - 1
        while i >= 0 and len(out) < n:
            if evs[i].kind != "exec":
                out.append(evs[i])
            i -= 1
        return out[::-1]

    def _render(self) -> None:
        r = self.resume
        # the one step counter: the model's step number (Step back and Go to step move it too)
        self.status.value = (f'<b title="the number of scheduler steps run">step {r.steps}</b> | '
                             f"{html.escape(self.status_text())}")
        if self.events_live:
            self.render_events()

    def render_events(self) -> None:
        r = self.resume
        lines = [describe_event(e, r) for e in self.last_events()]
        self.events_html.value = "<pre>" + html.escape("\n".join(lines) or "(no events yet)") + "</pre>"
