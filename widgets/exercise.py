"""Exercises that check the learner's prediction against the live model.

An :class:`Exercise` asks one question.  The learner answers (a number, an address, a choice,
a short list or one line of code) and presses **Check**.  The expected answer is computed by
the exercise's ``answer`` function *when Check is pressed*, from the model (``lab``), never
stored; the feedback says why a wrong answer is wrong where the exercise can tell (its
``explain`` function, or a generic reason per kind).  **Hint** shows one more hint per click;
**Show solution** shows the model's answer after an attempt, or on a second click ("on
request") before one.  With ``seed=N`` the question is a seeded variant (OSTEP style): the
question, hints and answer functions receive the seed, and the learner can change it.

Everything the buttons do is a method, so a test or an nbval-run notebook checks an exercise
without a browser::

    ex = Exercise("PD index of 0xffff8800ba800010?", answer=lambda: split(VA)[2])
    ex.verdict("468").correct          # pure: no widget changes
    ex.assert_checks(wrong=["2"])      # the model's answer is accepted, "2" is rejected
    ex.submit("2")                     # what typing "2" and pressing Check does

Kinds: ``number`` (decimal or 0x-hex), ``address`` (hex, canonical), ``choice`` (radio
buttons over ``choices``), ``list`` (comma-separated items of ``item`` kind), ``text`` (words,
case-insensitive) and ``code`` (one Python expression over the names in each of ``cases``,
compared with ``answer(**case)`` for every case).

CSS contract (the browser test relies on it): the root has ``lab-exercise``; the feedback
``lab-exercise-feedback`` plus ``lab-exercise-correct`` or ``lab-exercise-wrong`` after a
check; hints are in ``lab-exercise-hints``, the solution in ``lab-exercise-solution``.  A
failure of the exercise itself (its answer function raised) shows in ``lab-error``, like the
other views.
"""
from __future__ import annotations

import html
import inspect
import re
from typing import Any, Callable, NamedTuple, Sequence

import ipywidgets as ipw

from lab.hw.paging import is_canonical

KINDS = ("number", "address", "choice", "list", "text", "code")

CSS = """
<style>
.lab-exercise { border-left: 4px solid #5c6bc0; padding: 4px 10px; margin: 6px 0; background: #f7f8fd; }
.lab-exercise .lab-exercise-question { font-size: 14px; }
.lab-exercise-correct { color: #1b5e20; }
.lab-exercise-wrong { color: #8a4b00; }
.lab-exercise-hints, .lab-exercise-solution { color: #333; font-size: 13px; }
.lab-exercise code { font-size: 12px; }
</style>
"""


class Verdict(NamedTuple):
    """The result of checking one answer: ``correct`` and the feedback text (plain text)."""

    correct: bool
    message: str
    valid: bool = True  # False: the answer could not be read (not counted as an attempt)


# -- parsing what the learner typed ----------------------------------------------------------
def parse_number(text: Any) -> int:
    """A whole number, decimal or hex (0x...), underscores allowed."""
    if isinstance(text, bool):
        raise ValueError("expected a number, got True/False")
    if isinstance(text, int):
        return text
    s = str(text).strip().lower().replace("_", "")
    if not s:
        raise ValueError("type a number first")
    try:
        return int(s, 16) if s.startswith(("0x", "-0x")) else int(s, 10)
    except ValueError:
        raise ValueError(f"{str(text).strip()!r} is not a whole number (write e.g. 468 or 0x1d4)") from None


def parse_address(text: Any) -> int:
    """A 64-bit address in hex (with or without 0x, underscores and backticks allowed)."""
    if isinstance(text, int) and not isinstance(text, bool):
        va = text
    else:
        s = str(text).strip().lower().replace("_", "").replace("`", "")
        s = s[2:] if s.startswith("0x") else s
        if not s or any(ch not in "0123456789abcdef" for ch in s):
            raise ValueError(f"{str(text).strip()!r} is not a hex address (write e.g. 0xffff8800ba800010)")
        va = int(s, 16)
    if not 0 <= va < 1 << 64:
        raise ValueError(f"{va:#x} does not fit in 64 bits")
    return va


def parse_text(text: Any) -> str:
    s = " ".join(str(text).split()).lower()
    if not s:
        raise ValueError("type an answer first")
    return s


ITEM_PARSERS: dict[str, Callable[[Any], Any]] = {"number": parse_number, "address": parse_address,
                                                 "text": parse_text}


