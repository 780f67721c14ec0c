"""The judge matcher and the structure scorer against a real ``transformers serve`` (tiny random model).

The tiny model's verdicts are noise (its replies are never a clean yes/no), so these tests check
the plumbing: one concurrent batch per call, identical comparisons sent once, a rerun answered by
the cache, timeouts and failed requests as None, replies other than yes/no counted.
"""

from __future__ import annotations

import logging

import pytest
from faultproxy import Fault

from rlkd_bench.llm.base import EngineOptions
from rlkd_bench.reward.align import Comparison
from rlkd_bench.reward.matchers import JudgeMatcher, make_matcher
from rlkd_bench.reward.scorer import StructureScorer
from rlkd_bench.structure import META, SUBPROBLEM

pytestmark = pytest.mark.timeout(300)

COMPARISONS = [Comparison(META if i % 2 else SUBPROBLEM, f"find the length of side {i}", f"work out side {i}")
               for i in range(10)]


def judge(tiny_server, cache_dir, **kw) -> JudgeMatcher:
    base_url, model_id, _ = tiny_server
    opts = EngineOptions(base_url=base_url, cache_dir=str(cache_dir), concurrency=8, progress=False,
                         max_retries=kw.pop("max_retries", 0), timeout_s=kw.pop("request_timeout_s", 60))
    return make_matcher(f"judge:openai:{model_id}", engine_options=opts, **kw)  # type: ignore[return-value]


def test_one_concurrent_deduplicated_batch_then_the_cache(tiny_server, tmp_path):
    counter = tiny_server[2]
    counter.reset()
    counter.delay_s = 0.2  # hold each request a little so concurrent ones overlap at the server
    m = judge(tiny_server, tmp_path / "cache")
    verdicts = m.judge(COMPARISONS + COMPARISONS[:4])  # 4 duplicates
    assert set(verdicts) == set(COMPARISONS)
    assert counter.count == len(COMPARISONS), "identical comparisons are sent once"
    assert counter.max_in_flight > 1, "the batch is sent concurrently"
    assert all(v in (True, False, None) for v in verdicts.values())
    decided = sum(v is not None for v in verdicts.values())
    assert m.stats.invalid_replies == len(COMPARISONS) - decided, "every non-yes/no reply is counted"
    assert m.stats.requests == len(COMPARISONS) and m.stats.failed == 0
    counter.reset()
    again = judge(tiny_server, tmp_path / "cache")
    assert again.judge(COMPARISONS) == verdicts
    assert counter.count == 0, "a rerun is answered by the cache"
    assert again.stats.cached == len(COMPARISONS)
    d = m.describe()
    assert d["kind"] == "judge" and d["prompt_version"].startswith("judge@") and d["model"].startswith("openai:")


def test_answers_that_parse_as_math_never_reach_the_model(tiny_server, tmp_path):
    counter = tiny_server[2]
    counter.reset()
    m = judge(tiny_server, tmp_path / "cache")
    v = m.judge([Comparison("answer", "\\frac{1}{2}", "0.5"), Comparison("answer", "12", "13")])
    assert list(v.values()) == [True, False] and counter.count == 0 and m.stats.by_math == 2


def test_a_failed_request_is_none_and_counted(tiny_server, tmp_path, caplog):
    counter = tiny_server[2]
    counter.reset()
    counter.inject(Fault("500"))
    m = judge(tiny_server, tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="rlkd_bench.reward"):
        verdicts = m.judge(COMPARISONS[:3])
    assert sum(v is None for v in verdicts.values()) >= 1
    assert m.stats.failed == 1
    assert "request failed" in caplog.text and "HTTP 500" in caplog.text


def test_the_call_timeout_gives_none_for_what_is_undecided(tiny_server, tmp_path):
    counter = tiny_server[2]
    counter.reset()
    counter.inject(Fault("stall", seconds=3))
    m = judge(tiny_server, tmp_path / "cache", timeout_s=1.0)
    verdicts = m.judge(COMPARISONS[:2])
    assert list(verdicts.values()) == [None, None]
    assert m.stats.timeouts == 2
    m._pool.shutdown(wait=True)  # the stalled request ends (the proxy gives up after 3 s) inside this test
    assert m.stats.failed == 1


def test_an_unreachable_endpoint_is_none_with_one_warning(tmp_path, caplog):
    m = make_matcher("judge:http://127.0.0.1:9/v1",
                     engine_options=EngineOptions(timeout_s=2, max_retries=0, cache_dir=str(tmp_path)))
    with caplog.at_level(logging.WARNING, logger="rlkd_bench.reward"):
        first = m.judge(COMPARISONS[:2])
        second = m.judge(COMPARISONS[2:4])
    assert set(first.values()) == set(second.values()) == {None}
    assert m.stats.failed == 4
    warnings = [r for r in caplog.records if "cannot list the models" in r.getMessage()]
    assert len(warnings) == 1


def test_a_url_spec_names_its_model_from_the_server(tiny_server, tmp_path):
    base_url, model_id, counter = tiny_server
    counter.reset()
    m = make_matcher(f"judge:{base_url}", engine_options=EngineOptions(cache_dir=str(tmp_path), progress=False))
    m.judge(COMPARISONS[:1])
    assert counter.count == 1 and m.describe()["model"] == f"openai:{model_id}"


TEACHER = [{"meta": "The total needs the price of one pen first.", "subproblem": "What does one pen cost?",
            "answer": "3 dollars"},
           {"meta": "With the unit price, scale up to four pens.", "subproblem": "What do four pens cost?",
            "answer": "12"}]
COMPLETION = ("<think>Two pens cost 6 dollars, so first I find the price of one pen: 6 / 2 = 3.\n\n"
              "Next, I scale to four pens: 4 * 3 = 12.\n\nSo the answer is \\boxed{12}.</think>"
              "<answer>\\boxed{12}</answer>")


def test_scorer_sends_identical_comparisons_of_a_batch_once(tiny_server, tmp_path):
    base_url, model_id, counter = tiny_server
    opts = EngineOptions(base_url=base_url, cache_dir=str(tmp_path), max_retries=0, progress=False)
    scorer = StructureScorer("heuristic", f"judge:openai:{model_id}", engine_options=opts, timeout_s=120)
    problem = "Two pens cost 6 dollars. What do four pens cost?"
    counter.reset()
    one = scorer.score([problem], [COMPLETION], [TEACHER])
    sent_for_one = counter.count
    assert sent_for_one >= 1
    counter.reset()
    scorer2 = StructureScorer("heuristic", f"judge:openai:{model_id}",
                              engine_options=EngineOptions(base_url=base_url, cache_dir=str(tmp_path / "fresh"),
                                                           max_retries=0, progress=False))
    four = scorer2.score([problem] * 4, [COMPLETION] * 4, [TEACHER] * 4)
    assert counter.count == sent_for_one, "four identical completions cost what one does"
    assert [o.error for o in four] == [one[0].error] * 4
    # the tiny model never says yes/no: the first meta verdict fails, which is a counted failure
    if one[0].error is not None:
        assert one[0].error.startswith("judge failed") and one[0].reward() is None
        assert scorer.stats.judge_failed == 1
