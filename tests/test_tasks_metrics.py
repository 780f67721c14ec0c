"""The lm-eval metric functions on hand-made cases with known values: pass@k against brute-force
enumeration, answers after the thinking, letter choices, distinct structures and divergences
through the real rule and lexical matcher, surface measures."""

from __future__ import annotations

from itertools import combinations

import pytest

from rlkd_bench import answers
from rlkd_bench.reward.align import Comparison, align
from rlkd_bench.reward.matchers import make_matcher
from rlkd_bench.structure import Decomposition, Step
from rlkd_bench.tasks import metrics
from rlkd_bench.tasks.evaldata import shuffled_choices


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """The share of all k-subsets of n samples (c of them correct) that hold a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert metrics.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_known_values_and_bounds():
    assert metrics.pass_at_k(10, 0, 5) == 0.0
    assert metrics.pass_at_k(10, 6, 5) == 1.0  # fewer than 5 wrong samples: every 5-subset has a hit
    assert metrics.pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert metrics.pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 3 of the 6 pairs hold the correct one
    assert metrics.pass_at_k(200, 3, 100) == pytest.approx(1 - (100 * 99 * 98) / (200 * 199 * 198))
    for bad in [(3, 1, 0), (3, 1, 4), (3, 4, 1), (3, -1, 1)]:
        with pytest.raises(ValueError):
            metrics.pass_at_k(*bad)


def test_pass_at_ks_only_up_to_the_sample_count():
    got = metrics.pass_at_ks([True, False, False])
    assert set(got) == {"pass_at_1", "pass_at_2"}
    assert got["pass_at_1"] == pytest.approx(1 / 3)  # pass@1 is the mean over the samples
    assert got["pass_at_2"] == pytest.approx(2 / 3)


def test_answers_are_read_after_the_thinking():
    # the rule lives in rlkd_bench.answers (tests/test_answers.py has the full table); the metric uses it
    assert metrics.math_correct is answers.check and metrics.extract_choice is answers.extract_choice
    assert answers.answer_text("<think>so \\boxed{3}</think> The answer is \\boxed{4}.") == \
        "The answer is \\boxed{4}."
    assert answers.answer_text("reasoning only, R1 template</think>\n\\boxed{4}") == "\\boxed{4}"
    assert answers.answer_text("<think>cut off before the end \\boxed{4}") == ""
    assert answers.answer_text("No tags at all: \\boxed{4}") == "No tags at all: \\boxed{4}"
    assert answers.final_answer("<think>x</think>\n<answer>It is \\boxed{7}</answer> \\boxed{8}") == "7"
    # a right number inside the thinking does not count; the answer after it does
    assert not metrics.math_correct("4", "<think>maybe \\boxed{4}</think><answer>\\boxed{5}</answer>")
    assert metrics.math_correct("4", "<think>maybe \\boxed{5}</think><answer>\\boxed{4}</answer>")
    assert metrics.math_correct("\\frac{1}{2}", "</think>So the answer is \\boxed{0.5}.")
    assert not metrics.math_correct("4", "<think>never closed \\boxed{4}")
    assert not metrics.math_correct("4", "")


@pytest.mark.parametrize("text, letter", [
    ("<think>A? no, B.</think>\nAnswer: C", "C"),
    ("</think>The answer is (D).", "D"),
    ("</think>So \\boxed{B}", "B"),
    ("</think>\\boxed{\\text{A}}", "A"),
    ("</think> b ", "B"),
    ("<think>Answer: A</think>I am not sure.", None),  # only the final answer counts
    ("</think>Answer: E", None),  # not one of A-D
    ("</think>", None),
])
def test_extract_choice(text, letter):
    assert metrics.extract_choice(text) == letter


def test_gpqa_choices_are_shuffled_reproducibly():
    opts, gold = shuffled_choices("What is the spin of a photon?", "1", ["0", "1/2", "2"])
    assert sorted(opts) == ["0", "1", "1/2", "2"] and opts["ABCD".index(gold)] == "1"
    assert shuffled_choices("What is the spin of a photon?", "1", ["0", "1/2", "2"]) == (opts, gold)
    golds = {shuffled_choices(f"question {i}", "right", ["a", "b", "c"])[1] for i in range(40)}
    assert golds == set("ABCD")  # the correct answer is not always in the same place


# -- structure ------------------------------------------------------------------------------------


def dec(*subproblems: str) -> Decomposition:
    return Decomposition(steps=tuple(Step(f"I need the {q}, so I work it out.", f"What is the {q}?", "5")
                                     for q in subproblems))


LEX = make_matcher("lexical")


def same(kind: str, t: str, s: str) -> bool:
    c = Comparison(kind, t, s)
    return bool(LEX.judge([c])[c])


def table(decs: list[Decomposition | None]):
    sizes = [len(d) if d is not None else 0 for d in decs]

    def aligned(i: int, j: int):
        return metrics.pair_score(align(decs[i], decs[j], same))

    return sizes, aligned


ORDER_1 = dec("total cost of the pens", "change from the bill")
ORDER_2 = dec("number of minutes in a week", "liters of water lost")
LONGER = dec("total cost of the pens", "change from the bill", "tax on the total")


def test_identical_samples_have_one_structure_and_no_divergence():
    sizes, aligned = table([ORDER_1, ORDER_1, ORDER_1])
    assert metrics.distinct_structures(sizes, aligned) == 1
    assert metrics.structural_divergence(sizes, aligned) == 0.0


def test_distinct_structures_counts_groups():
    sizes, aligned = table([ORDER_1, ORDER_2, ORDER_1, LONGER])
    # a prefix of another structure is not the same structure
    assert metrics.distinct_structures(sizes, aligned) == 3
    sizes, aligned = table([ORDER_1, ORDER_2])
    assert metrics.distinct_structures(sizes, aligned) == 2
    assert metrics.structural_divergence(sizes, aligned) == 1.0  # nothing shared, both ways


def test_same_structure_needs_the_same_sub_problems_not_the_same_answers():
    other_answers = Decomposition(steps=tuple(Step(s.meta, s.subproblem, "7") for s in ORDER_1.steps))
    assert metrics.same_structure(align(ORDER_1, other_answers, same))
    reworded = Decomposition(steps=(ORDER_1.steps[0], Step(ORDER_1.steps[1].meta, "How tall is the tree?", "5")))
    a = align(ORDER_1, reworded, same)
    assert a.matched_prefix == 2 and not metrics.same_structure(a)  # same meta, another sub-problem


def test_divergence_is_one_minus_the_normalised_score():
    sizes, aligned = table([ORDER_1, LONGER])
    # LONGER against ORDER_1: 2 of 2 teacher steps matched -> 0; ORDER_1 against LONGER: 2 of 3 -> 1/3
    assert metrics.structural_divergence(sizes, aligned) == pytest.approx((0 + 1 / 3) / 2)


def test_undecomposable_samples_have_the_empty_structure():
    sizes, aligned = table([None, None, ORDER_1])
    assert metrics.distinct_structures(sizes, aligned) == 2
    # pairs: (None, None) x2 -> 0, the four pairs with ORDER_1 -> 1
    assert metrics.structural_divergence(sizes, aligned) == pytest.approx(4 / 6)
    assert metrics.distinct_structures([0, 0], aligned) == 1
    assert metrics.structural_divergence([7], aligned) is None  # one sample: no pair, nothing measured


def test_unknown_alignments_are_left_out():
    sizes = [2, 2, 2]
    known = {(0, 1): metrics.pair_score(align(ORDER_1, ORDER_1, same)), (1, 0): (1.0, True)}
    assert metrics.structural_divergence(sizes, lambda i, j: known.get((i, j))) == 0.0
    assert metrics.distinct_structures(sizes, lambda i, j: known.get((i, j))) == 2  # sample 2: unknown
    assert metrics.structural_divergence(sizes, lambda i, j: None) is None  # no pair known: not 0


def test_step_ratio():
    a = align(LONGER, ORDER_1, same)
    assert metrics.step_ratio(a) == pytest.approx(2 / 3)
    assert metrics.step_ratio(None) is None  # no alignment: not measured, not a ratio of 0
    assert metrics.step_ratio(align(Decomposition(steps=()), ORDER_1, same)) is None


# -- surface --------------------------------------------------------------------------------------


def test_surface_measures_known_values():
    assert metrics.distinct_n(["a b c", "a b c"], 2) == pytest.approx(2 / 4)
    assert metrics.distinct_n(["a b c d"], 2) == 1.0
    assert metrics.distinct_n(["one"], 2) is None  # no bigram: nothing measured
    assert metrics.surface_divergence(["a b c", "a b c"]) == 0.0
    assert metrics.surface_divergence(["a b c", "x y z"]) == 1.0
    # {ab, bc} vs {ab, bd}: Jaccard 1/3
    assert metrics.surface_divergence(["a b c", "a b d"]) == pytest.approx(2 / 3)
    assert metrics.surface_divergence(["only one"]) is None  # no pair


def test_a_word_is_not_a_choice():
    assert metrics.extract_choice("</think>The answer is a prime, so Answer: B") == "B"
    assert metrics.extract_choice("</think>The answer is a prime.") is None
