r"""Answers beyond plain numbers: LaTeX read whole after a marker, compared by math-verify (cotgap_ray.math_answers),
and a competition-math style file task (tests/data/competition_math/latex.jsonl) scored end to end."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cotgap_ray.answers import extract_answer, is_correct, parse_gold, score_rationale
from cotgap_ray.math_answers import equivalent, is_math_answer, parsed
from cotgap_ray.tasks.file import to_raw_problems

LATEX_TASK = Path(__file__).parent / "data" / "competition_math" / "latex.jsonl"


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"So the answer is \boxed{2\sqrt{2}}.", r"2\sqrt{2}"),  # not "2": the box is read whole
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),
        (r"\boxed{(1, 3]}", "(1, 3]"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
        (r"The answer is $2\sqrt{2}$.", r"2\sqrt{2}"),  # math mode after the phrase
        (r"The answer is \(\frac{1}{2}\pi\).", r"\frac{1}{2}\pi"),  # not 0.5: "\pi" goes on
        (r"The answer is \sqrt{2}.", r"\sqrt{2}"),  # undelimited, starts with a command; ends at the "."
        ("The answer is (1, 3], since x > 1.", "(1, 3]"),  # an interval; ends at the word
        ("The final answer is:\n\\[\n\\boxed{6\\pi}\n\\]", r"6\pi"),  # display math holding a box: the box answers
        (r"\boxed{8 \text{ cm}}", "8"),  # a number with a unit stays a number
        (r"\boxed{\dfrac{3}{4}}", "0.75"),  # a fraction of numbers is a number
        (r"\boxed{1{,}000}", "1000"),
    ],
)
def test_latex_answers_are_read_whole(text, expected):
    assert extract_answer(text, strict=True) == expected


@pytest.mark.parametrize("text", ["The answer is $18 + $3 = $21.", "The answer is $21. She paid $3 less."])
def test_currency_dollars_are_not_math_mode(text):
    assert extract_answer(text, strict=True) == "21"


@pytest.mark.parametrize(
    "gold, pred, same",
    [
        (r"\frac{1}{2}", r"\frac{2}{4}", True),
        (r"\frac12", "0.5", True),
        (r"\sqrt{8}", r"2\sqrt{2}", True),
        ("(1, 3]", "(1,3]", True),
        ("(1, 3]", "(1, 3)", False),  # open at 3: another set
        ("(1, 3]", "[1, 3]", False),
        (r"\pi", "3.1415927", True),  # numbers to 6 decimals
        (r"\pi", "3.14", False),
        (r"\pi", r"2\pi", False),
        (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}", True),
        (r"\{1, 2\}", "2, 1", True),
        (r"2x + 3", "y = 2x + 3", True),
    ],
)
def test_equivalence_is_math_verify(gold, pred, same):
    assert equivalent(gold, pred) is same
    assert is_correct(pred, gold) is same


@pytest.mark.parametrize("bomb", [r"2^{2^{100}}", "2^2^100", r"10^{99999}", r"(10^{100})!", "9" * 201])
def test_answers_sympy_would_compute_forever_are_refused_at_once(bomb):
    start = time.perf_counter()
    assert not equivalent("5", bomb) and not equivalent(bomb, bomb)
    assert time.perf_counter() - start < 1.0


def test_looping_text_is_read_in_linear_time():
    """A base model looping on markers ("\\boxed{\\boxed{...", "The answer is The answer is ...") is read with a
    bounded look-ahead per marker; reading each to the end of the text took 18 s for 4000 boxes."""
    start = time.perf_counter()
    assert extract_answer("\\boxed{" * 4000 + "1", strict=True) == "1"
    assert extract_answer("The answer is (" * 4000, strict=True) is None
    assert time.perf_counter() - start < 5.0


def test_equivalence_works_outside_the_main_thread():
    """math-verify's default timeouts use signal.alarm, which raises outside the main thread; they are off."""
    equivalent.cache_clear()
    parsed.cache_clear()  # parse and compare in the thread, not from an earlier test's cache
    results = []
    worker = threading.Thread(target=lambda: results.append(is_correct(r"3\sqrt{2}", r"\sqrt{18}")))
    worker.start()
    worker.join(timeout=60)
    assert results == [True]


@pytest.mark.parametrize("text, ok", [("x", True), (r"2\pi", True), (r"\text{(A)}", True), ("(1, 3]", True),
                                      ("blue", False), ("below", False), ("3 4 5", False), ("", False), ("?", False)])
