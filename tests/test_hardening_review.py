"""Items from the code review of issue 15 (13, 14, 15, 16, 18): one bad row is a reject, a budget
stop is filed the same in every stage, a refused reply is paid for, the in-process GSRM answers one
batch at a time, one answer to "is this the OpenAI API". Each test failed before its fix; the stage
tests run the command a user runs (click's CliRunner on the CLI) against a real ``transformers serve``
on loopback (the session's tiny model, or the GSRM that learned one trace by heart where a reply
must parse) behind tests/faultproxy.py ``FaultProxy``, which counts the requests and injects the
refusal.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlkd_bench.cli import cli
from rlkd_bench.errors import EXIT_RUNTIME, EXIT_USAGE
from rlkd_bench.rlkd_data import load_rlkd_data

sys.path.insert(0, str(Path(__file__).parent))
from faultproxy import Fault  # noqa: E402

STEPS = ("[Meta-reasoning 1]: Find the sum first\n[Sub-problem 1]: What is 1+1?\n[Answer 1]: 2\n\n"
         "So the final answer is: 2")


def price(model_id: str) -> list[str]:
    """$1 per output token, input free: a request's worst case is its max_tokens in dollars, and
    the server's usage (1 completion token at max_tokens 1) makes every answered request cost $1."""
    return ["--price", f"{model_id}=0,1000000"]


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env={"OPENAI_API_KEY": None, **(env or {})})


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# ---- 13. one item without reasoning is a reject, never the end of the run -------------------


def _openr1_row(uid: str, gens: list[str], marks: list[bool]) -> dict:
    return {"problem": "What is 1+1?", "answer": "2", "uuid": uid, "generations": gens,
            "correctness_math_verify": marks}


@pytest.mark.slow
def test_a_generation_that_opens_with_think_end_is_not_a_teacher_trace(gsrm_server, tmp_path):
    """OpenR1 rows whose first correct generation starts with ``</think>`` (no reasoning): the
    loader takes the next correct generation that has reasoning, or rejects the row; the GSRM run
    goes on (before: `gsrm decomposer: item ... has no reasoning`, exit 2 for the whole run). The
    reasoning is the trace the GSRM learned, so its decompositions parse."""
    base_url, model_id, proxy, trace = gsrm_server
    proxy.reset()
    learned = f"<think>{trace['reasoning']}</think>{trace['answer']}"
    src = tmp_path / "openr1.jsonl"
    rows = [_openr1_row("a", ["</think>\\boxed{20}", learned], [True, True]),
            _openr1_row("b", ["</think>\\boxed{20}"], [True]),
            _openr1_row("c", [learned], [True])]
    for r in rows:
        r.update(problem=trace["problem"], answer="20")
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rlkd"
    res = run("build-rlkd-data", "--traces", str(src), "--on-error", "skip", "--decomposer",
              f"gsrm:{base_url}", "--gsrm-model", model_id, "--max-new-tokens", "400", "--out", str(out),
              "--no-progress", "--test-size", "0", "--cache-dir", str(tmp_path / "cache"))
    assert res.exit_code == 0, res.output
    by_id = {r["id"]: r for r in load_rlkd_data(str(out), "train")}
    # rows a and c ask the same question (the one trace the GSRM knows): one request may answer both
    assert manifest(out)["counts"]["ok"] == 2 and proxy.count >= 1
    assert sorted(by_id) == ["openr1-a", "openr1-c"] and all(r["teacher_steps"] for r in by_id.values())
    assert by_id["openr1-a"]["teacher_reasoning"] == trace["reasoning"], \
        "row a's teacher trace is its second generation"
    [reject] = jsonl(out / "rejects.jsonl")
    assert reject["id"] == "b" and reject["stage"] == "load" and "before </think>" in reject["reason"]


def test_the_gsrm_decomposer_rejects_an_item_without_reasoning_and_decomposes_the_rest():
    from rlkd_bench.decompose.gsrm import GSRMDecomposer
    from rlkd_bench.llm.base import Completion

    class Engine:
        model = "m"
        asked: list = []

        def generate(self, requests, *, progress=True, on_result=None):
            self.asked.extend(requests)
            out = [Completion(text=STEPS, finish_reason="stop") for _ in requests]
            for i, c in enumerate(out):
                if on_result is not None:
                    on_result(i, c)
            return out

    dec = GSRMDecomposer("http://127.0.0.1:9/v1", model="m", engine_instance=Engine())
    seen: dict[int, object] = {}
    items = [{"id": "x", "problem": "p", "reasoning": "r1"}, {"id": "y", "problem": "p", "reasoning": "  "},
             {"id": "z", "problem": "p", "reasoning": "r3"}]
    results = dec.decompose(items, on_result=lambda i, r: seen.setdefault(i, r))
    assert [r.ok for r in results] == [True, False, True] and len(Engine.asked) == 2
    assert results[1].error.startswith("invalid input") and "no reasoning" in results[1].error
    assert sorted(seen) == [0, 1, 2] and seen[1] is results[1]


