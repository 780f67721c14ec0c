"""Issue 9, the model-access side: secrets, where the key goes, permanent errors, money, Batch API
re-attach, cache identity. The CLI runs as a subprocess where a user would meet the problem; the
engine talks to the real ``transformers serve`` fixture behind the fault proxy (tests/faultproxy.py).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from faultproxy import Fault
from test_llm_http import MAX_TOKENS, opts, requests  # tests/ is on sys.path (rootdir conftest)

from rlkd_bench.errors import ConfigError
from rlkd_bench.llm import EngineOptions, make_engine
from rlkd_bench.llm.cost import PriceTable, TokenCounter
from rlkd_bench.llm.redact import redact
from rlkd_bench.products import redact_argv as products_redact_argv

ROOT = Path(__file__).resolve().parents[1]

def with_secrets(base_url: str, user: str, pw: str, query: str) -> str:
    scheme, rest = base_url.split("://", 1)
    return f"{scheme}://{user}:{pw}@{rest}?{query}"


def run_cli(args: list[str], env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **env_extra)
    return subprocess.run([sys.executable, "-m", "rlkd_bench.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def two_traces(path: Path) -> Path:
    from rlkd_bench.data.synthetic import generate

    path.write_text("".join(json.dumps(t.to_trace_row()) + "\n" for t in generate(2, seed=5)))
    return path


def all_text(out: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(out.rglob("*")) if p.is_file())


# -- 5. one redaction owner ---------------------------------------------------------------------
def test_redact_argv_urls_and_delegation():
    from rlkd_bench.llm.redact import redact_argv

    argv = ["rlkd-bench", "build-gsrm-data", "--base-url", "http://alice:pw-9f8e@h:8000/v1?api_key=QS-77aa",
            "--decomposer", "gsrm:https://bob:hunter22@h/v1", "--api-key", "plain-secret-value",
            "--token=hf_abcdefghijklmn", "--field", "gold=answer", "--price", "gpt-4o=2.5,10",
            "--base-url=http://tok-5566@h/v1"]
    got = redact_argv(argv)
    text = " ".join(got)
    for secret in ("pw-9f8e", "alice", "QS-77aa", "hunter22", "plain-secret-value", "hf_abc", "tok-5566"):
        assert secret not in text
    assert "http://***@h:8000/v1?api_key=***" in got and "gsrm:https://***@h/v1" in got
    assert "gold=answer" in got and "gpt-4o=2.5,10" in got  # ordinary values are kept
    assert products_redact_argv(argv) == got  # one owner


def test_redact_errors_mask_query_secrets_basic_auth_and_url_credentials():
    from rlkd_bench.llm.endpoint import resolve, split_base_url

    ep = resolve("http://carol:pw-abcd@127.0.0.1:9/v1?api_key=QS-1234&mode=x", None)
    token = base64.b64encode(b"carol:pw-abcd").decode()
    assert ep.authorization == f"Basic {token}" and ep.url == "http://127.0.0.1:9/v1"
    assert ep.query == {"api_key": "QS-1234", "mode": "x"}
    echoed = (f"cannot serve POST /v1/chat/completions?api_key=QS-1234 (authorization: Basic {token}) "
              "see http://carol:pw-abcd@127.0.0.1:9/v1 token=zzz-other")
    clean = redact(echoed)
    for secret in ("QS-1234", token, "pw-abcd", "zzz-other"):
        assert secret not in clean
    with pytest.raises(ConfigError, match="base-url"):
        split_base_url("ftp://h/v1")


@pytest.mark.slow
def test_cli_base_url_with_credentials_and_query_works_and_leaks_nothing(server, tmp_path):
    base_url, model_id, counter = server
    user, pw, qs = "annot-user", "pw-7c1e5a", "QSECRET-41b9"
    token = base64.b64encode(f"{user}:{pw}".encode()).decode()
    key = "sk-test-ENVKEY-0a1b2c3d4e5f"
    url = with_secrets(base_url, user, pw, f"api_key={qs}")
    counter.keep_headers = True
    counter.inject(Fault("echo", status=400))  # the first request: a server that echoes the request
    out = tmp_path / "out"
    res = run_cli(["build-gsrm-data", "--traces", str(two_traces(tmp_path / "t.jsonl")),
                   "--annotator", f"openai:{model_id}", "--base-url", url, "--max-tokens", "8",
                   "--max-invalid-retries", "0", "--concurrency", "1", "--out", str(out), "--no-progress",
                   "--test-size", "0"], {"OPENAI_API_KEY": key}, tmp_path)
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    # the request path survived the query string; the query went along; Basic auth was sent, the key not
    chats = list(counter.arrivals)
    assert len(chats) == 2, [a.path for a in chats]
    assert all(a.path == f"/v1/chat/completions?api_key={qs}" for a in chats)
    assert all(a.headers.get("authorization") == f"Basic {token}" for a in chats)
    # the echoed 400 is a permanent reject with the server's (redacted) reason
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert any("400" in json.dumps(r) and "cannot serve" in json.dumps(r) for r in rejects), rejects
    for where, text in (("files", all_text(out)), ("stderr", res.stderr), ("stdout", res.stdout)):
        for secret in (pw, qs, token, key, f"{user}:"):
            assert secret not in text, (where, secret)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "http://***@127.0.0.1" in " ".join(manifest["command"])


@pytest.mark.slow
def test_gsrm_url_with_credentials_lists_its_models(server):
    from rlkd_bench.llm.endpoint import only_served_model

    base_url, model_id, counter = server
    url = with_secrets(base_url, "gsrm-user", "pw-list-1234", "token=QS-list-5678")
    assert only_served_model(url, None, timeout_s=10.0, what="server", pick_hint="") == model_id


@pytest.mark.slow
def test_cli_gsrm_url_with_credentials_finds_its_model(server, tmp_path):
    base_url, model_id, counter = server
    pw, qs = "pw-gsrm-3e9d", "QS-gsrm-88c2"
    url = with_secrets(base_url, "gsrm-user", pw, f"token={qs}")
    out = tmp_path / "rlkd"
    res = run_cli(["build-rlkd-data", "--traces", str(two_traces(tmp_path / "t.jsonl")), "--decomposer",
                   f"gsrm:{url}", "--max-new-tokens", "8", "--out", str(out), "--no-progress", "--test-size", "0"],
                  {}, tmp_path)
    assert "cannot list the models" not in res.stderr, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert counter.count == 2  # the /models lookup worked and both traces were sent
    for text in (all_text(out), res.stderr, res.stdout):
        assert pw not in text and qs not in text


# -- 6. the key goes only where it was meant to ---------------------------------------------------
def test_key_policy(monkeypatch):
    from rlkd_bench.llm.endpoint import resolve

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-000111")
    monkeypatch.setenv("OTHER_KEY", "other-secret-222333")
    assert resolve(None, None).api_key == "sk-test-openai-000111"
    assert resolve("https://api.openai.com/v1", None).api_key == "sk-test-openai-000111"
    for url in ("https://api.example.com/v1", "http://127.0.0.1:8000/v1"):
        ep = resolve(url, None)
        assert ep.api_key is None and ep.authorization is None, url
    with pytest.raises(ConfigError, match="https only"):  # plain http to OpenAI: neither a key nor a request
        resolve("http://api.openai.com/v1", None)
    assert resolve("https://api.example.com/v1", "OTHER_KEY").authorization == "Bearer other-secret-222333"
    assert resolve("http://localhost:8000/v1", "OTHER_KEY").api_key == "other-secret-222333"
    with pytest.raises(ConfigError, match="plain http"):
        resolve("http://10.1.2.3:8000/v1", "OTHER_KEY")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        resolve(None, None)
    with pytest.raises(ConfigError, match="NOPE_KEY"):
        resolve("https://api.example.com/v1", "NOPE_KEY")


@pytest.mark.slow
def test_loopback_server_gets_no_key_unless_named(server, tmp_path, monkeypatch):
    base_url, model_id, counter = server
    secret = "sk-test-NOTFORYOU-5566778899"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    counter.keep_headers = True
    out = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, use_cache=False)).generate(requests(2, "k"))
    assert all(c.ok for c in out)
    assert [a.headers.get("authorization") for a in counter.arrivals] == [None, None]
    counter.reset()
    counter.keep_headers = True
    out = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, use_cache=False,
                                                 api_key_env="OPENAI_API_KEY")).generate(requests(1, "k"))
    assert out[0].ok and counter.arrivals[0].headers.get("authorization") == f"Bearer {secret}"


# -- 7. permanent errors -----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("status", [400, 404, 422])
def test_permanent_4xx_is_not_retried_and_says_why(server, tmp_path, status):
    base_url, model_id, counter = server
    counter.inject(Fault("echo", status=status))
    eng = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, max_retries=3, concurrency=1))
    bad, good = eng.generate(requests(2, f"perm{status}"))
    assert counter.count == 2  # one attempt each: the 4xx was not retried
    assert not bad.ok and bad.retryable is False and bad.status == status
    assert f"HTTP {status}" in bad.error and "cannot serve" in bad.error and "rerun" not in bad.error
    assert good.ok and good.retryable is True
    assert eng.summary()["retries"] == 0


@pytest.mark.slow
def test_401_without_a_key_says_how_to_send_one(server, tmp_path):
    base_url, model_id, counter = server
    counter.inject(Fault("echo", status=401))
    (c,) = make_engine(f"openai:{model_id}", opts(base_url, tmp_path)).generate(requests(1, "auth"))
    assert c.retryable is False and c.status == 401 and "--api-key-env" in c.error


# -- 10. money: budgets need exact prices; a timeout counts at its worst case ----------------------------
def test_max_cost_without_a_known_price_is_refused():
    with pytest.raises(ConfigError, match="--price gpt-4o-2024-xx-large="):
        make_engine("openai:gpt-4o-2024-xx-large", EngineOptions(max_cost_usd=5.0, progress=False))
    with pytest.raises(ConfigError, match="--price"):
        make_engine("openai:local-model", EngineOptions(base_url="http://127.0.0.1:1/v1", max_cost_usd=1.0))
    # an exact entry or an override is enough
    make_engine("openai:gpt-4o-mini-2024-07-18", EngineOptions(max_cost_usd=5.0))
    make_engine("openai:local-model", EngineOptions(base_url="http://127.0.0.1:1/v1", max_cost_usd=1.0,
                                                    prices={"local-model": (0.0, 0.0)}))
    t = PriceTable()
    assert t.lookup("gpt-4o-2024-xx-large") is None and t.lookup("gpt-4o-large") is None  # no namesake pricing


def test_cli_max_cost_with_unknown_price_exits_2(tmp_path):
    res = run_cli(["build-gsrm-data", "--traces", str(two_traces(tmp_path / "t.jsonl")), "--annotator",
                   "openai:my-local-model", "--base-url", "http://127.0.0.1:9/v1", "--max-cost", "1",
                   "--out", str(tmp_path / "o"), "--no-progress"], {}, tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "--price my-local-model=" in res.stderr


@pytest.mark.slow
def test_timed_out_attempt_counts_at_worst_case(server, tmp_path, tiny_model_dir):
    base_url, model_id, counter = server
    prices = {model_id: (1000.0, 1000.0)}
    reqs = requests(1, "tmo")
    worst = (TokenCounter(str(tiny_model_dir)).count_messages(reqs[0].messages) + MAX_TOKENS) * 1000 / 1e6
    counter.inject(Fault("stall", seconds=20))
    eng = make_engine(f"openai:{model_id}", opts(base_url, tmp_path, prices=prices, timeout_s=1.0, max_retries=3,
                                                 max_cost_usd=1.5 * worst))
    (c,) = eng.generate(reqs)
    assert counter.count == 1  # the retry would not fit once the timeout was counted as spent
    assert not c.ok and c.error.startswith("budget:") and "timed-out" in c.error
    s = eng.summary()
    assert s["timeout_worst_usd"] == pytest.approx(worst) and eng.budget.spent == pytest.approx(worst)
    assert eng.budget.spent <= 1.5 * worst


# -- 11. prices from genai-prices, offline, with the source recorded -------------------------------------
def test_prices_come_from_genai_prices_offline(monkeypatch):
    import genai_prices

    def no_network(*a, **k):
        raise AssertionError("a price lookup tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    t = PriceTable()
    assert t.price("gpt-4o") == (2.5, 10.0) and t.price("gpt-4o", batch=True) == (1.25, 5.0)
    assert t.source("gpt-4o") == f"genai-prices {genai_prices.__version__} (gpt-4o)"
    assert t.known("gpt-4.1-nano") and t.known("o3-mini")
    assert PriceTable(base_url="http://127.0.0.1:8000/v1").lookup("gpt-4o") is None  # a local server: no price
    over = PriceTable({"gpt-4o": (1.0, 2.0)})
    assert over.price("gpt-4o") == (1.0, 2.0) and over.source("gpt-4o").startswith("override")
    eng = make_engine("openai:gpt-4o", EngineOptions(progress=False))
    assert eng.summary()["price_source"].startswith("genai-prices ")


# -- 12. Batch API: re-attach only a batch that can still deliver ------------------------------------------
class AutoBatchAPI:
    """The in-memory Batch API double of test_llm_batch.py, whose provider finishes a new batch
    as soon as it is polled (``MemoryBatchAPI.finish``)."""

    def __new__(cls):
        from test_llm_batch import MemoryBatchAPI

        class Auto(MemoryBatchAPI):
            def retrieve(self, batch_id: str) -> dict:
                if self.batches[batch_id]["status"] == "validating":
                    self.finish(batch_id)
                return super().retrieve(batch_id)

        return Auto()


@pytest.mark.parametrize("ended", ["expired", "completed"])
def test_batch_that_ended_with_no_answers_is_not_reattached(tmp_path, ended):
    from test_llm_batch import Crash, engine, reqs

    api = AutoBatchAPI()
    rs = reqs(4)
    api.crash_on = "create"  # crash before the batch id is saved: a rerun looks it up by its metadata
    with pytest.raises(Crash):
        engine(tmp_path, api).generate(rs)
    api.finish("batch_0", status=ended, answer_only=0)  # every request expired / errored
    out = engine(tmp_path, api).generate(rs)
    assert all(c.ok for c in out), [c.error for c in out]
    assert len(api.batches) == 2 and len(api.input_lines("batch_1")) == 4
    api.calls.clear()
    assert all(c.cached for c in engine(tmp_path, api).generate(rs)) and api.calls == []


def test_uncollected_dead_batch_from_state_is_closed_and_replaced(tmp_path):
    from test_llm_batch import Crash, engine, reqs

    api = AutoBatchAPI()
    rs = reqs(3)
    api.crash_on = "retrieve"  # the id was saved, the run died while polling
    with pytest.raises(Crash):
        engine(tmp_path, api).generate(rs)
    api.finish("batch_0", status="expired", answer_only=0)
    out = engine(tmp_path, api).generate(rs)
    assert all(c.ok for c in out) and len(api.batches) == 2
    state = json.loads((tmp_path / "out" / "batch_state.json").read_text())
    assert [j["collected"] for j in state["jobs"]] == [True, True]


# -- 13. cache keys include the server's identity ----------------------------------------------------------
def test_openai_cache_namespace_is_unchanged():
    assert make_engine("openai:gpt-4o", EngineOptions()).cache_model() == "openai:gpt-4o"


@pytest.mark.slow
def test_same_model_name_at_another_url_is_not_a_cache_hit(server, tmp_path):
    base_url, model_id, counter = server
    direct = f"http://127.0.0.1:{counter.upstream[1]}/v1"  # the same server without the proxy
    reqs = requests(2, "ident")
    a = make_engine(f"openai:{model_id}", opts(base_url, tmp_path))
    assert all(c.ok for c in a.generate(reqs))
    again = make_engine(f"openai:{model_id}", opts(base_url, tmp_path))
    assert all(c.cached for c in again.generate(reqs))
    b = make_engine(f"openai:{model_id}", opts(direct, tmp_path))
    out = b.generate(reqs)
    assert all(c.ok and not c.cached for c in out) and b.stats.sent == 2
