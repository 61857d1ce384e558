r"""Numbers as models and datasets write them, and the arithmetic of one line (pure functions, no model, no Ray).

    "1,000"  "1 000"  "1{,}000"   -> 1000    thousands separators (",", a space, LaTeX "{,}" and "\,")
    ".5"  "2.5e3"  "3/4"  "50%"   -> 1/2, 2500, 3/4, 50 (a percent or degree sign is a unit: the value is kept)
    "3 1/2"  "3\frac{1}{2}"       -> 7/2     mixed numbers (a whole number, then a proper fraction)
    "\frac{3}{4}"  "\dfrac12"     -> 3/4     LaTeX fractions of two numbers
    "-$5"  "$-5"  "−5"            -> -5      signs (ASCII or U+2212 minus) before or after a currency sign

A separator joins groups of exactly three digits after a lead of one to three, and the last group must not run on
into a digit or a "/": "5 12", "12 3456" and "2 100/7" are two numbers each, not 512, 123456 or 2100/7.

`expression(text, pos)` reads the arithmetic that starts at `pos`, on one line: numbers, + - * / ^ (also "x"
between spaces, \times, \cdot, \div, ×, ÷), parentheses and braces, and "=". It evaluates exactly (Fractions) the
part after the last "=" (the result of an equation), taking the longest prefix that is a whole expression:

    "12 - 4 = 8."   -> 8        "5 - 3"  -> 2        "8 apples, since 2 * 4 = 8"  -> 8 (stops at "apples")
    "12 - 4 = ?"    -> None     (an "=" with no result)

"$", "\(", "\)", "\left", "\right" and LaTeX spacing between tokens are skipped.
"""

from __future__ import annotations

import re
from fractions import Fraction

_SEP = r"(?:,|\{,\}|\\,|[ \u00a0\u2009\u202f])"
_INT = rf"(?:\d{{1,3}}(?:{_SEP}\d{{3}})+(?![\d/])|\d+)"
_EXP = r"(?:[eE][-+]?\d{1,3}(?!\d))?"
# An integer, a fraction of integers ("3/4", not "3/4.5"), a decimal with an optional exponent, a bare ".5".
_PLAIN_RE = re.compile(rf"{_INT}(?:/(?!0+(?!\d))\d+(?!\d|\.\d)|(?:\.\d+)?{_EXP})|(?<![\d.])\.\d+{_EXP}")
_SEP_RE = re.compile(_SEP)
_FRAC_ARG = r"(?:\{{\s*(?P<{0}s>[-−]?)\s*(?P<{0}>\d+(?:\.\d+)?)\s*\}}|(?P<{0}1>\d))"
_FRAC_RE = re.compile(r"\\[dt]?frac\s*" + _FRAC_ARG.format("n") + r"\s*" + _FRAC_ARG.format("d"))
_MIXED_RE = re.compile(r"(?P<w>\d+)[ \u00a0]+(?P<n>\d+)/(?P<d>\d+)(?!\d|\.\d)")
_WHOLE_BEFORE_FRAC_RE = re.compile(r"(\d+)\s*(?=\\[dt]?frac)")
# A unit written after a number: percent and degree signs. They do not change the value (GSM8K's "20%" is 20).
_SUFFIX_RE = re.compile(r"\s*(?:\\?%|\^\s*\{?\s*\\circ\s*\}?|°)")
# A sign is a sign only where it does not follow a word or a closing bracket: in "5 - 3" and "5-3" the 3 is positive.
_SIGN_RE = re.compile(r"(?<![\w)\]}])[-−]")
_CURRENCY_RE = re.compile(r"\\?\$\s*")
_START_RE = re.compile(r"[-−$\\.\d]")


