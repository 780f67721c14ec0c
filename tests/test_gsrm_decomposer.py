"""The GSRM as a decomposer: replies parsed by the step module; bad replies are failures with the reply."""

from __future__ import annotations

import json

import pytest

from rlkd_bench.decompose import get_decomposer
from rlkd_bench.decompose.gsrm import GSRMDecomposer, parse_reply
from rlkd_bench.errors import ConfigError
from rlkd_bench.llm.base import Completion, EngineOptions, Usage
from rlkd_bench.prompting import gsrm_messages, load_prompt
from rlkd_bench.structure import Decomposition, Step, render_steps

GOOD = Decomposition(
    steps=(Step("The total needs the price of one pen first.", "What does one pen cost?", "3 dollars"),
           Step("With the unit price, scale to four pens.", "What do four pens cost?", "12 dollars")),
    final_answer="12",
)
ITEMS = [
    {"id": "a", "problem": "Four pens cost how much if two cost 6 dollars?",
     "reasoning": "Two pens cost 6, so one is 3. Wait, four pens: 4*3 = 12."},
    {"id": "b", "problem": "What is 7*6?", "reasoning": "7*6... 7*5 = 35, plus 7 is 42. Check: 6*7 = 42."},
]


def test_a_valid_reply_parses_into_steps():
    res = parse_reply(Completion(text=render_steps(GOOD), usage=Usage(10, 5), finish_reason="stop"))
    assert res.ok and res.decomposition == GOOD and res.error is None
    assert res.usage.completion_tokens == 5


@pytest.mark.parametrize("text, reason", [
    ("The trace computes the price and then scales it.", "no steps found"),
    ("[Meta-reasoning 1]: first\n[Sub-problem 1]: what?\n[Answer 1]: 3", "no final answer"),
    ("[Meta-reasoning 1]: first\n[Sub-problem 1]: what?\n[Answer 1]:\n\nSo the final answer is: 3",
     "missing or empty answer"),
    ("", "no steps found"),
])
def test_an_unparseable_reply_is_a_failure_that_keeps_the_reply(text, reason):
    res = parse_reply(Completion(text=text, finish_reason="stop"))
    assert not res.ok and res.decomposition is None
    assert res.raw == text
    assert res.error.startswith("invalid reply") and reason in res.error


def test_a_cut_off_reply_is_a_failure_even_if_it_parses():
    res = parse_reply(Completion(text=render_steps(GOOD), finish_reason="length"))
    assert not res.ok and "cut off" in res.error and res.raw == render_steps(GOOD)


def test_a_failed_request_is_a_failure():
    res = parse_reply(Completion(text=None, error="HTTP 500: boom"))
    assert not res.ok and res.error == "request failed: HTTP 500: boom"


def test_requests_are_greedy_gsrm_conversations(gsrm_checkpoint):
    dec = get_decomposer(f"gsrm:{gsrm_checkpoint}", max_new_tokens=32)
    reqs = dec.requests(ITEMS)
    assert [r.custom_id for r in reqs] == ["a", "b"]
    assert list(reqs[0].messages) == gsrm_messages(ITEMS[0]["problem"], ITEMS[0]["reasoning"])
    assert reqs[0].params == {"temperature": 0.0, "max_tokens": 32}
    assert reqs[0].prompt_version == load_prompt("gsrm").version


def test_checkpoint_through_transformers_reports_unparseable_replies(gsrm_checkpoint):
    """A few SFT steps on a random tiny model do not make a GSRM: every reply must come back as a
    failure carrying the model's text, not as an empty decomposition."""
    dec = GSRMDecomposer(str(gsrm_checkpoint), options=EngineOptions(progress=False), max_new_tokens=16)
    seen = []
    results = dec.decompose(ITEMS, on_result=lambda i, r: seen.append(i))
    assert sorted(seen) == [0, 1]
    assert len(results) == 2
    for res in results:
        assert res.decomposition is None and not res.ok
        assert res.raw, "the reply must be kept"
        assert res.error.startswith("invalid reply")
        assert res.usage.completion_tokens > 0
    d = dec.describe()
    assert d["engine"] == "transformers" and d["model"] == str(gsrm_checkpoint)
    assert d["prompt_version"] == load_prompt("gsrm").version and "notes" not in d
    # the same requests again come from the engine cache, with the same verdicts
    again = GSRMDecomposer(str(gsrm_checkpoint), options=EngineOptions(progress=False), max_new_tokens=16)
    results2 = again.decompose(ITEMS)
    assert all(r.cached for r in results2)
    assert [r.raw for r in results2] == [r.raw for r in results]


def test_endpoint_url_through_a_real_server(tiny_server):
    base_url, model_id, counter = tiny_server
    counter.reset()
    dec = get_decomposer(f"gsrm:{base_url}", model=model_id, max_new_tokens=12,
                         options=EngineOptions(progress=False))
    results = dec.decompose(ITEMS)
    assert counter.count == 2
    # the untrained tiny model's replies (empty after the server drops special tokens) are failures
    assert all(not r.ok and r.decomposition is None and r.error.startswith("invalid reply")
               and isinstance(r.raw, str) for r in results)
    assert dec.describe()["engine"] == "openai" and dec.describe()["target"] == base_url


def test_bad_targets_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="gsrm checkpoint not found"):
        get_decomposer(f"gsrm:{tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match="unknown decomposer"):
        get_decomposer("gsrm:")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="gsrm engine"):
        GSRMDecomposer(str(tmp_path), engine="tensorrt")
    with pytest.raises(ConfigError, match="cannot list the models"):
        GSRMDecomposer("http://127.0.0.1:9/v1", options=EngineOptions(timeout_s=2)).engine  # noqa: B018


def test_a_checkpoint_trained_on_another_prompt_version_is_noted(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "manifest.json").write_text(json.dumps({"prompt_versions": {"gsrm": "gsrm@0000000000"}}))
    dec = GSRMDecomposer(str(tmp_path))
    assert "gsrm@0000000000" in dec.describe()["notes"][0]


def test_a_gsrm_that_learned_an_example_returns_its_decomposition(memorizing_gsrm):
    """The whole path works when the model is right: recipe -> checkpoint -> greedy generation ->
    parsed steps; and the model learned to stop (the end-of-turn token was in the loss)."""
    ckpt, trace, learned = memorizing_gsrm
    dec = GSRMDecomposer(str(ckpt), options=EngineOptions(progress=False), max_new_tokens=400)
    (res,) = dec.decompose([trace])
    assert res.ok, (res.error, res.raw)
    assert res.decomposition == learned and len(learned.steps) >= 2
    assert res.usage.completion_tokens < 400  # it stopped by itself
