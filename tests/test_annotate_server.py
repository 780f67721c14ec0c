"""The annotator and teacher generation against real ``transformers serve`` servers on loopback.

Two servers: the session's ``tiny_server`` (a random tiny model: its replies never parse, which
is what the retry / reject / cache / budget / resume paths need) and, for the success paths, the
same tiny model after a few seconds of plain torch training that makes it memorise one valid step
text and one teacher completion (``memorised_server``). Requests are counted at the server by the
proxy in front of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

from rlkd_bench.decompose.annotate import Annotator
from rlkd_bench.llm import EngineOptions, make_engine
from rlkd_bench.structure import parse_steps
from rlkd_bench.teacher import generate_traces, sample_request

pytestmark = pytest.mark.slow

STEPS = ("[Meta-reasoning 1]: The sum is asked for, so add the two numbers.\n"
         "[Sub-problem 1]: What is 2+3?\n[Answer 1]: 5\nSo the final answer is: 5")
OK_ITEM = {"id": "ok1", "domain": "math", "problem": "What is 2+3?", "reasoning": "2 plus 3 is 5."}
TEACHER_OK = {"id": "p1", "domain": "math", "problem": "What is 2+3?", "gold": "5"}
TEACHER_COMPLETION = "<think>2 plus 3 is 5.</think>\\boxed{5}"
TEACHER_PARAMS = {"temperature": 0.0, "max_tokens": 24}


def _items(n: int, domains=("math", "code", "chemistry")) -> list[dict]:
    return [{"id": f"t{i}", "domain": domains[i % len(domains)], "problem": f"What is {i} + {i}?",
             "reasoning": f"Adding {i} and {i} gives {2 * i}. So {2 * i}."} for i in range(n)]


def _annotator(server, cache_dir, **kw) -> Annotator:
    base_url, model_id, _ = server
    opts = EngineOptions(base_url=base_url, cache_dir=str(cache_dir), concurrency=4, progress=False,
                         max_retries=1, timeout_s=60)
    for k in ("max_cost_usd", "prices"):
        if k in kw:
            setattr(opts, k, kw.pop(k))
    return Annotator(model_id, options=opts, **{"max_tokens": 8, "max_invalid_retries": 1, **kw})


def memorise(model_dir: Path, out_dir: Path, pairs, *, lr: float = 3e-3, max_steps: int = 300) -> Path:
    """Train the tiny model until greedy decoding reproduces each target after its chat prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _one_thread(torch):
        return _train(torch, AutoModelForCausalLM.from_pretrained(model_dir),
                      AutoTokenizer.from_pretrained(model_dir), out_dir, pairs, lr, max_steps)