def _frac(text: str, pos: int, signed: bool = True) -> Fraction | None:
    """The value of a LaTeX fraction of two numbers at `pos` and its end, or None."""
    m = _FRAC_RE.match(text, pos)
    if m is None or (not signed and (m["ns"] or m["ds"])):
        return None
    num = Fraction(m["n"] or m["n1"]) * (-1 if m["ns"] else 1)
    den = Fraction(m["d"] or m["d1"]) * (-1 if m["ds"] else 1)
    return (num / den, m.end()) if den else None


def scan(text: str, pos: int) -> tuple[Fraction, int] | None:
    """The unsigned number that starts exactly at `pos` (see the module docstring) and where it ends, or None."""
    hit = None
    if (m := _MIXED_RE.match(text, pos)) and 0 < int(m["n"]) < int(m["d"]):
        hit = int(m["w"]) + Fraction(int(m["n"]), int(m["d"])), m.end()
    elif (m := _WHOLE_BEFORE_FRAC_RE.match(text, pos)) and (f := _frac(text, m.end(), signed=False)) and 0 < f[0] < 1:
        hit = int(m[1]) + f[0], f[1]
    elif text.startswith("\\", pos):
        hit = _frac(text, pos)
    elif m := _PLAIN_RE.match(text, pos):
        hit = Fraction(_SEP_RE.sub("", m.group())), m.end()
    if hit is not None and (s := _SUFFIX_RE.match(text, hit[1])):
        hit = hit[0], s.end()
    return hit


def scan_signed(text: str, pos: int) -> tuple[Fraction, int] | None:
    """A number at `pos` with its sign and currency sign ("-$1,000.50", "$-5", "−7"), and where it ends; or None."""
    sign, i = 1, pos
    if m := _SIGN_RE.match(text, i):
        sign, i = -1, m.end()
    if m := _CURRENCY_RE.match(text, i):
        i = m.end()
        if sign == 1 and (m := _SIGN_RE.match(text, i)):
            sign, i = -1, m.end()
    hit = scan(text, i)
    return None if hit is None else (sign * hit[0], hit[1])


def numbers(text: str) -> list[Fraction]:
    """Every number of `text`, in order (signed, as written)."""
    found, pos = [], 0
    while m := _START_RE.search(text, pos):
        hit = scan_signed(text, m.start())
        if hit is None:
            pos = m.start() + 1
        else:
            found.append(hit[0])
            pos = hit[1]
    return found


def to_fraction(text: str) -> Fraction | None:
    """Parse one number as written ("-$1,000.50", "3/4", "−7", ".5", "3 1/2", "\\frac{1}{2}") into an exact
    Fraction; None if the text is anything more or less than one number."""
    s = text.strip().rstrip(".").rstrip()
    hit = scan_signed(s, 0) if s else None
    return hit[0] if hit is not None and hit[1] == len(s) else None


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


# ------------------------------------------------------------------------------------------ one line of arithmetic

_SKIP_RE = re.compile(r"(?:[ \t]+|\\?\$|\\[()]|\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\[!,;: ]|"
                      r"\\displaystyle(?![A-Za-z]))+")
_OP_RE = re.compile(r"\\(?:times|cdot|div)(?![A-Za-z])|[-+−*×·÷/^]|(?<=[ \t])x(?=[ \t])")
_OPS = {"−": "-", "×": "*", "·": "*", "\\times": "*", "\\cdot": "*", "x": "*", "÷": "/", "\\div": "/"}
# An expression longer than this is not an answer; the bound also keeps the recursive parser's depth small.
_MAX_TOKENS = 100
# 2^10 is an answer; 2^100000 is a rationale's garbage that would take seconds to compute.
_MAX_POWER_BITS = 4096


