"""Fast offline tests of the model-access parts: cache, prices, estimates, budget, params, secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import threading
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from rlkd_bench.errors import ConfigError
from rlkd_bench.llm import EngineOptions, make_engine, parse_spec
from rlkd_bench.llm.base import ChatRequest, Completion, Usage
from rlkd_bench.llm.cache import ResponseCache, default_cache_dir
from rlkd_bench.llm.cost import (
    PriceTable,
    TokenCounter,
    estimate,
    parse_price,
    parse_prices,
    worst_case_cost,
)
from rlkd_bench.llm.openai_engine import backoff_s, is_loopback, request_params, retry_after_s
from rlkd_bench.llm.redact import redact, safe_url
from rlkd_bench.llm.runner import Budget, model_fingerprint, run_sync


def req(text: str, **params) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},), params=params)


# -- cache --------------------------------------------------------------------------------
def test_cache_roundtrip_and_refusals(tmp_path):
    cache = ResponseCache(tmp_path)
    key = req("a").cache_key("m")
    assert cache.get(key) is None
    assert cache.put(key, Completion(text="hi", usage=Usage(3, 2, 0.01), finish_reason="stop"), model="m")
    got = cache.get(key)
    assert got is not None and got.cached and got.text == "hi" and got.finish_reason == "stop"
    assert (got.usage.prompt_tokens, got.usage.completion_tokens, got.usage.cost_usd) == (3, 2, 0.01)
    # failures and budget skips are never stored
    k2, k3 = req("b").cache_key("m"), req("c").cache_key("m")
    assert not cache.put(k2, Completion(text=None, error="HTTP 500: boom"))
    assert not cache.put(k3, Completion(text=None, error="budget: over"))
    assert cache.get(k2) is None and cache.get(k3) is None and len(cache) == 1


def test_cache_key_separates_model_params_prompt_version():
    base = req("x", temperature=0)
    keys = {
        base.cache_key("m"),
        base.cache_key("m2"),
        req("x", temperature=0.7).cache_key("m"),
        ChatRequest(messages=base.messages, params=base.params, prompt_version="v2").cache_key("m"),
    }
    assert len(keys) == 4
    # custom_id is not content
    assert ChatRequest(messages=base.messages, params=base.params, custom_id="row9").cache_key("m") == base.cache_key("m")


def test_cache_corrupt_entry_reads_as_miss(tmp_path):
    cache = ResponseCache(tmp_path)
    key = req("a").cache_key("m")
    cache.put(key, Completion(text="ok"))
    cache.path_for(key).write_text('{"key": "', encoding="utf-8")  # torn by an OS crash
    assert cache.get(key) is None


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RLKD_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("RLKD_CACHE_DIR")
    assert default_cache_dir().name == "rlkd-bench"


def _writer(root: str, worker: int, n: int) -> None:
    cache = ResponseCache(root)
    for i in range(n):
        shared = req(f"shared {i}").cache_key("m")  # every writer writes these
        cache.put(shared, Completion(text=f"shared {i}"))
        own = req(f"w{worker} {i}").cache_key("m")
        cache.put(own, Completion(text=f"w{worker} {i}"))


def test_cache_concurrent_writers_threads_and_processes(tmp_path):
    n = 40
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, n)) for w in range(2)]
    threads = [threading.Thread(target=_writer, args=(str(tmp_path), w, n)) for w in range(2, 5)]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = ResponseCache(tmp_path)
    assert len(cache) == n + 5 * n
    for i in range(n):
        assert cache.get(req(f"shared {i}").cache_key("m")).text == f"shared {i}"
        for w in range(5):
            assert cache.get(req(f"w{w} {i}").cache_key("m")).text == f"w{w} {i}"
    assert not list(tmp_path.rglob("*.tmp")), "temp files left behind"


# -- prices and estimates -------------------------------------------------------------------
def test_parse_price():
    assert parse_price("gpt-4o=2.5,10") == ("gpt-4o", (2.5, 10.0))
    assert parse_prices(["a=1,2", "a=3,4"]) == {"a": (3.0, 4.0)}
    for bad in ("gpt-4o", "gpt-4o=1", "=1,2", "m=x,2", "m=-1,2", "m=1,2,3"):
        with pytest.raises(ConfigError, match="--price"):
            parse_price(bad)


def test_price_table_lookup_batch_and_override():
    t = PriceTable()
    assert t.price("gpt-4o") == (2.5, 10.0)
    assert t.price("gpt-4o-mini-2024-07-18") == (0.15, 0.6)  # dated snapshot -> its family
    assert t.price("gpt-4.1-mini") == (0.4, 1.6)
    assert t.price("openai/gpt-4o") == (2.5, 10.0)
    assert t.price("gpt-4o", batch=True) == (1.25, 5.0)
    assert t.cost("gpt-4o", 1_000_000, 100_000) == pytest.approx(2.5 + 1.0)
    t2 = PriceTable({"gpt-4o": (1.0, 2.0), "my-model": (3.0, 4.0)})
    assert t2.price("gpt-4o") == (1.0, 2.0) and t2.price("my-model") == (3.0, 4.0)


def test_unknown_model_costs_zero_with_one_warning(caplog):
    t = PriceTable()
    with caplog.at_level(logging.WARNING, logger="rlkd_bench.llm"):
        assert t.cost("never-heard-of-it-7b", 1000, 1000) == 0.0
        assert t.cost("never-heard-of-it-7b", 5, 5) == 0.0
    assert sum("never-heard-of-it-7b" in r.getMessage() for r in caplog.records) == 1


def test_estimate_counts_and_says_how():
    reqs = [req("x" * 400, max_tokens=100), req("y" * 800)]
    e = estimate(reqs, "gpt-4o", output_ratio=0.5)
    assert e.requests == 2
    assert "chars/token" in e.input_method  # no tiktoken here, no local tokenizer for gpt-4o
    # 400 chars -> 100 tokens (+ role + framing), 800 -> 200
    assert 300 < e.input_tokens < 330
    second = TokenCounter("gpt-4o").count_messages(reqs[1].messages)
    assert e.output_tokens == 100 + -(-second // 2)  # max_tokens for the first, ceil(0.5 x input) for the second
    assert "max_tokens for 1" in e.output_method and "0.5 x input" in e.output_method
    assert e.cost_usd == pytest.approx((e.input_tokens * 2.5 + e.output_tokens * 10) / 1e6)
    eb = estimate(reqs, "gpt-4o", batch=True, output_ratio=0.5)
    assert eb.cost_usd == pytest.approx(e.cost_usd / 2)
    assert "Batch API" in eb.describe() and "$" in eb.describe()
    assert json.dumps(e.to_dict())


def test_estimate_with_local_tokenizer(tiny_model_dir):
    c = TokenCounter(str(tiny_model_dir))
    assert c.exact and "tokenizer of" in c.method
    e = estimate([req("hello there", max_tokens=8)], str(tiny_model_dir), counter=c)
    assert e.input_tokens == c.count_messages(req("hello there").messages) and e.output_tokens == 8
    assert not e.price_known and e.cost_usd == 0


def test_worst_case_cost_bounds_input_and_output():
    t = PriceTable({"m": (1e6, 1e6)})  # 1 USD per token: the numbers read as token counts
    c = TokenCounter("m")
    w = worst_case_cost(req("abcd" * 10, max_tokens=7), "m", t, c)
    assert w >= 7 + 10  # output cap + at least the chars/4 count
    assert worst_case_cost(req("abcd"), "m", t, c) >= 4096  # no max_tokens: the default cap


def test_budget_reservations_never_pass_the_limit():
    b = Budget(1.0)
    assert b.try_reserve(0.4) and b.try_reserve(0.4)
    assert not b.try_reserve(0.4) and b.stopped  # 1.2 > 1.0 even before anything is spent
    assert not b.try_reserve(0.01)  # once stopped, nothing more is sent
    b.settle(0.4, 0.3)
    assert b.spent == pytest.approx(0.3) and b.reserved == pytest.approx(0.4)
    assert Budget(None).try_reserve(1e9)


# -- request shaping, retries ----------------------------------------------------------------
def test_request_params_only_sends_accepted_names():
    p, dropped = request_params({"temperature": 0, "max_completion_tokens": 9, "n": 2,
                                 "response_format": {"type": "json_object"}, "seed": 1}, "gpt-4o")
    assert p == {"temperature": 0, "max_tokens": 9, "seed": 1}
    assert set(dropped) == {"n", "response_format"}
    p, dropped = request_params({"temperature": 0.3, "max_tokens": 9}, "o3-mini")
    assert p == {"max_completion_tokens": 9} and dropped == ["temperature"]


def test_retry_after_parsing():
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    when = datetime.now(timezone.utc) + timedelta(seconds=20)
    assert 15 < retry_after_s({"retry-after": format_datetime(when, usegmt=True)}) <= 20
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None


def test_backoff_grows_with_jitter_and_cap():
    import random

    rng = random.Random(0)
    waits = [backoff_s(a, 0.5, 8.0, rng) for a in range(8)]
    assert 0.25 <= waits[0] <= 0.5 and 2.0 <= waits[3] <= 4.0
    assert all(4.0 <= w <= 8.0 for w in waits[4:])


def test_loopback_detection():
    assert is_loopback("http://127.0.0.1:8000/v1") and is_loopback("http://localhost:1/v1")
    assert is_loopback("http://[::1]:8000/v1")
    assert not is_loopback("https://api.openai.com/v1") and not is_loopback(None)


# -- secrets ----------------------------------------------------------------------------------
def test_redact_masks_keys_and_urls():
    key = "sk-test-SECRET-0123456789"
    assert key not in redact(f"bad key {key} given", (key,))
    assert "SECRET" not in redact("Authorization: Bearer abcdefSECRET")
    assert "sk-proj-" not in redact("key sk-proj-abcdefghijkl leaked")
    assert safe_url("https://user:pw@host.example:8443/v1?api_key=zz") == "https://host.example:8443/v1"


def test_missing_key_error_names_the_variable_only(monkeypatch):
    monkeypatch.delenv("MY_KEY_VAR", raising=False)
    e = make_engine("openai:gpt-4o", EngineOptions(api_key_env="MY_KEY_VAR", progress=False))
    with pytest.raises(ConfigError, match="MY_KEY_VAR"):
        e.generate([req("x")])
    assert e.stats.sent == 0


# -- specs, fingerprints, loops -----------------------------------------------------------------
def test_parse_spec_and_unknown_engines():
    assert parse_spec("openai:gpt-4o") == ("openai", "gpt-4o")
    assert parse_spec("transformers:./a:b") == ("transformers", "./a:b")
    from rlkd_bench.llm import Engine

    assert isinstance(make_engine("openai:gpt-4o"), Engine)
    assert isinstance(make_engine("openai:gpt-4o", EngineOptions(batch_api=True, batch_dir="x")), Engine)
    assert isinstance(make_engine("transformers:some/model"), Engine)  # loads nothing until used
    for bad in ("gpt-4o", "foo:bar", "openai:", ""):
        with pytest.raises(ConfigError, match="engine"):
            make_engine(bad)
    with pytest.raises(ConfigError, match="batch-api"):
        make_engine("transformers:x", EngineOptions(batch_api=True))
    with pytest.raises(ConfigError, match="batch_dir"):
        make_engine("openai:gpt-4o", EngineOptions(batch_api=True))
    with pytest.raises(ConfigError, match="concurrency"):
        make_engine("openai:gpt-4o", EngineOptions(concurrency=0))


def test_model_fingerprint_changes_with_weights(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"a" * 1000)
    f1 = model_fingerprint(str(d))
    assert f1 == model_fingerprint(str(d)) and f1.startswith(str(d) + "#")
    (d / "model.safetensors").write_bytes(b"b" * 1000)
    assert model_fingerprint(str(d)) != f1
    assert model_fingerprint("gpt-4o") == "gpt-4o"


def test_run_sync_with_and_without_a_running_loop():
    async def work():
        await asyncio.sleep(0.01)
        return threading.current_thread().name

    assert run_sync(work) == threading.current_thread().name

    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", run_sync(work)))
    t.start()
    t.join()
    assert out["r"]

    async def inside_a_loop():
        return run_sync(work)  # e.g. a notebook: runs in a helper thread

    assert asyncio.run(inside_a_loop()).startswith("rlkd-llm")

