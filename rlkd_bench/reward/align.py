"""The structure rule of RLKD: how far a student's steps follow the teacher's. Pure; no I/O.

For i = 1..min(n_teacher, n_student): r_i = 1 when the two meta-reasonings address the same
sub-problem, else 0, and every step after the first 0 is 0 (the prefix rule); a surviving step is
halved when the sub-problems differ and halved again when the answers differ. The reward is the
sum (as the paper's code leaves it) or, normalised, the sum / n_teacher. No steps on either side
scores 0.

Who decides "same" is a matcher passed in (``same(kind, teacher_text, student_text) -> bool``),
so the TRL reward, the lm-eval metrics and the benchmark share this one rule. For batching, the
rule also says which comparisons it needs (``needed``) and scores from a table of verdicts
(``align_from_verdicts``): a caller can send every comparison of a generation batch to a judge at
once, identical ones once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from rlkd_bench.structure import ANSWER, META, SUBPROBLEM, Decomposition

Same = Callable[[str, str, str], bool]  # (kind, teacher_text, student_text) -> same?


@dataclass(frozen=True)
class Comparison:
    """One thing a matcher must judge: are these two texts of this kind the same?

    Keyed by content, not by position, so identical comparisons across steps and completions
    are judged once.
    """

    kind: str  # META, SUBPROBLEM or ANSWER
    teacher: str
    student: str


@dataclass(frozen=True)
class StepDetail:
    """How step i scored: which of its three parts matched (None: not compared) and r_i."""

    meta: bool | None
    subproblem: bool | None
    answer: bool | None
    reward: float


@dataclass(frozen=True)
class Alignment:
    """The structure reward of one student decomposition against the teacher's, with detail."""

    score: float  # the sum of r_i (the paper's reward)
    n_teacher: int
    n_student: int
    matched_prefix: int  # steps whose meta-reasonings matched before the first mismatch
    halvings: int  # halvings applied within the matched prefix (sub-problem or answer differed)
    steps: tuple[StepDetail, ...]

    @property
    def normalized(self) -> float:
        """score / n_teacher, in [0, 1]; 0 when the teacher has no steps."""
        return self.score / self.n_teacher if self.n_teacher else 0.0

    def value(self, normalize: bool = False) -> float:
        return self.normalized if normalize else self.score


def _pairs(teacher: Decomposition, student: Decomposition):
    return list(zip(teacher.steps, student.steps, strict=False))


def align(teacher: Decomposition, student: Decomposition, same: Same) -> Alignment:
    """Score ``student`` against ``teacher``, calling ``same`` only for what the rule needs."""
    steps: list[StepDetail] = []
    prefix = halvings = 0
    total = 0.0
    alive = True
    for t, s in _pairs(teacher, student):
        if not alive:
            steps.append(StepDetail(None, None, None, 0.0))
            continue
        if not same(META, t.meta, s.meta):
            alive = False
            steps.append(StepDetail(False, None, None, 0.0))
            continue
        q = bool(same(SUBPROBLEM, t.subproblem, s.subproblem))
        a = bool(same(ANSWER, t.answer, s.answer))
        r = 1.0 * (1.0 if q else 0.5) * (1.0 if a else 0.5)
        halvings += (not q) + (not a)
        prefix += 1
        total += r
        steps.append(StepDetail(True, q, a, r))
    return Alignment(total, len(teacher), len(student), prefix, halvings, tuple(steps))


def structure_score(teacher: Decomposition, student: Decomposition, same: Same, *,
                    normalize: bool = False) -> float:
    """The structure reward: the sum of r_i, or the sum / n_teacher with ``normalize``."""
    return align(teacher, student, same).value(normalize)


def needed(teacher: Decomposition, student: Decomposition,
           verdicts: Mapping[Comparison, bool | None]) -> list[Comparison]:
    """The comparisons still to judge before ``align_from_verdicts`` can score, given ``verdicts``.

    Two rounds at most: first every meta-reasoning pair up to the first known mismatch (all at
    once, so a judge sees them together), then the sub-problems and answers of the matched prefix.
    Returns [] when the verdicts suffice (or a failed verdict, None, stops the rule anyway).
    """
    out: list[Comparison] = []
    pairs = _pairs(teacher, student)
    failed = False
    for t, s in pairs:
        c = Comparison(META, t.meta, s.meta)
        v = verdicts.get(c, ...)
        if v is ...:
            out.append(c)
        elif v is None or v is False:
            failed = v is None
            break
    if out:
        return list(dict.fromkeys(out))
    if failed:  # the prefix reaches a failed verdict: the rule cannot score, asking more is waste
        return []
    for t, s in pairs:
        if verdicts.get(Comparison(META, t.meta, s.meta)) is not True:
            break
        for c in (Comparison(SUBPROBLEM, t.subproblem, s.subproblem), Comparison(ANSWER, t.answer, s.answer)):
            if c not in verdicts:
                out.append(c)
    return list(dict.fromkeys(out))


def all_comparisons(teacher: Decomposition, student: Decomposition) -> list[Comparison]:
    """Every comparison the rule could ask for (one round, no early stop), identical ones once."""
    out = []
    for t, s in _pairs(teacher, student):
        out += [Comparison(META, t.meta, s.meta), Comparison(SUBPROBLEM, t.subproblem, s.subproblem),
                Comparison(ANSWER, t.answer, s.answer)]
    return list(dict.fromkeys(out))


class MissingVerdict(Exception):
    """A comparison the rule needed was not judged, or its judgement failed (None)."""

    def __init__(self, comparison: Comparison):
        super().__init__(f"no verdict for {comparison.kind} comparison")
        self.comparison = comparison


def align_from_verdicts(teacher: Decomposition, student: Decomposition,
                        verdicts: Mapping[Comparison, bool | None]) -> Alignment:
    """``align`` with verdicts looked up in a table; raises MissingVerdict for a missing or
    failed (None) verdict the rule needs, so a caller turns it into a counted failure, never a 0."""

    def same(kind: str, t: str, s: str) -> bool:
        c = Comparison(kind, t, s)
        v = verdicts.get(c)
        if v is None:
            raise MissingVerdict(c)
        return v

    return align(teacher, student, same)


def unique(comparisons: Iterable[Comparison]) -> list[Comparison]:
    """Comparisons in first-seen order, each once."""
    return list(dict.fromkeys(comparisons))
