"""Final answers: pull the boxed answer out of text and check it against gold with math-verify."""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (braces balanced), or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start : i - 1].strip()
    return None


def _as_latex(ans: str) -> str:
    ans = ans.strip()
    if "\\boxed" in ans or "$" in ans or "\\(" in ans or "\\[" in ans:
        return ans
    return f"${ans}$"


def verify(gold: str, answer: str) -> bool:
    """True if ``answer`` (free text, boxed or bare) is mathematically equal to ``gold``.

    Uses math-verify; falls back to a normalised string match when it parses nothing (text
    answers in puzzles and code outputs).
    """
    from math_verify import parse
    from math_verify import verify as mv_verify

    if not gold or not answer:
        return False
    boxed = last_boxed(answer)
    candidate = boxed if boxed is not None else answer
    try:
        g, a = parse(_as_latex(gold)), parse(_as_latex(candidate))
        if g and a and mv_verify(g, a):
            return True
    except Exception:  # math-verify raises on some inputs (timeouts, odd latex): treat as no match
        pass
    norm = lambda s: re.sub(r"[\s$.]+|\\text\{|\}", "", s).lower()  # noqa: E731
    return norm(gold) == norm(candidate)
