"""The step format: the one place that knows what a reasoning step looks like.

A decomposition is a sequence of steps, each a triple (meta-reasoning, sub-problem, answer),
closed by "So the final answer is: ...". Annotators, the GSRM, the reward and the lm-eval metrics
all read and write steps through this module, so a tag variant handled here is handled everywhere.

Parsing is lenient (the paper's tags, the typo'd ``[Meat-reasoning]`` tags of its training data
and the ``[sub-think]/[Query]`` tags of its reward code; numbers, colons, markdown bold, a trailing
``-``); rendering is canonical; ``validate`` says in words what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

META, SUBPROBLEM, ANSWER = "meta", "subproblem", "answer"
KINDS = (META, SUBPROBLEM, ANSWER)
CANONICAL_TAG = {META: "Meta-reasoning", SUBPROBLEM: "Sub-problem", ANSWER: "Answer"}
FINAL_ANSWER_LINE = "So the final answer is:"

_TAG_NAMES = {
    META: r"me(?:ta|at)[\s_-]*reasoning|sub[\s_-]*think",
    SUBPROBLEM: r"sub[\s_-]*(?:problem|question)|query",
    ANSWER: r"(?:sub[\s_-]*)?answer",
}
_NAME_ALT = "|".join(f"(?P<{k}>{v})" for k, v in _TAG_NAMES.items())
# "[Meta-reasoning 1]:", "**[Sub-problem 2]**:", "[Answer]", "[Query 3] -"; anywhere in the text.
_BRACKETED = rf"\*{{0,2}}\[\s*(?:{_NAME_ALT})\s*(?P<num>\d+)?\s*\]\*{{0,2}}\s*:?\*{{0,2}}"
# "**Meta-reasoning 1:**" or "Sub-problem 2:" without brackets: only at the start of a line.
_BARE = (
    rf"(?m:^)[ \t>*-]*\*{{0,2}}(?:{_NAME_ALT.replace('?P<', '?P<b_')})[ \t]*(?P<b_num>\d+)?[ \t]*"
    rf"\*{{0,2}}:\*{{0,2}}"
)
_TAG_RE = re.compile(rf"{_BRACKETED}|{_BARE}", re.IGNORECASE)
_FINAL_RE = re.compile(
    r"(?:^|\n)[ \t>*]*(?:so,?\s+)?the\s+final\s+answer\s+is\s*\**\s*:?\s*\**", re.IGNORECASE
)
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass(frozen=True)
class Step:
    """One step: why this sub-problem next, the sub-problem itself, and its brief answer."""

    meta: str
    subproblem: str
    answer: str

    def to_dict(self) -> dict[str, str]:
        return {"meta": self.meta, "subproblem": self.subproblem, "answer": self.answer}


@dataclass(frozen=True)
class Decomposition:
    """A parsed decomposition. ``numbers`` keeps the step numbers as written (for validation);
    it is not part of equality, so ``parse(render(d)) == d`` for any ``d``."""

    steps: tuple[Step, ...]
    final_answer: str | None = None
    numbers: tuple[tuple[int | None, ...], ...] = field(default=(), compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.steps)

    def to_dict(self) -> dict:
        return {"steps": [s.to_dict() for s in self.steps], "final_answer": self.final_answer}

    @classmethod
    def from_dict(cls, d: dict) -> Decomposition:
        """Rebuild from ``to_dict`` output (e.g. an annotations or rlkd-data row)."""
        steps = tuple(
            Step(str(s.get("meta", "")), str(s.get("subproblem", "")), str(s.get("answer", "")))
            for s in d.get("steps", [])
        )
        return cls(steps=steps, final_answer=d.get("final_answer"))


@dataclass(frozen=True)
class ThinkSplit:
    """A completion split at ``</think>``: the reasoning, what follows, and whether it was closed."""

    thinking: str
    answer: str
    closed: bool


# The paper's annotations end a meta-reasoning with a '-', either after a space ("... lookup -") or
# glued to the sentence's last mark ("... probability lookup.-"). Only those two forms, and a
# field that is nothing but dashes, are stripped: a dash glued to a word or number ("x-", "i--",
# "3-") is content, and so is any dash that does not end the field ("-3", "x - y").
_TRAILING_DASH_RE = re.compile(r"(?:(?<=\s)|(?<=[.!?:;,]))-+$|^-+$")


def _clean(text: str) -> str:
    """Strip whitespace, stray markdown bold and the trailing '-' some annotations leave."""
    text = text.strip()
    prev = None
    while prev != text:
        prev = text
        m = re.fullmatch(r"\*\*((?:(?!\*\*).)*)\*\*", text, re.DOTALL)
        if m:  # a whole field in bold
            text = m.group(1).strip()
        if text.count("**") % 2:  # an unpaired bold marker left at either end by a tag
            text = re.sub(r"^\*\*|\*\*$", "", text, count=1).strip()
        text = _TRAILING_DASH_RE.sub("", text).strip()
    return text


def _kind_of(m: re.Match) -> tuple[str, int | None]:
    for kind in KINDS:
        if m.group(kind) or m.group(f"b_{kind}"):
            num = m.group("num") or m.group("b_num")
            return kind, int(num) if num else None
    raise AssertionError("unreachable: the tag regex matched no kind")


def contains_tag(text: str) -> bool:
    """True if ``text`` holds something the parser would read as a step tag or final-answer line."""
    return bool(_TAG_RE.search(text) or _FINAL_RE.search(text))


def parse_steps(text: str) -> Decomposition:
    """Parse annotated step text into a Decomposition.

    A new step starts at a meta-reasoning tag, or at any tag that does not come after the
    previous one in the order meta -> sub-problem -> answer. Missing parts are left empty (and
    reported by ``validate``); text before the first tag is ignored.
    """
    final_answer = None
    fm = None
    for fm in _FINAL_RE.finditer(text):  # noqa: B007 - the last final-answer line wins
        pass
    if fm is not None:
        final_answer = _clean(text[fm.end() :])
        text = text[: fm.start()]
    matches = list(_TAG_RE.finditer(text))
    steps: list[dict[str, str]] = []
    numbers: list[dict[str, int | None]] = []
    for i, m in enumerate(matches):
        kind, num = _kind_of(m)
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = _clean(text[m.end() : end])
        order = KINDS.index(kind)
        current = steps[-1] if steps else None
        if (
            current is None
            or kind == META
            or any(KINDS.index(k) >= order for k in current)
        ):
            steps.append({})
            numbers.append({})
            current = steps[-1]
        current[kind] = body
        numbers[-1][kind] = num
    return Decomposition(
        steps=tuple(Step(s.get(META, ""), s.get(SUBPROBLEM, ""), s.get(ANSWER, "")) for s in steps),
        final_answer=final_answer,
        numbers=tuple(tuple(n.get(k) for k in KINDS) for n in numbers),
    )


def render_steps(decomposition: Decomposition) -> str:
    """Render in the canonical form the GSRM is trained on: ``[Meta-reasoning i]: ...`` etc."""
    blocks = []
    for i, step in enumerate(decomposition.steps, start=1):
        blocks.append(
            "\n".join(
                f"[{CANONICAL_TAG[k]} {i}]: {getattr(step, k)}".rstrip() for k in KINDS
            )
        )
    if decomposition.final_answer is not None:
        blocks.append(f"{FINAL_ANSWER_LINE} {decomposition.final_answer}".rstrip())
    return "\n\n".join(blocks)


def validate(decomposition: Decomposition | str, *, require_final: bool = True) -> list[str]:
    """Return the problems a person should know about, in words; an empty list means valid."""
    d = parse_steps(decomposition) if isinstance(decomposition, str) else decomposition
    problems: list[str] = []
    if not d.steps:
        problems.append("no steps found (no [Meta-reasoning i] / [Sub-problem i] / [Answer i] tags)")
    for i, step in enumerate(d.steps, start=1):
        for kind in KINDS:
            if not getattr(step, kind):
                problems.append(f"step {i}: missing or empty {CANONICAL_TAG[kind].lower()}")
    for i, nums in enumerate(d.numbers, start=1):
        written = {n for n in nums if n is not None}
        if len(written) > 1:
            problems.append(f"step {i}: tags carry different numbers {sorted(written)}")
        elif written and written != {i}:
            problems.append(f"step {i}: numbered {written.pop()} (numbering jumps or repeats)")
    if require_final and not d.final_answer:
        problems.append(f"no final answer (expected a closing '{FINAL_ANSWER_LINE} ...' line)")
    return problems


def split_think(completion: str) -> ThinkSplit:
    """Split a completion into thinking and what follows the last ``</think>``.

    The thinking ends at the *last* ``</think>``, the rule of ``rlkd_bench.answers`` (where the
    answer is read from): a model that closed its thinking twice answered after the second.
    Handles both a full ``<think>...</think>`` pair and the R1 chat templates that put
    ``<think>`` in the prompt, so the completion only holds the closing tag. Without
    ``</think>`` the whole text is thinking that never closed.
    """
    head, sep, tail = completion.rpartition(_THINK_CLOSE)
    if not sep:
        head = tail  # rpartition puts a text without the tag last
    thinking = head.split(_THINK_OPEN, 1)[1] if _THINK_OPEN in head else head
    if not sep:
        return ThinkSplit(thinking=thinking.strip(), answer="", closed=False)
    return ThinkSplit(thinking=thinking.strip(), answer=tail.strip(" \t\n\r"), closed=True)


def answer_tag(text: str) -> str | None:
    """The content of the first ``<answer>...</answer>`` block, or None."""
    m = _ANSWER_TAG_RE.search(text)
    return m.group(1).strip() if m else None
