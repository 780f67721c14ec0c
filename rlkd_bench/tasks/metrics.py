"""The lm-eval metrics of RLKD's claims, as pure functions (no model, no I/O).

Accuracy: the answer is what follows ``</think>`` (thinking is never scored), inside
``<answer>`` when the model used the tag, checked with math-verify (``rlkd_bench.answers``) or,
for multiple choice, by the letter it names. Sampling: pass@k with the unbiased estimator of the
Codex paper (Chen et al. 2021). Diversity: how many distinct step structures k samples hold and
how far apart they are pairwise (1 - the structure rule's normalised score), next to surface
measures (distinct-n, pairwise n-gram divergence) that only see words.

A completion that cannot be decomposed (no ``</think>``, a failed decomposition) has the empty
structure: it matches only other empty structures. So every metric is defined for every sample,
and the share of such completions is reported beside them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import combinations, permutations

from rlkd_bench.reward.align import Alignment
from rlkd_bench.structure import answer_tag

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CHOICE_LETTERS = "ABCD"
PASS_KS = (1, 2, 4, 8, 16, 32, 64, 128)


# -- answers -----------------------------------------------------------------------------------


def strip_thinking(completion: str) -> str:
    """What a completion says after its reasoning: the text after the last ``</think>``.

    Without ``</think>``: the whole text when no ``<think>`` was opened either (a model that does
    not think in tags), and nothing when thinking was opened and never closed (cut off before an
    answer). R1 chat templates put ``<think>`` in the prompt, so their completions only hold
    ``</think>``; one cut off mid-thought is then scored as written, as lighteval does.
    """
    text = completion or ""
    if THINK_CLOSE in text:
        return text.rsplit(THINK_CLOSE, 1)[1].strip()
    if THINK_OPEN in text:
        return ""
    return text.strip()


def final_text(completion: str) -> str:
    """The answer text to score: after the thinking, inside ``<answer>`` when present."""
    rest = strip_thinking(completion)
    tagged = answer_tag(rest)
    return tagged if tagged is not None else rest


def math_correct(gold: str, completion: str) -> bool:
    """True when the completion's final answer equals ``gold`` (math-verify; boxed answer first)."""
    from rlkd_bench.answers import verify

    answer = final_text(completion)
    return bool(answer) and verify(str(gold), answer)


# "Answer: C", "the answer is (D)"; the letter itself must be a capital ("the answer is a prime" is no choice)
_ANSWER_LINE = re.compile(r"(?i:answer)\s*(?:is|:)?\s*[:=]?\s*\**\s*\(?\s*\$?\s*(?:\\text\{)?\s*([A-Z])\b")
_BOXED_LETTER = re.compile(r"\\boxed\s*\{\s*(?:\\text\{\s*)?\(?([A-Z])\)?\s*\}?\s*\}")
_LONE_LETTER = re.compile(r"^\W*\(?([A-Za-z])\)?\W*$")


def extract_choice(completion: str, letters: str = CHOICE_LETTERS) -> str | None:
    """The letter a multiple-choice answer names, or None.

    Read from the final answer text only: the last ``\\boxed{X}``, else the last "Answer: X" /
    "the answer is (X)", else an answer that is nothing but a letter. A letter outside
    ``letters`` does not count.
    """
    text = final_text(completion)
    for pattern in (_BOXED_LETTER, _ANSWER_LINE):
        found = [m.group(1).upper() for m in pattern.finditer(text)]
        found = [x for x in found if x in letters]
        if found:
            return found[-1]
    m = _LONE_LETTER.match(text)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    return None


# -- sampling ------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed as a running product, never with big binomials. Needs 1 <= k <= n and 0 <= c <= n.
    """
    if not (1 <= k <= n) or not (0 <= c <= n):
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def pass_at_ks(correct: Sequence[bool], ks: Sequence[int] = PASS_KS) -> dict[str, float]:
    """``pass_at_K`` for each K in ``ks`` up to the number of samples (pass_at_1 is the mean)."""
    n, c = len(correct), sum(bool(x) for x in correct)
    return {f"pass_at_{k}": pass_at_k(n, c, k) for k in ks if k <= n}


# -- structure -----------------------------------------------------------------------------------


def same_structure(alignment: Alignment) -> bool:
    """Two decompositions follow the same sub-problem sequence: equally long, and at every step the
    rule's two sub-problem tests pass: the meta-reasonings address the same sub-problem (the
    paper's r_i test) and the sub-problems themselves match. Answers may differ (a slip is not
    another path)."""
    return (alignment.n_teacher == alignment.n_student == alignment.matched_prefix
            and all(step.subproblem for step in alignment.steps))


def step_ratio(alignment: Alignment | None) -> float:
    """Student / teacher step count; 0 without a decomposition or without teacher steps."""
    if alignment is None or not alignment.n_teacher:
        return 0.0
    return alignment.n_student / alignment.n_teacher


PairScore = tuple[float, bool]  # (normalised score of j against i, same structure)
Pairwise = Callable[[int, int], "PairScore | None"]


def pair_score(alignment: Alignment) -> PairScore:
    """What the diversity metrics need from one alignment of sample j against sample i."""
    return alignment.normalized, same_structure(alignment)


def distinct_structures(sizes: Sequence[int], pair: Pairwise) -> int:
    """How many different structures ``len(sizes)`` samples hold.

    ``sizes[i]`` is sample i's step count (0: the empty structure); ``pair(i, j)`` the rule's
    verdict on j against i (None: not known). Greedy: each sample joins the first earlier group
    whose first member has its structure, else starts a group; a matcher need not be transitive,
    so this counts groups as a reader would form them, in sample order.
    """
    heads: list[int] = []
    for j, size in enumerate(sizes):
        for h in heads:
            if size == 0 or sizes[h] == 0:
                if size == sizes[h]:
                    break
                continue
            p = pair(h, j)
            if p is not None and p[1]:
                break
        else:
            heads.append(j)
    return len(heads)


def structural_divergence(sizes: Sequence[int], pair: Pairwise) -> float:
    """Mean over ordered pairs (i, j), i != j, of 1 - the normalised score of j against i.

    Two empty structures are identical (0); an empty and a non-empty one share nothing (1). Pairs
    whose alignment is unknown (a failed judge verdict) are left out; 0 with fewer than 2 samples.
    """
    values = []
    for i, j in permutations(range(len(sizes)), 2):
        if sizes[i] == 0 or sizes[j] == 0:
            values.append(0.0 if sizes[i] == sizes[j] else 1.0)
            continue
        p = pair(i, j)
        if p is not None:
            values.append(1.0 - p[0])
    return sum(values) / len(values) if values else 0.0


# -- surface -------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    return _WORD.findall((text or "").lower())


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    w = words(text)
    return [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams / all n-grams over the samples together (Li et al. 2016); 0 without any."""
    grams = [g for t in texts for g in ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def surface_divergence(texts: Sequence[str], n: int = 2) -> float:
    """Mean over pairs of 1 - Jaccard similarity of the two samples' n-gram sets: the word-level
    twin of ``structural_divergence``. Two texts without n-grams are identical; 0 with < 2 texts."""
    sets = [set(ngrams(t, n)) for t in texts]
    values = []
    for a, b in combinations(sets, 2):
        union = a | b
        values.append(1.0 - len(a & b) / len(union) if union else 0.0)
    return sum(values) / len(values) if values else 0.0
