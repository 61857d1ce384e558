r"""Answer extraction and comparison (pure functions, no model, no Ray).

The answer a text commits to is read after an answer marker; the markers are

    "#### 18"              GSM8K's final line
    "\boxed{18}"           LaTeX box: its whole content, braces balanced ("\boxed{\frac{1}{2}}", "\boxed{(1, 3]}")
    "The answer is 18"     the answer phrase: "[the] [final] answer is|:|=", any case ("Final answer: 18",
                           "Answer: 18", "The final answer is: **18**")

Which marker wins: the EARLIEST one in the text, whatever its kind, that is followed by an answer. Markers are not
tried by kind: in "The answer is 8.\nQuestion: ...\n#### 12" the model committed to 8 and then rambled into a new
question (base models do), so the first committed answer is the answer. A marker with nothing after it ("The answer
is below", "The answer is $\boxed{8}$" (the box that follows answers), "#### \n") commits to nothing and the next
marker is tried.

What follows a phrase or "####" is read as arithmetic on one line (numbers.expression: numbers as written, operators,
parentheses, "="), evaluated exactly; with "=" the result after its LAST "=" is the answer. It ends at anything else
(a word, ",", a sentence's ".", a newline):

    "The answer is 12 - 4 = 8."          -> "8"      (result of the equation after the marker)
    "The answer is 5 - 3"                -> "2"      (an expression is its value, not its first number)
    "The answer is 8 apples, since 2 * 4 = 8"  -> "8"  (the expression stops at "apples")
    "The answer is 12 - 4 = ?"           -> no answer from this marker ("=" with no result)
    "The answer is $1,000.00."           -> "1000"   (currency, thousands separators, trailing zeros)
    "The answer is .5" / "$-5" / "2.5e3" / "1 000" / "3 1/2"  -> "0.5" / "-5" / "2500" / "1000" / "3.5"

A LaTeX answer is read whole: the content of a box, of math mode right after a phrase ("The answer is
$\frac{\sqrt{3}}{2}$", also \(...\), \[...\], $$...$$), or, without delimiters, a phrase's answer that starts with a
LaTeX command or an interval ("The answer is \sqrt{2}.", "The answer is (1, 3]."). When it is a plain number (units
in words or \text{} allowed: "\boxed{8 \text{ cm}}"), it becomes that number ("\frac{3}{4}" -> "0.75"); otherwise
the LaTeX text itself is the answer ("2\sqrt{2}", "(1, 3]"), compared by math-verify (math_answers.py). "$" opens
math mode only when its closing "$" is on the same line and not followed by a digit ("$18 + $3 = $21" is currency).

Comparison (is_correct): two plain numbers are compared as exact fractions, without sympy (GSM8K and arithmetic never
load it); when either side is not a plain number, math-verify decides (math_answers.equivalent: 0.5 = \frac{1}{2},
\sqrt{8} = 2\sqrt{2}, intervals, sets).

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

SCORING_VERSION names these rules; it is part of the rationale cache key (generation/pipeline.py) and of the
evaluation cache key (evaluation/scoring.py), so rows scored by another rule are not reused. Change it whenever
extract_answer, score_rationale or is_correct changes what they return.
"""

from __future__ import annotations

import re

from cotgap_ray import math_answers
from cotgap_ray.numbers import canonical, expression, numbers, to_fraction

__all__ = ["SCORING_VERSION", "canonical", "extract_answer", "is_correct", "normalize", "parse_gold",
           "score_rationale", "to_fraction", "truncated"]

# answers/3: numbers as written (.5, 2.5e3, 1 000, 3 1/2, \frac), the expression after a marker evaluated ("5 - 3"
# is 2, not 5), LaTeX answers read whole and compared by math-verify (pinned in pyproject.toml: its verdicts are part
# of this rule).
SCORING_VERSION = "answers/3: numbers as written, expressions evaluated, LaTeX answers by math-verify 0.9.0"

