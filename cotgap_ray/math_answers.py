r"""Math answers that are not plain numbers (LaTeX: \frac{\sqrt{3}}{2}, 2\sqrt{2}, (1, 3], \pi), compared with
Hugging Face's math-verify, the verifier competition-math evaluations use (pure functions, no model, no Ray).

    equivalent(r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}")  -> True     (both parsed to sympy, then compared)
    equivalent(r"(1, 3]", r"(1,3)")                         -> False    (an open interval is another set)
    is_math_answer("blue")                                  -> False    (a word, not a math answer)

answers.py reads the answer a text commits to (position-aware markers) and compares plain numbers itself, exactly;
only when either side is not a plain number does it call `equivalent`. math-verify imports sympy (about 0.7 s), so it
is imported on the first such call, never by `import cotgap_ray.answers`: GSM8K and arithmetic tasks never load it.

Timeouts. math-verify guards parsing and comparison with signal.alarm by default, which raises outside the main
thread (Ray actors may score in a worker thread) and makes a verdict depend on the machine's speed. Both are turned
off here (parsing_timeout=None, timeout_seconds=None); what an alarm would catch, an answer that makes sympy compute
forever (2^{2^{100}}), is refused before sympy sees it (`_too_costly`): such an answer is never equivalent.
"""

from __future__ import annotations

import functools
import re

# Longer than any competition answer; bounds the work sympy does on a rationale's garbage.
MAX_CHARS = 200
# LaTeX commands and \text{...} blocks, removed before looking for words.
_COMMANDS_RE = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{[^{}]*\}|\\[A-Za-z]+")
# An exponent's argument: a braced group (one level of nesting), a command or a run of word characters.
_EXPONENT_RE = re.compile(r"\^\s*(\{(?:[^{}]|\{[^{}]*\})*\}|\\[A-Za-z]+|\w+)")


def is_math_answer(text: str) -> bool:
    """Whether `text` can be a math answer: it holds a digit, a letter or a LaTeX command, no word of three or more
    letters outside LaTeX commands and \\text{...}, and no two numbers side by side ("blue", "below", "3 4 5" are not
    answers; "x", "2\\pi", "\\text{(A)}" are). Cheap: no sympy."""
    text = text.strip()
    if not text or not re.search(r"[0-9A-Za-z\\]", text) or re.search(r"\d\s+\d", text):
        return False
    return re.search(r"[A-Za-z]{3,}", _COMMANDS_RE.sub(" ", text)) is None


def _too_costly(text: str) -> bool:
    """Answers sympy could compute on for ever, refused without trying: too long, a power tower (2^{2^{100}},
    2^2^100), an exponent with 4+ digits, or a factorial of anything but a number below 1000."""
    if len(text) > MAX_CHARS or re.search(r"\^\s*\d+\s*\^", text):
        return True
    for m in _EXPONENT_RE.finditer(text):
        if "^" in m.group(1) or re.search(r"\d{4,}", m.group(1)):
            return True
    return re.search(r"(?<!\\)!", re.sub(r"(?<![\d.])\d{1,3}\s*!", "", text)) is not None


def _not_the_timeout_notice(record) -> bool:
    """math-verify logs "Timeout is disabled ..." once per process when its timeout is off; it is off on purpose
    (module docstring), so the notice is dropped rather than printed by every Ray worker."""
    return not record.getMessage().startswith("Timeout is disabled")


@functools.cache
def _math_verify():
    import logging

    import math_verify

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_not_the_timeout_notice)
    return math_verify


@functools.lru_cache(maxsize=4096)
def parsed(text: str) -> tuple:
    """math-verify's reading of one LaTeX answer (sympy objects and its normalized string); () when it reads
    nothing or the answer is refused as too costly. Cached: a gold answer is compared with every rationale."""
    if _too_costly(text):
        return ()
    mv = _math_verify()
    # "$...$": math-verify's LaTeX extraction looks for math mode; the answer has been cut out of its text already.
    return tuple(mv.parse(f"${text}$", parsing_timeout=None))


def parses(text: str) -> bool:
    """Whether math-verify reads `text` as a math object (used to accept a task's non-numeric gold answers)."""
    return any(not isinstance(x, str) for x in parsed(text))


@functools.lru_cache(maxsize=65536)
def equivalent(gold: str, pred: str) -> bool:
    """Whether `pred` is the same math answer as `gold` for math-verify (numbers to 6 decimals, sympy equality,
    sets and intervals, equations). Not symmetric: `gold` is the reference, as math-verify expects. Cached: one
    comparison costs 1-300 ms, and a teacher's samples of one problem often repeat an answer."""
    g, p = parsed(gold), parsed(pred)
    if not g or not p:
        return False
    return bool(_math_verify().verify(list(g), list(p), timeout_seconds=None))
