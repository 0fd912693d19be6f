"""Helpers shared by the views: message boxes, guarded handlers, address parsing, plain-words
event descriptions and the CSS the views' HTML uses."""
from __future__ import annotations

import functools
import html
import logging
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import ipywidgets as ipw

from lab.hw.paging import is_canonical
from lab.kernel.layout import PAGE_OFFSET

if TYPE_CHECKING:  # pragma: no cover
    from lab.hw.sched import Event
    from lab.scenario import Resume

log = logging.getLogger("widgets")
F = TypeVar("F", bound=Callable[..., Any])

DIRECT_MAP = PAGE_OFFSET  # 0xffff880000000000

CSS = """
<style>
.lab-root { font-family: var(--jp-ui-font-family, sans-serif); font-size: 12px; }
.lab-root pre { margin: 0; font-size: 11px; line-height: 1.25; }
.lab-root .widget-html-content { line-height: 1.3; }
.lab-root .widget-button, .lab-root .widget-toggle-button { height: 26px; padding: 0 8px; }
.lab-root .widget-button:focus-visible, .lab-root .widget-toggle-button:focus-visible,
.lab-root select:focus-visible, .lab-root input:focus-visible { outline: 3px solid #0072B2; outline-offset: 1px; }
.lab-cpu-card { border: 1px solid #888; border-radius: 4px; padding: 2px 6px; margin: 1px; }
.lab-cpu-faulted { border: 3px double #000; background: #fff0e6; }
.lab-cpu-selected { box-shadow: inset 0 0 0 2px #0072B2; }
.lab-changed { outline: 2px dashed #D55E00; outline-offset: -2px; }
.lab-rip { background: #F0E442; font-weight: bold; }
.lab-state { display: inline-block; padding: 0 5px; border-radius: 3px; color: #000;
  border: 1px solid #000; }
.lab-walk table { border-collapse: collapse; font-size: 11px; }
.lab-walk th, .lab-walk td { border: 1px solid #aaa; padding: 1px 4px; text-align: left;
  font-family: var(--jp-code-font-family, monospace); vertical-align: top; }
.lab-walk tr.lab-walk-pending td { background: #fdf6c9; }
.lab-walk tr.lab-walk-overwritten td { background: repeating-linear-gradient(45deg, #ffe4c4, #ffe4c4 4px, #fff 4px, #fff 8px); }
.lab-walk tr.lab-walk-fault td { background: #f6c8b0; font-weight: bold; border: 2px solid #000; }
.lab-walk tr.lab-walk-unreached td { color: #666; }
.lab-walk tr.lab-changed td { border-top: 2px dashed #D55E00; border-bottom: 2px dashed #D55E00; }
.lab-error { color: #b71c1c; font-weight: bold; }
.lab-legend-item { display: inline-block; margin: 0 8px 0 0; font-size: 11px; white-space: nowrap; }
.lab-swatch { display: inline-block; width: 16px; height: 10px; border: 1px solid #000; margin-right: 3px;
  vertical-align: middle; }
.lab-marker { display: inline-block; margin-right: 2px; font-size: 13px; -webkit-text-stroke: 0.6px #000; }
.lab-note { color: #444; font-size: 11px; }
.lab-events pre { max-height: 14em; overflow-y: auto; }
.lab-listing { max-height: 9em; overflow-y: auto; }
</style>
"""


class MessageBox(ipw.HTML):
    """One line of feedback.  Carries the class ``lab-error`` only while it shows an error, so
    an empty box is never mistaken for one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(value="", **kwargs)
        self.add_class("lab-message")
        self.error: str | None = None

    def show_error(self, text: str) -> None:
        self.error = text
        self.value = f'<span class="lab-error">{html.escape(text)}</span>'
        self.add_class("lab-error")

    def show(self, text: str, *, raw: bool = False) -> None:
        self.error = None
        self.remove_class("lab-error")
        self.value = text if raw or not text else f'<span class="lab-note">{html.escape(text)}</span>'

    def clear(self) -> None:
        self.show("")


def guarded(box: str) -> Callable[[F], F]:
    """Wrap a handler so that nothing it raises reaches the kernel: the message shows in the
    MessageBox attribute ``box`` of the view (class ``lab-error``)."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - shown to the learner, logged at debug
                log.debug("handler %s failed", fn.__name__, exc_info=True)
                try:
                    getattr(self, box).show_error(f"{exc}" if isinstance(exc, ValueError)
                                                  else f"{type(exc).__name__}: {exc}")
                except Exception:  # noqa: BLE001
                    pass
                return None

        return wrapper  # type: ignore[return-value]

    return deco


