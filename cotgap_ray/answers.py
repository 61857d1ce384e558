r"""Numeric answer extraction and normalization (pure functions, no model, no Ray).

The answer a text commits to is read after an answer marker; the markers are

    "#### 18"              GSM8K's final line
    "\boxed{18}"           LaTeX box (also "\boxed{\text{18}}")
    "The answer is 18"     the answer phrase: "[the] [final] answer is|:|=", any case ("Final answer: 18",
                           "Answer: 18", "The final answer is: **18**")

Which marker wins: the EARLIEST one in the text, whatever its kind, that is followed by a number. Markers are not
tried by kind: in "The answer is 8.\nQuestion: ...\n#### 12" the model committed to 8 and then rambled into a new
question (base models do), so the first committed answer is the answer. A marker with no number after it ("The answer
is below", "The answer is $\boxed{8}$", "#### \n") commits to nothing and the next marker is tried.

What follows a marker is read as an expression: numbers, operators (+ - * x / ^ % ( ), "\times" ...) and "=",
on one line; it ends at anything else (a word, ",", a sentence's ".", a newline, "}"). When it holds "=", the answer
is the first number after its LAST "=" (the result); otherwise its first number:

    "The answer is 12 - 4 = 8."          -> "8"      (result of the equation after the marker)
    "The final answer is: 5 + 3 = 8"     -> "8"
    "\boxed{12 - 4 = 8}"                 -> "8"
    "The answer is 8 apples, since 2 * 4 = 8"  -> "8"  (the expression stops at "apples")
    "The answer is 12 - 4 = ?"           -> no answer from this marker ("=" with no result)
    "The answer is $1,000.00."           -> "1000"   (currency, thousands separators, trailing zeros)

Two modes:
    lenient (extract_answer(text), the default): without a usable marker, the LAST number of the text, as before
        ("First 3, then 4, so 7 in total" -> "7"). The student's evaluation (evaluation/scoring.py) keeps using it,
        as it did before: a student's score does not feed training, and the baseline and every post-distillation
        number must be scored by one rule (they are compared pairwise).
    strict (extract_answer(text, strict=True), score_rationale): no marker -> no answer (None). Teacher rationales
        (generation/shard_worker.py) use it, through score_rationale, which also marks a rationale cut at the token
        limit (n_tokens >= max_tokens) as not correct. A looping teacher ("Step 1: Step 2: ... Step 5:") would
        otherwise have its last number scored, and its garbage would count as correct, enter training and inflate its
        accuracy proxy. A truncated rationale keeps its pred (what it committed to, for diagnostics and the majority
        vote) but is never correct: it did not end, so it is not a rationale to train on. The engines report
        n_tokens = max_tokens also when EOS or a stop string comes exactly at the last token; such a rationale is
        counted as truncated (rare, and on the safe side).

SCORING_VERSION names these rules; it is part of the rationale cache key, so rows scored by another rule are not
reused. Change it whenever extract_answer, score_rationale or is_correct changes what they return.
Normalization maps every numeric form to one canonical string, so "18", "18.0", "$18" and "18/1" compare equal.
"""

from __future__ import annotations

import re
from fractions import Fraction

SCORING_VERSION = "answers/2: earliest marker, equation result, strict+truncation for rationales"

# A number as models and datasets write it: sign, currency, thousands separators, decimals, or a fraction.
# A sign counts only when it does not follow a word or a closing bracket: in "5 - 3" and "5-3" the 3 is positive.
_NUMBER = r"(?:(?<![\w)])[-−])?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
# Answer markers of every kind in one pattern, so finditer yields them in text order.
_MARKER_RE = re.compile(
    r"####"
    r"|\\boxed\s*\{"
    r"|(?<!\w)(?:the\s+)?(?:final\s+)?answer\s*\**\s*(?:is\b|:|=)",
    re.IGNORECASE,
)
# Between a marker and its value: spaces and newlines, ":" "=" "**", LaTeX wrappers, the "\" of "\$".
_LEAD_RE = re.compile(r"(?:\s|[:=*]|\\text(?:bf)?\s*\{|\\mathbf\s*\{|\\\(|\\\[|\\(?=\$))*")
# One token of the expression after a marker, on the same line.
_EXPR_TOKEN_RE = re.compile(
    r"[ \t]*(?:(?P<num>" + _NUMBER + r")|(?P<eq>=)|(?P<op>\\times|\\cdot|\\div|[-+−*×x·÷/^%()]))"
)


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


def _marker_value(text: str, pos: int) -> str | None:
    """The normalized answer committed to by the expression starting at `pos` (just after a marker), or None."""
    pos = _LEAD_RE.match(text, pos).end()
    tokens: list[tuple[str, str]] = []
    while (m := _EXPR_TOKEN_RE.match(text, pos)) is not None:
        tokens.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    eqs = [i for i, (kind, _) in enumerate(tokens) if kind == "eq"]
    after = tokens[eqs[-1] + 1:] if eqs else tokens
    return next((normalize(v) for kind, v in after if kind == "num"), None)


def extract_answer(text: str, strict: bool = False) -> str | None:
    """The normalized answer a model's response commits to: after its earliest marker followed by a number (see the
    module docstring). Without one: None when strict, else the last number of the text (None when it has none)."""
    for marker in _MARKER_RE.finditer(text):
        value = _marker_value(text, marker.end())
        if value is not None:
            return value
    if strict:
        return None
    for candidate in reversed(_NUMBER_RE.findall(text)):
        value = normalize(candidate)
        if value is not None:
            return value
    return None


def truncated(n_tokens: int, max_tokens: int) -> bool:
    """Whether a generation was cut at the token limit (it reached max_tokens)."""
    return n_tokens >= max_tokens


def score_rationale(text: str, gold: str, n_tokens: int, max_tokens: int) -> tuple[str | None, bool]:
    """(pred, correct) of a teacher rationale, strictly: pred needs an answer marker; a rationale cut at max_tokens
    keeps its pred but is not correct."""
    pred = extract_answer(text, strict=True)
    return pred, is_correct(pred, gold) and not truncated(n_tokens, max_tokens)


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