def parse_list(text: Any, item: str = "number") -> list[Any]:
    """Items separated by commas, semicolons or spaces (a list or tuple is taken as is)."""
    parse = ITEM_PARSERS[item]
    parts = list(text) if isinstance(text, (list, tuple)) else [p for p in re.split(r"[,;\s]+", str(text).strip()) if p]
    if not parts:
        raise ValueError("type the items, separated by commas")
    return [parse(p) for p in parts]


def fmt(value: Any, kind: str, item: str = "number") -> str:
    """``value`` written as a learner would type it (and as the solution shows it)."""
    if kind == "address" or (kind == "list" and item == "address" and not isinstance(value, list)):
        return f"{value:#x}"
    if kind == "list":
        return ", ".join(fmt(v, item) for v in value)
    return str(value)


# -- the exercise ----------------------------------------------------------------------------
class Exercise(ipw.VBox):
    """One checked question.  See the module docstring.

    ``question`` and ``hints`` are HTML strings or functions; ``answer`` computes the expected
    answer from the model; ``explain(given, expected)`` returns why ``given`` is wrong (or
    None for the generic reason); ``equal(given, expected)`` replaces plain equality;
    ``solution`` (text or function of the expected answer) is shown with the answer.  With a
    ``seed``, every function also receives ``seed=`` as a keyword."""

    def __init__(self, question: str | Callable[..., str], answer: Callable[..., Any], *,
                 kind: str = "number", choices: Sequence[str] | Callable[..., Sequence[str]] | None = None,
                 item: str = "number", ordered: bool = True, cases: Sequence[dict] | Callable[..., Sequence[dict]] = (),
                 hints: Sequence[str | Callable[..., str]] = (), solution: str | Callable[..., str] | None = None,
                 explain: Callable[..., str | None] | None = None, equal: Callable[[Any, Any], bool] | None = None,
                 seed: int | None = None, title: str = "Exercise", placeholder: str = "") -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown exercise kind {kind!r}; allowed: {', '.join(KINDS)}")
        if not (isinstance(question, str) or callable(question)):
            raise ValueError(f"question must be text or a callable that returns text, got {question!r}")
        if not callable(answer):
            raise ValueError(f"answer must be a callable that returns the model's answer, got {answer!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 10**6):
            raise ValueError(f"seed must be a whole number from 0 to 1000000 (or None), got {seed!r}")
        if kind == "choice" and not choices:
            raise ValueError("a choice exercise needs choices")
        if kind == "code" and not cases:
            raise ValueError("a code exercise needs cases (the names its expression may use)")
        if kind == "list" and item not in ITEM_PARSERS:
            raise ValueError(f"unknown list item kind {item!r}; allowed: {', '.join(ITEM_PARSERS)}")
        self.kind, self.item, self.ordered = kind, item, ordered
        self._question, self._answer, self._choices, self._cases = question, answer, choices, cases
        self._hints, self._solution, self._explain, self._equal = list(hints), solution, explain, equal
        self.seeded = seed is not None
        self.seed = seed if seed is not None else 0
        self.attempts = 0
        self.hints_shown = 0
        self.solved = False
        self.solution_shown = False
        self._solution_asked = False
        self.last: Verdict | None = None

        self.title = ipw.HTML()
        self.question_html = ipw.HTML()
        self.question_html.add_class("lab-exercise-question")
        if kind == "choice":
            self.input: ipw.ValueWidget = ipw.RadioButtons(options=[], value=None, layout=ipw.Layout(width="auto"))
        else:
            self.input = ipw.Text(placeholder=placeholder or _PLACEHOLDERS[kind],
                                  layout=ipw.Layout(width="420px" if kind in ("code", "list") else "260px"))
        self.input.add_class("lab-exercise-input")
        self.seed_box = ipw.BoundedIntText(value=self.seed, min=0, max=10**6, description="seed",
                                           layout=ipw.Layout(width="150px", display="" if self.seeded else "none"))
        self.seed_box.observe(self._on_seed, names="value")
        self.check_button = ipw.Button(description="Check", button_style="primary", tooltip="check your answer against the model")
        self.hint_button = ipw.Button(description="Hint", tooltip="one more hint")
        self.solution_button = ipw.Button(description="Show solution", tooltip="the model's answer")
        for b in (self.check_button, self.hint_button, self.solution_button):
            b.layout.width = "auto"
        self.check_button.on_click(lambda _b: self.on_check())
        self.hint_button.on_click(lambda _b: self.hint())
        self.solution_button.on_click(lambda _b: self.show_solution())
        self.feedback = ipw.HTML()
        self.feedback.add_class("lab-exercise-feedback")
        self.hints_html = ipw.HTML()
        self.hints_html.add_class("lab-exercise-hints")
        self.solution_html = ipw.HTML()
        self.solution_html.add_class("lab-exercise-solution")
        self.error = ipw.HTML()
        row = ipw.HBox([self.input, self.check_button, self.hint_button, self.solution_button],
                       layout=ipw.Layout(flex_flow="row wrap", align_items="center"))
        super().__init__([ipw.HTML(CSS), ipw.HBox([self.title, self.seed_box]), self.question_html, row,
                          self.feedback, self.hints_html, self.solution_html, self.error])
        self.add_class("lab-exercise")
        self._title_text = title
        self._render_question()

    # -- the model's side -------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.seeded and _takes(fn, "seed"):
            return fn(*args, seed=self.seed)
        return fn(*args)

    def expected(self) -> Any:
        """The answer, computed from the model now (for a code exercise: the results of
        ``answer(**case)`` for each case)."""
        if self.kind == "code":
            return [self._answer_case(c) for c in self.cases()]
        return self._call(self._answer)

    def _answer_case(self, case: dict) -> Any:
        if self.seeded and _takes(self._answer, "seed"):
            return self._answer(**case, seed=self.seed)
        return self._answer(**case)

    def cases(self) -> list[dict]:
        cases = self._call(self._cases) if callable(self._cases) else self._cases
        return list(cases)

    def choices(self) -> list[str]:
        ch = self._call(self._choices) if callable(self._choices) else self._choices
        return list(ch or [])

    def question(self) -> str:
        return self._call(self._question) if callable(self._question) else self._question

    def solution_text(self) -> str:
        """The solution as shown: the exercise's own text, or the model's answer."""
        exp = self.expected()
        if self._solution is None:
            if self.kind == "code":
                return "Any expression that gives the model's results for every case."
            return f"The model's answer: {fmt(exp, self.kind, self.item)}"
        text = self._call(self._solution, exp) if callable(self._solution) else self._solution
        if self.kind == "code":
            return text
        return f"The model's answer: {fmt(exp, self.kind, self.item)}. {text}"

    # -- checking (pure) --------------------------------------------------------------------
    def parse(self, given: Any) -> Any:
        k = self.kind
        if k == "number":
            return parse_number(given)
        if k == "address":
            va = parse_address(given)
            return va
        if k == "text":
            return parse_text(given)
        if k == "list":
            return parse_list(given, self.item)
        if k == "choice":
            if given is None or given == "":
                raise ValueError("pick one of the choices first")
            if given not in self.choices():
                raise ValueError(f"{given!r} is not one of the choices")
            return given
        text = str(given).strip()
        if not text:
            raise ValueError("type one Python expression first")
        try:
            return compile(text, "<your answer>", "eval")
        except SyntaxError as exc:
            raise ValueError(f"that is not a Python expression: {exc.msg}") from None

    def verdict(self, given: Any) -> Verdict:
        """Check ``given`` against the model without touching the widget."""
        try:
            value = self.parse(given)
        except ValueError as exc:
            return Verdict(False, str(exc), valid=False)
        if self.kind == "code":
            return self._verdict_code(value)
        exp = self.expected()
        if self.kind == "choice" and exp not in self.choices():
            raise RuntimeError(f"the model's answer {exp!r} is not among the choices {self.choices()}")
        if self._same(value, exp):
            return Verdict(True, "Correct: that is what the model computes.")
        why = self._call(self._explain, value, exp) if self._explain else None
        return Verdict(False, why or self._generic_reason(value, exp))

    def _same(self, value: Any, exp: Any) -> bool:
        if self._equal is not None:
            return bool(self._equal(value, exp))
        if self.kind == "text":
            return value == parse_text(exp)
        if self.kind == "list":
            exp_l = [parse_text(e) if self.item == "text" else e for e in exp]
            return value == exp_l if self.ordered else sorted(map(str, value)) == sorted(map(str, exp_l))
        return value == exp

    def _generic_reason(self, value: Any, exp: Any) -> str:
        k = self.kind
        if k == "address" and not is_canonical(value):
            return (f"{value:#x} is not even canonical (bits 63:47 must be all 0 or all 1): "
                    "no CPU could use it. Not the model's answer.")
        if k == "number" and isinstance(exp, int):
            return f"Not what the model computes: {value} is too {'high' if value > exp else 'low'}."
        if k == "list":
            if len(value) != len(exp):
                return f"The model's answer has {len(exp)} item(s); you gave {len(value)}."
            if self.ordered:
                right = sum(a == b for a, b in zip(value, exp))
                return f"{right} of {len(exp)} item(s) are right, in the right place."
            return "Not the same set of items as the model's answer."
        return "Not what the model computes."

    def _verdict_code(self, code: Any) -> Verdict:
        cases = self.cases()
        exp = self.expected()
        for case, want in zip(cases, exp):
            try:
                got = eval(code, {"__builtins__": __builtins__}, dict(case))  # noqa: S307 - the learner's own kernel
            except Exception as exc:  # noqa: BLE001 - shown to the learner
                return Verdict(False, f"Your expression raised {type(exc).__name__}: {exc} "
                                      f"(the names you can use: {', '.join(case)}).")
            if got != want:
                where = ", ".join(f"{k}={v:#x}" if isinstance(v, int) and v > 4096 else f"{k}={v}"
                                  for k, v in case.items())
                return Verdict(False, f"For {where} your expression gives {_show(got)}, the model says {_show(want)}.")
        return Verdict(True, f"Correct: your expression agrees with the model on all {len(cases)} cases.")

    def assert_checks(self, right: Any = None, wrong: Sequence[Any] = ()) -> None:
        """For nbval and tests: the model's answer (``right``, default the answer as a learner
        would type it) is accepted and every one of ``wrong`` is rejected."""
        if right is None:
            if self.kind == "code":
                raise ValueError("a code exercise needs right= (an expression) for assert_checks")
            right = fmt(self.expected(), self.kind, self.item)
        v = self.verdict(right)
        assert v.correct, f"the model's answer {right!r} was rejected: {v.message}"
        for w in wrong:
            v = self.verdict(w)
            assert not v.correct, f"the wrong answer {w!r} was accepted"

    # -- what the buttons do ----------------------------------------------------------------
    def on_check(self) -> Verdict | None:
        """Check what is in the input box (the Check button)."""
        return self.submit(self.input.value, _from_box=True)

    def submit(self, given: Any, _from_box: bool = False) -> Verdict | None:
        """Put ``given`` in the input and check it, as typing it and pressing Check does."""
        if not _from_box:
            self.input.value = given if self.kind == "choice" else str(given)
        try:
            v = self.verdict(given)
        except Exception as exc:  # noqa: BLE001 - a broken exercise must not raise in a callback
            self._show_error(f"This exercise could not check your answer: {type(exc).__name__}: {exc}")
            return None
        self._show_error("")
        if v.valid:
            self.attempts += 1
        self.last = v
        self.solved = self.solved or v.correct
        cls, other = ("lab-exercise-correct", "lab-exercise-wrong") if v.correct else ("lab-exercise-wrong", "lab-exercise-correct")
        self.feedback.remove_class(other)
        self.feedback.add_class(cls)
        mark = "&#10004;" if v.correct else "&#10008;"
        tail = "" if v.correct or self.hints_shown >= len(self._hints) else \
            f" <i>Stuck? {'A' if not self.hints_shown else 'Another'} hint is one click away.</i>"
        self.feedback.value = f"<b>{mark}</b> {html.escape(v.message)}{tail}"
        return v

    def hint(self) -> str | None:
        """Show one more hint (all hints shown so far stay); returns the new one."""
        try:
            if self.hints_shown >= len(self._hints):
                self._render_hints(extra="No more hints: try Show solution.")
                return None
            h = self._hints[self.hints_shown]
            text = self._call(h) if callable(h) else h
            self.hints_shown += 1
            self._shown_hints.append(text)
            self._render_hints()
            return text
        except Exception as exc:  # noqa: BLE001
            self._show_error(f"This hint could not be computed: {type(exc).__name__}: {exc}")
            return None

    def show_solution(self) -> str | None:
        """Show the solution after an attempt; before one, only on a second request."""
        if not self.attempts and not self._solution_asked and not self.solution_shown:
            self._solution_asked = True
            self.solution_html.value = ("<i>Try an answer first: a wrong guess teaches more than a read one. "
                                        "Click <b>Show solution</b> again to see it anyway.</i>")
            return None
        try:
            text = self.solution_text()
        except Exception as exc:  # noqa: BLE001
            self._show_error(f"The solution could not be computed: {type(exc).__name__}: {exc}")
            return None
        self.solution_shown = True
        self.solution_html.value = f"<b>Solution.</b> {text}"
        return text

    def reset(self) -> None:
        """Clear the answer, feedback, hints and solution (a new seed does this too)."""
        self.attempts = self.hints_shown = 0
        self.solved = self.solution_shown = self._solution_asked = False
        self.last = None
        self.input.value = None if self.kind == "choice" else ""
        self.feedback.value = self.hints_html.value = self.solution_html.value = ""
        self.feedback.remove_class("lab-exercise-correct")
        self.feedback.remove_class("lab-exercise-wrong")
        self._show_error("")
        self._render_question()

    # -- rendering --------------------------------------------------------------------------
    def _render_question(self) -> None:
        self._shown_hints: list[str] = []
        try:
            q = self.question()
            if self.kind == "choice":
                self.input.options = self.choices()
                self.input.value = None
        except Exception as exc:  # noqa: BLE001
            q = ""
            self._show_error(f"This question could not be built: {type(exc).__name__}: {exc}")
        seed = f" (seed {self.seed})" if self.seeded else ""
        self.title.value = f"<b>{html.escape(self._title_text)}{seed}</b>"
        self.question_html.value = q
        self.hint_button.disabled = not self._hints

    def _render_hints(self, extra: str = "") -> None:
        n = len(self._hints)
        rows = [f"<div><b>Hint {i + 1} of {n}.</b> {h}</div>" for i, h in enumerate(self._shown_hints)]
        if extra:
            rows.append(f"<div><i>{html.escape(extra)}</i></div>")
        self.hints_html.value = "".join(rows)

    def _show_error(self, text: str) -> None:
        if text:
            self.error.value = f'<span class="lab-error">{html.escape(text)}</span>'
            self.error.add_class("lab-error")
        else:
            self.error.value = ""
            self.error.remove_class("lab-error")

    def _on_seed(self, change: dict) -> None:
        self.seed = int(change["new"])
        self.reset()


_PLACEHOLDERS = {"number": "a number, e.g. 42 or 0x2a", "address": "a hex address, e.g. 0xffff880000001000",
                 "list": "items separated by commas", "text": "a word or two", "code": "one Python expression",
                 "choice": ""}


def _takes(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _show(v: Any) -> str:
    return f"{v:#x}" if isinstance(v, int) and not isinstance(v, bool) and v > 4096 else repr(v)


# -- the answer key (for instructors) --------------------------------------------------------
def plain(text: str) -> str:
    """HTML of a question or solution as plain text."""
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def answer_key(path: str, seed: int | None = None) -> list[tuple[str, str, str]]:
    """Run the notebook at ``path`` (its code cells, in order, in a fresh namespace) and return
    (title, question, solution) for every exercise it defines, seeded ones at ``seed``."""
    import json
    from pathlib import Path

    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    ns: dict[str, Any] = {"__name__": "__answer_key__"}
    found: list[Exercise] = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        exec(compile("".join(src) if isinstance(src, list) else src, path, "exec"), ns)  # noqa: S102
        found += [v for v in ns.values() if isinstance(v, Exercise) and all(v is not f for f in found)]
    rows = []
    for ex in found:
        if seed is not None and ex.seeded:
            ex.seed_box.value = seed
        title = ex._title_text + (f" (seed {ex.seed})" if ex.seeded else "")
        rows.append((title, plain(ex.question()), plain(ex.solution_text())))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m widgets.exercise NOTEBOOK... [--seed N]``: print the answer key."""
    import argparse
    import contextlib
    import io

    p = argparse.ArgumentParser(prog="python -m widgets.exercise",
                                description="Print the answer key of the lessons' exercises, computed from the model.")
    p.add_argument("notebooks", nargs="+", help="e.g. notebooks/01-paging.ipynb")
    p.add_argument("--seed", type=int, default=None, help="the seed of the seeded exercises (a workshop table's number)")
    args = p.parse_args(argv)
    for path in args.notebooks:
        with contextlib.redirect_stdout(io.StringIO()):  # the notebook's own prints
            rows = answer_key(path, args.seed)
        print(f"== {path}")
        for title, question, solution in rows:
            print(f"{title}: {question}\n    {solution}")
    return 0


if __name__ == "__main__":
    # run as a script this module is __main__; the notebooks' Exercise is widgets.exercise's
    from widgets.exercise import main as _main

    raise SystemExit(_main())
