"""The OpenAI-compatible engine against a real `transformers serve` (tiny model) on 127.0.0.1.

Requests are counted at the server by the fault proxy in front of it (tests/faultproxy.py),
which also injects the faults: 429 + Retry-After, 500, a stall past the client timeout, a
dropped connection, a hostile 401 that echoes the Authorization header.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faultproxy import Fault

from rlkd_bench.llm import EngineOptions, make_engine
from rlkd_bench.llm.base import ChatRequest
from rlkd_bench.llm.cache import ResponseCache
from rlkd_bench.llm.cost import TokenCounter

pytestmark = pytest.mark.slow

MAX_TOKENS = 8


def requests(n: int, tag: str) -> list[ChatRequest]:
    return [ChatRequest(messages=({"role": "user", "content": f"{tag} question number {i}"},),
                        params={"max_tokens": MAX_TOKENS, "temperature": 0}, custom_id=f"{tag}-{i}")
            for i in range(n)]


def opts(base_url: str | None, cache_dir: Path, **kw) -> EngineOptions:
    kw.setdefault("progress", False)
    kw.setdefault("retry_base_s", 0.05)
    return EngineOptions(base_url=base_url, cache_dir=str(cache_dir), **kw)


def test_concurrency_bounded_and_rerun_is_free(server, tmp_path):
    base_url, model_id, counter = server
    counter.delay_s = 0.05  # let requests overlap visibly
    reqs = requests(24, "conc")
    eng = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, concurrency=8))
    out = eng.generate(reqs)
    assert all(c.ok for c in out) and [c.custom_id for c in out] == [r.custom_id for r in reqs]
    assert counter.count == 24
    assert 1 < counter.max_in_flight <= 8
    s = eng.summary()
    assert s["sent"] == 24 and s["cache_hits"] == 0 and s["failures"] == 0 and s["retries"] == 0

    # a rerun of the same requests (a fresh engine, as a new process would have) makes 0 requests
    counter.reset()
    again = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, concurrency=8))
    seen = []
    out2 = again.generate(reqs, on_result=lambda i, c: seen.append(i))
    assert counter.count == 0
    assert all(c.cached for c in out2) and [c.text for c in out2] == [c.text for c in out]
    assert sorted(seen) == list(range(24)) and again.summary()["cache_hits"] == 24

    # --no-cache sends again
    fresh = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, concurrency=8, use_cache=False))
    fresh.generate(reqs[:3])
    assert counter.count == 3


def test_sequential_concurrency_one(server, tmp_path):
    base_url, model_id, counter = server
    counter.delay_s = 0.02
    eng = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, concurrency=1))
    assert all(c.ok for c in eng.generate(requests(5, "seq")))
    assert counter.count == 5 and counter.max_in_flight == 1


def test_cost_from_reported_usage_with_price_override(server, tmp_path, tiny_model_dir):
    base_url, model_id, counter = server
    prices = {model_id: (1000.0, 3000.0)}  # USD per 1M tokens
    eng = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, prices=prices))
    reqs = requests(6, "cost")
    out = eng.generate(reqs)
    tok = TokenCounter(str(tiny_model_dir))  # the model's own chat template: what the server counts
    total = 0.0
    for r, c in zip(reqs, out, strict=True):
        assert c.ok
        assert c.usage.prompt_tokens == tok.count_messages(r.messages)
        assert 0 < c.usage.completion_tokens <= MAX_TOKENS
        expect = (c.usage.prompt_tokens * 1000 + c.usage.completion_tokens * 3000) / 1e6
        assert c.usage.cost_usd == pytest.approx(expect)
        total += expect
    s = eng.summary()
    assert s["cost_usd"] == pytest.approx(total, abs=1e-6)
    assert s["prompt_tokens"] == sum(c.usage.prompt_tokens for c in out)
    # cached answers keep what they cost, but this run pays nothing for them
    again = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, prices=prices))
    out2 = again.generate(reqs)
    assert [c.usage.cost_usd for c in out2] == [c.usage.cost_usd for c in out]
    assert again.summary()["cost_usd"] == 0 and again.summary()["cached_cost_usd"] == pytest.approx(total, abs=1e-6)


def test_max_cost_stops_before_the_budget_is_passed(server, tmp_path, tiny_model_dir):
    base_url, model_id, counter = server
    prices = {model_id: (1000.0, 1000.0)}
    tok = TokenCounter(str(tiny_model_dir))
    reqs = requests(20, "budget")
    worst = (tok.count_messages(reqs[0].messages) + MAX_TOKENS) * 1000 / 1e6
    budget = 5.5 * worst
    eng = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, prices=prices, concurrency=4,
                                                 max_cost_usd=budget))
    got = {}
    out = eng.generate(reqs, on_result=lambda i, c: got.setdefault(i, c))
    ok = [c for c in out if c.ok]
    skipped = [c for c in out if not c.ok]
    s = eng.summary()
    assert s["cost_usd"] <= budget
    assert 1 <= len(ok) <= 5 and len(skipped) == 20 - len(ok)
    assert all(c.error.startswith("budget:") for c in skipped)
    assert s["budget_skipped"] == len(skipped) and s["budget_stopped"] and s["failures"] == 0
    assert counter.count == len(ok)  # nothing over budget reached the server
    assert len(got) == 20  # the caller heard about every request
    cache = ResponseCache(tmp_path)
    assert len(cache) == len(ok)  # finished ones kept; budget skips not cached

    # a rerun with a bigger budget sends only what is missing
    counter.reset()
    more = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, prices=prices, concurrency=4,
                                                  max_cost_usd=100.0))
    out2 = more.generate(reqs)
    assert all(c.ok for c in out2) and counter.count == len(skipped)


def test_faults_are_retried_and_counted(server, tmp_path):
    base_url, model_id, counter = server
    counter.inject(Fault("429", retry_after=1.0), Fault("500"), Fault("stall", seconds=10), Fault("drop"))
    eng = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, concurrency=2, timeout_s=2.0, max_retries=5))
    reqs = requests(6, "fault")
    t0 = time.monotonic()
    out = eng.generate(reqs)
    assert all(c.ok for c in out), [c.error for c in out]
    s = eng.summary()
    # 4 injected faults -> 4 retries (more only if the shared CPU made a normal reply miss the timeout)
    assert s["retries"] >= 4 and s["failures"] == 0 and s["sent"] == 6 and s["attempts"] == 6 + s["retries"]
    assert counter.count == s["attempts"] and counter.pending_faults == 0
    assert [a.fault for a in counter.arrivals[:4]] == ["429", "500", "stall", "drop"]
    # the 429's request came back no sooner than its Retry-After
    first = next(a for a in counter.arrivals if a.fault == "429")
    retry = next(a for a in counter.arrivals if a.body_sha == first.body_sha and a.t > first.t)
    assert retry.t - first.t >= 0.95
    assert time.monotonic() - t0 < 30
    assert len(ResponseCache(tmp_path)) == 6


def test_retries_exhausted_fail_without_caching(server, tmp_path):
    base_url, model_id, counter = server
    counter.inject("500", "500", "500")
    eng = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, max_retries=2, concurrency=1))
    out = eng.generate(requests(2, "exhaust"))
    assert not out[0].ok and "HTTP 500" in out[0].error and "3 attempts" in out[0].error
    assert out[1].ok
    assert eng.summary()["failures"] == 1 and eng.summary()["retries"] == 2
    counter.reset()
    again = make_engine(f"openai:{model_id}", opts(base_url, tmp_path))
    assert all(c.ok for c in again.generate(requests(2, "exhaust")))
    assert counter.count == 1  # only the failed one is sent again


def test_api_key_never_written_logged_or_shown(server, tmp_path, monkeypatch, caplog, capfd):
    base_url, model_id, counter = server
    secret = "sk-test-SECRET-8f3a9c1d2e4b6a7c"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    counter.keep_headers = True
    counter.inject("401echo")
    caplog.set_level(logging.DEBUG)
    # a loopback server gets the key only when --api-key-env names it (llm/endpoint.py)
    eng = make_engine(f"openai:{model_id}", opts(base_url, tmp_path / "cache", prices={model_id: (1.0, 1.0)},
                                                 max_retries=0, progress=True, api_key_env="OPENAI_API_KEY"))
    out = eng.generate(requests(3, "secret"))
    # the key really was sent (so the test could catch a leak) ...
    assert any(secret in a.headers.get("authorization", "") for a in counter.arrivals)
    # ... the hostile server echoed it back in its error, and we masked it
    bad = [c for c in out if not c.ok]
    assert len(bad) == 1 and "401" in bad[0].error and secret not in bad[0].error
    written = [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert written, "expected cache files"
    texts = written + [json.dumps(eng.summary()), repr(eng), repr(eng.options), eng.summary_line(),
                       caplog.text, *capfd.readouterr()] + [repr(c) for c in out]
    for t in texts:
        assert secret not in t and "SECRET-8f3a" not in t


WORKER = r"""
import json, sys
from rlkd_bench.llm import EngineOptions, make_engine
from rlkd_bench.llm.base import ChatRequest
from rlkd_bench.products import RowLog

