"""widgets.exercise: checked answers computed from the model, feedback, hints one at a time,
the solution only after an attempt or on a second request, seeded variants, and the
buttons driven through their handlers (as a click does)."""
from __future__ import annotations

import pytest

from lab.hw.paging import split
from lab.scenario import Resume
from widgets.exercise import Exercise, Verdict, fmt, parse_address, parse_list, parse_number

VA = 0xFFFF8800BA800010


def pd_exercise(**kw) -> Exercise:
    return Exercise("PD index of the report's address?", answer=lambda: split(VA)[2],
                    hints=["bits 29:21", "shift right by 21, keep 9 bits"],
                    explain=lambda given, exp: "that is the PDPT index" if given == split(VA)[1] else None, **kw)


# -- parsing ----------------------------------------------------------------------------------
def test_parsers_read_what_learners_type():
    assert parse_number("468") == 468 and parse_number(" 0x1d4 ") == 468 and parse_number("1_000") == 1000
    assert parse_address("ffff8800_ba800010") == VA == parse_address("`0xffff8800ba800010`")
    assert parse_list("272, 2; 468 0") == [272, 2, 468, 0]
    assert parse_list("0x10,0x20", item="address") == [0x10, 0x20]
    for bad, parse in (("", parse_number), ("4.5", parse_number), ("0xzz", parse_address), ("", parse_list)):
        with pytest.raises(ValueError):
            parse(bad)


def test_fmt_round_trips_through_the_parsers():
    assert parse_address(fmt(VA, "address")) == VA
    assert parse_list(fmt([272, 2, 468, 0], "list")) == [272, 2, 468, 0]


# -- verdicts ---------------------------------------------------------------------------------
def test_the_model_answer_is_accepted_and_a_wrong_one_rejected_with_a_reason():
    ex = pd_exercise()
    assert ex.expected() == 468
    assert ex.verdict("468") == Verdict(True, ex.verdict("0x1d4").message)
    wrong = ex.verdict("2")
    assert not wrong.correct and "PDPT" in wrong.message  # the exercise's own explanation
    generic = ex.verdict("500")
    assert not generic.correct and "too high" in generic.message
    unreadable = ex.verdict("four hundred")
    assert not unreadable.correct and not unreadable.valid
    ex.assert_checks(wrong=["2", "469"])
    assert ex.attempts == 0, "verdict() is pure: no attempt counted, nothing shown"
    assert ex.feedback.value == ""


def test_assert_checks_fails_when_the_model_rejects_its_own_answer():
    ex = Exercise("?", answer=lambda: 3, equal=lambda given, exp: False)
    with pytest.raises(AssertionError, match="rejected"):
        ex.assert_checks()
    ok = Exercise("?", answer=lambda: 3)
    with pytest.raises(AssertionError, match="accepted"):
        ok.assert_checks(wrong=["3"])


def test_the_answer_is_computed_when_checked_not_stored():
    state = {"value": 1}
    ex = Exercise("?", answer=lambda: state["value"])
    assert ex.verdict("1").correct
    state["value"] = 2  # the model moved on (e.g. the resume was stepped)
    assert not ex.verdict("1").correct and ex.verdict("2").correct


def test_address_list_choice_and_text_kinds():
    addr = Exercise("?", answer=lambda: VA, kind="address")
    assert addr.verdict("0xffff8800ba800010").correct
    assert "canonical" in addr.verdict("0x0000900000000000").message
    unordered = Exercise("?", answer=lambda: ["P", "RW", "A"], kind="list", item="text", ordered=False)
    assert unordered.verdict("a, rw, p").correct and not unordered.verdict("p, rw").correct
    assert "3 item(s)" in unordered.verdict("p, rw").message
    ordered = Exercise("?", answer=lambda: list(split(VA)[:4]), kind="list")
    assert ordered.verdict("272, 2, 468, 0").correct
    assert "3 of 4" in ordered.verdict("272, 2, 467, 0").message
    choice = Exercise("?", answer=lambda: "PT", kind="choice", choices=["PML4", "PDPT", "PD", "PT"])
    assert choice.verdict("PT").correct and not choice.verdict("PD").correct
    assert not choice.verdict(None).valid and not choice.verdict("PTE").valid
    text = Exercise("?", answer=lambda: "Wait-for-SIPI", kind="text")
    assert text.verdict(" wait-for-sipi ").correct


def test_choice_fails_loudly_when_the_model_answer_is_not_offered():
    ex = Exercise("?", answer=lambda: "PTE", kind="choice", choices=["PD", "PT"])
    with pytest.raises(RuntimeError, match="not among the choices"):
        ex.verdict("PD")
    assert ex.submit("PD") is None and "lab-error" in ex.error._dom_classes  # shown, not raised


def test_code_exercise_runs_the_expression_on_every_case():
    cases = [{"va": VA}, {"va": 0xFFFF880040200000}, {"va": 0x00007F1234567000}]
    ex = Exercise("PD index of va, as an expression", answer=lambda va: split(va)[2], kind="code", cases=cases)
    assert ex.verdict("(va >> 21) & 511").correct
    wrong = ex.verdict("(va >> 21) & 0x3ff")
    assert not wrong.correct and "your expression gives" in wrong.message
    assert "NameError" in ex.verdict("(addr >> 21) & 511").message
    assert not ex.verdict("(va >> ").valid
    ex.assert_checks(right="va >> 21 & 0x1ff", wrong=["va >> 21", "va & 511"])
    with pytest.raises(ValueError, match="right="):
        ex.assert_checks()


