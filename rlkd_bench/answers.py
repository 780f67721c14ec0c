"""Final answers: where a completion's answer is, and whether it is right. The one owner.

Teacher verification (``teacher.judge``), ``traces --verify``, the training accuracy reward
(``reward.rewards.accuracy``), every eval metric (``tasks.metrics``) and the structure matchers
(answers of steps) all call this module, so training and evaluation agree on every sample.
The rules (the README's "Answer rules" says the same):

- **Where the answer is** (``answer_text``, ``final_answer``): the thinking ends at the *last*
  ``</think>`` and the answer text is what follows it (``structure.split_think`` cuts there too).
  Without ``</think>``: no answer when ``<think>`` was opened (cut off mid-thought); the whole
  completion when there are no think tags at all (a model that does not think in tags; R1 chat
  templates open ``<think>`` in the prompt, so a cut-off R1 completion is read as written, as
  lighteval does). In the answer text, the first ``<answer>`` block when there is one, else all of
  it; in that, the last ``\\boxed{}`` when there is one, else all of it: an answer that is neither
  boxed nor tagged must be nothing but the answer.
- **Math first** (``equal``): when both sides parse as math, math-verify decides (two plain
  decimals are compared exactly, without it). Parsing as math means: no control character, no
  prose (a word of 3+ letters that is not a LaTeX command or a math function, except one unit word
  after a number: ``5 meters``), and math-verify finds an expression. ``1.5e3`` is read as
  scientific notation and ``\\$`` as a currency sign before math-verify sees them.
- **Text fallback**: only when a side does not parse as math, the two texts are compared after
  setting aside case, runs of spaces, ``$``, ``\\text{}`` wrappers and one closing period. No ``.``
  and no digit is ever dropped, so 1.5 never equals 15.
- **Choices** (``extract_choice``, ``check(..., choices="ABCD")``): the letter the answer names
  against a gold letter.
- **Golds**: a text gold is scored by the same rules (math when it parses, text otherwise), in
  training and in evaluation; a blank gold cannot be scored, and the verdict is None, never a wrong answer.

math-verify's timeouts use SIGALRM, which only works in the main thread; elsewhere (TRL runs
async rewards on a daemon loop thread) it is called without one rather than failing silently.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from rlkd_bench.structure import answer_tag, split_think

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CHOICE_LETTERS = "ABCD"
_SPACE = " \t\n\r"  # what is stripped around an answer (str.strip would also eat control characters)

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


# -- where the answer is --------------------------------------------------------------------------
def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (braces balanced), or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start : i - 1].strip(_SPACE)
    return None


def answer_text(completion: str) -> str:
    """What a completion says after its thinking (the rule in the module docstring); "" for none."""
    text = completion or ""
    split = split_think(text)
    if split.closed:
        return split.answer
    return "" if THINK_OPEN in text else text.strip(_SPACE)


def _block(completion: str) -> str:
    """The answer text, narrowed to its ``<answer>`` block when it has one."""
    rest = answer_text(completion)
    tagged = answer_tag(rest)
    return tagged if tagged is not None else rest


def final_answer(completion: str) -> str | None:
    """The final answer of a completion: the last ``\\boxed{}`` of its answer block, else the
    whole block; None when there is no answer at all."""
    block = _block(completion)
    boxed = last_boxed(block)
    answer = boxed if boxed is not None else block
    return answer or None


# "Answer: C", "the answer is (D)"; the letter itself must be a capital ("the answer is a prime" is no choice)
_ANSWER_LINE = re.compile(r"(?i:answer)\s*(?:is|:)?\s*[:=]?\s*\**\s*\(?\s*\$?\s*(?:\\text\{)?\s*([A-Z])\b")
_BOXED_LETTER = re.compile(r"\\boxed\s*\{\s*(?:\\text\{\s*)?\(?([A-Z])\)?\s*\}?\s*\}")
_LONE_LETTER = re.compile(r"^\W*(?:\\text(?:bf)?\s*\{\s*)?\(?([A-Za-z])\)?\s*\}?\W*$")


def extract_choice(completion: str, letters: str = CHOICE_LETTERS) -> str | None:
    """The letter a multiple-choice answer names, or None.

    Read from the answer block only: the last ``\\boxed{X}``, else the last "Answer: X" /
    "the answer is (X)", else an answer that is nothing but a letter (``C``, ``(C)``, ``\\text{C}``).
    A letter outside ``letters`` does not count.
    """
    text = _block(completion)
    for pattern in (_BOXED_LETTER, _ANSWER_LINE):
        found = [m.group(1).upper() for m in pattern.finditer(text)]
        found = [x for x in found if x in letters]
        if found:
            return found[-1]
    m = _LONE_LETTER.match(text)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    return None


# -- math: math-verify first ----------------------------------------------------------------------
# Text that reads as prose (a word of 3+ letters that is not a LaTeX command or a math function) is
# not sent to math-verify: it would pull a stray number out of "3 dollars or more".
_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")
_MATH_WORDS = {"sqrt", "frac", "dfrac", "tfrac", "sin", "cos", "tan", "log", "exp", "cdot", "times", "div",
               "text", "boxed", "left", "right", "infty", "mathrm", "mod", "pmod", "circ", "deg", "and"}
# one unit word closing an answer that has a number before it: "5 meters", "18\text{ inches}"
_UNIT = re.compile(r"(?:\\(?:text|mathrm|mbox)\s*\{\s*)?([a-zA-Z]+)\s*\}?\s*$")
_E_NUMBER = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))[eE]([+-]?\d+)$")
_PLAIN_NUMBER = re.compile(r"^\$?\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*\$?\.?$")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def has_control(text: str) -> bool:
    """A control character other than tab and newline: garbage, never part of an answer."""
    return any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in text)


def _is_prose(text: str) -> bool:
    words = [w for w in _WORD.findall(text) if w.lower() not in _MATH_WORDS]
    if not words:
        return False
    unit = _UNIT.search(text)
    return not (len(words) == 1 and unit is not None and unit.group(1) == words[0]
                and any(ch.isdigit() for ch in text[: unit.start()]))


def _as_math(text: str) -> str:
    """An answer as math-verify should see it: stripped, no closing period, ``\\$`` dropped, and
    ``1.5e3`` written as ``1.5\\times10^{3}`` (math-verify reads ``e`` as Euler's number)."""
    text = (text or "").strip(_SPACE).rstrip(".").replace("\\$", "").strip(_SPACE)
    m = _E_NUMBER.match(text)
    return f"{m.group(1)}\\times10^{{{int(m.group(2))}}}" if m else text


@functools.lru_cache(maxsize=8192)  # the same teacher answers recur across generations and steps
def parse_math(text: str) -> list | None:
    """math-verify's parse of ``text`` when it reads as a math answer, else None (see the module
    docstring: no control character, no prose, and math-verify finds an expression)."""
    text = _as_math(text)
    if not text or len(text) > 200 or has_control(text) or _is_prose(text):
        return None
    parsed = mv_parse(text)
    return parsed if any(not isinstance(p, str) for p in parsed) else None  # strings only: nothing parsed


def mv_parse(text: str) -> list:
    """math-verify's parse of an answer (bare, ``$...$`` or boxed); [] when it finds nothing."""
    from math_verify import parse

    text = (text or "").strip()
    latex = text if ("$" in text or "\\(" in text or "\\[" in text or "\\boxed" in text) else f"${text}$"
    try:
        return parse(latex, parsing_timeout=5 if _in_main_thread() else None)  # type: ignore[arg-type]
    except Exception:  # odd LaTeX: not math
        return []


def mv_verify(gold: list, answer: list) -> bool:
    """math-verify's verify, thread-safe (see the module docstring); False on its errors."""
    from math_verify import verify

    try:
        return bool(verify(gold, answer, timeout_seconds=5 if _in_main_thread() else None))
    except Exception:
        return False


def _plain_number(text: str) -> Fraction | None:
    m = _PLAIN_NUMBER.match(text.replace("\\$", "").strip())
    if not m:
        return None
    try:
        return Fraction(Decimal(m.group(1)))
    except (InvalidOperation, ValueError):
        return None


@functools.lru_cache(maxsize=8192)
def math_equal(a: str, b: str) -> bool | None:
    """True/False when both sides parse as math (math-verify decides, ``a`` as the gold), None when
    either does not. Two plain decimal numbers are compared exactly without it (the common case,
    100x cheaper, and exact where math-verify rounds)."""
    a, b = a or "", b or ""
    if has_control(a) or has_control(b):
        return None
    na, nb = _plain_number(a), _plain_number(b)
    if na is not None and nb is not None:
        return na == nb
    pa, pb = parse_math(a), parse_math(b)
    if pa is None or pb is None:
        return None
    return mv_verify(pa, pb)


# -- text -----------------------------------------------------------------------------------------
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox)\s*\{([^{}]*)\}")