base_url, model, cache_dir, out, n = sys.argv[1:6]
reqs = [ChatRequest(messages=({"role": "user", "content": f"resume row {i}"},),
                    params={"max_tokens": 8, "temperature": 0}, custom_id=f"row{i}") for i in range(int(n))]
eng = make_engine(f"openai:{model}", EngineOptions(base_url=base_url, cache_dir=cache_dir, concurrency=4,
                                                   progress=False))
with RowLog(out) as rows:
    def on_result(i, c):
        if c.ok:
            rows.append({"id": reqs[i].custom_id, "text": c.text, "cached": c.cached})
    eng.generate(reqs, on_result=on_result)
print(json.dumps(eng.summary()))
"""


def test_resume_after_sigkill_sends_only_missing(server, tmp_path):
    base_url, model_id, counter = server
    n = 40
    counter.delay_s = 0.1  # ~1 s of work at concurrency 4: room to kill it half way
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cache_dir, out = tmp_path / "cache", tmp_path / "rows.jsonl"
    cmd = [sys.executable, str(script), base_url, model_id, str(cache_dir), str(out), str(n)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = out.read_text().count("\n") if out.exists() else 0
        if done >= n // 2 or proc.poll() is not None:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    first_count = counter.count
    cached_at_kill = len(ResponseCache(cache_dir))
    assert 0 < cached_at_kill < n, "the kill should land half way"

    counter.reset()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert counter.count == n - cached_at_kill  # only the missing ones reached the server
    assert summary["cache_hits"] == cached_at_kill and summary["sent"] == n - cached_at_kill
    assert first_count + counter.count >= n
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    ids = [r["id"] for r in lines]
    assert sorted(ids) == sorted(f"row{i}" for i in range(n))  # every row, exactly once


def test_unsupported_params_dropped_and_progress_shows_cost(server, tmp_path, capfd):
    base_url, model_id, counter = server
    r = ChatRequest(messages=({"role": "user", "content": "params"},),
                    params={"n": 2, "response_format": {"type": "json_object"}, "max_completion_tokens": 5,
                            "temperature": 0})
    eng = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, progress=True, prices={model_id: (10.0, 10.0)}))
    (c,) = eng.generate([r])
    assert c.ok and c.usage.completion_tokens <= 5  # max_completion_tokens went out as max_tokens
    err = capfd.readouterr().err
    assert "hits=0" in err and "retries=0" in err and "$0.0" in err


def test_generate_from_a_thread_and_from_inside_a_loop(server, tmp_path):
    import asyncio
    import threading

    base_url, model_id, counter = server
    eng = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, use_cache=False))
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("out", eng.generate(requests(2, "thread"))))
    t.start()
    t.join(60)
    assert all(c.ok for c in box["out"])

    async def caller():  # e.g. a notebook cell: a loop is already running
        return eng.generate(requests(2, "loop"))

    assert all(c.ok for c in asyncio.run(caller()))
    assert counter.count == 4