# ---- 14. a budget stop is pending, and says so, in every stage -------------------------------


def _problems(tmp_path: Path, n: int) -> Path:
    from rlkd_bench.sources import bundled_traces_path

    rows = [json.loads(x) for x in bundled_traces_path().read_text().splitlines()[:n]]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# one request a row: a reply of one token never parses, so no retry for an invalid reply and no
# stop at the first unparsed decomposition
BUDGET_STAGES = {
    "build-rlkd-data": ["build-rlkd-data", "--decomposer", "gsrm:{url}", "--gsrm-model", "{model}",
                        "--max-new-tokens", "1", "--on-error", "skip"],
    "build-gsrm-data": ["build-gsrm-data", "--annotator", "openai:{model}", "--max-tokens", "1",
                        "--max-invalid-retries", "0"],
    "traces --generate": ["traces", "--generate", "--teacher", "openai:{model}", "--n", "1", "--max-tokens", "1"],
}


@pytest.mark.parametrize("stage", sorted(BUDGET_STAGES))
def test_rows_stopped_by_max_cost_are_pending_in_every_stage(stage, server, tmp_path):
    """$1 a request, --max-cost 2.5: two requests are sent, the other two rows are pending (not
    rejects), the manifest says ``incomplete`` and why, and the run says how to finish it."""
    base_url, model_id, proxy = server
    out = tmp_path / "out"
    args = [a.replace("{url}", base_url).replace("{model}", model_id) for a in BUDGET_STAGES[stage]]
    res = run(*args, "--traces", str(_problems(tmp_path, 4)), "--base-url", base_url, *price(model_id),
              "--max-cost", "2.5", "--concurrency", "1", "--out", str(out), "--no-cache",
              *(["--no-progress"] if stage != "traces --generate" else []))
    sent = proxy.count
    assert res.exit_code == 0, res.output
    assert sent == 2
    m = manifest(out)
    assert m["counts"]["pending_budget"] == 2 and m["status"] == "incomplete", m["counts"]
    assert "--max-cost" in m["error"] and m["usage"]["cost_usd"] == pytest.approx(2.0)
    assert not any(str(r.get("reason", "")).startswith("budget") for r in jsonl(out / "rejects.jsonl"))
    said = " ".join(res.stderr.split())  # rich wraps long lines
    assert "2 " in said and "pending" in said and "larger --max-cost" in said, said


# ---- 15. a refused reply is paid for ----------------------------------------------------------


def test_a_refused_reply_counts_toward_max_cost_and_the_manifest_cost(server, tmp_path):
    """A reply with usage and no usable choice (a refusal: the proxy returns the real server's reply
    with ``choices: []`` and its usage kept) costs what its usage says: the budget stops after two
    such replies at $1 each, and the manifest's cost says $2 (before: $0, and every request went out)."""
    base_url, model_id, proxy = server
    proxy.inject(*[Fault("nochoice")] * 4)
    out = tmp_path / "traces"
    res = run("traces", "--generate", "--teacher", f"openai:{model_id}", "--n", "1", "--max-tokens", "1",
              "--traces", str(_problems(tmp_path, 4)), "--base-url", base_url, *price(model_id), "--max-cost", "2.5",
              "--concurrency", "1", "--out", str(out), "--no-cache")
    sent = proxy.count
    assert res.exit_code == EXIT_RUNTIME, res.output  # every answered request was refused
    assert sent == 2 and proxy.pending_faults == 2, "the budget counts refused replies"
    assert "without choices" in res.stderr, res.stderr
    m = manifest(out)
    assert m["usage"]["cost_usd"] == pytest.approx(2.0) and m["usage"]["completion_tokens"] == 2
    assert m["counts"]["pending_budget"] == 2


# ---- 16. the in-process GSRM answers one batch at a time -------------------------------------


