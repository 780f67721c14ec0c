"""The structure rule (reward/align.py) on hand-made pairs with known scores, and its properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlkd_bench.reward.align import (
    Comparison,
    MissingVerdict,
    align,
    align_from_verdicts,
    all_comparisons,
    needed,
    structure_score,
)
from rlkd_bench.structure import ANSWER, META, SUBPROBLEM, Decomposition, Step, parse_steps, render_steps


def same_text(kind: str, t: str, s: str) -> bool:
    return t == s


def dec(*steps: tuple[str, str, str]) -> Decomposition:
    return Decomposition(steps=tuple(Step(*s) for s in steps), final_answer="x")


TEACHER = dec(("m1", "q1", "a1"), ("m2", "q2", "a2"), ("m3", "q3", "a3"))


def with_step(d: Decomposition, i: int, **change: str) -> Decomposition:
    steps = list(d.steps)
    old = steps[i]
    steps[i] = Step(change.get("meta", old.meta), change.get("subproblem", old.subproblem),
                    change.get("answer", old.answer))
    return Decomposition(steps=tuple(steps), final_answer=d.final_answer)


@pytest.mark.parametrize("student, score, prefix, halvings", [
    (TEACHER, 3.0, 3, 0),  # identical
    (with_step(TEACHER, 1, meta="other"), 1.0, 1, 0),  # diverges at step 2: steps 2 and 3 score 0
    (with_step(TEACHER, 0, meta="other"), 0.0, 0, 0),  # diverges at step 1: nothing survives
    (with_step(TEACHER, 2, meta="other"), 2.0, 2, 0),  # diverges at the last step
    (with_step(TEACHER, 1, subproblem="other"), 2.5, 3, 1),  # sub-problem differs: halved
    (with_step(TEACHER, 1, answer="other"), 2.5, 3, 1),  # answer differs: halved
    (with_step(TEACHER, 1, subproblem="x", answer="y"), 2.25, 3, 2),  # both differ: quartered
    (dec(*[(s.meta, s.subproblem, s.answer) for s in TEACHER.steps], ("m4", "q4", "a4")), 3.0, 3, 0),  # longer
    (dec(("m1", "q1", "a1"), ("m2", "q2", "a2")), 2.0, 2, 0),  # shorter
])
def test_known_scores(student, score, prefix, halvings):
    a = align(TEACHER, student, same_text)
    assert a.score == score
    assert a.matched_prefix == prefix
    assert a.halvings == halvings
    assert a.normalized == pytest.approx(score / 3)
    assert structure_score(TEACHER, student, same_text) == score
    assert structure_score(TEACHER, student, same_text, normalize=True) == pytest.approx(score / 3)
    assert len(a.steps) == min(len(TEACHER), len(student))


def test_steps_after_the_first_mismatch_are_zero_even_when_they_match():
    student = with_step(TEACHER, 1, meta="other")  # step 3 still identical
    a = align(TEACHER, student, same_text)
    assert [s.reward for s in a.steps] == [1.0, 0.0, 0.0]
    assert a.steps[1].meta is False and a.steps[2].meta is None


def test_a_later_mismatch_after_a_halving_keeps_the_halving():
    student = with_step(with_step(TEACHER, 0, answer="no"), 2, meta="other")
    a = align(TEACHER, student, same_text)
    assert [s.reward for s in a.steps] == [0.5, 1.0, 0.0]
    assert a.score == 1.5 and a.halvings == 1


@pytest.mark.parametrize("teacher, student", [
    (dec(), TEACHER), (TEACHER, dec()), (dec(), dec()),
])
def test_no_steps_on_either_side_scores_zero(teacher, student):
    a = align(teacher, student, same_text)
    assert a.score == 0.0 and a.normalized == 0.0 and a.matched_prefix == 0 and a.steps == ()
    assert structure_score(teacher, student, same_text, normalize=True) == 0.0


def test_the_rule_asks_only_what_it_needs():
    asked = []

    def same(kind, t, s):
        asked.append(kind)
        return t == s

    align(TEACHER, with_step(TEACHER, 0, meta="other"), same)
    assert asked == [META]  # the first meta mismatch ends it
    asked.clear()
    align(TEACHER, with_step(TEACHER, 1, meta="other"), same)
    assert asked == [META, SUBPROBLEM, ANSWER, META]


DIALECTS = [
    ("[Meta-reasoning 1]: Need the rate first.\n[Sub-problem 1]: What is the rate?\n[Answer 1]: 5 km/h\n\n"
     "[Meta-reasoning 2]: Then the time.\n[Sub-problem 2]: How long does 20 km take?\n[Answer 2]: 4 h\n\n"
     "So the final answer is: 4 h"),
    ("[Meat-reasoning 1] Need the rate first. -\n[Sub-problem 1] What is the rate?\n[Answer 1] 5 km/h\n"
     "[Meat-reasoning 2] Then the time. -\n[Sub-problem 2] How long does 20 km take?\n[Answer 2] 4 h\n"
     "So the final answer is: 4 h"),
    ("[sub-think] Need the rate first. [Query] What is the rate? [Answer] 5 km/h "
     "[sub-think] Then the time. [Query] How long does 20 km take? [Answer] 4 h\n"
     "So the final answer is: 4 h"),
]


@pytest.mark.parametrize("teacher_text", DIALECTS)
@pytest.mark.parametrize("student_text", DIALECTS)
def test_all_three_tag_dialects_align_as_the_same_steps(teacher_text, student_text):
    teacher, student = parse_steps(teacher_text), parse_steps(student_text)
    assert len(teacher) == len(student) == 2
    assert structure_score(teacher, student, same_text) == 2.0


def test_a_dialect_pair_that_differs_in_one_answer_is_halved():
    student = parse_steps(DIALECTS[2].replace("[Answer] 4 h", "[Answer] 5 h"))
    assert structure_score(parse_steps(DIALECTS[1]), student, same_text) == 1.5


# -- batching: needed() / align_from_verdicts agree with align() ---------------------------------------
def judge_in_rounds(teacher, student, same):
    verdicts: dict[Comparison, bool | None] = {}
    rounds = 0
    while ask := needed(teacher, student, verdicts):
        rounds += 1
        assert rounds <= 2, "the rule needs two rounds at most"
        assert set(ask) <= set(all_comparisons(teacher, student))
        assert not set(ask) & set(verdicts), "never asks twice"
        verdicts.update({c: same(c.kind, c.teacher, c.student) for c in ask})
    return verdicts, rounds


def test_missing_and_failed_verdicts_raise_never_score():
    student = with_step(TEACHER, 1, answer="other")
    with pytest.raises(MissingVerdict):
        align_from_verdicts(TEACHER, student, {})
    verdicts, _ = judge_in_rounds(TEACHER, student, same_text)
    c = Comparison(ANSWER, "a2", "other")
    verdicts[c] = None  # a judge that failed on this comparison
    with pytest.raises(MissingVerdict) as e:
        align_from_verdicts(TEACHER, student, verdicts)
    assert e.value.comparison == c


def test_a_failed_meta_verdict_stops_asking():
    first = Comparison(META, "m1", "m1")
    assert needed(TEACHER, TEACHER, {first: None}) == []
    # an earlier unknown meta is still asked: if it is a mismatch the rule never reaches the failure
    second = Comparison(META, "m2", "m2")
    assert needed(TEACHER, TEACHER, {second: None}) == [first]


def test_identical_comparisons_are_listed_once():
    t = dec(("same", "q", "a"), ("same", "q", "a"))
    assert needed(t, t, {}) == [Comparison(META, "same", "same")]
    assert len(all_comparisons(t, t)) == 3


# -- properties --------------------------------------------------------------------------------------
WORDS = st.sampled_from(["a", "b", "c"])
STEPS = st.lists(st.tuples(WORDS, WORDS, WORDS), max_size=6)


def random_same(seed: int):
    def same(kind, t, s):
        return t == s or random.Random(f"{seed}|{kind}|{t}|{s}").random() < 0.6
    return same


@settings(max_examples=150, deadline=None)
@given(STEPS, STEPS, st.integers(0, 3), st.booleans())
def test_score_bounds_and_batched_agreement(t_steps, s_steps, seed, randomized):
    teacher, student = dec(*t_steps), dec(*s_steps)
    same = random_same(seed) if randomized else same_text
    a = align(teacher, student, same)
    assert 0.0 <= a.score <= min(len(teacher), len(student))
    assert 0.0 <= a.normalized <= 1.0
    assert a.matched_prefix <= min(len(teacher), len(student))
    verdicts, _ = judge_in_rounds(teacher, student, same)
    assert align_from_verdicts(teacher, student, verdicts) == a


@settings(max_examples=100, deadline=None)
@given(STEPS)
def test_identical_pairs_score_n(t_steps):
    d = dec(*t_steps)
    assert structure_score(d, d, same_text) == len(d)
    assert structure_score(d, parse_steps(render_steps(d)), same_text) == len(d)


@settings(max_examples=150, deadline=None)
@given(STEPS, STEPS, st.integers(0, 6), STEPS, st.integers(0, 3))
def test_a_change_after_step_k_never_changes_steps_before_k(t_steps, s_steps, k, tail, seed):
    teacher = dec(*t_steps)
    before = dec(*s_steps)
    after = dec(*(s_steps[:k] + tail))  # same first k steps, anything after
    same = random_same(seed)
    a, b = align(teacher, before, same), align(teacher, after, same)
    n = min(k, len(a.steps), len(b.steps))
    assert a.steps[:n] == b.steps[:n]
