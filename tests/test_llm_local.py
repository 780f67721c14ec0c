"""In-process engines: transformers on the tiny model (CPU), and vLLM's clear error without it."""

from __future__ import annotations

import importlib.util

import pytest

from rlkd_bench.errors import ConfigError
from rlkd_bench.llm import EngineOptions, make_engine
from rlkd_bench.llm.base import ChatRequest
from rlkd_bench.llm.cost import TokenCounter
from rlkd_bench.llm.local import _cut_at_stop


def reqs() -> list[ChatRequest]:
    texts = ["hi", "a much longer question about sums of squares and cubes", "what is 2+2?",
             "x " * 30, "short"]
    return [ChatRequest(messages=({"role": "user", "content": t},), params={"max_tokens": 6, "temperature": 0},
                        custom_id=f"r{i}") for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def sharp_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with its weights scaled up, so greedy replies depend on the prompt (the
    plain tiny model answers newlines to everything, which would hide padding bugs)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("sharp") / "tiny-sharp"
    shutil.copytree(tiny_model_dir, out)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(8.0)
    model.save_pretrained(out)
    return out


def test_transformers_engine_batched_equals_single_and_caches(sharp_model_dir, tmp_path):
    spec = f"transformers:{sharp_model_dir}"
    batched = make_engine(spec, EngineOptions(cache_dir=str(tmp_path / "a"), batch_size=4, device="cpu",
                                              progress=False))
    single = make_engine(spec, EngineOptions(use_cache=False, batch_size=1, device="cpu", progress=False))
    rs = reqs()
    got = {}
    out = batched.generate(rs, on_result=lambda i, c: got.setdefault(i, c))
    ref = single.generate(rs)
    assert sorted(got) == list(range(len(rs)))
    # left padding must not change greedy outputs (right padding would)
    assert len({c.text for c in ref}) == len(rs), "replies should differ by prompt"
    assert [c.text for c in out] == [c.text for c in ref]
    counter = TokenCounter(str(sharp_model_dir))
    for r, c in zip(rs, out, strict=True):
        assert c.ok and c.custom_id == r.custom_id and c.usage.cost_usd == 0
        assert c.usage.prompt_tokens == counter.count_messages(r.messages)
        assert 0 < c.usage.completion_tokens <= 6
        assert c.finish_reason in ("stop", "length")
    s = batched.summary()
    assert s["sent"] == 5 and s["attempts"] == 2 and s["cost_usd"] == 0  # two batches of <= 4

    again = make_engine(spec, EngineOptions(cache_dir=str(tmp_path / "a"), progress=False))
    out2 = again.generate(rs)
    assert all(c.cached for c in out2) and [c.text for c in out2] == [c.text for c in out]
    assert again.stats.sent == 0 and again._model is None  # not even loaded


def test_transformers_engine_sampling_is_seeded(tiny_model_dir):
    e = make_engine(f"transformers:{tiny_model_dir}", EngineOptions(use_cache=False, progress=False, device="cpu"))
    r = ChatRequest(messages=({"role": "user", "content": "tell me"},),
                    params={"max_tokens": 8, "temperature": 1.0, "seed": 7})
    a, b = e.generate([r]), e.generate([r])
    assert a[0].ok and a[0].text == b[0].text


def test_stop_strings_cut_like_openai():
    assert _cut_at_stop("abc STOP def", ["STOP"]) == ("abc ", True)
    assert _cut_at_stop("abc", ["zz"]) == ("abc", False)


def test_bad_local_model_is_a_config_error(tmp_path):
    e = make_engine(f"transformers:{tmp_path / 'nope'}", EngineOptions(use_cache=False, progress=False))
    with pytest.raises(ConfigError, match="cannot load"):
        e.generate([reqs()[0]])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_engine_says_how_to_install():
    with pytest.raises(ConfigError) as e:
        make_engine("vllm:Qwen/Qwen2.5-7B-Instruct")
    assert "pip install 'rlkd-bench[vllm]'" in str(e.value)
    assert e.value.exit_code == 2