# -- the widget: check, hints, solution -------------------------------------------------------
def test_check_button_shows_feedback_and_counts_attempts():
    ex = pd_exercise()
    ex.input.value = "2"
    ex.check_button.click()
    assert ex.attempts == 1 and not ex.solved
    assert "lab-exercise-wrong" in ex.feedback._dom_classes and "PDPT" in ex.feedback.value
    assert "hint" in ex.feedback.value.lower()
    ex.input.value = "nonsense"
    ex.check_button.click()
    assert ex.attempts == 1, "an unreadable answer is not an attempt"
    assert ex.submit("468").correct and ex.solved and ex.attempts == 2
    assert "lab-exercise-correct" in ex.feedback._dom_classes
    assert "lab-exercise-wrong" not in ex.feedback._dom_classes
    assert ex.input.value == "468"


def test_hints_come_one_at_a_time():
    ex = pd_exercise()
    ex.hint_button.click()
    assert ex.hints_shown == 1 and "bits 29:21" in ex.hints_html.value and "shift" not in ex.hints_html.value
    assert "Hint 1 of 2" in ex.hints_html.value
    ex.hint_button.click()
    assert ex.hints_shown == 2 and "shift right" in ex.hints_html.value
    assert ex.hint() is None and "No more hints" in ex.hints_html.value
    assert Exercise("?", answer=lambda: 1).hint_button.disabled


def test_solution_only_after_an_attempt_or_a_second_request():
    ex = pd_exercise()
    ex.solution_button.click()
    assert not ex.solution_shown and "468" not in ex.solution_html.value and "again" in ex.solution_html.value
    ex.solution_button.click()
    assert ex.solution_shown and "468" in ex.solution_html.value
    after = pd_exercise(solution="Bits 29:21 of the address.")
    after.submit("1")
    after.solution_button.click()
    assert after.solution_shown and "468" in after.solution_html.value and "29:21" in after.solution_html.value


def test_reset_clears_everything():
    ex = pd_exercise()
    ex.submit("1")
    ex.hint()
    ex.show_solution()
    ex.reset()
    assert (ex.attempts, ex.hints_shown, ex.solution_shown, ex.input.value) == (0, 0, False, "")
    assert ex.feedback.value == ex.hints_html.value == ex.solution_html.value == ""


def test_a_broken_answer_function_shows_an_error_instead_of_raising():
    ex = Exercise("?", answer=lambda: 1 // 0)
    assert ex.submit("1") is None
    assert "ZeroDivisionError" in ex.error.value and "lab-error" in ex.error._dom_classes
    ok = Exercise("?", answer=lambda: 1)
    ok.submit("1")
    assert "lab-error" not in ok.error._dom_classes


def test_unknown_kinds_and_missing_parts_are_refused():
    with pytest.raises(ValueError, match="kind"):
        Exercise("?", answer=lambda: 1, kind="essay")
    with pytest.raises(ValueError, match="choices"):
        Exercise("?", answer=lambda: 1, kind="choice")
    with pytest.raises(ValueError, match="cases"):
        Exercise("?", answer=lambda: 1, kind="code")


# -- seeded variants --------------------------------------------------------------------------
def first_fault(seed: int) -> str:
    r = Resume(preset="workshop", fix="mwait", seed=seed)
    r.run()
    f = r.faults()
    return f"cpu{f[0]['cpu']} {f[0]['address']}" if f else "none"


def test_seeded_variant_asks_and_answers_per_seed():
    ex = Exercise(lambda seed: f"For seed {seed}: the first fault's CPU and address (or none)?",
                  answer=lambda seed: first_fault(seed), kind="text", seed=0, title="Seeded")
    assert "seed 0" in ex.question_html.value and "seed 0" in ex.title.value
    exp0 = ex.expected()
    ex.submit("nonsense")
    ex.seed_box.value = 1  # the learner picks another seed: a new question, a clean slate
    assert ex.seed == 1 and "seed 1" in ex.question_html.value and ex.attempts == 0 and ex.feedback.value == ""
    assert ex.expected() == first_fault(1)
    if exp0 != ex.expected():
        assert not ex.verdict(exp0).correct
    ex.assert_checks()


def test_seed_reaches_hints_and_solution():
    ex = Exercise(lambda seed: f"{seed} * 2?", answer=lambda seed: seed * 2, seed=3,
                  hints=[lambda seed: f"double {seed}"], solution=lambda exp, seed: f"{seed} + {seed} = {exp}")
    assert ex.verdict("6").correct
    assert ex.hint() == "double 3"
    ex.submit("5")
    assert "3 + 3 = 6" in ex.show_solution()


# -- the answer key ---------------------------------------------------------------------------
def test_answer_key_runs_a_notebook_and_lists_its_exercises(capsys):
    from pathlib import Path

    from widgets.exercise import answer_key, main

    nb = Path(__file__).resolve().parents[2] / "notebooks" / "00-welcome.ipynb"
    rows = answer_key(str(nb))
    assert len(rows) >= 3
    assert all(title.startswith("Exercise") and question and "model's answer" in solution
               for title, question, solution in rows)
    assert "<" not in "".join(q for _, q, _ in rows), "questions are printed as plain text"
    capsys.readouterr()  # the notebook's own prints, from answer_key()
    assert main([str(nb)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("== ") and "Exercise 0.1" in out and "272" in out  # PML4 index of the report