# Answer markers of every kind in one pattern, so finditer yields them in text order.
_MARKER_RE = re.compile(
    r"####"
    r"|(?P<box>\\boxed\s*\{)"
    r"|(?<!\w)(?:the\s+)?(?:final\s+)?answer\s*\**\s*(?:is\b|:|=)",
    re.IGNORECASE,
)
# Between a marker and its value: spaces and newlines, ":" "=" "**", LaTeX text wrappers.
_LEAD_RE = re.compile(r"(?:\s|[:=*]|\\text(?:bf)?\s*\{|\\mathbf\s*\{)*")
# After a number, the answer goes on as math (so it is LaTeX, read whole): a command other than text and spacing,
# "^", "_", "{", or a letter glued to the number ("2\sqrt{2}", "2^x", "2x"); " apples", "." and "\text{cm}" do not.
_CONTINUES_RE = re.compile(r"[ \t]*\\(?!text|mathrm|mbox|quad|qquad)[A-Za-z]|[\^_{]|[A-Za-z](?![A-Za-z])")
# A phrase's LaTeX answer without delimiters starts with a command, "\{", or is an interval or tuple "(1, 3]".
_LATEX_START_RE = re.compile(r"\\(?!text|mathbf|mathrm|mbox)[A-Za-z{]|[(\[][^()\[\]\n]*,[^()\[\]\n]*[)\]]")
# Where a phrase's undelimited LaTeX answer ends: a sentence's "." or a word of 3+ letters that is not a command.
_PLAIN_END_RE = re.compile(r"\.(?:\s|$)|(?<![\\A-Za-z])[A-Za-z]{3,}")
# What may follow a number inside a box or math mode and still leave a plain number: punctuation, "$", and words
# after a space (units: "8 cm", "8 \text{ apples}" once \text is unwrapped).
_UNITS_RE = re.compile(r"(?:[\s.,;:!]|\\?\$|\s[A-Za-z]{2,}(?![A-Za-z]))*")
_TEXT_RE = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_SPACING_RE = re.compile(r"\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\displaystyle(?![A-Za-z])|\\[,!]")
_WIDE_SPACE_RE = re.compile(r"\\[;: ]|~|\\q?quad(?![A-Za-z])")
_MAX_LINE = 4 * math_answers.MAX_CHARS
_BRACE_RE = re.compile(r"\\.|[{}]")  # a brace, or an escaped character ("\\{" is no brace)
_DOLLAR_RE = re.compile(r"(?<!\\)\$")  # a "$" that is not "\$"
_MATH_MODE_RE = re.compile(r"\$\$(.*)\$\$|\$(.*)\$|\\\((.*)\\\)|\\\[(.*)\\\]", re.DOTALL)


def _closing_brace(text: str, pos: int) -> int | None:
    """Index of the "}" that closes the group opened just before `pos`, or None: cut off, or further than any answer
    goes (math_answers.MAX_CHARS; so a looping "\\boxed{\\boxed{..." does not cost the square of its length).
    "\\{" and "\\}" do not count."""
    depth = 1
    for m in _BRACE_RE.finditer(text, pos, pos + math_answers.MAX_CHARS + 1):
        depth += {"{": 1, "}": -1}.get(m.group(), 0)
        if depth == 0:
            return m.start()
    return None


def _math_span(text: str, pos: int) -> str | None:
    """The content of the math mode opened at `pos` ($...$ on one line, $$...$$, \\(...\\), \\[...\\]); None when
    there is none, or the "$" is currency (no closing "$" on the line, or one followed by a digit: "$18 + $3")."""
    for opener, closer in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)")):
        if text.startswith(opener, pos):
            close = text.find(closer, pos + 2, pos + 2 + _MAX_LINE)
            return text[pos + 2:close] if close > pos + 2 else None
    if not text.startswith("$", pos):
        return None
    line_end = text.find("\n", pos, pos + _MAX_LINE)
    m = _DOLLAR_RE.search(text, pos + 1, line_end if line_end >= 0 else pos + _MAX_LINE)
    if m is None or m.start() == pos + 1 or text[m.end():m.end() + 1].isdigit():
        return None
    return text[pos + 1:m.start()]


def _delimited(span: str) -> str | None:
    """The answer in a box's or math mode's content: a plain number when it is one (units allowed after it), else
    the LaTeX text itself when it can be a math answer; None otherwise."""
    clean = _WIDE_SPACE_RE.sub(" ", _SPACING_RE.sub("", _TEXT_RE.sub(r" \1 ", span))).strip()
    hit = expression(clean, 0, len(clean)) if "\n" not in clean else None
    if hit is not None and _UNITS_RE.fullmatch(clean, hit[1]):
        return canonical(hit[0])
    latex = span.strip().rstrip(".,;").strip()
    return latex if "\n" not in latex and math_answers.is_math_answer(latex) else None