def test_the_in_process_gsrm_loads_once_and_never_generates_two_batches_at_once(tiny_model_dir, monkeypatch):
    """A reward call that timed out leaves its batch running in a worker thread: the next call
    must wait for it, not load the model again or generate beside it. Two calls from two threads;
    the first is held inside generate until the second is seen either waiting on the engine (right)
    or generating beside the first (the bug)."""
    import transformers

    from rlkd_bench.decompose.gsrm import GSRMDecomposer
    from rlkd_bench.llm import local
    from rlkd_bench.llm.base import Completion, EngineOptions

    loads: list[str] = []
    real_from_pretrained = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: (loads.append(str(a[0])), real_from_pretrained(*a, **k))[1])
    cond = threading.Condition()
    state = {"active": 0, "most": 0, "first_in": False, "second_waits": False, "release": False}

    def held_generate(self, prompts, skey):
        with cond:
            state["active"] += 1
            state["most"] = max(state["most"], state["active"])
            state["first_in"] = True
            cond.notify_all()
            cond.wait_for(lambda: state["release"], timeout=60)
            state["active"] -= 1
        return [Completion(text=STEPS, finish_reason="stop") for _ in prompts]

    monkeypatch.setattr(local.TransformersEngine, "_generate", held_generate)
    dec = GSRMDecomposer(str(tiny_model_dir), options=EngineOptions(use_cache=False, progress=False))
    results: dict[str, list] = {}

    def call(name: str) -> None:
        results[name] = dec.decompose([{"id": name, "problem": "p", "reasoning": f"r {name}"}])

    first = threading.Thread(target=call, args=("first",))
    first.start()
    with cond:
        assert cond.wait_for(lambda: state["first_in"], timeout=60), "the first call reached generate"
    engine = dec.engine
    lock = getattr(engine, "_lock", None)
    if lock is not None:  # watch the engine's lock: tell the test when the second caller blocks on it
        class Watched:
            def __enter__(self):
                if not lock.acquire(blocking=False):
                    with cond:
                        state["second_waits"] = True
                        cond.notify_all()
                    lock.acquire()
                return self

            def __exit__(self, *exc):
                lock.release()

        engine._lock = Watched()
    second = threading.Thread(target=call, args=("second",))
    second.start()
    with cond:
        assert cond.wait_for(lambda: state["second_waits"] or state["most"] > 1, timeout=60)
        overlapped = state["most"] > 1
        state["release"] = True
        cond.notify_all()
    first.join(60)
    second.join(60)
    assert not overlapped, "the second call generated beside the first"
    assert results["first"][0].ok and results["second"][0].ok
    assert state["most"] == 1 and len(loads) == 1, ("one model, one batch at a time", loads)


# ---- 18. one answer to "is this the OpenAI API"; traces --verify with --generate ------------


def test_plain_http_to_the_openai_host_is_refused_not_priced_as_openai_and_sent_without_a_key(tmp_path):
    """cost.py priced http://api.openai.com as OpenAI while endpoint.py sent it no key (and asked
    it for /models over plain http): now one function decides, and the command says to use https."""
    from rlkd_bench.llm import cost, endpoint

    out = tmp_path / "gsrm"
    res = run("build-gsrm-data", "--annotator", "openai:gpt-4o", "--base-url", "http://api.openai.com/v1",
              "--limit", "1", "--out", str(out), "--no-progress", env={"OPENAI_API_KEY": "sk-test-0000000000"})
    assert res.exit_code == EXIT_USAGE, res.output
    assert "https only" in res.stderr and "https://api.openai.com/v1" in res.stderr
    assert not (out / "manifest.json").exists()
    assert not hasattr(cost, "_is_openai_host") and cost.is_openai_host is endpoint.is_openai_host
    for url in (None, "https://api.openai.com/v1", "http://api.openai.com/v1", "https://x.openai.com.evil.net/v1",
                "http://127.0.0.1:8000/v1"):
        table = cost.PriceTable(base_url=url)
        assert (table.find("gpt-4o", exact=True) is not None) == endpoint.is_openai_host(url), url


def test_traces_generate_honours_verify(server, tmp_path):
    """--verify with --generate is what generation does anyway (every sample is checked with
    math-verify; only verified ones are kept): the manifest records it instead of dropping it.
    The tiny model's answer is noise: its one sample is checked against the gold and not kept."""
    base_url, model_id, proxy = server
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"id": "p1", "problem": "What is 1+1?", "gold": "2"}) + "\n")
    out = tmp_path / "traces"
    res = run("traces", "--generate", "--verify", "--teacher", f"openai:{model_id}", "--n", "1", "--max-tokens", "8",
              "--traces", str(problems), "--base-url", base_url, "--out", str(out), "--no-cache")
    assert res.exit_code == 0, res.output
    m = manifest(out)
    assert m["params"]["verify"] is True and proxy.count == 1
    assert all(r["verified"] for r in jsonl(out / "traces.jsonl"))
    [reject] = jsonl(out / "rejects.jsonl")
    assert reject["reason"].startswith("no correct sample among 1 (gold '2'"), reject
