"""The annotation prompts and the annotator's request building, without a model.

The behaviour against a real model server (retries, cache, budget, resume) is in
tests/test_annotate_server.py.
"""

from __future__ import annotations

import json

import pytest

from rlkd_bench.decompose import get_decomposer
from rlkd_bench.decompose.annotate import (
    DOMAINS,
    Annotator,
    load_annotation_prompt,
    parse_prompt_text,
    prompt_domain,
)
from rlkd_bench.errors import ConfigError
from rlkd_bench.llm.base import EngineOptions
from rlkd_bench.prompting import load_prompt
from rlkd_bench.structure import FINAL_ANSWER_LINE, parse_steps, validate

ITEM = {"id": "t1", "domain": "science", "problem": "Why is the sky blue?",
        "reasoning": "Rayleigh scattering goes as 1/lambda^4, so blue scatters most. So: scattering."}


@pytest.mark.parametrize("domain", DOMAINS)
def test_each_domain_prompt_has_two_valid_few_shot_examples(domain):
    prompt = load_annotation_prompt(domain)
    assert prompt.version == load_prompt(f"annotate_{domain}").version
    assert prompt.version.startswith(f"annotate_{domain}@")
    assert len(prompt.examples) == 2
    for ex in prompt.examples:
        d = parse_steps(ex.steps)
        assert validate(d) == [], ex.steps
        assert len(d) >= 4, "finer granularity: several small steps per example"
        assert ex.steps.rstrip().splitlines()[-1].startswith(FINAL_ANSWER_LINE)
        for step in d.steps:
            short = step.answer.strip("`$ ")
            # the meta-reasoning states the plan, never the step's own answer
            assert len(short) < 2 or short.lower() not in step.meta.lower(), step
            assert step.subproblem.count("?") == 1, f"one question per sub-problem: {step.subproblem}"
    for rule in ("[Meta-reasoning i]", "[Sub-problem i]", "[Answer i]", FINAL_ANSWER_LINE,
                 "small steps", "abandons"):
        assert rule in prompt.system


def test_prompt_versions_differ_per_domain():
    versions = {load_annotation_prompt(d).version for d in DOMAINS}
    assert len(versions) == len(DOMAINS)


def test_messages_are_system_then_few_shot_pairs_then_the_trace():
    prompt = load_annotation_prompt("math")
    msgs = prompt.messages("What is 2+3?", "2 plus 3 is 5.")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[0]["content"] == prompt.system
    assert msgs[2]["content"] == prompt.examples[0].steps
    assert "What is 2+3?" in msgs[-1]["content"] and "2 plus 3 is 5." in msgs[-1]["content"]
    assert prompt.examples[0].trace in msgs[1]["content"]
    with_note = prompt.messages("What is 2+3?", "2 plus 3 is 5.", feedback="NOTE")
    assert with_note[:-1] == msgs[:-1] and with_note[-1]["content"].endswith("NOTE")


@pytest.mark.parametrize("text, where", [
    ("no sections at all", "must start with an '@@ system'"),
    ("@@ system\nhi\n@@ problem\np\n@@ steps\ns\n", "expected sections problem, trace, steps"),
    ("@@ system\nhi\n@@ problem\np\n@@ trace\n\n@@ steps\ns\n", ":5: section '@@ trace' is empty"),
    ("@@ system\nhi\n@@ problem\np\n@@ trace\nt\n", "got problem, trace"),
])
def test_malformed_prompt_files_are_config_errors_naming_file_and_line(text, where):
    with pytest.raises(ConfigError, match="prompts/annotate_x.txt") as e:
        parse_prompt_text(text, name="annotate_x")
    assert where in str(e.value)


def test_unknown_domain_falls_back_to_math_and_says_so():
    assert prompt_domain("Science") == ("science", False)
    assert prompt_domain("chemistry") == ("math", True)
    assert prompt_domain(None) == ("math", True)
    assert prompt_domain("../gsrm") == ("math", True)
    assert prompt_domain("gsrm") == ("math", True)  # a prompt file, but not an annotation prompt


def test_requests_carry_the_prompt_version_and_retries_are_distinct_requests():
    a = Annotator("gpt-4o", max_tokens=100)
    st = a._state(ITEM)
    first, second, third = (a.request(st, k) for k in (1, 2, 3))
    assert first.prompt_version == load_annotation_prompt("science").version
    assert first.params == {"temperature": 0.0, "max_tokens": 100}
    st.problems = ["no steps found"]
    second, third = a.request(st, 2), a.request(st, 3)
    keys = {r.cache_key("m") for r in (first, second, third)}
    assert len(keys) == 3, "a retry must never be a cache hit of the reply it retries"
    assert "no steps found" in second.messages[-1]["content"]
    assert "attempt 2" in second.messages[-1]["content"]
    assert first.messages[:-1] == second.messages[:-1]
    assert first.custom_id == "t1#a1" and third.custom_id == "t1#a3"


def test_get_decomposer_builds_the_annotator_and_describe_holds_no_secret(monkeypatch):
    secret = "sk-test-0123456789abcdefSECRET"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    opts = EngineOptions(base_url="http://user:pw@127.0.0.1:9/v1?key=abc", max_cost_usd=1.0)
    a = get_decomposer("openai:gpt-4o-mini", options=opts, max_tokens=512)
    assert isinstance(a, Annotator) and a.name == "openai:gpt-4o-mini"
    d = a.describe()
    blob = json.dumps(d)
    assert secret not in blob and "pw" not in blob and "key=abc" not in blob
    assert d["base_url"] == "http://127.0.0.1:9/v1"
    assert d["prompt_versions"]["code"] == load_annotation_prompt("code").version
    assert d["params"] == {"temperature": 0.0, "max_tokens": 512, "max_invalid_retries": 2}
    assert all(load_annotation_prompt(x).version in a.prompt_version for x in DOMAINS)


def test_estimate_counts_requests_and_cost_without_calling_anything():
    # a base_url nobody listens on: estimate must not even try to connect
    a = Annotator("gpt-4o", options=EngineOptions(base_url="http://127.0.0.1:9/v1"), max_tokens=1000)
    items = [dict(ITEM, id=f"t{i}", reasoning="word " * 400) for i in range(3)]
    items.append(dict(ITEM, id="t9", domain="chemistry"))
    est = a.estimate(items)
    assert a._engine is None
    assert est["requests"] == 4 and est["traces"] == 4
    assert est["domain fallback to math"] == 1
    assert est["input tokens"] > 4 * 900  # the few-shot prompt alone is ~1000 tokens
    assert 0 < est["expected output tokens"] <= 4 * 1000
    assert 0 < est["expected cost (USD)"] < est["worst case cost (USD)"]
    cheap = Annotator("gpt-4o", options=EngineOptions(batch_api=True), max_tokens=1000).estimate(items)
    assert cheap["expected cost (USD)"] == pytest.approx(est["expected cost (USD)"] / 2, rel=0.01)


def test_bad_annotator_settings_are_config_errors():
    with pytest.raises(ConfigError):
        get_decomposer("openai:")
    with pytest.raises(ConfigError):
        Annotator("gpt-4o", max_invalid_retries=-1)