def test_what_can_be_a_math_answer(text, ok):
    assert is_math_answer(text) is ok


@pytest.mark.parametrize(
    "raw, gold",
    [
        (r"\frac{1}{2}", "0.5"),  # a fraction of numbers is a number: the exact fast path compares it
        (r"$\frac{3}{4}$", "0.75"),
        (r"$\sqrt{2}$", r"\sqrt{2}"),
        ("(1, 3]", "(1, 3]"),
        (r"So $\sin 60^\circ = \boxed{\frac{\sqrt{3}}{2}}$.", r"\frac{\sqrt{3}}{2}"),  # a solution: its last box
        ("1 000", "1000"),
    ],
)
def test_parse_gold_accepts_latex(raw, gold):
    assert parse_gold(raw) == gold


@pytest.mark.parametrize("raw", ["blue", "", "   ", "3 4 5", "?"])
def test_parse_gold_names_a_value_that_is_no_answer(raw):
    with pytest.raises(ValueError, match=r"gold answer .* is not a number or a math answer"):
        parse_gold(raw)


def test_numeric_only_gold_refuses_latex():
    assert parse_gold(r"\frac{1}{2}", latex=False) == "0.5"
    with pytest.raises(ValueError, match=r"gold answer '\\\\sqrt\{2\}' is not a number$"):
        parse_gold(r"\sqrt{2}", latex=False)


def test_importing_answers_does_not_load_sympy():
    code = "import sys, cotgap_ray.answers; print(sorted(m for m in ('sympy', 'math_verify') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------- a competition-math style file task

# problem id -> (rationale, correct?) pairs, literal teacher outputs in the forms such models write.
RATIONALES = {
    "half": [(r"1/4 + 1/4 = 2/4. The answer is $\frac{2}{4}$.", True),
             (r"So \boxed{\frac12}", True),
             ("The answer is 0.5", True),
             (r"\boxed{\frac{1}{4}}", False)],
    "sqrt8": [(r"$\sqrt{8} = \sqrt{4 \cdot 2}$, so the answer is $2\sqrt{2}$.", True),
              (r"\boxed{\sqrt{8}}", True),
              (r"\boxed{2.828427}", True),
              (r"\boxed{4\sqrt{2}}", False)],
    "root": [(r"Final answer: \sqrt{2}", True),
             (r"\boxed{-\sqrt{2}}", False)],
    "interval": [(r"\boxed{(1,3]}", True),
                 ("The answer is (1, 3].", True),
                 (r"\boxed{[1, 3]}", False)],
    "ray": [(r"x > 2, so \boxed{(2, \infty)}", True),
            (r"\boxed{[2, \infty)}", False)],
    "circle": [(r"A = \pi r^2 = \pi. The answer is $\pi$.", True),
               (r"\boxed{3.14}", False)],  # 3.14 is not pi to 6 decimals
    "circumference": [(r"C = 2\pi r = \boxed{6\pi}", True),
                      (r"\boxed{3\pi}", False)],
    "sin60": [(r"\boxed{\frac{\sqrt{3}}{2}}", True),
              (r"\boxed{\frac{\sqrt{3}}{3}}", False)],
    "three_quarters": [(r"\frac{3}{4} \cdot 12 = 9, so \boxed{9}", True),
                       ("The answer is 12 * 3 / 4 = 9", True),
                       (r"\boxed{9.5}", False)],
}


def test_competition_math_file_task_loads_latex_gold():
    problems = {p.id.split(":")[-1]: p for p in to_raw_problems(LATEX_TASK, "file:latex", "question", "answer", "id")}
    assert {k: p.answer for k, p in problems.items()} == {
        "half": "0.5", "sqrt8": r"2\sqrt{2}", "root": r"\sqrt{2}", "interval": "(1, 3]", "ray": r"(2, \infty)",
        "circle": r"\pi", "circumference": r"6\pi", "sin60": r"\frac{\sqrt{3}}{2}", "three_quarters": "9"}


@pytest.mark.parametrize("pid, text, correct", [(pid, t, c) for pid, rows in RATIONALES.items() for t, c in rows])
def test_competition_math_rationales_are_scored(pid, text, correct):
    gold = {p.id.split(":")[-1]: p.answer for p in to_raw_problems(LATEX_TASK, "file:latex", "question", "answer",
                                                                    "id")}[pid]
    pred, ok = score_rationale(text, gold, n_tokens=50, max_tokens=256)
    assert pred is not None and ok is correct, (pred, gold)