def normalize_text(text: str) -> str:
    """A text answer as compared: case, runs of spaces, ``$``, ``\\text{}`` wrappers and one closing
    period set aside; every other character (``.`` and digits included) kept."""
    s = _TEXT_WRAPPER.sub(r"\1", unicodedata.normalize("NFKC", text or "")).replace("$", "")
    s = re.sub(r"[ \t\n\r]+", " ", s).strip(_SPACE).casefold()
    return s[:-1].rstrip(" ") if s.endswith(".") else s


# -- the verdict ----------------------------------------------------------------------------------
def _str(value: object) -> str:
    """A gold as text: datasets hold numbers too (15, 1.5); None is blank."""
    return "" if value is None else str(value)


def _blank(text: str | None) -> bool:
    return not (text or "").strip(_SPACE)


def _unbox(text: str) -> str:
    boxed = last_boxed(text)
    return boxed if boxed is not None else text


def equal(gold: str, answer: str) -> bool | None:
    """Is the final answer ``answer`` equal to ``gold``? Math first, text only when a side is not
    math; None when the gold is blank (it cannot be scored)."""
    gold, answer = _str(gold), _str(answer)
    if _blank(gold):
        return None
    if _blank(answer):
        return False
    gold, answer = _unbox(gold), _unbox(answer)
    same = math_equal(gold, answer)
    if same is not None:
        return same
    return normalize_text(gold) == normalize_text(answer)


def check(gold: str, completion: str, *, choices: str | None = None) -> bool | None:
    """Is this completion's final answer right against ``gold``? The one check every caller uses.

    ``choices`` (e.g. ``"ABCD"``): multiple choice, the letter the answer names against the gold
    letter. None when the gold cannot be scored (blank, or a letter outside ``choices``).
    """
    gold = _str(gold)
    if _blank(gold):
        return None
    if choices:
        letter = gold.strip().upper()
        if len(letter) != 1 or letter not in choices:
            return None
        return extract_choice(completion or "", choices) == letter
    answer = final_answer(completion or "")
    return False if answer is None else equal(gold, answer)


verify = check  # the name earlier callers use: the same function
