"""Teacher-trace selection on completions, without a server (the server runs are in
tests/test_annotate_server.py, which already holds the served models)."""

from __future__ import annotations

import pytest

from rlkd_bench.errors import ConfigError
from rlkd_bench.llm.base import Completion, Usage
from rlkd_bench.teacher import (
    TEACHER_PROMPT_VERSION,
    judge,
    reject_row,
    sample_request,
    select,
    trace_row,
)

PROBLEM = {"id": "p1", "domain": "math", "problem": "What is 6*7?", "gold": "42"}


def test_judge_splits_at_think_and_verifies_against_gold():
    s = judge("42", 0, Completion(text="<think>6*7 = 42.</think>The answer is \\boxed{42}.",
                                  usage=Usage(10, 5)))
    assert (s.reasoning, s.closed, s.correct) == ("6*7 = 42.", True, True)
    assert s.answer == "The answer is \\boxed{42}."
    # an R1 template puts <think> in the prompt: the completion only closes it
    assert judge("42", 1, Completion(text="so 42</think>\\boxed{42}")).correct
    assert judge("42", 1, Completion(text="<think>x</think><answer>42</answer>")).correct
    wrong = judge("42", 2, Completion(text="<think>6*7=48</think>\\boxed{48}"))
    assert wrong.closed and not wrong.correct
    # thinking that never closed has no answer, even if the thinking mentions the gold
    unclosed = judge("42", 3, Completion(text="<think>6*7 = 42 so \\boxed{42}"))
    assert not unclosed.closed and not unclosed.correct
    failed = judge("42", 4, Completion(text=None, error="HTTP 500"))
    assert failed.error == "HTTP 500" and not failed.correct


def _samples(pattern: str):
    texts = {"c": "<think>r</think>\\boxed{42}", "w": "<think>r</think>\\boxed{41}", "u": "<think>r"}
    return [judge("42", i, Completion(text=texts[ch])) for i, ch in enumerate(pattern)]


def test_select_first_correct_by_sample_index_or_all_correct():
    samples = _samples("wcuc")
    assert [s.index for s in select(samples, "first")] == [1]
    assert [s.index for s in select(list(reversed(samples)), "first")] == [1], "order of arrival is irrelevant"
    assert [s.index for s in select(samples, "all")] == [1, 3]
    assert select(_samples("wwu"), "first") == [] == select(_samples("wwu"), "all")
    with pytest.raises(ConfigError):
        select(samples, "best")


def test_sample_requests_are_distinct_and_versioned():
    reqs = [sample_request(PROBLEM, k, {"temperature": 0.6, "seed": 100}) for k in range(3)]
    assert [r.params["seed"] for r in reqs] == [100, 101, 102]
    assert len({r.cache_key("teacher") for r in reqs}) == 3
    assert all(r.prompt_version == TEACHER_PROMPT_VERSION for r in reqs)
    assert "\\boxed{}" in reqs[0].messages[-1]["content"] and "What is 6*7?" in reqs[0].messages[-1]["content"]
    assert reqs[2].custom_id == "p1#s2"


def test_rows_follow_the_traces_schema_and_rejects_say_why():
    s = _samples("wc")[1]
    row = trace_row(PROBLEM, s, "deepseek-r1", "first")
    for key in ("id", "domain", "problem", "reasoning", "answer", "gold", "source", "verified"):
        assert key in row
    assert (row["id"], row["source"], row["verified"], row["sample"]) == ("p1", "generated:deepseek-r1", True, 1)
    assert trace_row(PROBLEM, s, "m", "all")["id"] == "p1-s1"
    rej = reject_row(PROBLEM, _samples("wu"), 2)
    assert "no correct sample among 2" in rej["reason"] and "1 never closed" in rej["reason"]
    assert [x["sample"] for x in rej["samples"]] == [0, 1]
    budget = reject_row(PROBLEM, [judge("42", 0, Completion(text=None, error="budget: over"))], 2)
    assert budget["reason"].startswith("budget:")
    failed = reject_row(PROBLEM, [judge("42", 0, Completion(text=None, error="HTTP 500"))], 1)
    assert failed["reason"].startswith("request failed: all 1 samples failed")