def parse_va(text: str | int) -> int:
    """A virtual address typed by a learner: hex with or without 0x (underscores allowed).
    Raises ValueError saying what is wrong."""
    if isinstance(text, int) and not isinstance(text, bool):
        va = text
    else:
        s = str(text).strip().lower().replace("_", "").replace("`", "")
        if s.startswith("0x"):
            s = s[2:]
        if not s or any(ch not in "0123456789abcdef" for ch in s):
            raise ValueError(f"{str(text).strip()!r} is not a hex address (e.g. 0xffff8800ba800010)")
        va = int(s, 16)
    if not 0 <= va < 1 << 64:
        raise ValueError(f"{va:#x} does not fit in 64 bits")
    if not is_canonical(va):
        raise ValueError(f"{va:#x} is not canonical: bits 63:47 must be all 0 or all 1 "
                         "(e.g. 0xffff8800ba800010 or 0x00007f0000000000)")
    return va


def check_int(name: str, value: object, lo: int, hi: int) -> int:
    """``value`` as a whole number from ``lo`` to ``hi``, else a ValueError saying so."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
    return value


def fmt_ns(ns: int) -> str:
    return f"{ns / 1e6:.3f} ms"


def direct_va(pfn: int) -> int:
    return DIRECT_MAP + pfn * 4096


def state_label(state: str, cstate: str | None) -> str:
    return f"{state} {cstate}" if state == "mwait" and cstate else state


#: Okabe-Ito, the colour-blind-safe palette (Okabe and Ito, "Color Universal Design", 2008)
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7",
             "grey": "#999999", "light grey": "#DDDDDD"}
_O = OKABE_ITO
#: run state -> (colour, Bokeh hatch pattern, short text): a state is told apart by its pattern
#: and its name as well as its colour, so the views read in grayscale
STATE_STYLES = {"running": (_O["bluish green"], " ", "run"), "waking": (_O["yellow"], "/", "waking"),
                "mwait C6": (_O["blue"], ".", "C6"), "mwait C3": (_O["sky blue"], ".", "C3"),
                "mwait C1": (_O["sky blue"], "o", "C1"), "mwait": (_O["blue"], ".", "mwait"),
                "hlt": (_O["grey"], "x", "hlt"), "wait-for-SIPI": (_O["reddish purple"], "\\", "SIPI"),
                "off": (_O["black"], " ", "off")}
STATE_COLORS = {k: v[0] for k, v in STATE_STYLES.items()}


#: a Bokeh hatch pattern drawn in CSS, for the HTML legends (the same marks at a legend's size)
_CSS_HATCH = {
    "/": "repeating-linear-gradient(135deg, #000 0 1px, transparent 1px 4px)",
    "\\": "repeating-linear-gradient(45deg, #000 0 1px, transparent 1px 4px)",
    "x": "repeating-linear-gradient(45deg, #000 0 1px, transparent 1px 4px), "
         "repeating-linear-gradient(135deg, #000 0 1px, transparent 1px 4px)",
    ".": "radial-gradient(circle, #000 0.8px, transparent 1.2px) 0 0 / 4px 4px",
    "o": "radial-gradient(circle, transparent 1px, #000 1.3px, transparent 1.9px) 0 0 / 5px 5px",
    "-": "repeating-linear-gradient(0deg, #000 0 1px, transparent 1px 4px)",
    "|": "repeating-linear-gradient(90deg, #000 0 1px, transparent 1px 4px)",
}


def legend_html(swatches: list[tuple[str, str, str]], markers: list[tuple[str, str, str]] = ()) -> str:
    """A legend in HTML: (name, colour, Bokeh hatch pattern) swatches, then (name, character,
    colour) markers; every entry is named in text, so it reads in grayscale."""
    out = []
    for name, color, hatch in swatches:
        pattern = _CSS_HATCH.get(hatch.strip(), "")
        bg = f"{pattern}, {color}" if pattern else color
        out.append(f'<span class="lab-legend-item"><span class="lab-swatch" style="background:{bg}"></span>'
                   f"{html.escape(name)}</span>")
    for name, char, color in markers:
        out.append(f'<span class="lab-legend-item"><span class="lab-marker" style="color:{color}">{char}</span>'
                   f"{html.escape(name)}</span>")
    return "".join(out)


def state_color(label: str) -> str:
    return STATE_STYLES.get(label, (_O["light grey"], "", label))[0]


def state_hatch(label: str) -> str:
    return STATE_STYLES.get(label, ("", "+", label))[1]


def _symbol(resume: "Resume", rip: int) -> str:
    try:
        sym = resume.runtime.kernel.symbolize(rip)
    except Exception:  # noqa: BLE001
        sym = "??"
    return sym if sym != "??" else f"{rip:#x}"


def describe_event(e: "Event", resume: "Resume") -> str:
    """One event in plain words, e.g.
    ``t=38.760 ms cpu0 copied frame 0xba800 (idle stack cpu1 (thread_info))``."""
    d = e.data
    who = f"cpu{e.cpu} " if e.cpu is not None else ""
    k = e.kind
    if k == "page_copied":
        what = f"copied frame {d['pfn']:#x} ({d.get('role', 'other')}) from safe page {d['src']:#x}"
    elif k == "pages_copied":
        what = f"copied {d['count']} frames {d['pfn_high']:#x} down to {d['pfn_low']:#x} in one run"
    elif k == "phase":
        what = f"phase: {d['phase']}"
    elif k == "exec":
        what = f"executes {d.get('op', '?')} at {_symbol(resume, d.get('rip', 0))}"
    elif k == "walk":
        names = ("PML4", "PDPT", "PD", "PT")
        path = " -> ".join(f"{names[lvl]}[{idx}]" for lvl, _, idx, _ in d.get("steps", []))
        end = f"{d['fault']} (entry {d['steps'][-1][3]:#x})" if d.get("fault") and d.get("steps") else (
            d.get("fault") or (f"{d['paddr']:#x}" if d.get("paddr") is not None else "?"))
        what = f"walks {d['va']:#x} for {d.get('why', '?')}: {path or 'cached'} -> {end}"
    elif k == "monitor":
        what = f"arms the monitor on line {d['line']:#x}"
    elif k == "state":
        st = state_label(d["state"], d.get("cstate"))
        extra = " (TLB lost)" if d.get("tlb_lost") else ""
        where = f" ({d['where']})" if d.get("where") else ""
        what = f"enters {st}{extra}{where}"
    elif k == "monitor_trigger":
        what = (f"monitored line {d['line']:#x} hit by a {d.get('access', 'store')} from {d.get('agent', '?')}"
                + (" while asleep" if d.get("asleep") else ""))
    elif k == "wake":
        what = f"wakes from {d.get('was', '?')}: {d.get('reason', '?')}; runs again at t={fmt_ns(d['resumes_at'])}" \
            if "resumes_at" in d else f"wakes: {d.get('reason', '?')}"
    elif k == "fault":
        during = f" while delivering {d['during']}" if d.get("during") else ""
        what = (f"{d['vector']} at {d['address']:#x} (error code {d['error_code']:#x}) "
                f"at {_symbol(resume, d['rip'])}{during}")
    elif k == "exception":
        what = f"takes {d['vector']} -> handler {_symbol(resume, d['handler'])}"
    elif k == "oops":
        what = f"oops: {str(d.get('text', '')).splitlines()[0] if d.get('text') else d.get('kind')}"
    elif k == "panic":
        what = f"{d.get('text', 'panic')}"
    elif k == "triple_fault":
        what = f"TRIPLE FAULT, the machine resets: {d.get('why', '')}"
    elif k == "ipi":
        what = f"receives IPI {d.get('ipi')}" + (f" vector {d['vector']:#x}" if d.get("vector") is not None else "") \
            + f": {d.get('effect', '')}"
    elif k == "cr3":
        what = f"loads CR3 {d['cr3']:#x}" + (f" ({d['tables']} tables)" if d.get("tables") else "")
    elif k == "play_dead":
        what = f"goes dead in {d.get('program')}"
    elif k == "cpu_dead":
        what = f"is dead ({state_label(d.get('state', '?'), d.get('cstate'))})"
    elif k == "cpu_online":
        what = f"is online in the {d.get('kernel', '?')} kernel"
    elif k == "table_overwritten":
        names = ("PML4", "PDPT", "PD", "PT")
        what = (f"{names[d['level']]} entry {d['index']} in frame {d['pfn']:#x}, on the walk of "
                f"{d['va']:#x} ({d['why']}), overwritten by {d['by']} while asleep: "
                f"{d['old']:#x} -> {d['new']:#x}")
    elif k == "image_loaded":
        what = f"image loaded: {d['pages']} pages, {d['direct']} in place, {d['pblist']} via safe pages"
    else:
        rest = ", ".join(f"{key}={val:#x}" if isinstance(val, int) and not isinstance(val, bool) and val > 4096
                         else f"{key}={val}" for key, val in d.items())
        what = f"{k} {rest}".strip()
    return f"t={fmt_ns(e.t)} {who}{what}"
