"""Answer extraction and normalization: one test per supported form, plus the traps."""

from fractions import Fraction

import pytest

from cotgap_ray.answers import canonical, extract_answer, is_correct, normalize, parse_gold


@pytest.mark.parametrize(
    "text, expected",
    [
        ("5 + 13 = 18.\nThe answer is 18.", "18"),  # answer phrase
        ("She makes 9 * 2 = $18.\n#### 18", "18"),  # GSM8K marker
        (r"So the total is \boxed{18}.", "18"),  # LaTeX box
        (r"\boxed{\text{42}}", "42"),
        ("The answer is $1,000.00.", "1000"),  # currency, separators, trailing zeros
        ("First 3, then 4, so 7 in total", "7"),  # last-number fallback
        ("The answer is -4.", "-4"),
        ("The answer is −7.", "-7"),  # unicode minus
        ("Final answer: 0.50", "0.5"),
        ("The final answer is 3/4", "0.75"),
        ("The answer is: **42**", "42"),
        ("The answer is 1,234,567.", "1234567"),
    ],
)
def test_extract_answer_forms(text, expected):
    assert extract_answer(text) == expected


def test_first_marker_wins_over_rambling():
    text = "2 + 2 = 4. The answer is 4.\nQuestion: what is 10 + 5?\nThe answer is 15."
    assert extract_answer(text) == "4"


def test_marker_beats_later_numbers():
    assert extract_answer("#### 12\nThat took 3 steps.") == "12"


@pytest.mark.parametrize("text, expected", [("The result of 5 - 3", "3"), ("5-3", "3"), ("x = -12 and", "-12")])
def test_minus_sign_is_a_sign_only_after_a_non_word(text, expected):
    assert extract_answer(text) == expected


def test_no_number_is_none():
    assert extract_answer("I do not know.") is None


def test_normalize_and_canonical():
    assert normalize("18.0") == normalize("18") == normalize("$18") == normalize("36/2") == "18"
    assert canonical(Fraction(1, 3)) == "1/3"
    assert canonical(Fraction(-1, 8)) == "-0.125"
    assert normalize("seven") is None


def test_parse_gold_gsm8k_form_and_errors():
    assert parse_gold("Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18") == "18"
    assert parse_gold(7) == "7"
    with pytest.raises(ValueError, match="not a number"):
        parse_gold("blue")


def test_is_correct_is_numeric():
    assert is_correct("18", "18")
    assert is_correct("0.5", "1/2")
    assert not is_correct("17", "18")
    assert not is_correct(None, "18")
