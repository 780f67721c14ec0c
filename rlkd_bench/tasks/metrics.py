"""The lm-eval metrics of RLKD's claims, as pure functions (no model, no I/O).

Accuracy: ``rlkd_bench.answers.check``, the check the training reward uses too (the answer after
the last ``</think>``, inside ``<answer>`` when the model used the tag, its last ``\\boxed{}``;
math-verify first, text for text golds) or, for multiple choice, the letter it names. Sampling:
pass@k with the unbiased estimator of the Codex paper (Chen et al. 2021). Diversity: how many distinct step structures k samples hold and
how far apart they are pairwise (1 - the structure rule's normalised score), next to surface
measures (distinct-n, pairwise n-gram divergence) that only see words.

A completion that cannot be decomposed (no ``</think>``, a failed decomposition) has the empty
structure in the diversity measures: it matches only other empty structures; the share of such
completions is reported beside them. A measure with nothing to measure (fewer than two samples, no
pair with a known alignment, no n-gram) is None, never 0: lm-eval's aggregation
(``utils.nanmean``) leaves it out, and a task where nothing was measured reports NaN.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import combinations, permutations

from rlkd_bench.answers import CHOICE_LETTERS, check, extract_choice  # noqa: F401 (re-exported)
from rlkd_bench.reward.align import Alignment

PASS_KS = (1, 2, 4, 8, 16, 32, 64, 128)


# -- answers -----------------------------------------------------------------------------------
# Owned by rlkd_bench.answers (where the answer is, math-verify first, text golds, choices); these
# names are the same objects, re-exported for the task utils: math_correct is answers.check.
math_correct = check


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


def step_ratio(alignment: Alignment | None) -> float | None:
    """Student / teacher step count; None (not measured) without an alignment or teacher steps."""
    if alignment is None or not alignment.n_teacher:
        return None
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


def structural_divergence(sizes: Sequence[int], pair: Pairwise) -> float | None:
    """Mean over ordered pairs (i, j), i != j, of 1 - the normalised score of j against i.

    Two empty structures are identical (0); an empty and a non-empty one share nothing (1). Pairs
    whose alignment is unknown (a failed judge verdict) are left out; None (not measured) when no
    pair is left, e.g. with fewer than 2 samples.
    """
    values = []
    for i, j in permutations(range(len(sizes)), 2):
        if sizes[i] == 0 or sizes[j] == 0:
            values.append(0.0 if sizes[i] == sizes[j] else 1.0)
            continue
        p = pair(i, j)
        if p is not None:
            values.append(1.0 - p[0])
    return sum(values) / len(values) if values else None


# -- surface -------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    return _WORD.findall((text or "").lower())


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    w = words(text)
    return [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]


def distinct_n(texts: Sequence[str], n: int = 2) -> float | None:
    """Distinct n-grams / all n-grams over the samples together (Li et al. 2016); None (not
    measured) without any n-gram."""
    grams = [g for t in texts for g in ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else None


def surface_divergence(texts: Sequence[str], n: int = 2) -> float | None:
    """Mean over pairs of 1 - Jaccard similarity of the two samples' n-gram sets: the word-level
    twin of ``structural_divergence``. Two texts without n-grams are identical; None (not
    measured) with fewer than 2 texts."""
    sets = [set(ngrams(t, n)) for t in texts]
    values = []
    for a, b in combinations(sets, 2):
        union = a | b
        values.append(1.0 - len(a & b) / len(union) if union else 0.0)
    return sum(values) / len(values) if values else None
