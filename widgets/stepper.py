"""The stepper: step the resume one scheduler step at a time, to the next event of a kind, or
let it run (an ipywidgets Play drives it, a few steps per tick, so the kernel stays free), and
read the time, phase, outcome and the last events in plain words."""
from __future__ import annotations

import html
import time
from typing import Any, Callable

import ipywidgets as ipw

from lab.hw.sched import Event
from lab.memmap import is_page_table_role
from lab.scenario import Resume

from ._common import MessageBox, describe_event, fmt_ns, guarded

Listener = Callable[[Resume, bool], None]


def _is_page_table_copy(e: Event) -> bool:
    return e.kind == "page_copied" and is_page_table_role(e.data.get("role"))


#: "Step to next" targets: label -> (what the message calls it, predicate on one event)
TARGETS: dict[str, tuple[str, Callable[[Event], bool]]] = {
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


class Stepper(ipw.VBox):
    """Buttons and status for one ``Resume``.  ``listeners`` are called as
    ``fn(resume, reset)`` after every action (reset True when the resume was rebuilt)."""

    def __init__(self, resume: Resume | None = None, *, factory: Callable[[], Resume] | None = None,
                 **kwargs: Any) -> None:
        if resume is None:
            resume = factory() if factory is not None else Resume(**kwargs)
        self.resume = resume
        self._factory = factory
        self.listeners: list[Listener] = []
        self.requests = 0  # steps asked for, counted even when the run is over (lab-step-count)
        self.last_target_event: Event | None = None

        self.step_button = ipw.Button(description="Step", tooltip="run one scheduler step")
        self.next_button = ipw.Button(description="Step to next", tooltip="step until the chosen event")
        self.target = ipw.Dropdown(options=list(TARGETS), value="wake-up", description="",
                                   layout=ipw.Layout(width="230px"))
        self.fault_button = ipw.Button(description="Step to next fault", button_style="danger",
                                       tooltip="step until a CPU faults (or the run ends)")
        # no icons: an icon font glyph would become part of the buttons' accessible names
        self.run_button = ipw.ToggleButton(description="Run", tooltip="run / pause")
        self.pause_button = ipw.Button(description="Pause")
        self.play = ipw.Play(value=0, min=0, max=10**9, step=1, interval=100, show_repeat=False,
                             layout=ipw.Layout(width="110px"))
        self.speed = ipw.IntSlider(value=10, min=1, max=200, description="steps/tick",
                                   continuous_update=False, layout=ipw.Layout(width="260px"))
        self.reset_button = ipw.Button(description="Reset", button_style="warning")
        for b in (self.step_button, self.next_button, self.fault_button, self.pause_button, self.reset_button):
            b.layout.width = "auto"
        self.run_button.layout.width = "auto"

        self.status = ipw.HTML()
        self.status.add_class("lab-status")
        self.count = ipw.HTML()
        self.count.add_class("lab-step-count")
        self.message = MessageBox()
        self.events_html = ipw.HTML()
        self.events_html.add_class("lab-events")

        self.step_button.on_click(lambda _b: self.step())
        self.next_button.on_click(lambda _b: self.step_to(self.target.value))
        self.fault_button.on_click(lambda _b: self.step_to("fault"))
        self.reset_button.on_click(lambda _b: self.reset())
        self.pause_button.on_click(lambda _b: self.pause())
        ipw.link((self.run_button, "value"), (self.play, "playing"))
        self.run_button.observe(self._on_run_toggled, names="value")
        self.play.observe(self._on_tick, names="value")

        row1 = ipw.HBox([self.step_button, self.next_button, self.target, self.fault_button])
        row2 = ipw.HBox([self.run_button, self.pause_button, self.play, self.speed, self.reset_button])
        super().__init__([row1, row2, ipw.HBox([self.status, self.count]), self.message, self.events_html])
        self.add_class("lab-stepper")
        self._render()

    # -- actions (what the buttons call; tests call them too) ---------------------------------
    @guarded("message")
    def step(self, n: int = 1) -> list[Event]:
        """Run ``n`` scheduler steps (fewer if the run ends)."""
        r = self.resume
        self.requests += max(1, n)
        out: list[Event] = []
        if r.finished:
            self.message.show(f"The run has ended ({r.outcome}); Step does nothing. Reset to run it again.")
        else:
            for _ in range(n):
                if r.finished:
                    break
                out.extend(r.step())
            self.message.show(self._ended_text() if r.finished else "")
        self._after()
        return out

    @guarded("message")
    def step_to(self, target: str) -> Event | None:
        """Step until an event of ``target`` (a key of TARGETS) happens; stop at the end of the
        run if it never does, and say so.  Returns the event found, or None."""
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}")
        name, pred = TARGETS[target]
        r = self.resume
        found: Event | None = None
        steps = 0
        if r.finished:
            self.requests += 1
            self.message.show(f"The run has ended ({r.outcome}); there is no next {target}. Reset to run it again.")
            self._after()
            return None
        deadline = time.perf_counter() + WALL_LIMIT_S
        while not r.finished:
            evs = r.step()
            steps += 1
            found = next((e for e in evs if pred(e)), None)
            if found is not None or (steps % 256 == 0 and time.perf_counter() > deadline):
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
        self.requests += max(1, steps)
        self.last_target_event = found
        if found is not None:
            self.message.show(f"Stopped at {name} after {steps} step(s): {describe_event(found, r)}.{settled}")
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
        deadline = time.perf_counter() + TICK_BUDGET_S
        while n < self.speed.value and not r.finished:
            r.step()
            n += 1
            if time.perf_counter() > deadline:
                break
        self.requests += n
        if r.finished:
            self.message.show(self._ended_text())
            self.pause()
        self._after()
        return n

    def pause(self) -> None:
        self.run_button.value = False  # linked to play.playing

    @guarded("message")
    def reset(self) -> None:
        """Build the same resume again (same configuration and seed) and start over."""
        self.pause()
        old = self.resume
        self.resume = self._factory() if self._factory is not None else Resume(old.config)
        self.requests += 1
        self.last_target_event = None
        self.message.show(f"Reset: preset {self.resume.config.preset}, fix {self.resume.config.fix}, "
                          f"seed {self.resume.config.seed}.")
        self._after(reset=True)

    # -- widgets' handlers --------------------------------------------------------------------
    @guarded("message")
    def _on_run_toggled(self, change: dict) -> None:
        if change["new"] and self.resume.finished:
            self.message.show(f"The run has ended ({self.resume.outcome}); Reset to run it again.")
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

    def status_text(self) -> str:
        r = self.resume
        outcome = r.outcome or "still running"
        return (f"t={fmt_ns(r.now)} | phase: {r.phase} | outcome: {outcome} | "
                f"pages copied {r.runtime.copied} of {len(r.loaded.pblist)} | model step {r.steps}")

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
        self.status.value = f"<b>{html.escape(self.status_text())}</b>"
        self.count.value = f'<span title="steps asked for">step #{self.requests}</span>'
        lines = [describe_event(e, r) for e in self.last_events()]
        self.events_html.value = "<pre>" + html.escape("\n".join(lines) or "(no events yet)") + "</pre>"
