"""Secrets in ``rlkd-bench eval --model-backend local-completions`` and in the data stages' output
(issue 15, items 7 and 8).

The key goes where README "Where the key goes" says and nowhere else; the URL's path gets
``/completions`` before its query; ``user:pw@`` becomes Basic auth; a server error is one clear line
with the redacted URL, never the key. Every test runs the command a user runs against a real
``transformers serve`` on loopback (the session's tiny model; for the data stage, the GSRM that
learned one trace by heart) behind tests/faultproxy.py ``FaultProxy``, which records what it was
sent and injects the 401; each failed before the fix it goes with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlkd_bench.cli import cli
from rlkd_bench.errors import EXIT_RUNTIME, EXIT_USAGE

sys.path.insert(0, str(Path(__file__).parent))
from faultproxy import COMPLETIONS_PATH, Fault  # noqa: E402

KEY = "sk-eval-SECRET-0123456789"
PASSWORD = "pw-SECRET-4242"
QUERY_VALUE = "qv-SECRET-9999"


@pytest.fixture
def completions_server(server):
    """The session's tiny server with its proxy recording the headers and paths of every
    ``/v1/completions`` request (lm-eval's local-completions backend)."""
    base_url, model_id, proxy = server
    proxy.keep_headers = True
    proxy.fault_paths = (COMPLETIONS_PATH,)
    return base_url, model_id, proxy


def offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLKD_") or k == "RLKD_CACHE_DIR"}
    env.pop("OPENAI_API_KEY", None)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", **extra)
    return env


def secrets_in(text: str) -> list[str]:
    return [s for s in (KEY, PASSWORD, QUERY_VALUE) if s in text]


def files_with_secrets(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file() and secrets_in(p.read_bytes().decode("utf-8", "replace")):
                found.append(str(p))
    return found


def eval_args(model: str, base_url: str, out: Path, *extra: str) -> list[str]:
    return ["eval", model, "--model-backend", "local-completions", "--base-url", base_url,
            "--tasks", "rlkd_structure", "--limit", "1", "--max-gen-toks", "4", "--output-path", str(out), *extra]


# ---- item 7: rlkd-bench eval --model-backend local-completions --------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_eval_sends_no_key_to_a_server_nobody_named_and_keeps_the_query_after_the_path(
        completions_server, tmp_path, monkeypatch):
    """OPENAI_API_KEY is for api.openai.com: a loopback server named by --base-url gets no
    Authorization header unless --api-key-env names the variable; the query string stays a query
    (``/v1/completions?api_key=...``, not ``/v1?api_key=.../completions``)."""
    base_url, model_id, proxy = completions_server
    for k, v in offline_env(OPENAI_API_KEY=KEY).items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(cli, eval_args(model_id, f"{base_url}?api_key={QUERY_VALUE}", tmp_path / "eval"))
    posts = list(proxy.arrivals)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert posts, "the server was asked"
    assert all("authorization" not in p.headers for p in posts), [p.headers for p in posts]
    assert {p.path for p in posts} == {f"/v1/completions?api_key={QUERY_VALUE}"}
    assert not secrets_in(res.output) and not files_with_secrets(tmp_path / "eval")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_eval_key_goes_where_api_key_env_names_it_and_url_credentials_become_basic_auth(
        completions_server, tmp_path, monkeypatch):
    import base64

    base_url, model_id, proxy = completions_server
    for k, v in offline_env(OPENAI_API_KEY="sk-not-this-one-000", MY_SERVER_KEY=KEY).items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(cli, eval_args(model_id, base_url, tmp_path / "a", "--api-key-env", "MY_SERVER_KEY"))
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert proxy.arrivals and {p.headers.get("authorization") for p in proxy.arrivals} == {f"Bearer {KEY}"}
    proxy.arrivals.clear()
    with_user = base_url.replace("http://", f"http://alice:{PASSWORD}@")
    res = CliRunner().invoke(cli, eval_args(model_id, with_user, tmp_path / "b"))
    assert res.exit_code == 0, res.output + repr(res.exception)
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert proxy.arrivals and {p.headers.get("authorization") for p in proxy.arrivals} == {f"Basic {basic}"}
    assert {p.path for p in proxy.arrivals} == {"/v1/completions"}
    assert not files_with_secrets(tmp_path)


def test_eval_refuses_a_key_over_plain_http_to_a_host_that_is_not_loopback(tmp_path, monkeypatch):
    """Refused before anything is loaded or sent, with the rule in the message and no key in it."""
    for k, v in offline_env(MY_SERVER_KEY=KEY).items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(cli, eval_args("some/model", "http://10.1.2.3:8000/v1", tmp_path / "eval",
                                            "--api-key-env", "MY_SERVER_KEY"))
    assert res.exit_code == EXIT_USAGE, res.output + repr(res.exception)
    assert "refusing to send the API key" in res.output and "plain http" in res.output
    assert not secrets_in(res.output) and not (tmp_path / "eval").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_eval_against_a_401_is_one_clear_line_without_the_key(completions_server, tmp_path):
    """A server that refuses the key (the proxy answers 401 for it): exit 70 with the status and
    the redacted URL, no traceback, no copy of the key in anything printed, and a permanent error
    is not retried (three 401s are queued; one is used)."""
    base_url, model_id, proxy = completions_server
    proxy.inject(*[Fault("error", status=401, message="invalid key")] * 3)
    env = offline_env(MY_SERVER_KEY=KEY, RLKD_CACHE_DIR=str(tmp_path / "cache"))
    url = f"{base_url}?api_key={QUERY_VALUE}"
    proc = subprocess.run([sys.executable, "-m", "rlkd_bench.cli", *eval_args(
        model_id, url, tmp_path / "eval", "--api-key-env", "MY_SERVER_KEY")],
        capture_output=True, text=True, env=env, timeout=280)
    posts = list(proxy.arrivals)
    text = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_RUNTIME, text[-3000:]
    assert not secrets_in(text), [text.count(s) for s in (KEY, QUERY_VALUE)]
    assert "Traceback" not in text
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "HTTP 401" in error and f"127.0.0.1:{proxy.port}/v1/completions" in error, error
    assert len(posts) == 1 and proxy.pending_faults == 2, "a 401 is not retried"
    assert posts[0].fault == "error"
    assert not (tmp_path / "eval" / "results.json").exists()


# ---- item 8: the data stages' progress, summary and log lines -------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_build_rlkd_data_shows_no_url_secret_on_screen_or_in_any_file(gsrm_server, tmp_path):
    """``--decomposer gsrm:http://u:pw@host/v1?api_key=...``: the progress bar, the summary, the
    manifest, the card, the rejects and the request cache hold neither the password nor the query
    value (the mini study keeps stage output in logs/). The GSRM decomposes its learned trace,
    given three times under three ids, for real."""
    base_url, model_id, proxy, trace = gsrm_server
    proxy.reset()
    out, cache = tmp_path / "rlkd", tmp_path / "cache"
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps({**trace, "id": f"mem-{i}"}) + "\n" for i in range(3)))
    url = base_url.replace("http://", f"http://bob:{PASSWORD}@") + f"?api_key={QUERY_VALUE}"
    res = CliRunner().invoke(cli, ["build-rlkd-data", "--traces", str(traces), "--decomposer", f"gsrm:{url}",
                                   "--gsrm-model", model_id, "--max-new-tokens", "400", "--test-size", "0",
                                   "--out", str(out), "--cache-dir", str(cache)],
                             env=offline_env())
    assert proxy.count, "the GSRM was asked"
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "teacher steps" in res.stderr, "the progress bar is shown"
    assert not secrets_in(res.stdout + res.stderr), res.stderr
    assert not files_with_secrets(out, cache)
    assert json.loads((out / "manifest.json").read_text())["counts"]["ok"] == 3
