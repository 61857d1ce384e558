"""Numeric answer extraction and normalization (pure functions, no model, no Ray).

Extraction looks for an explicit answer marker first, then falls back to the last number in the text:

    "... so 5 + 13 = 18.\nThe answer is 18."   -> "18"      (answer phrase)
    "... 18 apples\n#### 18"                      -> "18"      (GSM8K marker)
    "... = \\boxed{18}"                           -> "18"      (LaTeX box)
    "The answer is $1,000.00."                    -> "1000"    (currency, thousands separators, trailing zeros)
    "First 3, then 4, so 7 in total"              -> "7"       (last number fallback)

Markers are matched at their FIRST occurrence: the prompt asks for one final line, and base models tend to ramble on
past it (a new "Question: ..." with new numbers), so the first explicit answer is the one the model committed to.
Normalization maps every numeric form to one canonical string, so "18", "18.0", "$18" and "18/1" compare equal.
"""

from __future__ import annotations

import re
from fractions import Fraction

# A number as models and datasets write it: sign, currency, thousands separators, decimals, or a fraction.
# A sign counts only when it does not follow a word or a closing bracket: in "5 - 3" and "5-3" the 3 is positive.
_NUMBER = r"(?:(?<![\w)])[-−])?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_GSM8K_RE = re.compile(r"####\s*(" + _NUMBER + r")")
_BOXED_RE = re.compile(r"\\boxed\s*\{\s*(?:\\text\{)?\s*(" + _NUMBER + r")")
_PHRASE_RE = re.compile(
    r"(?:the\s+)?(?:final\s+)?answer\s*(?:is|:|=)\s*[:=]?\s*\**\s*(" + _NUMBER + r")", re.IGNORECASE
)
_MARKERS = (_GSM8K_RE, _BOXED_RE, _PHRASE_RE)


def to_fraction(text: str) -> Fraction | None:
    """Parse one number as written ("-$1,000.50", "3/4", "−7", ".5") into an exact Fraction; None if not a number."""
    s = text.strip().replace("−", "-").replace("$", "").replace(",", "").replace(" ", "")
    s = s.rstrip(".")
    if not s:
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def canonical(value: Fraction) -> str:
    """One string per number: integers plainly, terminating decimals without trailing zeros, else 'p/q'."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    # Terminating decimal: scale by a power of ten that clears the denominator.
    digits = 0
    scaled = value
    while scaled.denominator != 1:
        scaled *= 10
        digits += 1
    sign = "-" if scaled < 0 else ""
    mag = str(abs(scaled.numerator)).rjust(digits + 1, "0")
    return f"{sign}{mag[:-digits]}.{mag[-digits:]}"


def normalize(text: str | None) -> str | None:
    """Canonical form of a single number written as text, or None when it is not a number."""
    if text is None:
        return None
    value = to_fraction(text)
    return None if value is None else canonical(value)


def extract_answer(text: str) -> str | None:
    """The normalized final answer of a model's response, or None when it contains no number."""
    for marker in _MARKERS:
        match = marker.search(text)
        if match:
            value = normalize(match.group(1))
            if value is not None:
                return value
    numbers = _NUMBER_RE.findall(text)
    for candidate in reversed(numbers):
        value = normalize(candidate)
        if value is not None:
            return value
    return None


def parse_gold(raw: object) -> str:
    """Normalize a dataset's gold answer; accepts GSM8K's '... #### 18' form. Raises ValueError if not numeric."""
    text = str(raw)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    value = normalize(text)
    if value is None:
        raise ValueError(f"gold answer {str(raw)[:80]!r} is not a number")
    return value


def is_correct(pred: str | None, gold: str) -> bool:
    """Exact numeric match of two normalized answers."""
    if pred is None:
        return False
    a, b = to_fraction(pred), to_fraction(gold)
    return a is not None and a == b