def _tokens(text: str, pos: int, end: int) -> list[tuple[str, object, int]]:
    """(kind, value, end) tokens from `pos` until the first character that is not arithmetic (or `end`)."""
    # Read a copy of text[pos - 1:end] (the character before pos for the look-behinds), not of the whole text: a
    # looping rationale has thousands of markers, each read from here.
    base = max(0, pos - 1)
    out, text, pos, end = [], text[base:end], pos - base, end - base
    while len(out) <= _MAX_TOKENS:
        if m := _SKIP_RE.match(text, pos, end):
            pos = m.end()
        if pos >= end:
            break
        if hit := scan(text, pos):
            out.append(("num", hit[0], hit[1]))
            pos = hit[1]
        elif m := _OP_RE.match(text, pos, end):
            out.append(("op", _OPS.get(m.group(), m.group()), m.end()))
            pos = m.end()
        elif text[pos] in "({)}=":
            kind = {"{": "(", "}": ")"}.get(text[pos], text[pos])
            out.append((kind, None, pos + 1))
            pos += 1
        else:
            break
    return [(kind, value, stop + base) for kind, value, stop in out]


class _Refused(Exception):
    """An expression with no exact value worth computing: a division by zero, a power with a fractional exponent
    (left to math-verify), or one too large."""


def _evaluate(toks: list[tuple[str, object, int]]) -> tuple[Fraction, int] | None:
    """The value of the longest prefix of `toks` that is a whole expression and how many tokens it takes, or None.
    Precedence as usual: parentheses, then ^ (right to left), unary signs, * and /, + and -. Raises _Refused."""
    n = len(toks)

    def is_op(i: int, ops: str) -> bool:
        return i < n and toks[i][0] == "op" and toks[i][1] in ops

    def atom(i):
        if i < n and toks[i][0] == "num":
            return toks[i][1], i + 1
        if i < n and toks[i][0] == "(":
            inner = expr(i + 1)
            if inner is not None and inner[1] < n and toks[inner[1]][0] == ")":
                return inner[0], inner[1] + 1
        return None

    def power(i):
        base = atom(i)
        if base is None or not is_op(base[1], "^"):
            return base
        exp = unary(base[1] + 1)
        if exp is None:  # "2^x": the expression ends at the 2 (the caller sees the "^" that follows)
            return base
        bits = (abs(base[0].numerator).bit_length() + base[0].denominator.bit_length()) * abs(exp[0].numerator)
        if exp[0].denominator != 1 or (base[0] == 0 and exp[0] < 0) or bits > _MAX_POWER_BITS:
            raise _Refused
        return base[0] ** int(exp[0]), exp[1]

    def unary(i):
        if is_op(i, "+-"):
            inner = unary(i + 1)
            return None if inner is None else ((-inner[0] if toks[i][1] == "-" else inner[0]), inner[1])
        return power(i)

    def term(i):
        left = unary(i)
        while left is not None and is_op(left[1], "*/"):
            right = unary(left[1] + 1)
            if right is None:
                break
            if toks[left[1]][1] == "/" and right[0] == 0:
                raise _Refused
            left = (left[0] * right[0] if toks[left[1]][1] == "*" else left[0] / right[0]), right[1]
        return left

    def expr(i):
        left = term(i)
        while left is not None and is_op(left[1], "+-"):
            right = term(left[1] + 1)
            if right is None:
                break
            left = (left[0] + right[0] if toks[left[1]][1] == "+" else left[0] - right[0]), right[1]
        return left

    return expr(0)


def expression(text: str, pos: int, end: int | None = None) -> tuple[Fraction, int] | None:
    """The value the arithmetic at `text[pos:end]` (one line) comes to, and where the part read ends; None when it
    holds no expression, or an "=" with no result after it (see the module docstring)."""
    end = len(text) if end is None else end
    line_end = text.find("\n", pos, end)
    end = line_end if line_end >= 0 else end
    toks = _tokens(text, pos, end)
    eqs = [i for i, t in enumerate(toks) if t[0] == "="]
    tail = toks[eqs[-1] + 1:] if eqs else toks
    try:
        hit = _evaluate(tail)
    except _Refused:
        return None
    return None if hit is None else (hit[0], tail[hit[1] - 1][2])
