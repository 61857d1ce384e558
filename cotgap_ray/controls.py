"""Control teachers: teachers whose effect on the student is known before any run, to show that the search and the
tests detect an effect when there is one (and call none when there is none).

    teachers:
      - control:oracle          # the task's reference solution, then "The answer is <gold>.": correct by construction
      - control:corrupt         # the same steps, but the final answer made wrong: must make the student worse
      - control:shuffled        # reference solutions of other problems (a derangement): wrong for every problem
      - packaged:gemma3-270m#clone=1   # a clone: the same teacher under another name (models.VARIANT_KEYS), its
                                       # rationales drawn with another seed; any difference from gemma3-270m is noise

A control has no model and no engine: its rationales are a pure function of the train problems, written into the
rationale cache like any teacher's (generation/pipeline.py, engine kind "control"), one per problem. Reference
solutions come from the task (records.Problem.solution): GSM8K's worked solution (and a file task's answer field in
the same "... #### 7" form), and for reasoning_gym's arithmetic generators the exact steps of the expression
(`arithmetic_steps`). A task without them refuses control teachers before anything runs (`check_controls`).

Controls are labelled as such wherever a teacher is shown (`describe`), and are never the teacher the report tells a
user to distill from: they answer "does the protocol see a known effect at this size?", not "which teacher?".
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import re
from fractions import Fraction

import pyarrow as pa

from cotgap_ray.answers import canonical, is_correct, score_rationale, to_fraction
from cotgap_ray.errors import InputError
from cotgap_ray.records import RATIONALE_SCHEMA

PREFIX = "control:"
# kind -> what the report says of it (and the direction of its known effect on a student that answers some problems)
KINDS = {
    "oracle": "reference solutions, correct by construction: should improve the student",
    "corrupt": "reference steps with a wrong final answer: should make the student worse",
    "shuffled": "reference solutions of other problems: should make the student worse",
}
# Bumped whenever a control's rows change for the same problems: part of its fingerprint, so of its cache key.
VERSION = "2"  # 2: a shuffled donor never shares the answer


def is_control(spec: str) -> bool:
    return spec.startswith(PREFIX)


def kind(spec: str) -> str:
    """The control kind of ``control:<kind>`` (a variant suffix ignored); InputError naming the valid kinds."""
    name = spec.removeprefix(PREFIX).partition("#")[0]
    if name not in KINDS:
        close = difflib.get_close_matches(name, KINDS, n=1)
        hint = f" Did you mean 'control:{close[0]}'?" if close else ""
        raise InputError(f"teacher {spec!r}: unknown control teacher {name!r}.{hint} Valid: "
                         f"{', '.join(PREFIX + k for k in KINDS)}")
    return name


def name(spec: str) -> str:
    """The display name of a control spec (without a variant suffix): control:oracle -> control-oracle."""
    return f"control-{kind(spec)}"


def fingerprint(spec: str) -> str:
    return hashlib.sha256(f"control\x1f{kind(spec)}\x1f{VERSION}".encode()).hexdigest()


def describe(spec: str) -> str | None:
    """What a control teacher is, for the report; None for a real teacher. A clone (a ``#...clone=N...`` suffix,
    models.VARIANT_KEYS) says whose. Parses the suffix itself: the report reads no model code."""
    original = clone_of(spec)
    if original is not None:
        return f"a clone of {original}: the same teacher, another sample of rationales; a difference is noise"
    if is_control(_suffix(spec)[0]):
        return KINDS[kind(_suffix(spec)[0])]
    return None


def _suffix(spec: str) -> tuple[str, list[tuple[str, str]]]:
    base, _, suffix = spec.rpartition("#") if "#" in spec else (spec, "", "")
    return base, [(k.strip(), v.strip()) for k, _, v in (i.partition("=") for i in suffix.split(",")) if k.strip()]


def expected(spec: str) -> str | None:
    """The verdict a control teacher must get on a student that answers some problems: "improves" (oracle) or
    "degrades" (corrupt, shuffled); None for a real teacher or a clone (a clone's check is against its original)."""
    base, _ = _suffix(spec)
    if not is_control(base) or clone_of(spec) is not None:
        return None
    return "improves" if kind(base) == "oracle" else "degrades"


def clone_of(spec: str) -> str | None:
    """The spec a clone (``...#clone=N``) copies: the same spec without its clone setting; None for a non-clone."""
    base, settings = _suffix(spec)
    if not any(k == "clone" for k, _ in settings):
        return None
    rest = ",".join(f"{k}={v}" for k, v in settings if k != "clone")
    return f"{base}#{rest}" if rest else base


# ------------------------------------------------------------------------------------------ reference solutions


_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def arithmetic_steps(expression: str) -> str:
    """The exact steps of an arithmetic expression (numbers, + - * /, unary minus, parentheses), innermost first, one
    operation a line, with exact fractions (written as answers.canonical writes them):

        "-33 / 11 + -22"  ->  "-33 / 11 = -3\\n-3 + -22 = -25"
        "-( 20 + 67 + -59 )" -> "20 + 67 = 87\\n87 + -59 = 28\\n-(28) = -28"

    ValueError for anything else (a name, a call, a power): the oracle writes steps only for what it can check."""
    steps: list[str] = []

    def value(node) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = value(node.operand)
            result = -inner if isinstance(node.op, ast.USub) else inner
            if not isinstance(node.operand, ast.Constant):  # -( ... ) is a step; -33 is a number
                steps.append(f"{'-' if isinstance(node.op, ast.USub) else '+'}({canonical(inner)}) = "
                             f"{canonical(result)}")
            return result
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError(f"division by zero in {expression!r}")
            result = {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right,
                      ast.Div: left / right if right else left}[type(node.op)]
            steps.append(f"{canonical(left)} {_OPS[type(node.op)]} {canonical(right)} = {canonical(result)}")
            return result
        raise ValueError(f"not plain arithmetic: {ast.dump(node)[:60]} in {expression!r}")

    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression: {expression!r} ({e.msg})") from None
    result = value(tree.body)
    if not steps:  # a bare number: nothing to compute
        steps.append(f"{canonical(result)} = {canonical(result)}")
    return "\n".join(steps)


def worked_solution(raw_answer: str) -> str:
    """GSM8K's worked solution (the text before '####'), without its calculator annotations '<<48/2=24>>'; '' when
    the answer has no worked part."""
    text = str(raw_answer)
    if "####" not in text:
        return ""
    return re.sub(r"<<[^<>]*>>", "", text.rsplit("####", 1)[0]).strip()


# ------------------------------------------------------------------------------------------------- the rationales


def wrong_answer(gold: str, problem_id: str) -> str:
    """A wrong answer near the gold one, fixed per problem: gold +- 1..9 (a hash of the problem id picks which); for
    a LaTeX gold answer (answers.parse_gold) that sum written out ("\\sqrt{2} + 3"), never equal to it."""
    digest = hashlib.sha256(problem_id.encode()).digest()
    offset = 1 + digest[0] % 9
    value = to_fraction(gold)
    if value is None:
        return f"{gold} + {offset}" if digest[1] % 2 else f"{gold} - {offset}"
    return canonical(value + (offset if digest[1] % 2 else -offset))


def _answer_line(value: str) -> str:
    # A LaTeX answer in math mode, so that it is read whole ("$2\\sqrt{2}$", answers.py).
    return f"The answer is {value}." if to_fraction(value) is not None else f"The answer is ${value}$."


def rationale(control: str, problem, others: list | None = None) -> str:
    """One control rationale for `problem` (records.Problem with a solution). `others`: the problems of the shard in
    order, for ``shuffled`` (the solution and answer of the next problem, cyclically, whose answer differs)."""
    if control == "oracle":
        return f"{problem.solution}\n{_answer_line(problem.answer)}"
    if control == "corrupt":
        wrong = wrong_answer(problem.answer, problem.id)
        steps = problem.solution
        # The last step's result is the answer: make it say the wrong one too, so the rationale is consistent.
        tail = f"= {problem.answer}"
        if steps.endswith(tail):
            steps = steps[: -len(tail)] + f"= {wrong}"
        return f"{steps}\n{_answer_line(wrong)}"
    if control == "shuffled":
        if not others or len(others) < 2:
            raise ValueError("control:shuffled needs at least 2 problems per shard")
        index = next(i for i, p in enumerate(others) if p.id == problem.id)
        later = [others[(index + k) % len(others)] for k in range(1, len(others))]
        # The next problem whose answer differs: a donor with this problem's answer would make the rationale count as
        # correct (1 of 160 in the default experiment did), so correct_only would keep it and the control would no
        # longer be wrong on every problem. Only when every other problem shares the answer: the next one.
        donor = next((p for p in later if not is_correct(p.answer, problem.answer)), later[0])
        return f"{donor.solution}\n{_answer_line(donor.answer)}"
    raise ValueError(f"unknown control {control!r}")


def word_pieces(text: str) -> int:
    """A control's token count without a tokenizer (it has no model): words and punctuation marks. Used for the
    rationale table's n_tokens (mean lengths in the report); never near the generation limit for these texts."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def rationale_rows(spec: str, problems: list, teacher: str, max_tokens: int) -> pa.Table:
    """RATIONALE_SCHEMA rows of a control teacher: one rationale per problem, scored like any teacher's."""
    control = kind(spec)
    rows = []
    for problem in problems:
        text = rationale(control, problem, problems)
        n_tokens = min(word_pieces(text), max(max_tokens - 1, 0))
        pred, correct = score_rationale(text, problem.answer, n_tokens, max_tokens)
        rows.append({"problem_id": problem.id, "teacher": teacher, "sample_idx": 0, "text": text, "pred": pred,
                     "correct": correct, "n_tokens": n_tokens})
    return pa.Table.from_pylist(rows, schema=RATIONALE_SCHEMA)


def check_controls(specs: list[str], problems: list, task: str) -> None:
    """Before anything runs: each control teacher is known, and the train problems carry reference solutions."""
    controls = [s for s in specs if is_control(s)]
    for spec in controls:
        kind(spec)
    if not controls:
        return
    missing = [p for p in problems if not getattr(p, "solution", "")]
    if missing:
        raise InputError(
            f"teachers: {', '.join(controls)} need the task's reference solutions, and task {task} has none for "
            f"{len(missing)} of {len(problems)} train problems (first: {missing[0].id}). Solutions come from GSM8K, "
            f"a file task whose answer field has the form '<worked solution> #### <answer>', and the arithmetic "
            f"generators of reasoning_gym (basic_arithmetic, chain_sum, decimal_chain_sum, products); drop the "
            f"control teachers for this task")
    if any(kind(s) == "shuffled" for s in controls) and len(problems) < 2:
        raise InputError("teacher control:shuffled needs at least 2 train problems (task.n_train)")