@contextlib.contextmanager
def _one_thread(torch):
    """A 64-wide model: more threads only fight over the shared cores (4x slower on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(torch, model, tok, out_dir: Path, pairs, lr: float, max_steps: int) -> Path:
    torch.manual_seed(0)
    data = []
    for messages, target in pairs:
        p = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                    return_dict=True)["input_ids"]
        t = tok(target + tok.eos_token, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + t])
        labels = ids.clone()
        labels[0, : len(p)] = -100
        data.append((p, t, ids, labels))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for step in range(max_steps):
        for _, _, ids, labels in data:
            model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                done = all(model.generate(torch.tensor([p]), max_new_tokens=len(t) + 2, do_sample=False)
                           [0, len(p):].tolist() == t for p, t, _, _ in data)
            model.train()
            if done:
                break
    else:
        raise AssertionError(f"the tiny model did not memorise its targets in {max_steps} steps")
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def memorised_server(tiny_model_dir, tmp_path_factory):
    """A server whose model answers the OK_ITEM annotation request with STEPS and the teacher
    request for TEACHER_OK with TEACHER_COMPLETION (greedy)."""
    from servers import served_behind_proxy

    annotator = Annotator("m", max_tokens=64)
    ann_req = annotator.request(annotator._state(OK_ITEM), 1)
    teach_req = sample_request(TEACHER_OK, 0, TEACHER_PARAMS)
    out = memorise(Path(tiny_model_dir), tmp_path_factory.mktemp("memorised") / "memo",
                   [(ann_req.messages, STEPS), (teach_req.messages, TEACHER_COMPLETION)])
    with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "1"}), served_behind_proxy(out) as served:  # see _one_thread
        yield served


# ---- annotation --------------------------------------------------------------------------------


def test_invalid_replies_are_retried_then_kept_as_failures_and_a_rerun_is_free(tiny_server, tmp_path):
    counter = tiny_server[2]
    counter.reset()
    items = _items(3)
    seen: list[int] = []
    ann = _annotator(tiny_server, tmp_path / "cache")
    results = ann.decompose(items, on_result=lambda i, r: seen.append(i))
    assert sorted(seen) == [0, 1, 2], "on_result fires once per item"
    assert counter.count == 6, "3 traces x (1 attempt + 1 bounded retry), counted at the server"
    for r in results:
        assert not r.ok and r.decomposition is None
        assert r.error.startswith("invalid reply after 2 attempt(s): no steps found")
        assert r.attempts == 2 and isinstance(r.raw, str)
        assert r.usage.prompt_tokens > 2 * 1000, "usage of both attempts (the few-shot prompt is ~1500 tokens)"
        assert r.usage.completion_tokens > 0 and not r.cached
    assert [r.prompt_domain for r in results] == ["math", "code", "math"]
    assert [r.domain_fallback for r in results] == [False, False, True]
    assert results[1].prompt_version.startswith("annotate_code@")
    assert ann.stats["invalid"] == 3 and ann.stats["retries"] == 3 and ann.stats["domain_fallback"] == 1

    counter.reset()
    again = _annotator(tiny_server, tmp_path / "cache").decompose(items)
    assert counter.count == 0, "a rerun of the same work makes zero requests"
    assert [(r.raw, r.error, r.attempts) for r in again] == [(r.raw, r.error, r.attempts) for r in results]
    assert all(r.cached for r in again)

    counter.reset()
    more = _annotator(tiny_server, tmp_path / "cache", max_invalid_retries=2).decompose(items)
    assert counter.count == 3, "attempts 1-2 come from the cache, only attempt 3 is sent"
    assert all(r.attempts == 3 and not r.cached for r in more)


def test_budget_stop_sends_nothing_and_is_not_a_reject(tiny_server, tmp_path):
    counter = tiny_server[2]
    counter.reset()
    model_id = tiny_server[1]
    ann = _annotator(tiny_server, tmp_path / "cache", max_cost_usd=0.01,
                     prices={model_id: (100.0, 100.0)})  # one request is worth ~$0.15 here
    results = ann.decompose(_items(2))
    assert counter.count == 0
    assert all(r.error.startswith("budget:") and r.budget_stopped and r.attempts == 0 for r in results)
    assert ann.stats["budget"] == 2 and ann.stats["invalid"] == 0


def test_a_valid_reply_becomes_a_decomposition(memorised_server, tmp_path):
    counter = memorised_server[2]
    counter.reset()
    ann = _annotator(memorised_server, tmp_path / "cache", max_tokens=64)
    [res] = ann.decompose([OK_ITEM])
    assert res.ok, (res.error, res.raw)
    assert counter.count == 1 and res.attempts == 1
    assert res.decomposition == parse_steps(STEPS)
    assert res.decomposition.final_answer == "5" and res.raw.strip() == STEPS
    assert res.prompt_version == ann.prompts["math"].version
    assert res.usage.prompt_tokens > 1000 and res.usage.completion_tokens > 10


# ---- teacher traces ----------------------------------------------------------------------------


def test_teacher_problem_the_model_cannot_solve_is_rejected_with_reason(tiny_server, tmp_path):
    base_url, model_id, counter = tiny_server
    counter.reset()
    engine = make_engine(f"openai:{model_id}", EngineOptions(base_url=base_url, cache_dir=str(tmp_path),
                                                             progress=False))
    problem = {"id": "hard", "domain": "math", "problem": "What is 123 * 457?", "gold": "56211"}
    rows, rejects = generate_traces([problem], engine, n=2, keep="first",
                                    params={"temperature": 0.7, "max_tokens": 8}, progress=False)
    assert rows == [] and counter.count == 2
    [rej] = rejects
    assert rej["id"] == "hard" and rej["reason"].startswith("no correct sample among 2")
    assert [s["sample"] for s in rej["samples"]] == [0, 1]


def test_teacher_keep_first_pays_only_until_correct_and_keep_all_keeps_every_correct(memorised_server,
                                                                                    tmp_path):
    base_url, model_id, counter = memorised_server
    engine = make_engine(f"openai:{model_id}", EngineOptions(base_url=base_url, cache_dir=str(tmp_path),
                                                             progress=False))
    unsolvable = {"id": "p2", "domain": "math", "problem": "What is 4+4?", "gold": "9999"}
    counter.reset()
    rows, rejects = generate_traces([TEACHER_OK, unsolvable], engine, n=3, keep="first",
                                    params=TEACHER_PARAMS, progress=False)
    assert counter.count == 1 + 3, "p1 is right at sample 0; p2 uses all 3 samples"
    [row] = rows
    assert (row["id"], row["sample"], row["verified"]) == ("p1", 0, True)
    assert row["reasoning"] == "2 plus 3 is 5." and row["answer"] == "\\boxed{5}"
    assert row["source"] == f"generated:{model_id}" and row["gold"] == "5"
    assert [r["id"] for r in rejects] == ["p2"] and "gold '9999'" in rejects[0]["reason"]

    counter.reset()
    rows, rejects = generate_traces([TEACHER_OK, unsolvable], engine, n=3, keep="all",
                                    params=TEACHER_PARAMS, progress=False)
    assert counter.count == 2, "only p1's samples 1 and 2 are new; the rest is cached"
    assert [r["id"] for r in rows] == ["p1-s0", "p1-s1", "p1-s2"]
    assert [r["id"] for r in rejects] == ["p2"]


def test_traces_generate_command_writes_the_product(memorised_server, tmp_path):
    from click.testing import CliRunner

    from rlkd_bench.cli import cli

    base_url, model_id, counter = memorised_server
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps(TEACHER_OK) + "\n" + json.dumps(
        {"id": "p2", "domain": "math", "problem": "What is 4+4?", "gold": "9999"}) + "\n", encoding="utf-8")
    out = tmp_path / "traces"
    args = ["traces", "--generate", "--teacher", f"openai:{model_id}", "--traces", str(problems),
            "--n", "2", "--temperature", "0", "--max-tokens", "24", "--base-url", base_url,
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    counter.reset()
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert counter.count == 1 + 2
    [row] = [json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()]
    assert (row["id"], row["verified"], row["answer"]) == ("p1", True, "\\boxed{5}")
    [rej] = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert rej["id"] == "p2" and "no correct sample among 2" in rej["reason"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["ok"] == 1 and manifest["counts"]["rejected"] == 1
    assert manifest["prompt_versions"]["teacher"].startswith("teacher@")
    assert manifest["params"]["sampling"] == {"temperature": 0.0, "top_p": 0.95, "max_tokens": 24}
    assert manifest["usage"]["price_source"].startswith("unknown")  # a local server: no price
    assert "first correct sample" in (out / "README.md").read_text()

    counter.reset()  # the rerun is free
    assert CliRunner().invoke(cli, args, catch_exceptions=False).exit_code == 0
    assert counter.count == 0


# ---- resume after SIGKILL through the CLI ------------------------------------------------------


def _ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError, KeyError):  # a torn last line from the kill
            out.append(json.loads(line)["id"])
    return out


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def test_build_gsrm_data_resumes_after_sigkill_without_loss_or_duplicates(memorised_server, tmp_path):
    """The memorised model answers most traces validly and some not (those go to rejects after a
    retry), so the run writes both files; it is killed half way and rerun."""
    base_url, model_id, counter = memorised_server
    traces = tmp_path / "traces.jsonl"
    # math traces shaped like the memorised one get valid replies; the other domains' prompts do not
    rows = [{"id": f"t{i}", "domain": ("math", "math", "science", "code")[i % 4],
             "problem": f"What is 2+{i}?", "reasoning": f"2 plus {i} is {2 + i}.", "answer": str(2 + i),
             "gold": str(2 + i), "source": "test", "verified": True} for i in range(14)]
    traces.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out, cache = tmp_path / "out", tmp_path / "cache"
    cmd = [sys.executable, "-m", "rlkd_bench.cli", "build-gsrm-data", "--traces", str(traces),
           "--annotator", f"openai:{model_id}", "--base-url", base_url, "--out", str(out), "--limit", "12",
           "--cache-dir", str(cache), "--concurrency", "1", "--max-tokens", "64", "--max-invalid-retries", "1",
           "--no-progress"]
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)

    counter.reset()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if len(_ids(out / "annotations.jsonl")) + len(_ids(out / "rejects.jsonl")) >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(_ids(out / "annotations.jsonl")) + len(_ids(out / "rejects.jsonl"))
    assert 3 <= written < 12, "killed half way"
    cached = sum(1 for _ in (cache / "completions").rglob("*.json"))
    assert cached <= counter.count

    counter.reset()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    annotations, rejects = _rows(out / "annotations.jsonl"), _rows(out / "rejects.jsonl")
    ids = [r["id"] for r in annotations + rejects]
    assert sorted(ids) == sorted(f"t{i}" for i in range(12)), "every trace exactly once"
    assert annotations and all(r["status"] == "ok" and r["steps"] for r in annotations)
    assert all(r["reason"].startswith("invalid reply after 2 attempt(s)") for r in rejects)
    needed = sum(r["attempts"] for r in annotations + rejects)  # distinct requests the 12 traces take
    assert counter.count == needed - cached, "the rerun makes only the requests not answered before"


def test_build_gsrm_data_survives_faults_and_counts_retries(tiny_server, tmp_path):
    """429 with Retry-After, a 500 and a dropped connection in front of the real server: the CLI
    run completes, every trace is accounted for once, and the retries show in the manifest."""
    from click.testing import CliRunner
    from faultproxy import Fault

    from rlkd_bench.cli import cli
    from rlkd_bench.errors import EXIT_DATA

    base_url, model_id, counter = tiny_server
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps(r) + "\n" for r in _items(5)), encoding="utf-8")
    counter.reset()
    counter.inject(Fault("429", retry_after=1), "500", "drop")
    out = tmp_path / "out"
    args = ["build-gsrm-data", "--traces", str(traces), "--annotator", f"openai:{model_id}",
            "--base-url", base_url, "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--concurrency", "2", "--max-tokens", "8", "--max-invalid-retries", "0", "--no-progress"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    # the random model's replies never validate: all rejected, so no SFT set and a data-error exit
    assert result.exit_code == EXIT_DATA, result.output
    assert "no annotation passed validation" in result.stderr and not (out / "sft").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["engine_retries"] == 3 and counts["engine_failures"] == 0
    assert manifest["usage"]["price_source"].startswith("unknown")  # which prices the cost used
    assert counts["engine_sent"] == 5 and counter.count == 5 + 3
    assert counts["ok"] + counts["rejected"] == 5 and counts["pending"] == 0
    ids = _ids(out / "annotations.jsonl") + _ids(out / "rejects.jsonl")
    assert sorted(ids) == [f"t{i}" for i in range(5)]
    assert "engine_retries" in result.stderr and "engine_retries: 3" in (out / "README.md").read_text()


# The CLI as a user starts it, except that SIGINT is set back to Python's KeyboardInterrupt. A
# process started with SIGINT ignored (a test run launched in the background of a non-interactive
# shell: `make test &`, some CI runners) passes SIG_IGN on to its children, and Python keeps it
# ignored: the Ctrl-C below would then be lost and the run would finish with 65.
_CLI_WITH_SIGINT = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                    "runpy.run_module('rlkd_bench.cli', run_name='__main__', alter_sys=True)")


def test_ctrl_c_exits_130_keeps_finished_rows_and_the_rerun_completes(tiny_server, tmp_path):
    """SIGINT mid-run: a prompt exit with code 130, every written line whole, nothing lost after
    the rerun, nothing twice.

    Interrupted mid-run by construction, never by timing: 3 traces are answered from the cache
    (a first run on them alone fills it) and every request that reaches the server is held, so
    the run cannot finish before the signal; the signal goes once the 3 rows are on disk and a
    request is held (the process is inside its event loop)."""
    from faultproxy import Fault

    base_url, model_id, counter = tiny_server
    items = _items(30)
    traces, first3 = tmp_path / "traces.jsonl", tmp_path / "first3.jsonl"
    traces.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    first3.write_text("".join(json.dumps(r) + "\n" for r in items[:3]), encoding="utf-8")
    out = tmp_path / "out"

    def cmd(src: Path, dest: Path) -> list[str]:
        return [sys.executable, "-c", _CLI_WITH_SIGINT, "build-gsrm-data", "--traces", str(src),
                "--annotator", f"openai:{model_id}", "--base-url", base_url, "--out", str(dest),
                "--cache-dir", str(tmp_path / "cache"), "--concurrency", "2", "--max-tokens", "8",
                "--max-invalid-retries", "0", "--no-progress"]

    counter.reset()
    warm = subprocess.run(cmd(first3, tmp_path / "warm"), capture_output=True, text=True, timeout=120)
    assert warm.returncode == 65, warm.stderr  # fills the cache for t0..t2 (replies never validate)
    counter.reset()
    counter.inject(*[Fault("stall", seconds=300)] * 27)  # held until the client lets go
    proc = subprocess.Popen(cmd(traces, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while (len(_ids(out / "rejects.jsonl")) < 3 or counter.count < 1) and proc.poll() is None:
        assert time.monotonic() < deadline, "the run never reached the server"
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()  # still running: every uncached request is held
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert "finished rows are kept" in proc.stderr.read()
    lines = (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == ["t0", "t1", "t2"]  # every line whole
    assert not (out / "annotations.jsonl").exists() or not _ids(out / "annotations.jsonl")
    counter.reset()  # drops the stalls left in the schedule
    rerun = subprocess.run(cmd(traces, out), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 65, rerun.stderr  # the random model's replies never validate: all rejected
    ids = _ids(out / "annotations.jsonl") + _ids(out / "rejects.jsonl")
    assert sorted(ids) == sorted(f"t{i}" for i in range(30))
