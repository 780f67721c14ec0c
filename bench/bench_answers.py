"""The answer table (tests/answer_pairs.py) scored by the old rule and by the answer module.

    .venv/bin/python bench/bench_answers.py

For each rule: how many rows get the expected verdict, how many agree with math-verify's own
verdict (computed live), and how many differ from it on a row that gives no reason (no ``why``). "The old rule" is the answer check as it was before issue 14, copied here
for the comparison only: ``answers.verify`` for answers (math-verify, then a string match that
dropped spaces, ``$`` and every ``.`` whenever math-verify said "different", so 1.5 matched 15) and
the old ``extract_choice`` for multiple choice. Also the CPU time per row of each.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_table():
    spec = importlib.util.spec_from_file_location("answer_pairs", ROOT / "tests" / "answer_pairs.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


# -- the old rule (before issue 14), verbatim but for names --------------------------------------
def _old_as_latex(ans: str) -> str:
    ans = ans.strip()
    if "\\boxed" in ans or "$" in ans or "\\(" in ans or "\\[" in ans:
        return ans
    return f"${ans}$"


def old_verify(gold: str, answer: str) -> bool:
    from math_verify import parse
    from math_verify import verify as mv_verify

    from rlkd_bench.answers import last_boxed

    if not gold or not answer:
        return False
    boxed = last_boxed(answer)
    candidate = boxed if boxed is not None else answer
    try:
        g, a = parse(_old_as_latex(gold)), parse(_old_as_latex(candidate))
        if g and a and mv_verify(g, a):
            return True
    except Exception:
        pass
    norm = lambda s: re.sub(r"[\s$.]+|\\text\{|\}", "", s).lower()  # noqa: E731
    return norm(gold) == norm(candidate)


_OLD_ANSWER_LINE = re.compile(r"(?i:answer)\s*(?:is|:)?\s*[:=]?\s*\**\s*\(?\s*\$?\s*(?:\\text\{)?\s*([A-Z])\b")
_OLD_BOXED_LETTER = re.compile(r"\\boxed\s*\{\s*(?:\\text\{\s*)?\(?([A-Z])\)?\s*\}?\s*\}")
_OLD_LONE_LETTER = re.compile(r"^\W*\(?([A-Za-z])\)?\W*$")


def old_choice(gold: str, text: str, letters: str = "ABCD") -> bool:
    text = text.strip()  # the old final_text of a completion without tags
    for pattern in (_OLD_BOXED_LETTER, _OLD_ANSWER_LINE):
        found = [m.group(1).upper() for m in pattern.finditer(text) if m.group(1).upper() in letters]
        if found:
            return found[-1] == gold
    m = _OLD_LONE_LETTER.match(text)
    return bool(m and m.group(1).upper() in letters and m.group(1).upper() == gold)


def new_verdict(kind: str, gold: str, answer: str) -> bool | None:
    from rlkd_bench import answers

    return answers.check(gold, answer, choices="ABCD") if kind == "choice" else answers.equal(gold, answer)


def old_verdict(kind: str, gold: str, answer: str) -> bool:
    return old_choice(gold, answer) if kind == "choice" else old_verify(gold, answer)


def main() -> int:
    t = load_table()
    table = [("math", *r) for r in t.ROWS] + [("choice", *r) for r in t.CHOICE_ROWS]
    mv = [t.math_verify_verdict(g, a) for _, g, a, _, _ in table]
    print(f"{len(table)} rows ({len(t.ROWS)} answers, {len(t.CHOICE_ROWS)} multiple choice); "
          f"{sum(bool(r[4]) for r in table)} rows say why we differ from math-verify on purpose\n")
    print(f"{'rule':10} {'expected':>10} {'wrong':>6} {'= math-verify':>14} {'!= math-verify':>15} "
          f"{'unexplained !=':>15} {'ms/row':>7}")
    for name, fn in (("old", old_verdict), ("new", new_verdict)):
        t0 = time.process_time()
        got = [fn(k, g, a) for k, g, a, _, _ in table]
        ms = (time.process_time() - t0) * 1000 / len(table)
        ok = sum(v is e for v, (_, _, _, e, _) in zip(got, table, strict=True))
        same = sum(v is m for v, m in zip(got, mv, strict=True))
        # differing from math-verify on a row that gives no reason for it
        unexplained = sum(v is not m and not r[4] for v, m, r in zip(got, mv, table, strict=True))
        print(f"{name:10} {ok:>10} {len(table) - ok:>6} {same:>14} {len(table) - same:>15} {unexplained:>15} "
              f"{ms:>7.2f}")
        wrong = [(k, g, a, e, v) for v, (k, g, a, e, _) in zip(got, table, strict=True) if v is not e]
        for k, g, a, e, v in wrong[:60]:
            print(f"    {name} {k:6} gold {g!r:28} answer {a!r:32} expected {e}, got {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