def _phrase_value(text: str, pos: int) -> str | None:
    """The answer committed to after a phrase or "####" marker ending at `pos`, or None (see the module docstring)."""
    pos = _LEAD_RE.match(text, pos).end()
    span = _math_span(text, pos)
    if span is not None:
        return None if "\\boxed" in span else _delimited(span)
    # The answer is on this line, and no answer is longer than this (a bound that keeps looping text linear).
    line_end = text.find("\n", pos, pos + _MAX_LINE)
    end = line_end if line_end >= 0 else min(len(text), pos + _MAX_LINE)
    hit = expression(text, pos, end)
    if hit is not None and not _CONTINUES_RE.match(text, hit[1], end):
        return canonical(hit[0])
    if hit is not None or _LATEX_START_RE.match(text, pos, end):
        stop = _PLAIN_END_RE.search(text, pos, end)
        latex = text[pos:stop.start() if stop else end].strip().rstrip(",;:").strip()
        if "\\boxed" not in latex and math_answers.is_math_answer(latex):
            return latex
    return None if hit is None else canonical(hit[0])


def _marker_value(text: str, marker: re.Match) -> str | None:
    if marker["box"]:
        close = _closing_brace(text, marker.end())
        if close is not None:
            return _delimited(text[marker.end():close])
        # A box cut off (at the token limit): what follows it is read like a phrase's answer.
    return _phrase_value(text, marker.end())


def extract_answer(text: str, strict: bool = False) -> str | None:
    """The answer a model's response commits to: after its earliest marker followed by an answer (see the module
    docstring); a canonical number ("0.5") or a LaTeX answer ("2\\sqrt{2}"). Without one: None when strict, else the
    last number of the text (None when it has none)."""
    for marker in _MARKER_RE.finditer(text):
        value = _marker_value(text, marker)
        if value is not None:
            return value
    if strict:
        return None
    found = numbers(text)
    return canonical(found[-1]) if found else None


def normalize(text: str | None) -> str | None:
    """Canonical form of a single number written as text ("3 1/2" -> "3.5"), or None when it is not one number."""
    if text is None:
        return None
    value = to_fraction(text)
    return None if value is None else canonical(value)


def truncated(n_tokens: int, max_tokens: int) -> bool:
    """Whether a generation was cut at the token limit (it reached max_tokens)."""
    return n_tokens >= max_tokens


def score_rationale(text: str, gold: str, n_tokens: int, max_tokens: int) -> tuple[str | None, bool]:
    """(pred, correct) of a teacher rationale, strictly: pred needs an answer marker; a rationale cut at max_tokens
    keeps its pred but is not correct."""
    pred = extract_answer(text, strict=True)
    return pred, is_correct(pred, gold) and not truncated(n_tokens, max_tokens)


def parse_gold(raw: object, latex: bool = True) -> str:
    """A dataset's gold answer as extract_answer writes answers: a canonical number, or (when `latex`) a LaTeX math
    answer math-verify reads. Accepts GSM8K's '... #### 18' and a solution ending in '\\boxed{...}' (its last box),
    and math mode around the answer ("$\\frac{1}{2}$"). Raises ValueError naming the value otherwise."""
    text = str(raw)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    elif (box := text.rfind("\\boxed{")) >= 0 and (close := _closing_brace(text, box + 7)) is not None:
        text = text[box + 7:close]
    text = text.strip()
    value = normalize(text)
    if value is not None:
        return value
    whole = _MATH_MODE_RE.fullmatch(text)
    answer = _delimited(next(g for g in whole.groups() if g is not None) if whole else text)
    if answer is not None and (to_fraction(answer) is not None or (latex and math_answers.parses(answer))):
        return answer
    kinds = "a number or a math answer in LaTeX (\\frac{1}{2}, \\sqrt{2}, (1, 3])" if latex else "a number"
    raise ValueError(f"gold answer {str(raw)[:80]!r} is not {kinds}")


def is_correct(pred: str | None, gold: str) -> bool:
    """Whether pred is gold: exactly, as fractions, when both are plain numbers; else by math-verify."""
    if pred is None:
        return False
    a, b = to_fraction(pred), to_fraction(gold)
    if a is not None and b is not None:
        return a == b
    return math_answers.equivalent(gold, pred)
